"""Small helpers shared by the embedded services: binaries in the venv, free ports, waiting."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def venv_binary(name: str) -> Path:
    """A console script of this virtual environment (not whatever `PATH` finds)."""
    for folder in (Path(sysconfig.get_path("scripts")), Path(sys.executable).parent):
        candidate = folder / name
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{name} is not installed in this virtual environment ({sys.prefix})")


class _Spawning:
    depth = 0
    interrupted = False


@contextmanager
def uninterrupted() -> Iterator[None]:
    """A process start and the assignment that remembers it, as one step for `make run`'s stop:
    a SIGTERM that landed between the fork and the assignment would leave a server running that
    nothing knows to stop. The stop's signal handler asks `interrupt_later()` and, inside this
    block, its KeyboardInterrupt is raised at the block's end instead."""
    _Spawning.depth += 1
    try:
        yield
    finally:
        _Spawning.depth -= 1
        if _Spawning.depth == 0 and _Spawning.interrupted:
            _Spawning.interrupted = False
            raise KeyboardInterrupt


def interrupt_later() -> bool:
    """For a signal handler: True when a process is being started (the interrupt then comes at
    the end of `uninterrupted()`), False when the handler may raise at once."""
    if _Spawning.depth:
        _Spawning.interrupted = True
        return True
    return False


def niced(args: list[str], nice: int) -> list[str]:
    """`args` run at scheduling niceness `nice`, through the `nice` program. Not through a
    `preexec_fn`: with one, the fork runs Python's at-fork handlers (logging's lock among them),
    and a SIGTERM that lands in one of those is swallowed while logging's lock stays held, so
    `make run` would hang, its stop lost. Without `nice` on the machine it runs at the default."""
    program = shutil.which("nice") if nice else None
    return [program, "-n", str(nice), *args] if program else args


def unniced(args: list[str]) -> list[str]:
    """The command `niced` wrapped: what the process runs once `nice` has exec'd it."""
    if len(args) > 3 and Path(args[0]).name == "nice" and args[1] == "-n":
        return args[3:]
    return args


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_for_port(
    host: str, port: int, proc: subprocess.Popen[bytes] | None, what: str, timeout: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before listening")
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not listen on {host}:{port} within {timeout:.0f}s")


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it does not go in time."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
