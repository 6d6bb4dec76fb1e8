"""Pushes of locations to the eMSPs registered with a CPO (OCPI 2.2.1 Locations Receiver).

One `OcpiLocationPush` workflow per (eMSP, location), ID `ocpi-push/{partner}/{location}`, fed by
signal-with-start. A signal is only a nudge: each push brings the eMSP's copy to what the Sender
serves at that moment, as the difference between that and what this eMSP was last sent (kept
in `ocpi_deliveries`): a PATCH of the changed fields, or a PUT of the whole object when a field
was cleared, the EVSEs changed, nothing was sent before, or the eMSP refused a PATCH. What is
recorded as delivered is the version whose content was sent, so a change made while a push is
on the wire is the next push's difference, never skipped. Nudges that arrive during a push fold
into one more push. Retries back off to `max_interval` with no limit on attempts, so an eMSP
that is down for hours converges once it is back. The attempts run on their own task queue with
bounded slots (and a bound per eMSP in each worker), with a short attempt timeout, so a Receiver
that hangs costs a trickle and never the slots provisioning needs.

The activities' typed interface and the payloads live in `contracts/ocpi.py`; the
implementation in `activities/ocpi_push.py`.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from contracts.ocpi import (
    PATCH_REJECTED,
    REJECTED,
    WORKFLOW_OCPI_PUSH,
    LocationChange,
    OcpiActivities,
    PushInput,
    PushSummary,
    PushTarget,
)

NOTIFY_POLICY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30), maximum_attempts=0
)


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
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=NOTIFY_POLICY,
            summary=f"OCPI push of {location_id} to its eMSPs",
        )
    except ActivityError as err:
        workflow.logger.warning("OCPI notify of %s not sent: %s", location_id, err)


@workflow.defn(name=WORKFLOW_OCPI_PUSH)
class OcpiLocationPush:
    def __init__(self) -> None:
        self._nudged = False
        self._version = 0
        self._last = ""

    @workflow.signal
    def change(self, change: LocationChange) -> None:
        self._nudged = True

    @workflow.query
    def state(self) -> dict[str, str | int | bool]:
        return {"pending": self._nudged, "delivered_version": self._version, "last": self._last}

    @workflow.run
    async def run(self, target: PushTarget) -> PushSummary:
        self._nudged = self._nudged or bool(target.pending)
        policy = RetryPolicy(
            initial_interval=timedelta(seconds=1),
            backoff_coefficient=2.0,
            maximum_interval=timedelta(seconds=target.max_interval_seconds),
            maximum_attempts=0,
            non_retryable_error_types=[REJECTED, PATCH_REJECTED],
        )
        pushes = rejected = 0
        force_put = False
        while True:
            if not self._nudged and not force_put:
                # Stay a while, so that the next change is one more small PATCH; after that an
                # idle push workflow goes away (the next change starts a new one).
                try:
                    await workflow.wait_condition(
                        lambda: self._nudged, timeout=timedelta(seconds=target.idle_seconds)
                    )
                except TimeoutError:
                    break
            info = workflow.info()
            if info.is_continue_as_new_suggested() or info.get_current_history_length() > 2000:
                workflow.continue_as_new(
                    dataclasses.replace(target, pending=[LocationChange(target.cpo_id, target.location_id)])
                )
            self._nudged = False
            try:
                result = await workflow.execute_activity_method(
                    OcpiActivities.push_location,
                    PushInput(target.partner_id, target.location_id, force_put=force_put),
                    task_queue=target.task_queue or None,
                    start_to_close_timeout=timedelta(seconds=target.attempt_timeout_seconds),
                    retry_policy=policy,
                    summary=f"{'PUT' if force_put else 'push'} {target.location_id}",
                )
            except ActivityError as err:
                rejected += 1
                self._last = f"rejected: {err.cause or err}"
                workflow.logger.warning("eMSP %s rejected %s: %s", target.partner_id, target.location_id, err)
                # 2.2.1: when a PATCH is refused, send the whole object; a refused PUT waits for
                # the next change (the eMSP's copy is reported in the push's last outcome)
                force_put = isinstance(err.cause, ApplicationError) and err.cause.type == PATCH_REJECTED
                continue
            force_put = False
            self._last = f"{result.outcome} {result.method or ''}".strip()
            if result.outcome == "GONE":
                break
            if result.outcome == "DELIVERED":
                pushes += 1
            self._version = max(self._version, result.version)
        return PushSummary(self._version, pushes, rejected)
