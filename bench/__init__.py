"""kubesmith benchmarks (`make bench`): each bench_*.py module here exposes run() -> list of rows."""
