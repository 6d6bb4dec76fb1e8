"""`.data/stack.env` reads the same in a shell (the README's way) and in pydantic-settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.stack import Stack
from settings import ROOT, Settings

ENV = {
    "API_URL": "http://127.0.0.1:8000",
    "ADMIN_TOKEN": "tok-EN_with-dashes_0123456789",
    "DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:5433/ocpplab",
    "TEMPORAL_ADDRESS": "127.0.0.1:7233",
    "TEMPORAL_NAMESPACE": "default",
    "TEMPORAL_UI_URL": "http://127.0.0.1:8233",
    "AWS_ENDPOINT_URL": "http://127.0.0.1:5055",
    "AWS_REGION": "eu-west-1",
    "ECS_CLUSTER": "ocpplab-chargers",
    "ECS_SUBNETS": json.dumps(["subnet-0123456789abcdef0"]),
    "ECS_SECURITY_GROUPS": json.dumps(["sg-0123456789abcdef0", "sg-1"]),
}
PRINT = (
    "from settings import Settings; import json; s = Settings(); print(json.dumps(["
    "s.api_url, s.admin_token, s.database_url, s.ecs_subnets, s.ecs_security_groups]))"
)


def expected() -> list[object]:
    return [
        ENV["API_URL"],
        ENV["ADMIN_TOKEN"],
        ENV["DATABASE_URL"],
        json.loads(ENV["ECS_SUBNETS"]),
        json.loads(ENV["ECS_SECURITY_GROUPS"]),
    ]


def test_stack_env_sourced_in_bash_then_settings(tmp_path: Path) -> None:
    env_file = Stack(tmp_path).write_env(ENV)
    script = f'set -euo pipefail; set -a; . "{env_file}"; set +a; exec "{sys.executable}" -c "$0"'
    out = subprocess.run(
        ["bash", "-c", script, PRINT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == expected()


def test_stack_env_read_by_pydantic_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ENV:
        monkeypatch.delenv(key, raising=False)
    env_file = Stack(tmp_path).write_env(ENV)
    s = Settings(_env_file=str(env_file))  # type: ignore[call-arg]
    assert [s.api_url, s.admin_token, s.database_url, s.ecs_subnets, s.ecs_security_groups] == expected()
