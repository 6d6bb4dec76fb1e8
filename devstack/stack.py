"""The `make run` stack as an object: PostgreSQL, Temporal dev server + UI, moto, N workers, the API.

`make run` starts it on the fixed ports with its data in `.data/`; the benchmark starts exactly
the same processes with the same options in a temporary folder on free ports, so that it never
clashes with a `make run` already up:

    stack = Stack(Path(tmp), Ports.free(), workers=2, use_environment=False)
    env = stack.start_services(); stack.write_env(env); stack.start_app(env)
    ...
    stack.stop()
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_origin

from contracts.egress import LOOPBACK
from devstack.moto_ecs import EcsBootstrap, MotoServer, bootstrap_ecs, reset_moto
from devstack.postgres import EmbeddedPostgres
from devstack.procs import (
    free_port,
    niced,
    stop_process,
    uninterrupted,
    unniced,
    venv_binary,
    wait_for_port,
)
from devstack.stale import SUPERVISOR, PidBook, check_ports_free
from devstack.temporal import TemporalDevServer, matching_config
from settings import DATA_DIR, ROOT, Settings

# moto is seeded before the bootstrap, so a reset (bench) recreates the same subnet and group ids
ECS_SEED = 8_233
DATABASE = "ocpplab"


@dataclass(frozen=True)
class Ports:
    postgres: int = 5433
    temporal: int = 7233
    ui: int = 8233
    moto: int = 5055
    api: int = 8000
    # worker N serves its Prometheus metrics on this + N - 1; 0: no worker metrics endpoint
    worker_metrics: int = 9464

    @classmethod
    def free(cls) -> Ports:
        return cls(free_port(), free_port(), free_port(), free_port(), free_port(), 0)


def worker_nice(default: int = 10) -> int:
    """`WORKER_NICE=0 make run`: the workers' scheduling niceness. On one small box the API,
    Temporal and the workers share two cores; background provisioning yields to the API so a
    poll or a POST is answered at once (in production they run on machines of their own)."""
    value = os.environ.get("WORKER_NICE", "").strip()
    return int(value) if value else default


def background_nice(default: int = 10) -> int:
    """`BACKGROUND_NICE=0 make run`: the niceness of the Temporal dev server and moto. Like the
    workers, they do the provisioning in the background; the API and PostgreSQL keep the
    normal priority, so that in a burst of POSTs the requests get the cores first (on a
    production deployment each runs on capacity of its own)."""
    value = os.environ.get("BACKGROUND_NICE", "").strip()
    return int(value) if value else default


def workers_from_env(default: int = 2) -> int:
    """`WORKERS=1 make run`: how many `python -m worker` processes the stack runs. Default 2: one
    Python event loop runs workflow tasks and activities one at a time, so a second process uses
    the second core of a small box."""
    value = os.environ.get("WORKERS", "").strip()
    if not value:
        return default
    count = int(value)
    if count < 1:
        raise ValueError(f"WORKERS must be at least 1, not {count}")
    return count


def fairness_from_env(default: bool = True) -> bool:
    """`TEMPORAL_FAIRNESS=false make run`: the dev server without fair dispatch between CPOs
    (priority keys still apply). For A/B measurements (`make bench`)."""
    value = os.environ.get("TEMPORAL_FAIRNESS", "").strip().lower()
    return default if not value else value not in ("0", "false", "no", "off")


def _say(message: str) -> None:
    print(f"[make run] {message}", flush=True)


@dataclass(frozen=True)
class EcsShape:
    """The ECS resources a stack bootstraps for its charger tasks."""

    region: str
    cluster: str
    task_definition: str
    container_name: str
    image: str

    def bootstrap(self, endpoint: str, seed: int | None) -> EcsBootstrap:
        return bootstrap_ecs(
            endpoint, self.region, self.cluster, self.task_definition, self.container_name, self.image, seed
        )


def settings_from_env(env: Mapping[str, str], **overrides: Any) -> Settings:
    """The Settings that a process given `env` (variables, as `app_env` makes them) reads, with
    `overrides` (field names) on top; this process's own environment fills the rest."""
    fields = Settings.model_fields
    values: dict[str, Any] = {}
    for key, value in env.items():
        name = key.lower()
        if name in fields:
            complex_ = get_origin(fields[name].annotation) in (list, dict)
            values[name] = json.loads(value) if complex_ else value
    return Settings(_env_file=None, **(values | overrides))  # type: ignore[call-arg]


def settings_env(settings: Settings) -> dict[str, str]:
    """Every field of `settings` that is set, as the variables a child process reads back."""
    return {
        name.upper(): (json.dumps(value) if isinstance(value, list | dict) else str(value))
        for name, value in settings.model_dump().items()
        if value is not None
    }


class Stack:
    """The embedded services and the app processes of one stack.

    `use_environment`: parts already given in the environment (DATABASE_URL, TEMPORAL_ADDRESS,
    AWS_ENDPOINT_URL) are used instead of starting them (`make run`); the benchmark says False.
    `nice`: the workers' niceness (None: `WORKER_NICE`, else 10); `logs`: the folder of the
    processes' logs (default `<data>/logs`).

    `start_services` is made of steps that a stack of another shape (the test suite's, the fault
    suite's) calls too: `start_postgres` + `migrate`, `start_temporal`, `start_moto` +
    `bootstrap_ecs`, `app_env`. Nothing here restarts a process that dies: `make run`'s watch
    loop (`devstack/__main__.py`) does, with `restart`.
    """

    def __init__(
        self,
        data_dir: Path = DATA_DIR,
        ports: Ports | None = None,
        workers: int = 1,
        *,
        use_environment: bool = True,
        say: Callable[[str], None] = _say,
        fairness: bool | None = None,
        nice: int | None = None,
        logs: Path | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.ports = ports or Ports()
        self.workers = workers
        self.use_environment = use_environment
        self.say = say
        self.fairness = fairness_from_env() if fairness is None else fairness
        self.nice = nice
        self.logs = logs or self.data_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.postgres: EmbeddedPostgres | None = None
        self.temporal: TemporalDevServer | None = None
        self.moto: MotoServer | None = None
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.child_env: dict[str, str] = {}
        self.env: dict[str, str] = {}
        self.ecs: EcsShape | None = None  # what bootstrap_ecs created
        # every process started, so that a start after a SIGKILLed stack can stop what it left
        self.book = PidBook(self.data_dir / "pids.json")

    def _given(self, name: str) -> str | None:
        return os.environ.get(name) if self.use_environment else None

    def secret(self, name: str) -> str:
        """A random secret kept in the data folder (0600), the same at every start: the API and
        the worker refuse default or short secrets, so the dev stack makes its own."""
        path = self.data_dir / name
        if not path.exists():
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        return path.read_text().strip()

    def start_services(
        self, *, durable: bool = True, aws_front: Callable[[str], str] | None = None
    ) -> dict[str, str]:
        """PostgreSQL (migrated), the Temporal dev server and moto (ECS bootstrapped), each unless
        given in the environment; returns the settings of the app processes as variables.

        `durable=False`: PostgreSQL without fsync (a test stack). `aws_front`: given the ECS
        endpoint, returns the one the app processes get instead (a proxy in front of moto)."""
        database_url = self._given("DATABASE_URL")
        address = self._given("TEMPORAL_ADDRESS")
        endpoint = self._given("AWS_ENDPOINT_URL")
        self._claim(
            {
                "PostgreSQL": self.ports.postgres if database_url is None else 0,
                "Temporal": self.ports.temporal if address is None else 0,
                "Temporal Web UI": self.ports.ui if address is None else 0,
                "moto": self.ports.moto if endpoint is None else 0,
                "API": self.ports.api,
            }
        )
        if database_url is None:
            database_url = self.start_postgres(durable=durable)
        self.migrate(database_url)
        if address is None:
            address = self.start_temporal()
        if endpoint is None:
            endpoint = self.start_moto()
        region = self._given("AWS_REGION") or Settings(_env_file=None).aws_region  # type: ignore[call-arg]
        boot = self.bootstrap_ecs(endpoint, region)
        assert self.ecs is not None
        self.say(f"ECS bootstrapped: cluster {self.ecs.cluster}, subnet {boot.subnet_ids[0]}")
        if aws_front is not None:
            endpoint = aws_front(endpoint)
        env = self.app_env(database_url, address, endpoint, region, boot)
        self.env = env
        if self.moto is not None:
            self._restore_ecs(env)
        return env

    def _claim(self, ports: dict[str, int]) -> None:
        """Stop what an earlier stack of this folder left running, book this process as the
        stack's supervisor, and refuse (naming the holder) if one of `ports` is taken."""
        self.book.stop_stale(self.say)
        self.book.record(SUPERVISOR, os.getpid(), [sys.executable])
        check_ports_free(ports)

    # ------------------------------------------------------------------ the steps
    def start_postgres(self, *, durable: bool = True) -> str:
        """The embedded PostgreSQL in `<data>/postgres` with the `ocpplab` database: its URL.
        `durable=False`: no fsync (a test stack, where a crash loses nothing we care about)."""
        rel = self._shown(self.data_dir)
        self.say(f"PostgreSQL (embedded) on 127.0.0.1:{self.ports.postgres}, data in {rel}/postgres")
        self.postgres = EmbeddedPostgres(self.data_dir / "postgres", self.ports.postgres, durable=durable)
        self.postgres.start()
        self._record("postgres", self.postgres.proc)
        self.postgres.create_database(DATABASE)
        return self.postgres.url(DATABASE)

    def migrate(self, database_url: str) -> None:
        """`alembic upgrade head` on that database."""
        self.say("migrations: alembic upgrade head")
        subprocess.run(
            [str(venv_binary("alembic")), "upgrade", "head"],
            cwd=ROOT,
            check=True,
            env={**os.environ, "DATABASE_URL": database_url},
        )

    def start_temporal(self, dynamic_config: dict[str, Any] | None = None) -> str:
        """The Temporal dev server on `ports.temporal` (Web UI on `ports.ui`, none when 0), its
        SQLite file `<data>/temporal.db` (so it can restart with its state), matched as
        `matching_config(fairness)` unless `dynamic_config` says otherwise: its address."""
        ui = f"Web UI on :{self.ports.ui}" if self.ports.ui else "no Web UI"
        self.say(
            f"Temporal dev server on 127.0.0.1:{self.ports.temporal}, {ui}, "
            f"{self._shown(self.data_dir)}/temporal.db, fairness {'on' if self.fairness else 'off'}"
        )
        self.temporal = TemporalDevServer(
            self.ports.temporal,
            self.ports.ui,
            self.data_dir / "temporal.db",
            dynamic_config=matching_config(self.fairness) if dynamic_config is None else dynamic_config,
            log_file=self.logs / "temporal.log",
        )
        self.temporal.start(nice=background_nice())
        self._record("temporal", self.temporal.proc)
        return self.temporal.address

    def start_moto(self) -> str:
        """moto in server mode (ECS + EC2 + Secrets Manager) on `ports.moto`: its URL."""
        self.say(f"moto (ECS + EC2 + Secrets Manager) on 127.0.0.1:{self.ports.moto}")
        self.moto = MotoServer(self.ports.moto, self.logs / "moto.log")
        self.moto.start(nice=background_nice())
        self._record("moto", self.moto.proc)
        return self.moto.url

    def bootstrap_ecs(
        self, endpoint: str, region: str, *, cluster: str | None = None, image: str | None = None
    ) -> EcsBootstrap:
        """What a charger task needs at that ECS endpoint (idempotent): the settings' cluster,
        task definition and image unless given. On this stack's own moto, seeded: the same
        subnet and security group ids at every start (and after `reset_ecs`)."""
        defaults = Settings(_env_file=None)  # type: ignore[call-arg]
        self.ecs = EcsShape(
            region,
            cluster or defaults.ecs_cluster,
            defaults.ecs_task_definition,
            defaults.ecs_container_name,
            image or defaults.charger_image,
        )
        ours = self.moto is not None and endpoint == self.moto.url
        return self.ecs.bootstrap(endpoint, seed=ECS_SEED if ours else None)

    def app_env(
        self, database_url: str, address: str, endpoint: str, region: str, boot: EcsBootstrap
    ) -> dict[str, str]:
        """The settings of the stack's app processes as variables (what `stack.env` holds)."""
        if self.ecs is None:
            raise RuntimeError("bootstrap_ecs first")
        env: dict[str, str] = {
            "DATABASE_URL": database_url,
            "TEMPORAL_ADDRESS": address,
            "TEMPORAL_UI_URL": self._given("TEMPORAL_UI_URL") or f"http://127.0.0.1:{self.ports.ui}",
            "TEMPORAL_NAMESPACE": self._given("TEMPORAL_NAMESPACE") or "default",
            "API_URL": f"http://127.0.0.1:{self.ports.api}",
            "ADMIN_TOKEN": self.secret("admin_token"),
            "CHARGER_SECRET_KEY": self.secret("charger_secret_key"),
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_REGION": region,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "ECS_CLUSTER": self.ecs.cluster,
            "ECS_TASK_DEFINITION": self.ecs.task_definition,
            "ECS_SUBNETS": json.dumps(boot.subnet_ids),
            "ECS_SECURITY_GROUPS": json.dumps(boot.security_group_ids),
            "API_METRICS_URL": f"http://127.0.0.1:{self.ports.api}/metrics",
            # the dev stack's workers make their own build the deployment's current version
            "WORKER_SET_CURRENT_VERSION": "true",
            # every peer of a dev stack (a fake eMSP, a script) is on this machine
            "EGRESS_ALLOW": json.dumps(list(LOOPBACK)),
            # a job's completion callback may reach a receiver on this machine
            "CALLBACK_ALLOW_PRIVATE": "true",
        }
        if self.ports.worker_metrics:
            for number in range(1, self.workers + 1):
                port = self.worker_metrics_port(number)
                env[f"WORKER_{number}_METRICS_URL"] = f"http://127.0.0.1:{port}/metrics"
            env["WORKER_METRICS_URL"] = env["WORKER_1_METRICS_URL"]
        return env

    def _record(self, name: str, proc: subprocess.Popen[bytes] | None) -> None:
        if proc is not None:
            args = proc.args if isinstance(proc.args, list | tuple) else [proc.args]
            self.book.record(name, proc.pid, unniced([str(arg) for arg in args]))

    def _restore_ecs(self, env: dict[str, str]) -> None:
        """A fresh moto knows no task: start again those the database says are RUNNING."""
        from devstack.ecs_restore import restore_charger_tasks  # the worker's code: import late

        settings = settings_from_env(env, dev_stack=True)
        # its own loop in a thread: start_services is also called from async code (tests)
        with ThreadPoolExecutor(1) as pool:
            started = pool.submit(asyncio.run, restore_charger_tasks(settings, say=self.say)).result()
        if started:
            self.say(f"started again the tasks of {started} RUNNING charger(s)")

    def worker_metrics_port(self, number: int) -> int:
        return self.ports.worker_metrics + number - 1 if self.ports.worker_metrics else 0

    def reset_ecs(self) -> None:
        """Forget every ECS task (moto keeps them all, and ListTasks/DescribeTasks scan them all),
        then bootstrap again: same seed, so the same subnet and security group ids as before."""
        if self.moto is None or self.ecs is None:
            raise RuntimeError("only an embedded moto can be reset")
        reset_moto(self.moto.url)
        boot = self.ecs.bootstrap(self.moto.url, seed=ECS_SEED)
        if json.dumps(boot.subnet_ids) != self.env["ECS_SUBNETS"]:
            raise RuntimeError(f"moto reset gave other subnets: {boot.subnet_ids}")

    def write_env(self, env: dict[str, str]) -> Path:
        """KEY='value' lines: the same values for a shell (`set -a; . stack.env; set +a`) and for
        pydantic-settings' env file (unquoted, a shell would eat the JSON lists' quotes)."""
        path = self.data_dir / "stack.env"
        for key, value in env.items():
            if "'" in value or "\n" in value:
                raise ValueError(f"{key} cannot be written to stack.env: {value!r}")
        path.write_text("".join(f"{key}='{value}'\n" for key, value in sorted(env.items())))
        path.chmod(0o600)
        return path

    def start_app(self, env: dict[str, str], *, api: bool = True) -> None:
        """The workers (`python -m worker`) and, with `api`, the API (uvicorn), their settings
        `env` over this process's environment."""
        # readable logs on a terminal (production's default is JSON)
        self.child_env = {"LOG_FORMAT": "text", **os.environ, **env, "PYTHONUNBUFFERED": "1"}
        for number in range(1, self.workers + 1):
            self.start_worker(number)
        if not api:
            return
        self.start_api()
        self.wait_api()

    def wait_api(self, timeout: float = 60) -> None:
        """Until the API listens and answers its liveness probe (raises if it exits first)."""
        wait_for_port("127.0.0.1", self.ports.api, self.children["api"], "API", timeout=timeout)
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports.api}/healthz", timeout=10) as response:
            response.read()

    def start_worker(self, number: int = 1) -> subprocess.Popen[bytes]:
        """Worker `number` (log `worker-N.log`), also a second time after it exited."""
        port = self.worker_metrics_port(number)
        env = {"WORKER_METRICS_PORT": str(port)} if port else {}
        nice = worker_nice() if self.nice is None else self.nice
        return self._spawn(f"worker-{number}", [sys.executable, "-m", "worker"], nice=nice, extra_env=env)

    def start_api(self) -> subprocess.Popen[bytes]:
        return self._spawn(
            "api",
            [
                str(venv_binary("uvicorn")),
                "api.app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.ports.api),
                "--timeout-graceful-shutdown",
                "20",
            ],
        )

    def restart(self, name: str) -> subprocess.Popen[bytes]:
        """Start again a worker (`worker-N`) or the API that has exited."""
        if name == "api":
            return self.start_api()
        return self.start_worker(int(name.removeprefix("worker-")))

    def _spawn(
        self, name: str, args: list[str], nice: int = 0, extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with open(self.logs / f"{name}.log", "ab") as log, uninterrupted():
            env = {**self.child_env, **(extra_env or {})}
            proc = subprocess.Popen(
                niced(args, nice),
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.children[name] = proc
            self._record(name, proc)
        return proc

    def servers(self) -> dict[str, subprocess.Popen[bytes] | None]:
        return {
            "postgres": self.postgres.proc if self.postgres else None,
            "temporal": self.temporal.proc if self.temporal else None,
            "moto": self.moto.proc if self.moto else None,
        }

    def pids(self) -> dict[str, int]:
        """Every process of the stack by name (postgres: the postmaster; its backends are its
        children), for whoever wants to measure them."""
        procs = {**self.servers(), **self.children}
        return {name: proc.pid for name, proc in procs.items() if proc is not None and proc.poll() is None}

    def stop(self) -> None:
        for name in ["api", *sorted(n for n in self.children if n != "api")]:
            if name in self.children:
                self.say(f"stopping {name}")
                stop_process(self.children[name], timeout=30)
        for name, server in (("moto", self.moto), ("Temporal", self.temporal), ("PostgreSQL", self.postgres)):
            if server is not None:
                self.say(f"stopping {name}")
                server.stop()
        self.book.clear()

    @staticmethod
    def _shown(path: Path) -> str:
        try:
            return str(path.relative_to(ROOT))
        except ValueError:
            return str(path)
