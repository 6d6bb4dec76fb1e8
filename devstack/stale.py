"""A stack killed without its clean-up (SIGKILL of `make run`, a closed terminal) leaves
PostgreSQL, Temporal, moto (each in a session of its own) and maybe a worker or the API running.

The stack writes every process it starts to `pids.json` in its data folder, with the command it
ran and the process's start time; the next start stops those that are still the same processes
(same pid, same start time, its program in the command line: a recycled pid is someone else's and
is left alone), then checks that its ports are free, and when one is not, says which pid holds it.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

# stopped in this order: the app first (it holds connections), PostgreSQL last
ORDER = ["api", "worker", "moto", "temporal", "postgres"]
SUPERVISOR = "supervisor"  # the process that runs the stack (`make run`): alive, it is not stale


def _rank(name: str) -> int:
    return next((i for i, prefix in enumerate(ORDER) if name.startswith(prefix)), len(ORDER))


class PidBook:
    """The processes of one stack, by name, in `<data>/pids.json`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, dict[str, Any]]:
        try:
            return dict(json.loads(self.path.read_text()))
        except (FileNotFoundError, ValueError):
            return {}

    def record(self, name: str, pid: int, args: list[str]) -> None:
        """`args`: what was run (read back from the process now could still show the parent's
        command line: the child may not have exec'd yet)."""
        try:
            entry = {"pid": pid, "args": args, "create_time": psutil.Process(pid).create_time()}
        except psutil.Error:  # already gone: nothing to find later
            return
        book = self.read() | {name: entry}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(book, indent=1))
        tmp.replace(self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def stop_stale(self, say: Callable[[str], None], timeout: float = 30.0) -> list[str]:
        """Stop every recorded process that still runs as recorded; returns their names. When
        the stack's supervisor itself still runs, the stack is not stale: refuse."""
        book = self.read()
        supervisor = _same_process(book.pop(SUPERVISOR, {}))
        if supervisor is not None and supervisor.pid != os.getpid():
            raise RuntimeError(
                f"a stack already runs from {self.path.parent} (pid {supervisor.pid}): "
                "stop it first (Ctrl-C in its terminal)"
            )
        stale: list[tuple[str, psutil.Process]] = []
        for name, entry in sorted(book.items(), key=lambda item: _rank(item[0])):
            proc = _same_process(entry)
            if proc is not None:
                stale.append((name, proc))
        for name, proc in stale:
            say(f"stopping {name} (pid {proc.pid}), left running by an earlier stack")
            # PostgreSQL's fast shutdown; SIGTERM would wait for every client to leave
            sig = signal.SIGINT if name == "postgres" else signal.SIGTERM
            try:
                proc.send_signal(sig)
                _, alive = psutil.wait_procs([proc], timeout=timeout)
                for survivor in alive:
                    survivor.kill()
                psutil.wait_procs(alive, timeout=5)
            except psutil.NoSuchProcess:
                pass
        self.clear()
        return [name for name, _ in stale]


def _same_process(entry: dict[str, Any]) -> psutil.Process | None:
    """The recorded process if it still runs: same pid, same start time, and the program it ran
    in its command line (a script shows as `python <script> …`)."""
    try:
        proc = psutil.Process(int(entry["pid"]))
        program = Path(entry["args"][0]).name
        same = abs(proc.create_time() - float(entry["create_time"])) < 0.5 and any(
            Path(part).name == program for part in proc.cmdline()
        )
    except (psutil.Error, KeyError, TypeError, ValueError):
        return None
    return proc if same and proc.status() != psutil.STATUS_ZOMBIE else None


def port_holder(port: int) -> str | None:
    """Who listens on this TCP port: 'pid N (command line)', or None when nobody does."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        connections = []
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            if conn.pid is None:
                return "a process of another user"
            try:
                command = " ".join(psutil.Process(conn.pid).cmdline())[:120]
            except psutil.Error:
                command = "?"
            return f"pid {conn.pid} ({command})"
    return None


def check_ports_free(ports: dict[str, int]) -> None:
    """Raise, naming the pid that holds each busy port, before anything is started on them."""
    busy = [
        f"port {port} ({what}) is held by {holder}"
        for what, port in ports.items()
        if port and (holder := port_holder(port)) is not None
    ]
    if busy:
        raise RuntimeError(
            "; ".join(busy) + ". This stack did not start them (see pids.json): "
            "stop them, or run this stack on other ports."
        )
