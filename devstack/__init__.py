"""The embedded stack behind `make run` and the tests: PostgreSQL, Temporal, moto, from PyPI wheels.

Nothing here runs in production; there the same settings point at real services.
"""
