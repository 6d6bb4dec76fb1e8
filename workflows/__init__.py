"""Deterministic workflow code (no I/O): it imports only `contracts` and temporalio."""
