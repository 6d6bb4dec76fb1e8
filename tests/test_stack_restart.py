"""`make run` after a `make run` that was SIGKILLed: the stale processes it left (each in a session
of its own) are found and stopped, not a "port in use" death; moto, which forgot every task,
gets the RUNNING chargers' tasks again, so the audit is clean; the worker has created the
reconciler's Schedule on the dev server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from temporalio.client import Client

from devstack.procs import free_port
from devstack.stack import Ports, Stack
from devstack.stale import PidBook
from settings import ROOT
from tests.helpers import charger, location, read_stack_env, still_running
from worker.schedules import RECONCILE_SCHEDULE_ID

# the supervising process of the first stack: as `make run`, minus the watch loop
SUPERVISOR = """
import json, sys, time
from pathlib import Path
from devstack.stack import Ports, Stack
from devstack.stale import PidBook
stack = Stack(Path(sys.argv[1]), Ports(**json.loads(sys.argv[2])), workers=1, use_environment=False)
env = stack.start_services()
stack.write_env(env)
stack.start_app(env)
print("READY", flush=True)
time.sleep(3600)
"""


def provision_one(env: dict[str, str]) -> str:
    admin = {"Authorization": f"Bearer {env['ADMIN_TOKEN']}"}
    with httpx.Client(base_url=env["API_URL"], timeout=30) as api:
        cpo = api.post(
            "/ocpi/cpos", json={"name": "Restarted", "country_code": "BE", "party_id": "RST"}, headers=admin
        ).json()
        token = {"Authorization": f"Bearer {cpo['token']}"}
        body = {"locations": [location("Survives a restart", [charger("RST-1"), charger("RST-2")])]}
        accepted = api.post(f"/ocpi/cpos/{cpo['cpo_id']}/locations", json=body, headers=token)
        assert accepted.status_code == 202, accepted.text
        deadline = time.monotonic() + 120
        url = accepted.json()["status_url"]
        while (job := api.get(url, headers=token).json())["status"] == "PROVISIONING":
            assert time.monotonic() < deadline, job
            time.sleep(0.5)
    assert job["status"] == "READY", job
    return str(cpo["cpo_id"])


def audit(env: dict[str, str], cpo_id: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.audit", "--cpo", cpo_id],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


async def schedule_exists(env: dict[str, str], timeout: float = 60) -> bool:
    client = await Client.connect(env["TEMPORAL_ADDRESS"], namespace=env["TEMPORAL_NAMESPACE"])
    deadline = time.monotonic() + timeout
    while True:
        try:
            described = await client.get_schedule_handle(RECONCILE_SCHEDULE_ID).describe()
            return described.id == RECONCILE_SCHEDULE_ID
        except Exception:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.5)


@pytest.fixture
def folder() -> Iterator[Path]:
    """A folder of our own (pytest's numbered tmp folders are pruned by any concurrent session)."""
    with tempfile.TemporaryDirectory(prefix="ocpplab-restart-") as path:
        yield Path(path)


@pytest.mark.faults  # two whole stacks, ~40-70 s
def test_a_sigkilled_stack_is_stopped_at_the_next_start_and_moto_gets_its_tasks_back(
    folder: Path,
) -> None:
    tmp_path = folder
    ports = Ports(free_port(), free_port(), free_port(), free_port(), free_port(), 0)
    started = time.monotonic()
    supervisor = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, str(tmp_path), json.dumps(ports.__dict__)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    left: list[psutil.Process] = []
    second: Stack | None = None
    try:
        assert supervisor.stdout is not None
        for line in supervisor.stdout:
            if line.startswith("READY"):
                break
        else:
            pytest.fail(f"the first stack did not come up (exit {supervisor.wait()})")
        env = read_stack_env(tmp_path)
        cpo_id = provision_one(env)
        first_audit = audit(env, cpo_id)
        assert first_audit.returncode == 0, first_audit.stdout + first_audit.stderr

        left = psutil.Process(supervisor.pid).children(recursive=True)
        supervisor.send_signal(signal.SIGKILL)  # `make run` killed: no clean-up at all
        supervisor.wait(10)
        # PostgreSQL (and its backends), Temporal, moto, the worker and the API live on
        assert len([p for p in left if p.is_running()]) >= 5
        print(f"first stack up, provisioned and killed in {time.monotonic() - started:.1f}s")

        messages: list[str] = []
        second = Stack(tmp_path, ports, workers=1, use_environment=False, say=messages.append)
        env = second.start_services()
        second.write_env(env)
        second.start_app(env)
        assert [p for p in left if still_running(p)] == []
        after = audit(env, cpo_id)
        assert after.returncode == 0, after.stdout + after.stderr
        assert "running tasks              2" in after.stdout
        assert any("left running by an earlier stack" in m for m in messages), messages
        assert "started again the tasks of 2 RUNNING charger(s)" in messages, messages
        assert asyncio.run(schedule_exists(env))
        print(f"second stack up and audited in {time.monotonic() - started:.1f}s in all")
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
        if second is not None:
            second.stop()
        for proc in left:  # whatever the first stack left, if the test failed
            if proc.is_running():
                proc.kill()


def test_a_port_held_by_someone_else_is_named(tmp_path: Path) -> None:
    """Not ours (no pids.json entry): nothing is killed, and the message names the pid."""
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        ports = Ports(port, free_port(), free_port(), free_port(), free_port(), 0)
        stack = Stack(tmp_path, ports, use_environment=False, say=lambda _: None)
        with pytest.raises(RuntimeError) as refused:
            stack.start_services()
    assert f"port {port} (PostgreSQL) is held by pid {os.getpid()}" in str(refused.value)


def test_a_stack_whose_supervisor_lives_is_not_stale(tmp_path: Path) -> None:
    """A second start next to a running `make run` refuses, and leaves the first one alone."""
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        PidBook(tmp_path / "pids.json").record("supervisor", alive.pid, [sys.executable])
        stack = Stack(tmp_path, Ports.free(), use_environment=False, say=lambda _: None)
        with pytest.raises(RuntimeError) as refused:
            stack.start_services()
        assert f"a stack already runs from {tmp_path} (pid {alive.pid})" in str(refused.value)
        assert alive.poll() is None
    finally:
        alive.kill()
        alive.wait()
