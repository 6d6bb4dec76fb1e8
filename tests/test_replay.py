"""Determinism guard: recorded histories must replay against the current workflow code.

`tests/histories/*.json` are histories recorded from real runs (a READY job that continued as
new, with a failed child). A change to workflow code that would break running workflows fails
here. Re-record with `RECORD_HISTORIES=1 make test PYTEST_ARGS=tests/test_replay.py` only when
the change is meant to be incompatible (and then version the workflow instead, if jobs are live).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from tests.fault_proxy import Fault, FaultProxy
from tests.helpers import charger, create_cpo, location, submit, wait_for_job
from workflows.bulk_create import BulkCreateLocations
from workflows.provision_location import ProvisionLocation

HISTORIES = Path(__file__).with_name("histories")


def replayer() -> Replayer:
    return Replayer(workflows=[BulkCreateLocations, ProvisionLocation])


async def test_recorded_histories_replay() -> None:
    files = sorted(HISTORIES.glob("*.json"))
    assert files, "no recorded history to replay"
    for path in files:
        data = json.loads(path.read_text())
        history = WorkflowHistory.from_json(data["workflow_id"], data["history"])
        result = await replayer().replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"


async def test_fresh_histories_replay(
    app_with: Any,
    admin: dict[str, str],
    workers: list[Worker],
    temporal: WorkflowEnvironment,
    fault_proxy: FaultProxy,
) -> None:
    """A run with every branch (continue-as-new, a compensated child) replays cleanly."""
    async with app_with(child_window=2, children_per_run=2) as client:
        cpo_id, token = await create_cpo(client, admin)
        fault_proxy.arm(Fault("RunTask", "access_denied", body_contains=f"REPLAY-{cpo_id}-DENIED"))
        accepted = await submit(
            client,
            cpo_id,
            token,
            [
                location("Replay 0", [charger(f"REPLAY-{cpo_id}-0")]),
                location("Replay 1", [charger(f"REPLAY-{cpo_id}-DENIED")]),
                location("Replay 2", []),
            ],
        )
        job = await wait_for_job(client, accepted["status_url"], token)
    assert job["status"] == "FAILED"
    assert job["results"]["locations"][1]["error"]["code"] == "ECS_ACCESS_DENIED"

    job_id = accepted["job_id"]
    histories: dict[str, WorkflowHistory] = {
        "bulk_create_first_run": await temporal.client.get_workflow_handle(
            job_id, run_id=accepted["workflow_run_id"]
        ).fetch_history(),
        "bulk_create_last_run": await temporal.client.get_workflow_handle(job_id).fetch_history(),
        "provision_ready": await temporal.client.get_workflow_handle(f"{job_id}/location-0").fetch_history(),
        "provision_compensated": await temporal.client.get_workflow_handle(
            f"{job_id}/location-1"
        ).fetch_history(),
    }
    for name, history in histories.items():
        result = await replayer().replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is None, f"{name}: {result.replay_failure}"
    if os.environ.get("RECORD_HISTORIES"):
        for name, history in histories.items():
            (HISTORIES / f"{name}.json").write_text(
                json.dumps(
                    {"workflow_id": history.workflow_id, "history": history.to_json_dict()}, indent=None
                )
            )
