"""Benchmark suite of the worker (issue 5): `python -m bench.run`. See bench/README.md."""
