"""Benchmarks behind `make bench`: each writes benchmarks/results/<name>.json."""
