"""Benchmarks: ``python -m bench [--quick]`` (``make bench``) writes bench/results/latest.{json,md}."""
