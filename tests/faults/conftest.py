"""Nothing lost, nothing doubled: real processes faulted in the middle of 200-location jobs.

Unlike the rest of the suite, time must really pass here, so this package runs its own stack
(one for all its modules): the Temporal dev server (SQLite file, so it can restart), its own
PostgreSQL, moto behind the fault-injecting proxy, and the worker as a subprocess that is killed
and restarted. The API runs in-process. After every fault the audit must find 0 duplicates, 0
orphans, 0 half-written locations, and the ten tables must hold exactly the READY locations'
rows.

Run alone with `make test-faults`. The stack and steps are in `tests/faults/stack.py`; the
fixtures here."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import create_app
from db.engine import make_engine
from tests.faults.stack import FaultStack
from tests.suite_stack import asgi_client


@pytest.fixture(scope="package")
def stack() -> Iterator[FaultStack]:
    with tempfile.TemporaryDirectory(prefix="ocpplab-faults-") as folder:
        fault_stack = FaultStack(Path(folder))
        try:
            fault_stack.start()
            yield fault_stack
        finally:
            fault_stack.stop()


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def api(stack: FaultStack) -> AsyncIterator[httpx.AsyncClient]:
    assert stack.settings is not None
    app = create_app(stack.settings)
    async with asgi_client(app, "http://faults", timeout=60) as client:
        yield client


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def db(stack: FaultStack) -> AsyncIterator[AsyncEngine]:
    assert stack.settings is not None
    engine = make_engine(stack.settings)
    yield engine
    await engine.dispose()


@pytest.fixture(autouse=True)
def _clear_faults(stack: FaultStack) -> Iterator[None]:
    yield
    assert stack.proxy is not None
    stack.proxy.clear()
