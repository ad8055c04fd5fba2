"""Benchmarks (not timed tests): `python -m bench.earn`. Results in bench/RESULTS.md."""
