"""One-off studies whose results are recorded in docs/results.md; run each as
`python -m benchmarks.studies.<name>`."""
