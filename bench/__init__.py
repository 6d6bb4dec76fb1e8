"""Benchmarks: figures are printed, never asserted (see `python -m bench --help`)."""
