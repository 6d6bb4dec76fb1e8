"""Property-based fuzz of the API from its own OpenAPI schema (schemathesis), over real HTTP.

The API runs as a uvicorn subprocess on the session's PostgreSQL and Temporal test server, with a
task queue no worker polls (accepted jobs are only started). Any 5xx, any response that breaks
its declared schema or status codes, fails the test. Bounded: a few dozen cases per operation.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from temporalio.testing import WorkflowEnvironment

from settings import Settings
from tests.helpers import ADMIN, api_process

SEEN: Counter[str] = Counter()


@pytest.fixture(scope="module")
def fuzz_api(settings: Settings, temporal: WorkflowEnvironment) -> Iterator[dict[str, Any]]:
    env = {
        "DATABASE_URL": settings.database_url,
        "ADMIN_TOKEN": ADMIN,
        "TEMPORAL_ADDRESS": temporal.client.service_client.config.target_host,
        "TASK_QUEUE": "fuzz-nobody-polls",
        "ECS_TASK_QUEUE": "fuzz-nobody-polls-ecs",
        "SYNC_WAIT_SECONDS": "0.3",
        "MAX_LOCATIONS_PER_REQUEST": "50",
        "DEV_STACK": "true",
    }
    with api_process(env) as (base, proc):
        created = httpx.post(
            f"{base}/ocpi/cpos",
            headers={"Authorization": f"Bearer {ADMIN}"},
            json={"name": "fuzz", "country_code": "BE", "party_id": "FZZ"},
        ).json()
        yield {"base": base, "cpo_id": created["cpo_id"]}
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    total = sum(SEEN.values())
    print(f"\n[fuzz] {total} cases; status codes {dict(sorted(SEEN.items()))}")
    assert b"Traceback" not in stderr, stderr.decode()[-3000:]


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_api: dict[str, Any]) -> Any:
    # give the server a moment to finish start-up before the schema is read
    time.sleep(0.2)
    return schemathesis.openapi.from_url(f"{fuzz_api['base']}/openapi.json")


def test_api_never_errors_and_keeps_its_schema(fuzz_schema: Any, fuzz_api: dict[str, Any]) -> None:
    auth = {"Authorization": f"Bearer {ADMIN}"}
    checks = [
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
        content_type_conformance,
    ]
    operations = [result.ok() for result in fuzz_schema.get_all_operations()]
    assert len(operations) >= 9

    modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]  # valid data, then invalid data
    for operation, mode in itertools.product(operations, modes):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def fuzz(case: Any) -> None:
            if "cpo_id" in (case.path_parameters or {}):
                case.path_parameters["cpo_id"] = fuzz_api["cpo_id"]  # a real CPO: reach the bodies
            response = case.call_and_validate(base_url=fuzz_api["base"], headers=auth, checks=checks)
            SEEN[str(response.status_code)] += 1

        try:
            fuzz()
        except Unsatisfiable:
            assert mode == GenerationMode.NEGATIVE  # an operation with no input has no invalid one
