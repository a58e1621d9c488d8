"""Benchmarks: each module runs by one command (`python -m bench.NAME`) and measures side by side in one run."""
