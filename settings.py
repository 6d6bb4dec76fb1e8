"""The one settings class, read by the API, the worker, the dev stack and the tests.

Every field can be set from the environment (upper-case name) or from `.data/stack.env`,
which `make run` writes so that a worker or script started alone reaches the same stack.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.egress import EgressPolicy

ROOT = Path(__file__).resolve().parent
DATA_DIR = ROOT / ".data"

# Defaults that exist so that a test or a script can build a Settings() at all; never secrets.
DEFAULT_ADMIN_TOKEN = "dev-admin-token"
DEFAULT_CHARGER_SECRET_KEY = "dev-charger-secret-key"
MIN_SECRET_LENGTH = 32


class InsecureSettings(RuntimeError):
    """Refuse to serve with a default or short secret (outside the dev stack)."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=str(DATA_DIR / "stack.env"), env_file_encoding="utf-8", extra="ignore"
    )

    # --- API ---
    api_url: str = "http://127.0.0.1:8000"
    # Several admin tokens may be valid at once (rotation): a comma-separated list.
    admin_token: str = Field(default=DEFAULT_ADMIN_TOKEN, min_length=8)
    max_locations_per_request: int = Field(default=10_000, ge=1)
    max_chargers_per_request: int = Field(
        default=50_000, ge=1, description="chargers in one bulk body, template chargers included"
    )
    # 10,000 locations with a few explicit chargers each is ~10 MB of JSON; the limit is checked
    # from Content-Length, or while a chunked body streams, before anything is parsed.
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    # Per-CPO fairness: one CPO cannot fill the queues for all (429 with Retry-After beyond).
    max_running_jobs_per_cpo: int = Field(default=20, ge=1)
    max_queued_locations_per_cpo: int = Field(
        default=50_000, ge=1, description="locations of a CPO's running jobs, the new request's included"
    )
    max_inflight_requests_per_cpo: int = Field(
        default=32, ge=1, description="requests of one CPO being served at once, per API process"
    )
    # `make run` and the tests say so; anywhere else a default or short secret stops the process.
    dev_stack: bool = False
    retry_after_seconds: int = 2
    sync_wait_seconds: float = Field(
        default=10.0, gt=0, description="PATCH/DELETE wait this long for their workflow, then 202"
    )
    # Every poll asks the same three things again (who is this token, which CPO, how far is the
    # job): each API process remembers the answers briefly (api/read_cache.py). 0 turns one off.
    auth_cache_seconds: float = Field(
        default=5.0, ge=0, le=60,
        description="a token (and its CPO) is looked up again after this long: the longest a "
        "revoke takes to reach the other API processes (the revoking process forgets at once)",
    )
    status_cache_seconds: float = Field(
        default=0.5, ge=0, le=10,
        description="a job's status page is fresh this long; up to 4x this old it is answered while "
        "it refreshes in the background (0: every poll reads the rows)",
    )
    status_cache_max_bytes: int = Field(
        default=64 * 1024 * 1024, ge=0,
        description="status pages kept per API process, by the length of their JSON (a 1,000-result "
        "page is ~1.4 MB); the least recently used go first",
    )

    # --- OCPI 2.2.1 (the CPOs' roaming partners) ---
    ocpi_page_limit: int = Field(default=100, ge=1, le=1000, description="X-Limit of the Locations list")
    ocpi_http_timeout_seconds: float = Field(
        default=10.0, gt=0,
        description="total deadline of one call to an eMSP (connect, send, every byte of the answer)")
    # Egress policy (contracts/egress.py): a peer-chosen URL is called only if its resolved
    # address is public, or listed here (CIDR networks, addresses or host names). Empty: secure.
    # The dev stack and the tests allow loopback. From the environment: a JSON list.
    egress_allow: list[str] = Field(default_factory=list)
    ocpi_max_response_bytes: int = Field(
        default=256 * 1024, ge=1024,
        description="an eMSP's answer, after decompression, is refused past this")
    ocpi_max_body_bytes: int = Field(
        default=16 * 1024, ge=1024, description="an OCPI request body (a credentials object is tiny)")
    ocpi_handshakes_per_cpo: int = Field(
        default=2, ge=1, description="credentials handshakes of one CPO running at once, per API process")
    ocpi_handshakes_per_process: int = Field(
        default=16, ge=1, description="credentials handshakes running at once in one API process")
    ocpi_token_a_ttl_seconds: float = Field(
        default=7 * 24 * 3600.0, gt=0, description="a token A not used within this long opens nothing")
    ocpi_max_emsps_per_cpo: int = Field(default=20, ge=1, description="eMSPs registered with one CPO")
    # Pushes to eMSPs run on a task queue of their own, so a slow or dead Receiver cannot take
    # the activity slots that provisioning needs.
    ocpi_push_task_queue: str = "ocpplab-gateway-ocpi-push"
    ocpi_push_max_concurrent: int = Field(default=20, ge=1, description="push attempts at once per worker")
    ocpi_push_per_emsp: int = Field(default=4, ge=1, description="push attempts at once per eMSP per worker")
    ocpi_push_attempt_timeout_seconds: float = Field(default=15.0, gt=0, description="one push attempt")
    ocpi_push_max_interval_seconds: float = Field(
        default=300.0, gt=0, description="longest wait between two attempts to push to an eMSP that is down"
    )

    # --- job completion callbacks (activities/job_callback.py) ---
    callback_allow_private: bool = Field(
        default=False, description="let a callback URL reach loopback, private, link-local and other "
        "non-public addresses (the dev stack and the tests allow it; nothing else should)")
    callback_timeout_seconds: float = Field(default=10.0, gt=0, description="one delivery attempt, in total")
    callback_max_bytes: int = Field(
        default=64 * 1024, ge=0, description="of a receiver's answer read (and dropped)")
    callback_max_interval_seconds: float = Field(
        default=300.0, gt=0, description="longest wait between two attempts to deliver a callback")
    callback_delivery_seconds: float = Field(
        default=6 * 3600.0, gt=0, description="how long a callback is retried before it is given up")

    # --- PostgreSQL ---
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5433/ocpplab"
    db_pool_size: int = 10
    db_pool_timeout_seconds: float = Field(default=10.0, gt=0)

    # --- Temporal ---
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_ui_url: str = "http://127.0.0.1:8233"
    temporal_api_key: str | None = None
    temporal_tls: bool = False
    task_queue: str = "ocpplab-gateway"
    ecs_task_queue: str = "ocpplab-gateway-ecs"
    # Server-side rate limit of the ECS task queue (RunTask calls per second for the whole
    # fleet of workers). 20 matches Fargate's RunTask throttle. None switches it off (moto, or an
    # account whose RunTask rate is not the bound): RunTask then runs as a local activity of the
    # child, one Temporal round trip fewer per charger (see workflows/provision_location.py).
    ecs_activities_per_second: float | None = None

    worker_shutdown_grace_seconds: float = 10.0
    # The job reconciler (a Temporal Schedule the worker creates): how often it runs, and how old
    # a PROVISIONING job (or how long closed its workflow) must be before it is repaired.
    reconcile_interval_seconds: float = Field(default=60.0, ge=1)
    reconcile_grace_seconds: float = Field(default=120.0, ge=0)
    # Recovery after a worker dies (README "Operators"): a workflow task waits this long on the
    # sticky queue of the worker that has the workflow cached before any worker may take it.
    sticky_schedule_to_start_seconds: float = Field(default=3.0, gt=0)
    # ...and a workflow task the dead worker had started is handed to another after this long.
    # A child's whole happy path is one workflow task (its rows and RunTasks are local activities;
    # the SDK heartbeats the task past 80% of this). It holds safely only while a worker process
    # takes few workflow tasks at once (worker_max_concurrent_workflow_tasks): with 50 a child's
    # task took up to 4 s under load and 3-5 s timeouts re-ran 20-159 of 750 (README "Recovery").
    workflow_task_timeout_seconds: float = Field(default=3.0, gt=0, le=60)
    # Worker Versioning (README "Deploy"): each worker polls as one version of a deployment.
    # Workflows stay on the version that started them (pinned); a job moves to the current
    # version at its continue-as-new boundaries. The release sets WORKER_BUILD_ID (its image tag
    # or commit); unset, it is derived from the workflow code (workflows/, contracts/).
    worker_versioning: bool = True
    worker_deployment_name: str = "ocpplab-gateway"
    worker_build_id: str | None = None
    # The dev stack (and a compose stack) makes its own build current when its workers start; a
    # production rollout leaves this off and sets the current version after the replay gate.
    worker_set_current_version: bool = False
    # Start-to-close of one activity attempt: an attempt lost with a dead worker is retried on
    # another after this long. Each step is one short transaction or one ECS call (seconds at
    # most; botocore retries a throttled call within it); the long wait for RUNNING has its own.
    activity_timeout_seconds: float = Field(default=15.0, gt=0)
    # Slots of one worker process (main task queue): workflow tasks, activities and local
    # activities it holds at once (None: the SDK's default, 100 local activities). Few workflow
    # tasks: each one's steps all go through the process's one event loop, so 50 at once made a
    # child's task wait seconds inside the worker (and time out); the backlog waits on the server
    # instead, where no timeout runs. Measured: 10 no slower than 50 (README "Recovery").
    worker_max_concurrent_workflow_tasks: int = Field(default=10, ge=2)
    worker_max_concurrent_activities: int = Field(default=50, ge=1)
    worker_max_concurrent_local_activities: int | None = Field(default=None, ge=1)

    # --- workflow shape ---
    child_window: int = Field(default=100, ge=1, le=1000)
    children_per_run: int = Field(
        default=1000, ge=1, description="children one BulkCreateLocations run starts before continue-as-new"
    )
    activity_max_attempts: int = Field(default=12, ge=1)
    activity_max_interval_seconds: float = 30.0
    task_running_timeout_seconds: float = Field(
        default=600.0, description="how long a charger task may stay PENDING before its location fails"
    )

    # --- AWS ECS ---
    aws_region: str = "eu-west-1"
    aws_endpoint_url: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    ecs_cluster: str = "ocpplab-chargers"
    ecs_task_definition: str = "ocpplab-charger"
    ecs_container_name: str = "charger"
    ecs_subnets: list[str] = Field(default_factory=list)
    ecs_security_groups: list[str] = Field(default_factory=list)
    ecs_assign_public_ip: bool = False
    # recorded on each deployment: production sets it to the image@sha256 reference that
    # deploy/ecs/charger.json pins; the dev stack's moto runs no image at all
    charger_image: str = "ghcr.io/ocpplab/charger-simulator:dev-stack"
    csms_url: str = "ws://127.0.0.1:9000/ocpp"
    # Charger basic-auth secrets are HMAC(charger_secret_key, deployment id): a retried activity
    # derives the same secret, and only its SHA-256 is stored.
    charger_secret_key: str = Field(default=DEFAULT_CHARGER_SECRET_KEY, min_length=16)
    # Each charger's secret is a Secrets Manager secret of this prefix + its deployment id; its
    # task gets only the ARN (CHARGER_SECRET_ARN) and reads the value with its task role.
    charger_secret_prefix: str = "ocpplab/chargers/"

    # --- operations: logs, metrics, traces, health (README "Operators") ---
    log_format: Literal["json", "text"] = Field(
        default="json", description="json: one object a line (production); text: for a terminal")
    log_level: str = "INFO"
    # The worker's Prometheus endpoint (the Temporal SDK's runtime serves it): off unless a port
    # is set; one port per worker process. 0.0.0.0 in a container so Prometheus can scrape it.
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int | None = Field(default=None, ge=0, le=65535)
    worker_health_file: str | None = None  # default: a file in the temp folder, per metrics port
    worker_health_interval_seconds: float = Field(default=10.0, gt=0)
    # The API serves /metrics on its own port; with a token set, scrapers must send it as Bearer.
    api_metrics_token: str | None = None
    # Where operators and scripts find the metrics (written by `make run` to .data/stack.env).
    api_metrics_url: str | None = None
    worker_metrics_url: str | None = None
    # Traces go over OTLP/HTTP to this endpoint; none are made unless it is set.
    otel_exporter_otlp_endpoint: str | None = None

    def egress_policy(self) -> EgressPolicy:
        return EgressPolicy.from_entries(self.egress_allow, self.ocpi_max_response_bytes,
                                         self.ocpi_http_timeout_seconds)

    def admin_tokens(self) -> list[str]:
        return [token.strip() for token in self.admin_token.split(",") if token.strip()]

    def check_secrets(self) -> None:
        """Raise unless every secret is set and long, or this is the dev stack."""
        if self.dev_stack:
            return
        problems = []
        tokens = self.admin_tokens()
        if not tokens or any(t == DEFAULT_ADMIN_TOKEN or len(t) < MIN_SECRET_LENGTH for t in tokens):
            problems.append(f"ADMIN_TOKEN (each token at least {MIN_SECRET_LENGTH} characters)")
        key = self.charger_secret_key
        if key == DEFAULT_CHARGER_SECRET_KEY or len(key) < MIN_SECRET_LENGTH:
            problems.append(f"CHARGER_SECRET_KEY (at least {MIN_SECRET_LENGTH} characters)")
        if problems:
            raise InsecureSettings(
                "refusing to start with a default or short secret: set " + " and ".join(problems)
                + " (for instance with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`),"
                " or DEV_STACK=true on a development stack"
            )


@lru_cache
def get_settings() -> Settings:
    return Settings()
