"""Example scripts; `experiment` is their shared driver (flags, runs, results files)."""
