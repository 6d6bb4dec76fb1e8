"""Pushes of locations to the eMSPs registered with a CPO (OCPI 2.2.1 Locations Receiver).

One `OcpiLocationPush` workflow per (eMSP, location), ID `ocpi-push/{partner}/{location}`, fed by
signal-with-start: a change waits in its queue until the eMSP took it, with retries backing off
to `max_interval` and no limit on attempts, so an eMSP that is down for hours gets everything
once it is back, in `last_updated` order. Each push sends the location as it is when sent, so a
change already covered by a newer push is skipped instead of sent twice.

The activities' typed interface and the payloads live in `contracts/ocpi.py`; the
implementation in `activities/ocpi_push.py`.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from contracts.ocpi import (
    REJECTED,
    WORKFLOW_OCPI_PUSH,
    LocationChange,
    OcpiActivities,
    PushInput,
    PushSummary,
    PushTarget,
)

NOTIFY_POLICY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30),
                            maximum_attempts=0)


async def notify_ocpi_partners(cpo_id: int, location_id: str, columns: list[str] | None = None) -> None:
    """The hook the location workflows call after a change. Never fails its caller (the change
    is done; an eMSP that misses the push still sees it on its next pull); a cancellation still
    reaches the caller, which handles it as before this hook existed."""
    try:
        # a local activity: one short look-up (and a signal per eMSP) in the caller's workflow
        # task, one marker event, instead of an activity round trip on every location
        await workflow.execute_local_activity_method(
            OcpiActivities.notify_partners,
            LocationChange(cpo_id=cpo_id, location_id=location_id, columns=columns or []),
            start_to_close_timeout=timedelta(seconds=30), retry_policy=NOTIFY_POLICY,
            summary=f"OCPI push of {location_id} to its eMSPs",
        )
    except ActivityError as err:
        workflow.logger.warning("OCPI notify of %s not sent: %s", location_id, err)


@workflow.defn(name=WORKFLOW_OCPI_PUSH)
class OcpiLocationPush:
    def __init__(self) -> None:
        self._pending: list[LocationChange] = []
        self._delivered = ""
        self._last = ""

    @workflow.signal
    def change(self, change: LocationChange) -> None:
        self._pending.append(change)
        self._pending.sort(key=lambda c: c.version)

    @workflow.query
    def state(self) -> dict[str, str | int]:
        return {"pending": len(self._pending), "delivered": self._delivered, "last": self._last}

    @workflow.run
    async def run(self, target: PushTarget) -> PushSummary:
        self._pending = sorted(self._pending + target.pending, key=lambda c: c.version)
        self._delivered = target.delivered
        policy = RetryPolicy(
            initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
            maximum_interval=timedelta(seconds=target.max_interval_seconds), maximum_attempts=0,
            non_retryable_error_types=[REJECTED],
        )
        pushes = rejected = 0
        while True:
            if not self._pending:
                # Stay a while: the next change of this location can then be a PATCH on top of
                # what the eMSP has; after that an idle push workflow goes away.
                try:
                    await workflow.wait_condition(lambda: bool(self._pending),
                                                  timeout=timedelta(seconds=target.idle_seconds))
                except TimeoutError:
                    break
            info = workflow.info()
            if info.is_continue_as_new_suggested() or info.get_current_history_length() > 2000:
                workflow.continue_as_new(PushTarget(
                    target.partner_id, target.cpo_id, target.location_id, target.max_interval_seconds,
                    target.idle_seconds, self._pending, self._delivered))
            change = self._pending.pop(0)
            if change.version and change.version <= self._delivered:
                continue  # a newer state has been pushed already
            # a PATCH is only valid on top of what the eMSP has: the first push is always a PUT
            columns = change.columns if self._delivered else []
            try:
                result = await workflow.execute_activity_method(
                    OcpiActivities.push_location,
                    PushInput(target.partner_id, target.location_id, columns, self._delivered),
                    start_to_close_timeout=timedelta(seconds=60), retry_policy=policy,
                    summary=f"{'PATCH' if columns else 'PUT'} {target.location_id}",
                )
            except ActivityError as err:
                rejected += 1
                self._last = f"rejected: {err.cause or err}"
                workflow.logger.warning("eMSP %s rejected %s: %s", target.partner_id, target.location_id, err)
                if columns:  # 2.2.1: when a PATCH fails, send the whole object
                    whole = LocationChange(target.cpo_id, target.location_id, [], change.version)
                    self._pending.insert(0, whole)
                continue
            self._last = f"{result.outcome} {result.method or ''}".strip()
            if result.outcome == "GONE":
                break
            if result.outcome == "DELIVERED":
                pushes += 1
            self._delivered = max(self._delivered, result.version)
        return PushSummary(self._delivered, pushes, rejected)
