"""PATCHes of one location: never lost once accepted, applied in the order they were accepted.

Each location has one `LocationUpdates` workflow that applies its changes one at a time, in the
order their signals reached it, retrying each for as long as the database is away; its
last_updated is the time the change committed (PostgreSQL's clock). The faults come from
PostgreSQL itself (a trigger on the location's row), the long outage from the time-skipping
test server.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.api.enums.v1 import EventType
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Worker

from activities.location_changes import LocationChangeActivities
from api.app import create_app
from contracts.payloads import LocationPatch, LocationUpdatesInput
from db.engine import make_sessionmaker
from settings import Settings
from tests.helpers import create_cpo, location, submit, wait_for_job
from tests.suite_stack import asgi_client, running_workers, time_skipping
from workflows.location_changes import LocationUpdates, updates_workflow_id


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def own_temporal(
    settings: Settings, engine: AsyncEngine
) -> AsyncIterator[tuple[WorkflowEnvironment, httpx.AsyncClient]]:
    """A time-skipping server of its own, with its own workers and app (PATCHes wait 2 s): the
    shared one does not skip while other tests leave workflows on task queues nobody polls."""
    async with time_skipping() as env, running_workers(env.client, settings, engine):
        app = create_app(settings.model_copy(update={"sync_wait_seconds": 2}), temporal_client=env.client)
        async with asgi_client(app) as client:
            yield env, client


async def ready_location(
    client: httpx.AsyncClient, admin: dict[str, str], name: str
) -> tuple[str, dict[str, str]]:
    """A READY location (no chargers: the PATCH path is the same) and its URL's token."""
    cpo_id, token = await create_cpo(client, admin)
    accepted = await submit(client, cpo_id, token, [location(name, [])])
    job = await wait_for_job(client, accepted["status_url"], token)
    assert job["status"] == "READY", job
    return f"/ocpi/cpos/{cpo_id}/locations/{job['results']['location_ids'][0]}", token


async def row(engine: AsyncEngine, location_id: str) -> tuple[str, str, datetime]:
    """The OCPI name, the OCPP site's mirrored name, and OCPI last_updated."""
    async with engine.connect() as conn:
        found = (
            await conn.execute(
                text(
                    "SELECT l.name, o.name, l.last_updated FROM ocpp.ocpi_locations l"
                    " JOIN ocpp.locations o ON o.ocpi_location_id = l.id WHERE l.id = :i"
                ),
                {"i": location_id},
            )
        ).one()
    return found[0], found[1], found[2]


@asynccontextmanager
async def failing_updates(
    engine: AsyncEngine, location_id: str, times: int | None = None, name: str | None = None
) -> AsyncIterator[str]:
    """PostgreSQL refuses the first `times` UPDATEs of this location's OCPI row (every one while
    inside, for None; only those setting `name` to this, if given): a database the worker cannot
    write. Yields the name of the sequence that counts the refused attempts."""
    match = f"NEW.id = '{location_id}'" + (f" AND NEW.name = '{name}'" if name else "")
    limit = "TRUE" if times is None else f"nextval('ocpp.test_patch_seq') <= {int(times)}"
    count = "PERFORM nextval('ocpp.test_patch_seq');" if times is None else ""
    async with engine.begin() as conn:
        await conn.execute(text("CREATE SEQUENCE ocpp.test_patch_seq"))
        await conn.execute(
            text(f"""
            CREATE FUNCTION ocpp.test_patch_fault() RETURNS trigger AS $$
            BEGIN
              IF {match} AND {limit} THEN
                {count}
                RAISE EXCEPTION 'injected: database unavailable' USING ERRCODE = '57P03';
              END IF;
              RETURN NEW;
            END $$ LANGUAGE plpgsql""")
        )
        await conn.execute(
            text(
                "CREATE TRIGGER test_patch_fault BEFORE UPDATE ON ocpp.ocpi_locations"
                " FOR EACH ROW EXECUTE FUNCTION ocpp.test_patch_fault()"
            )
        )
    try:
        yield "ocpp.test_patch_seq"
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("DROP TRIGGER IF EXISTS test_patch_fault ON ocpp.ocpi_locations"))
            await conn.execute(text("DROP FUNCTION IF EXISTS ocpp.test_patch_fault()"))
            await conn.execute(text("DROP SEQUENCE IF EXISTS ocpp.test_patch_seq"))


async def db_now(engine: AsyncEngine) -> datetime:
    async with engine.connect() as conn:
        now: datetime = (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()
    return now


async def refused(engine: AsyncEngine, sequence: str) -> int:
    async with engine.connect() as conn:
        value, called = (await conn.execute(text(f"SELECT last_value, is_called FROM {sequence}"))).one()
    return int(value) if called else 0


async def accepted_changes(temporal: WorkflowEnvironment, location_id: str) -> list[LocationPatch]:
    """The changes the API handed to the location's workflow (its signals, every run), in the
    order they arrived."""
    runs: list[list[LocationPatch]] = []
    run_id: str | None = None
    while True:  # from the current run back to the first
        history = await temporal.client.get_workflow_handle(
            updates_workflow_id(location_id), run_id=run_id
        ).fetch_history()
        changes: list[LocationPatch] = []
        for event in history.events:
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
                payloads = event.workflow_execution_signaled_event_attributes.input.payloads
                changes += await temporal.client.data_converter.decode(payloads, [LocationPatch])
        runs.insert(0, changes)
        first = history.events[0].workflow_execution_started_event_attributes
        run_id = first.continued_execution_run_id or None
        if run_id is None:
            return [change for run in runs for change in run]


@asynccontextmanager
async def real_time_app(
    settings: Settings, temporal: WorkflowEnvironment, **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with a Temporal client of its own: its waits on workflows do not unlock the test
    server's time skipping, so retries back off in real time, as they do in production."""
    target = temporal.client.service_client.config.target_host
    app = create_app(settings.model_copy(update={"temporal_address": target, **overrides}))
    async with asgi_client(app) as client:
        yield client


async def test_a_retried_earlier_patch_does_not_overwrite_a_later_one(
    app_client: httpx.AsyncClient,
    admin: dict[str, str],
    workers: list[Worker],
    engine: AsyncEngine,
    temporal: WorkflowEnvironment,
    settings: Settings,
) -> None:
    """PATCH A meets a database error and is retried; PATCH B, accepted meanwhile, must not be
    undone by A's retry: B's values and B's last_updated stay."""
    url, token = await ready_location(app_client, admin, "Order")
    location_id = url.rsplit("/", 1)[1]
    started = await db_now(engine)
    async with real_time_app(settings, temporal, sync_wait_seconds=30) as client:
        async with failing_updates(engine, location_id, name="First") as sequence:
            first = asyncio.create_task(client.patch(url, json={"name": "First"}, headers=token))
            for _ in range(200):  # A has been refused: it is waiting for its next attempt now
                if await refused(engine, sequence) >= 1:
                    break
                await asyncio.sleep(0.05)
            second = asyncio.create_task(
                client.patch(url, json={"name": "Second", "city": "Ghent"}, headers=token)
            )
            await asyncio.wait([second], timeout=2)  # B, accepted later, has its chance to go first
        # the database takes A again: its next attempt goes through
        first_answer, second_answer = await first, await second
    assert (first_answer.status_code, second_answer.status_code) == (200, 200), (
        first_answer.text,
        second_answer.text,
    )
    name, ocpp_name, last_updated = await row(engine, location_id)
    assert (name, ocpp_name) == ("Second", "Second")
    current = (await app_client.get(url, headers=token)).json()
    assert (current["name"], current["city"]) == ("Second", "Ghent")
    changes = await accepted_changes(temporal, location_id)
    assert [c.fields.get("name") for c in changes] == ["First", "Second"]
    # last_updated is when B committed (PostgreSQL's clock), after A's retry went through
    assert started < last_updated < await db_now(engine)


async def test_simultaneous_patches_end_with_the_latest_accepted(
    app_client: httpx.AsyncClient,
    admin: dict[str, str],
    workers: list[Worker],
    engine: AsyncEngine,
    temporal: WorkflowEnvironment,
) -> None:
    url, token = await ready_location(app_client, admin, "Race")
    location_id = url.rsplit("/", 1)[1]
    started = await db_now(engine)
    answers = await asyncio.gather(
        *(
            app_client.patch(url, json={"name": f"Racer {n}", "postal_code": f"10{n}0"}, headers=token)
            for n in range(6)
        )
    )
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    changes = await accepted_changes(temporal, location_id)
    assert len(changes) == 6
    latest = changes[-1]  # the last to reach the workflow is the last applied
    name, ocpp_name, last_updated = await row(engine, location_id)
    assert name == ocpp_name == latest.fields["name"]
    assert started < last_updated < await db_now(engine)
    current = (await app_client.get(url, headers=token)).json()
    assert current["postal_code"] == latest.fields["postal_code"]


async def test_a_patch_accepted_during_a_long_database_outage_is_applied_after_it(
    own_temporal: tuple[WorkflowEnvironment, httpx.AsyncClient],
    admin: dict[str, str],
    engine: AsyncEngine,
) -> None:
    """The database refuses the change for 10 minutes (skipped time), far beyond the ~75 s the
    change used to be retried for; it is applied once the database is back."""
    temporal, client = own_temporal
    url, token = await ready_location(client, admin, "Outage")
    location_id = url.rsplit("/", 1)[1]
    async with failing_updates(engine, location_id) as sequence:
        accepted_at = await db_now(engine)
        answer = await client.patch(url, json={"name": "After the outage"}, headers=token)
        assert answer.status_code == 202, answer.text
        for _ in range(10):  # in steps: each skip is one short RPC
            await temporal.sleep(60)
        attempts = await refused(engine, sequence)
        assert (await row(engine, location_id))[0] == "Outage"
        outage_over = await db_now(engine)
        assert outage_over > accepted_at
    print(f"\n[PATCH outage] {attempts} attempts refused over 10 minutes of skipped time")
    assert attempts > 10  # more than the old budget (10 attempts) allowed
    for _ in range(10):  # the next attempt comes within the capped backoff (skipped through)
        if (await row(engine, location_id))[0] != "Outage":
            break
        await temporal.sleep(30)
    name, ocpp_name, last_updated = await row(engine, location_id)
    assert (name, ocpp_name) == ("After the outage", "After the outage")
    assert (await client.get(url, headers=token)).json()["name"] == "After the outage"
    assert answer.json()["workflow_id"] == updates_workflow_id(location_id)
    (change,) = await accepted_changes(temporal, location_id)
    assert change.change_id and change.fields == {"name": "After the outage"}
    # stamped when it became visible, after the outage, not when the API accepted it: an eMSP
    # that pulled during the outage (date_from = that pull) still finds it
    assert last_updated > outage_over


async def test_the_updates_workflow_continues_as_new_and_keeps_the_order(
    app_client: httpx.AsyncClient,
    admin: dict[str, str],
    workers: list[Worker],
    engine: AsyncEngine,
    temporal: WorkflowEnvironment,
    settings: Settings,
) -> None:
    url, token = await ready_location(app_client, admin, "Many")
    location_id = url.rsplit("/", 1)[1]
    cpo_id = int(url.split("/")[3])
    handle = await temporal.client.start_workflow(
        LocationUpdates.run,
        LocationUpdatesInput(cpo_id=cpo_id, location_id=location_id, changes_per_run=2),
        id=updates_workflow_id(location_id),
        task_queue=settings.task_queue,
    )
    for n in range(5):
        answer = await app_client.patch(url, json={"name": f"Step {n}"}, headers=token)
        assert answer.status_code == 200 and answer.json()["name"] == f"Step {n}", answer.text
    assert (await row(engine, location_id))[0] == "Step 4"
    current = await temporal.client.get_workflow_handle(updates_workflow_id(location_id)).describe()
    assert current.run_id != handle.first_execution_run_id  # it continued as new, twice
    assert [c.fields["name"] for c in await accepted_changes(temporal, location_id)] == [
        f"Step {n}" for n in range(5)
    ]


async def test_patch_of_a_location_still_provisioning_is_409(
    app_client: httpx.AsyncClient,
    admin: dict[str, str],
    workers: list[Worker],
    engine: AsyncEngine,
) -> None:
    """As DELETE: its activation, still to come, would be newer than the change."""
    url, token = await ready_location(app_client, admin, "Provisioning")
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE ocpp.ocpi_locations SET status = 'PROVISIONING' WHERE id = :i"),
            {"i": url.rsplit("/", 1)[1]},
        )
    answer = await app_client.patch(url, json={"name": "Too early"}, headers=token)
    assert answer.status_code == 409 and answer.json()["code"] == "LOCATION_PROVISIONING", answer.text
    assert (await app_client.get(url, headers=token)).json()["name"] == "Provisioning"


async def test_an_attempt_cannot_commit_after_its_timeout(
    app_client: httpx.AsyncClient,
    admin: dict[str, str],
    workers: list[Worker],
    engine: AsyncEngine,
) -> None:
    """An attempt blocked past a quarter of its timeout fails instead of committing later (when
    its retry, and the changes after it, may have been applied); a change of another CPO's
    location, or of a location on its way out, changes nothing."""
    url, _ = await ready_location(app_client, admin, "Guard")
    location_id = url.rsplit("/", 1)[1]
    cpo_id = int(url.split("/")[3])
    acts = LocationChangeActivities(make_sessionmaker(engine))
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, start_to_close_timeout=timedelta(seconds=2))
    change = LocationPatch(cpo_id=cpo_id, location_id=location_id, fields={"name": "Late"}, change_id="c1")
    async with engine.connect() as holder:  # another transaction holds the row
        await holder.execute(
            text("SELECT 1 FROM ocpp.ocpi_locations WHERE id = :i FOR UPDATE"), {"i": location_id}
        )
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            await env.run(acts.update_location_fields, change)
            raise AssertionError("the blocked attempt went through")
        except DBAPIError as err:
            assert getattr(err.orig, "sqlstate", None) == "57014", err  # statement_timeout
        assert loop.time() - began < 2.0  # gave up within its attempt
        await holder.rollback()
    await asyncio.sleep(0.2)
    assert (await row(engine, location_id))[0] == "Guard"  # the failed attempt left nothing
    assert await env.run(acts.update_location_fields, change) is True  # its retry applies it
    assert (await row(engine, location_id))[0] == "Late"
    other_cpo = dataclasses.replace(change, cpo_id=cpo_id + 10_000, fields={"name": "Elsewhere"})
    assert await env.run(acts.update_location_fields, other_cpo) is False
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE ocpp.ocpi_locations SET status = 'DECOMMISSIONING' WHERE id = :i"),
            {"i": location_id},
        )
    gone = dataclasses.replace(change, fields={"name": "X"})
    assert await env.run(acts.update_location_fields, gone) is False
    assert (await row(engine, location_id))[0] == "Late"
