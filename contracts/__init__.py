"""What crosses the boundaries between the API, the workflows, the activities and the worker.

The status and error vocabulary, the derived ids, the data classes that cross Temporal, the
activities' typed interfaces, the Temporal connection, and the collector's settings of the two
long-lived processes (heap.py). `api/`, `workflows/`, `activities/` and `worker/` import from
here; nothing here imports any of them (only the standard library, temporalio, for the
connection the settings class, and httpx for the egress policy that every call to a peer-chosen
URL goes through), so the layering has one ground floor.
"""
