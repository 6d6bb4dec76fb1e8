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
    api_url: str = Field(
        default="http://127.0.0.1:8000",
        description="the public base URL of the API: the OCPI versions and endpoint URLs given to eMSPs "
        "are built from it",
    )
    admin_token: str = Field(
        default=DEFAULT_ADMIN_TOKEN,
        min_length=8,
        description="the admin bearer token; several comma-separated tokens may be valid at once, so one "
        "can be rotated without downtime",
    )
    max_locations_per_request: int = Field(
        default=10_000, ge=1, description="locations in one bulk body (more: 413, with the limit in the body)"
    )
    max_chargers_per_request: int = Field(
        default=50_000, ge=1, description="chargers in one bulk body, template chargers included"
    )
    # checked from Content-Length, or while a chunked body streams, before anything is parsed
    max_body_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        description="a bulk body's size (413 beyond); a 10,000-location body with a few explicit chargers "
        "each fits",
    )
    # Per-CPO fairness: one CPO cannot fill the queues for all (429 with Retry-After beyond).
    max_running_jobs_per_cpo: int = Field(default=20, ge=1, description="running jobs of one CPO")
    max_queued_locations_per_cpo: int = Field(
        default=50_000, ge=1, description="locations of a CPO's running jobs, the new request's included"
    )
    max_inflight_requests_per_cpo: int = Field(
        default=32, ge=1, description="requests of one CPO being served at once, per API process"
    )
    dev_stack: bool = Field(
        default=False,
        description="a development stack (`make run`, the tests): default and short secrets are accepted; "
        "anywhere else they stop the process",
    )
    retry_after_seconds: int = Field(
        default=2,
        description="the Retry-After of a 202 (poll its status this often) and of a 409 on a running job",
    )
    job_start_wait_seconds: float = Field(
        default=0.02,
        ge=0,
        description="a bulk POST waits this long for its workflow's start in Temporal; a start "
        "that takes longer goes on after the 202 (its workflow_run_id then null), the job being "
        "already durable in PostgreSQL",
    )
    sync_wait_seconds: float = Field(
        default=10.0, gt=0, description="PATCH/DELETE wait this long for their workflow, then 202"
    )
    # Every poll asks the same three things again (who is this token, which CPO, how far is the
    # job): each API process remembers the answers briefly (api/read_cache.py). 0 turns one off.
    auth_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        le=60,
        description="a token (and its CPO) is looked up again after this long: the longest a "
        "revoke takes to reach the other API processes (the revoking process forgets at once)",
    )
    status_cache_seconds: float = Field(
        default=0.5,
        ge=0,
        le=10,
        description="a job's status page is fresh this long; up to 4x this old it is answered while "
        "it refreshes in the background (0: every poll reads the rows)",
    )
    status_cache_max_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=0,
        description="status pages kept per API process, by the length of their JSON; the least recently "
        "used go first",
    )

    # --- OCPI 2.2.1 (the CPOs' roaming partners) ---
    ocpi_page_limit: int = Field(default=100, ge=1, le=1000, description="X-Limit of the Locations list")
    ocpi_http_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="total deadline of one call to an eMSP (connect, send, every byte of the answer)",
    )
    # Egress policy (contracts/egress.py). Empty: secure. The dev stack and the tests allow loopback.
    egress_allow: list[str] = Field(
        default_factory=list,
        description="a peer-chosen URL is called only if its resolved address is public, or listed here: "
        "CIDR networks, addresses or host names, as a JSON list",
    )
    ocpi_max_response_bytes: int = Field(
        default=256 * 1024, ge=1024, description="an eMSP's answer, after decompression, is refused past this"
    )
    ocpi_max_body_bytes: int = Field(
        default=16 * 1024, ge=1024, description="an OCPI request body (a credentials object is tiny)"
    )
    ocpi_handshakes_per_cpo: int = Field(
        default=2, ge=1, description="credentials handshakes of one CPO running at once, per API process"
    )
    ocpi_handshakes_per_process: int = Field(
        default=16, ge=1, description="credentials handshakes running at once in one API process"
    )
    ocpi_token_a_ttl_seconds: float = Field(
        default=7 * 24 * 3600.0, gt=0, description="a token A not used within this long opens nothing"
    )
    ocpi_max_emsps_per_cpo: int = Field(default=20, ge=1, description="eMSPs registered with one CPO")
    # Pushes to eMSPs run on a task queue of their own, so a slow or dead Receiver cannot take
    # the activity slots that provisioning needs.
    ocpi_push_task_queue: str = Field(
        default="ocpplab-gateway-ocpi-push", description="the task queue of the pushes to eMSPs"
    )
    ocpi_push_max_concurrent: int = Field(default=20, ge=1, description="push attempts at once per worker")
    ocpi_push_per_emsp: int = Field(default=4, ge=1, description="push attempts at once per eMSP per worker")
    ocpi_push_attempt_timeout_seconds: float = Field(default=15.0, gt=0, description="one push attempt")
    ocpi_push_max_interval_seconds: float = Field(
        default=300.0, gt=0, description="longest wait between two attempts to push to an eMSP that is down"
    )

    # --- job completion callbacks (activities/job_callback.py) ---
    callback_allow_private: bool = Field(
        default=False,
        description="let a callback URL reach loopback, private, link-local and other "
        "non-public addresses (the dev stack and the tests allow it; nothing else should)",
    )
    callback_timeout_seconds: float = Field(default=10.0, gt=0, description="one delivery attempt, in total")
    callback_max_bytes: int = Field(
        default=64 * 1024, ge=0, description="of a receiver's answer read (and dropped)"
    )
    callback_max_interval_seconds: float = Field(
        default=300.0, gt=0, description="longest wait between two attempts to deliver a callback"
    )
    callback_delivery_seconds: float = Field(
        default=6 * 3600.0, gt=0, description="how long a callback is retried before it is given up"
    )

    # --- PostgreSQL ---
    database_url: str = Field(
        default="postgresql+psycopg://postgres@127.0.0.1:5433/ocpplab",
        description="SQLAlchemy URL of the database (driver `postgresql+psycopg`)",
    )
    db_pool_size: int = Field(default=10, description="connections kept per process")
    db_pool_timeout_seconds: float = Field(
        default=10.0, gt=0, description="how long a session waits for a pooled connection"
    )

    # --- Temporal (contracts/temporal.py): the standard TEMPORAL_* variables of the Temporal SDKs
    # and CLI. A setting given here (environment, .data/stack.env, arguments) wins over the
    # profile file; what no one gives falls back to the profile, then to these defaults. ---
    temporal_address: str = Field(default="127.0.0.1:7233", description="host:port of the Temporal frontend")
    temporal_namespace: str = Field(default="default", description="the Temporal namespace")
    temporal_ui_url: str = Field(
        default="http://127.0.0.1:8233", description="the Temporal Web UI, for links shown to operators"
    )
    temporal_api_key: str | None = Field(
        default=None, description="API key (Temporal Cloud); turns TLS on unless TEMPORAL_TLS=false"
    )
    temporal_tls: bool | None = Field(
        default=None,
        description="TLS to the frontend: true or false; unset, on when an API key or a TLS setting is given",
    )
    temporal_tls_client_cert_path: str | None = Field(
        default=None, description="mTLS: the client certificate (PEM file)"
    )
    temporal_tls_client_key_path: str | None = Field(
        default=None, description="mTLS: the client certificate's private key (PEM file)"
    )
    temporal_tls_server_ca_cert_path: str | None = Field(
        default=None,
        description="the CA that signed the server's certificate, when not a public one (PEM file)",
    )
    temporal_tls_server_name: str | None = Field(
        default=None, description="the server name (SNI) to expect, when it is not the address's host"
    )
    temporal_profile: str | None = Field(
        default=None, description="the profile of the Temporal configuration file to use (default: `default`)"
    )
    temporal_config_file: str | None = Field(
        default=None,
        description="the Temporal configuration file (TOML, with profiles); default: the SDK's "
        "(`~/.config/temporalio/temporal.toml`)",
    )
    task_queue: str = Field(default="ocpplab-gateway", description="the main task queue")
    ecs_task_queue: str = Field(
        default="ocpplab-gateway-ecs", description="the task queue of the rate-limited ECS activities"
    )
    # With no rate limit (moto, or an account whose RunTask rate is not the bound), RunTask runs as
    # a local activity of the child: one Temporal round trip fewer per charger
    # (see workflows/provision_location.py).
    ecs_activities_per_second: float | None = Field(
        default=None,
        description="server-side rate limit of the ECS task queue: RunTask calls per second for the whole "
        "fleet of workers (20 matches Fargate's RunTask throttle); unset: none",
    )

    gc_gen0_threshold: int = Field(
        default=20_000,
        ge=100,
        le=1_000_000,
        description="allocations between two young-generation collections in the API and the "
        "worker (CPython's default is 700; contracts/heap.py says why ours is higher)",
    )
    workflow_sandbox: bool = Field(
        default=True,
        description="run workflow code in the Temporal SDK's sandbox (its determinism checks); "
        "false only to measure what the sandbox costs",
    )
    worker_shutdown_grace_seconds: float = Field(
        default=10.0, description="on SIGTERM, running activities get this long to finish"
    )
    # The job reconciler is a Temporal Schedule the worker creates.
    reconcile_interval_seconds: float = Field(
        default=60.0, ge=1, description="how often the job reconciler runs"
    )
    reconcile_grace_seconds: float = Field(
        default=120.0,
        ge=0,
        description="how old a PROVISIONING job (or how long closed its workflow) must be before the "
        "reconciler repairs it",
    )
    # Recovery after a worker dies (docs/operations.md, "Recovery").
    sticky_schedule_to_start_seconds: float = Field(
        default=3.0,
        gt=0,
        description="a workflow task waits this long on the sticky queue of the worker that has the "
        "workflow cached before any worker may take it",
    )
    # A child's whole happy path is one workflow task (its rows and RunTasks are local activities;
    # the SDK heartbeats the task past 80% of this). A short timeout holds only while a worker
    # process takes few workflow tasks at once (worker_max_concurrent_workflow_tasks).
    workflow_task_timeout_seconds: float = Field(
        default=3.0,
        gt=0,
        le=60,
        description="a workflow task a dead worker had started is handed to another after this long",
    )
    # Worker Versioning (docs/deploy.md): workflows stay on the version that started them
    # (pinned); a job moves to the current version at its continue-as-new boundaries.
    worker_versioning: bool = Field(
        default=True, description="workers poll as a version of a worker deployment (false: unversioned)"
    )
    worker_deployment_name: str = Field(default="ocpplab-gateway", description="the worker deployment's name")
    worker_build_id: str | None = Field(
        default=None,
        description="this release's build id (its image tag or commit); unset, derived from the workflow "
        "code (workflows/, contracts/)",
    )
    # A production rollout leaves this off and sets the current version after the replay gate.
    worker_set_current_version: bool = Field(
        default=False,
        description="a worker makes its own build the deployment's current version as it starts (the dev "
        "stack and the compose stack)",
    )
    # Each step is one short transaction or one ECS call (botocore retries a throttled call within
    # it); the long wait for RUNNING has its own timeout.
    activity_timeout_seconds: float = Field(
        default=15.0,
        gt=0,
        description="start-to-close of one activity attempt: an attempt lost with a dead worker is "
        "retried on another after this long",
    )
    # Few workflow tasks per process: each one's steps all go through the process's one event
    # loop, so many at once make a child's task wait inside the worker (and time out); the backlog
    # waits on the server instead, where no timeout runs.
    worker_max_concurrent_workflow_tasks: int = Field(
        default=10, ge=2, description="workflow tasks one worker process holds at once (main task queue)"
    )
    worker_max_concurrent_activities: int = Field(
        default=50, ge=1, description="activities one worker process runs at once (main task queue)"
    )
    worker_max_concurrent_local_activities: int | None = Field(
        default=None,
        ge=1,
        description="local activities one worker process runs at once (unset: the SDK's default)",
    )

    # --- workflow shape ---
    child_window: int = Field(
        default=100, ge=1, le=1000, description="ProvisionLocation children of a job in flight at once"
    )
    children_per_run: int = Field(
        default=1000, ge=1, description="children one BulkCreateLocations run starts before continue-as-new"
    )
    activity_max_attempts: int = Field(
        default=12, ge=1, description="attempts of an activity before its location fails"
    )
    activity_max_interval_seconds: float = Field(
        default=30.0, description="longest backoff between two attempts of an activity"
    )
    task_running_timeout_seconds: float = Field(
        default=600.0, description="how long a charger task may stay PENDING before its location fails"
    )

    # --- AWS ECS ---
    aws_region: str = Field(default="eu-west-1", description="the AWS region of ECS and Secrets Manager")
    aws_endpoint_url: str | None = Field(
        default=None, description="an AWS endpoint other than AWS's (the dev stack's moto)"
    )
    aws_access_key_id: str | None = Field(
        default=None, description="AWS credentials; unset: the normal AWS credential chain"
    )
    aws_secret_access_key: str | None = Field(
        default=None, description="AWS credentials; unset: the normal AWS credential chain"
    )
    ecs_cluster: str = Field(default="ocpplab-chargers", description="the ECS cluster of the charger tasks")
    ecs_task_definition: str = Field(default="ocpplab-charger", description="the charger's task definition")
    ecs_container_name: str = Field(default="charger", description="the charger's container in it")
    ecs_subnets: list[str] = Field(
        default_factory=list, description="subnets of the charger tasks (awsvpc), a JSON list"
    )
    ecs_security_groups: list[str] = Field(
        default_factory=list, description="security groups of the charger tasks, a JSON list"
    )
    ecs_assign_public_ip: bool = Field(default=False, description="give each charger task a public IP")
    # The dev stack's moto runs no image at all.
    charger_image: str = Field(
        default="ghcr.io/ocpplab/charger-simulator:dev-stack",
        description="recorded on each deployment: production sets the image@sha256 reference that "
        "deploy/ecs/charger.json pins",
    )
    csms_url: str = Field(default="ws://127.0.0.1:9000/ocpp", description="the CSMS a charger connects to")
    # A retried activity derives the same secret, and only its SHA-256 is stored.
    charger_secret_key: str = Field(
        default=DEFAULT_CHARGER_SECRET_KEY,
        min_length=16,
        description="charger basic-auth secrets are HMAC(this key, deployment id)",
    )
    charger_secret_prefix: str = Field(
        default="ocpplab/chargers/",
        description="each charger's secret is a Secrets Manager secret of this prefix + its deployment id; "
        "its task gets only the ARN (CHARGER_SECRET_ARN) and reads the value with its task role",
    )

    # --- operations: logs, metrics, traces, health (docs/operations.md) ---
    log_format: Literal["json", "text"] = Field(
        default="json", description="json: one object a line (production); text: for a terminal"
    )
    log_level: str = Field(default="INFO", description="the root log level")
    # The worker's Prometheus endpoint is served by the Temporal SDK's runtime.
    worker_metrics_host: str = Field(
        default="127.0.0.1",
        description="the worker's Prometheus endpoint's address (0.0.0.0 in a container, for the scraper)",
    )
    worker_metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="the worker's Prometheus endpoint's port, one per worker process; unset: off",
    )
    worker_health_file: str | None = Field(
        default=None,
        description="the worker's heartbeat file (`python -m worker.health`); unset: a file in the temp "
        "folder, per metrics port",
    )
    worker_health_interval_seconds: float = Field(
        default=10.0, gt=0, description="how often the worker touches its heartbeat file"
    )
    api_metrics_token: str | None = Field(
        default=None, description="with a token set, scrapers of the API's /metrics must send it as Bearer"
    )
    # Written by `make run` to .data/stack.env.
    api_metrics_url: str | None = Field(
        default=None, description="where operators and scripts find the API's metrics"
    )
    worker_metrics_url: str | None = Field(
        default=None, description="where operators and scripts find the first worker's metrics"
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None, description="traces go over OTLP/HTTP to this endpoint; none are made unless it is set"
    )

    def egress_policy(self) -> EgressPolicy:
        return EgressPolicy.from_entries(
            self.egress_allow, self.ocpi_max_response_bytes, self.ocpi_http_timeout_seconds
        )

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
                "refusing to start with a default or short secret: set "
                + " and ".join(problems)
                + " (for instance with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`),"
                " or DEV_STACK=true on a development stack"
            )


@lru_cache
def get_settings() -> Settings:
    return Settings()
