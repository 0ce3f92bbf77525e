"""Speed measurements and tools; run each as `python -m benchmarks.<name>`."""
