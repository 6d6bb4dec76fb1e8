"""The bench's own scenario processes (the floor, the peer): how they are started and timed.

A scenario that does the product's work without the product (bench/floor.py, bench/peer.py)
runs in a process of its own, so that its CPU is counted apart from the bench's (which polls the
product in other scenarios) and an engine that keeps process-wide state (DBOS) never shares the
bench's event loop. The protocol, over the child's stdin/stdout:

    parent                              child (`python -m bench.floor '<spec JSON>'`)
                                        prepares (connections, inputs, an engine's launch)
                                   <--  "@@bench ready"
    takes the CPU snapshot, "go"   -->
                                        runs, timed from its first location to its last
                                   <--  "@@bench result {...}"
    takes the CPU snapshot, EOF    -->  cleans up, exits

Anything else the child prints (an engine's logs) goes to the bench's output as it is.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from settings import Settings

MARK = "@@bench "


def stack_settings(env: Mapping[str, str], db_pool_size: int = 20) -> Settings:
    """Settings that reach the bench's stack (from the environment that stack wrote)."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        admin_token=env["ADMIN_TOKEN"],
        charger_secret_key=env["CHARGER_SECRET_KEY"],
        database_url=env["DATABASE_URL"],
        temporal_address=env["TEMPORAL_ADDRESS"],
        temporal_namespace=env["TEMPORAL_NAMESPACE"],
        aws_endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_region=env["AWS_REGION"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        ecs_cluster=env["ECS_CLUSTER"],
        ecs_task_definition=env["ECS_TASK_DEFINITION"],
        ecs_subnets=json.loads(env["ECS_SUBNETS"]),
        ecs_security_groups=json.loads(env["ECS_SECURITY_GROUPS"]),
        db_pool_size=db_pool_size,
    )


def libpq_url(database_url: str, database: str | None = None) -> str:
    """`postgresql+psycopg://…/db` as psycopg itself takes it, optionally naming another database."""
    url = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    if database is not None:
        head, _, tail = url.rpartition("/")
        query = tail.partition("?")[2]
        url = f"{head}/{database}" + (f"?{query}" if query else "")
    return url


# --------------------------------------------------------------------------------------------
# the parent's side


class ScenarioProcess:
    """A scenario process started and prepared; `go()` runs it and returns its result."""

    def __init__(self, module: str, env: Mapping[str, str], spec: dict[str, Any]) -> None:
        self.module = module
        self.env = dict(env)
        self.spec = spec
        self.proc: asyncio.subprocess.Process

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    async def __aenter__(self) -> ScenarioProcess:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            self.module,
            json.dumps(self.spec),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, **self.env},
            limit=1 << 24,
        )
        await self._expect("ready")
        return self

    async def go(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        await self.proc.stdin.drain()
        return dict(json.loads(await self._expect("result")))

    async def __aexit__(self, *exc: object) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 60)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    async def _expect(self, word: str) -> str:
        assert self.proc.stdout is not None
        while True:
            line = (await self.proc.stdout.readline()).decode()
            if not line:
                code = await self.proc.wait()
                raise RuntimeError(f"{self.module} exited ({code}) before saying {word!r}")
            if line.startswith(MARK + word):
                return line[len(MARK + word) :].strip()
            print(line, end="", flush=True)  # the child's own output (an engine's logs)


# --------------------------------------------------------------------------------------------
# the child's side


def child_main(
    prepare: Callable[[Settings, dict[str, Any]], Awaitable[Callable[[], Awaitable[dict[str, Any]]]]],
    cleanup: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run a scenario process: `prepare(settings, spec)` returns the timed work."""

    async def main() -> None:
        spec = json.loads(sys.argv[1])
        settings = stack_settings(os.environ, db_pool_size=int(spec.get("concurrency", 32)))
        work = await prepare(settings, spec)
        try:
            print(MARK + "ready", flush=True)
            if (await asyncio.to_thread(sys.stdin.readline)).strip() != "go":
                return
            result = await work()
            print(MARK + "result " + json.dumps(result), flush=True)
            await asyncio.to_thread(sys.stdin.read)  # until the parent has taken its snapshot
        finally:
            if cleanup is not None:
                await cleanup()

    asyncio.run(main())
