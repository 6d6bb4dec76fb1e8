"""`make run` stops cleanly on any signal pattern. SIGTERM to its process group reaches `make` and
the stack's supervisor at once, and `make` sends the supervisor one more: two group signals
0.1 s apart are four SIGTERMs. Sent while the stack starts and while a job runs, every process of
the stack must be gone afterwards and no traceback printed."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from settings import ROOT
from tests.helpers import charger, location, read_stack_env, still_running

# parts of a stack given in the environment would be used instead of started; these tests start all
GIVEN = ("DATABASE_URL", "TEMPORAL_ADDRESS", "AWS_ENDPOINT_URL", "TEMPORAL_UI_URL", "TEMPORAL_NAMESPACE")


class MakeRun:
    """`make run` on a folder of its own and free ports, in a process group of its own; every
    process it ever had below it is remembered (children leave the tree when they are stopped)."""

    def __init__(self, folder: Path) -> None:
        env = {key: value for key, value in os.environ.items() if key not in GIVEN}
        self.folder = folder
        self.proc = subprocess.Popen(
            ["make", "--no-print-directory", "run", f"RUN_ARGS=--data-dir {folder} --free-ports --workers 1"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.seen: dict[int, psutil.Process] = {}
        self._done = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._reader.start()
        self._sampler.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def _sample(self) -> None:
        while not self._done.is_set():
            try:
                for child in psutil.Process(self.proc.pid).children(recursive=True):
                    self.seen.setdefault(child.pid, child)
            except psutil.Error:
                pass
            time.sleep(0.02)

    def wait_for(self, text: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if self.proc.poll() is not None:
                pytest.fail(f"make run exited ({self.proc.returncode}) before {text!r}:\n{self.output}")
            assert time.monotonic() < deadline, f"no {text!r} within {timeout}s:\n{self.output}"
            time.sleep(0.02)

    def signal_group_twice(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        time.sleep(0.1)
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:  # already gone: as good
            pass

    def wait(self, timeout: float = 180) -> None:
        self.proc.wait(timeout)
        self._done.set()
        self._sampler.join(5)
        self._reader.join(5)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def alive(self) -> list[str]:
        """The stack's processes still running: every one seen below `make run`, and anything
        whose command line names the stack's folder (PostgreSQL's -D, Temporal's database)."""
        left = {pid: proc for pid, proc in self.seen.items() if still_running(proc)}
        for proc in psutil.process_iter(["cmdline"]):
            if str(self.folder) in " ".join(proc.info["cmdline"] or []) and still_running(proc):
                left[proc.pid] = proc
        return [f"{pid} {' '.join(_cmdline(proc))[:120]}" for pid, proc in left.items()]

    def kill_all(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        for proc in self.seen.values():
            if still_running(proc):
                proc.kill()


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return ["?"]


def post_job(env: dict[str, str]) -> None:
    """A CPO and a job of 30 locations, still PROVISIONING when it returns."""
    admin = {"Authorization": f"Bearer {env['ADMIN_TOKEN']}"}
    with httpx.Client(base_url=env["API_URL"], timeout=30) as api:
        cpo = api.post(
            "/ocpi/cpos", json={"name": "Signals", "country_code": "BE", "party_id": "SIG"}, headers=admin
        ).json()
        token = {"Authorization": f"Bearer {cpo['token']}"}
        body = {"locations": [location(f"Signal {i}", [charger(f"SIG-{i}")]) for i in range(30)]}
        accepted = api.post(f"/ocpi/cpos/{cpo['cpo_id']}/locations", json=body, headers=token)
        assert accepted.status_code == 202, accepted.text
        job = api.get(accepted.json()["status_url"], headers=token).json()
        assert job["status"] == "PROVISIONING", job


@pytest.fixture
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ocpplab-signals-") as path:
        yield Path(path)


@pytest.mark.faults  # a whole stack per case, ~20-60 s each
@pytest.mark.parametrize("moment", ["while-starting", "mid-job"])
def test_two_sigterms_to_the_group_leave_nothing_running(folder: Path, moment: str) -> None:
    run = MakeRun(folder)
    try:
        if moment == "while-starting":
            run.wait_for("Temporal dev server on")  # PostgreSQL up, Temporal starting
        else:
            run.wait_for("ready:")
            post_job(read_stack_env(folder))
        run.signal_group_twice()
        run.wait()
        output = run.output
        assert "Traceback" not in output, output
        assert "stopping" in output, output
        assert run.seen, "no process of the stack was seen"
        deadline = time.monotonic() + 10  # a process that got SIGKILL may take a moment to be reaped
        while (left := run.alive()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert left == [], f"left running after {moment}: {left}\n{output}"
        assert not (folder / "pids.json").exists(), "the stack did not finish its stop"
    finally:
        run.kill_all()
