"""Deterministic workflow code and the data classes that cross the Temporal boundary (no I/O)."""
