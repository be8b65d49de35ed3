"""kubesmith benchmarks (`make bench`): each bench_*.py module exposes run() -> rows."""
