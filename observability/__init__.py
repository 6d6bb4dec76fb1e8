"""What operators see of the running processes: structured logs with context, traces.

Shared by the API and the worker (each wires it at start-up); like `contracts`, it imports none
of `api`, `workflows`, `activities` or `worker`. Metrics live with the process that serves them:
`api/metrics.py` (prometheus_client) and `worker/telemetry.py` (the Temporal SDK's runtime).
"""
