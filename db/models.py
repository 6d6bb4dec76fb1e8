"""The tables of the gateway, all in schema `ocpp`.

The ten tables of a location hang off `ocpi_locations` with ON DELETE CASCADE, so deleting a
location (decommission or compensation) is one statement. Keys are derived from the job and the
location's index (see `contracts.ids`), so every write is an upsert and retries never copy a row.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, ForeignKey, Identity, Index, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

SCHEMA = "ocpp"


def utcnow() -> datetime:
    return datetime.now(UTC)


def _ts(nullable: bool = False) -> Any:
    return Field(
        default_factory=utcnow if not nullable else None,
        sa_type=DateTime(timezone=True),  # type: ignore[call-overload]
        nullable=nullable,
    )


def _json(nullable: bool = True) -> Any:
    return Field(default=None, sa_type=JSONB, nullable=nullable)


def _fk(target: str, index: bool = True) -> Any:
    return Field(foreign_key=f"{SCHEMA}.{target}", ondelete="CASCADE", index=index, max_length=36)


def _cpo_fk(index: bool = False) -> Any:
    """The CPO (= network) a row belongs to; its rows go when it goes."""
    return Field(
        sa_type=BigInteger,  # type: ignore[call-overload]
        foreign_key=f"{SCHEMA}.partner_operations.id",
        ondelete="CASCADE",
        index=index,
    )


# --------------------------------------------------------------------------- outside the ten


class PartnerOperation(SQLModel, table=True):
    """A CPO; also its network (the `network_id` of every row below)."""

    __tablename__ = "partner_operations"
    __table_args__ = (
        UniqueConstraint("country_code", "party_id", name="uq_partner_operations_party"),
        {"schema": SCHEMA},
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, Identity(), primary_key=True))
    name: str = Field(max_length=255)
    country_code: str = Field(max_length=2)
    party_id: str = Field(max_length=3)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class ApiToken(SQLModel, table=True):
    """A CPO's bearer token, stored as its SHA-256 (it is random, so no slow hash is needed)."""

    __tablename__ = "api_tokens"
    __table_args__ = {"schema": SCHEMA}

    id: int | None = Field(default=None, sa_column=Column(BigInteger, Identity(), primary_key=True))
    cpo_id: int = _cpo_fk(index=True)
    token_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = _ts()
    # Several tokens of a CPO may be valid at once (rotation: issue the new one, move the
    # clients, revoke the old one); a revoked or expired token opens nothing.
    label: str | None = Field(default=None, max_length=100)
    expires_at: datetime | None = _ts(nullable=True)
    revoked_at: datetime | None = _ts(nullable=True)


class Job(SQLModel, table=True):
    """A bulk job. Its row keeps the outcome so status survives Temporal's retention."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("cpo_id", "idempotency_key", name="uq_jobs_idempotency_key"),
        Index("ix_jobs_cpo_created", "cpo_id", "created_at"),
        # the jobs list filtered by status, newest first (GET .../locations/jobs?status=)
        Index("ix_jobs_cpo_status_created", "cpo_id", "status", "created_at"),
        Index("ix_jobs_retry_of", "retry_of"),
        {"schema": SCHEMA},
    )

    id: str = Field(primary_key=True, max_length=64)
    cpo_id: int = _cpo_fk()
    job_type: str = Field(default="bulk_create_locations", max_length=64)
    status: str = Field(max_length=16)
    total: int
    succeeded: int = 0
    failed: int = 0
    error: dict[str, Any] | None = _json()
    workflow_run_id: str | None = Field(default=None, max_length=64)
    idempotency_key: str | None = Field(default=None, max_length=255)
    request_hash: str = Field(max_length=64)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    provisioned_at: datetime | None = _ts(nullable=True)
    # the job whose FAILED locations this job retries (POST .../jobs/{job_id}/retry)
    retry_of: str | None = Field(
        default=None, foreign_key=f"{SCHEMA}.jobs.id", ondelete="SET NULL", max_length=64
    )
    # where the completion callback goes; null: the CPO's webhook (if any) at the job's end
    callback_url: str | None = Field(default=None, max_length=2048)


class JobCallback(SQLModel, table=True):
    """The completion callback of one job: its event (the exact body, signed anew per attempt)
    and how delivering it went. Kept apart from `jobs` so its bookkeeping never moves the job's
    own `updated_at`."""

    __tablename__ = "job_callbacks"
    __table_args__ = {"schema": SCHEMA}

    job_id: str = Field(primary_key=True, foreign_key=f"{SCHEMA}.jobs.id", ondelete="CASCADE", max_length=64)
    event_id: str = Field(max_length=64)
    url: str = Field(max_length=2048)
    payload: str
    attempts: int = 0
    last_status: str | None = Field(default=None, max_length=100)
    last_attempt_at: datetime | None = _ts(nullable=True)
    delivered_at: datetime | None = _ts(nullable=True)
    created_at: datetime = _ts()


class CpoWebhook(SQLModel, table=True):
    """A CPO's default completion callback and the secret that signs every callback of its jobs.

    The secret is kept as issued (it must sign, so a hash would not do), as `ocpi_partners`
    keeps the token we present to an eMSP; it is shown once, and a new PUT replaces it."""

    __tablename__ = "cpo_webhooks"
    __table_args__ = {"schema": SCHEMA}

    cpo_id: int = Field(
        sa_column=Column(
            BigInteger, ForeignKey(f"{SCHEMA}.partner_operations.id", ondelete="CASCADE"), primary_key=True
        )
    )
    url: str = Field(max_length=2048)
    secret: str = Field(max_length=100)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class JobLocation(SQLModel, table=True):
    """One location of a job: its normalized input and, once known, its outcome."""

    __tablename__ = "job_locations"
    __table_args__ = (
        Index("ix_job_locations_job_state", "job_id", "state"),
        {"schema": SCHEMA},
    )

    job_id: str = Field(primary_key=True, foreign_key=f"{SCHEMA}.jobs.id", ondelete="CASCADE", max_length=64)
    index: int = Field(primary_key=True)
    input: dict[str, Any] = _json(nullable=False)
    state: str = Field(default="PENDING", max_length=16)
    location_id: str | None = Field(default=None, max_length=36)
    charger_ids: list[str] | None = _json()
    error: dict[str, Any] | None = _json()
    updated_at: datetime = _ts()
    # in a retry job: the location's index in the request that first carried it (the root of the
    # retry chain), so a client maps each result back to its own input; null in a first job
    origin_index: int | None = None


# --------------------------------------------------------------------------- OCPI (1-3)


class OcpiLocation(SQLModel, table=True):
    __tablename__ = "ocpi_locations"
    __table_args__ = (
        UniqueConstraint("job_id", "job_index", name="uq_ocpi_locations_job_index"),
        Index("ix_ocpi_locations_network_created", "network_id", "created_at", "id"),
        Index("ix_ocpi_locations_network_updated", "network_id", "last_updated", "id"),
        {"schema": SCHEMA},
    )

    id: str = Field(primary_key=True, max_length=36)
    network_id: int = _cpo_fk()
    country_code: str = Field(max_length=2)
    party_id: str = Field(max_length=3)
    publish: bool = True
    name: str = Field(max_length=255)
    address: str = Field(max_length=45)
    city: str = Field(max_length=45)
    postal_code: str | None = Field(default=None, max_length=10)
    state: str | None = Field(default=None, max_length=20)
    country: str = Field(max_length=3)
    latitude: str = Field(max_length=10)
    longitude: str = Field(max_length=11)
    time_zone: str = Field(max_length=255)
    parking_type: str | None = Field(default=None, max_length=32)
    facilities: list[str] | None = _json()
    owner_name: str | None = Field(default=None, max_length=255)
    # opening_times.twentyfourseven when the CPO said so; None: we say nothing about hours
    twentyfourseven: bool | None = None
    status: str = Field(default="PROVISIONING", max_length=16)
    job_id: str | None = Field(default=None, max_length=64)
    job_index: int | None = None
    # Bumped by every change an eMSP can see, in the same transaction as `last_updated` (the
    # commit's time, see db/ocpi_clock.py): what a push compares, never a host's clock.
    version: int = Field(default=1, sa_type=BigInteger, sa_column_kwargs={"server_default": "1"})  # type: ignore[call-overload]
    last_updated: datetime = _ts()
    created_at: datetime = _ts()


class OcpiEvse(SQLModel, table=True):
    __tablename__ = "ocpi_evses"
    __table_args__ = {"schema": SCHEMA}

    uid: str = Field(primary_key=True, max_length=36)
    location_id: str = _fk("ocpi_locations.id")
    evse_id: str | None = Field(default=None, max_length=48)
    status: str = Field(default="PLANNED", max_length=16)
    capabilities: list[str] | None = _json()  # what the charger declared; None: none
    last_updated: datetime = _ts()


class OcpiConnector(SQLModel, table=True):
    __tablename__ = "ocpi_connectors"
    __table_args__ = {"schema": SCHEMA}

    evse_uid: str = Field(
        primary_key=True, foreign_key=f"{SCHEMA}.ocpi_evses.uid", ondelete="CASCADE", max_length=36
    )
    id: str = Field(primary_key=True, max_length=36)
    standard: str = Field(max_length=32)
    format: str = Field(max_length=8)
    power_type: str = Field(max_length=16)
    max_voltage: int
    max_amperage: int
    max_electric_power: int | None = None
    last_updated: datetime = _ts()


# --------------------------------------------------------------------------- OCPP (4-7)


class OcppLocation(SQLModel, table=True):
    __tablename__ = "locations"
    __table_args__ = (
        UniqueConstraint("network_id", "slug", name="uq_locations_network_slug"),
        {"schema": SCHEMA},
    )

    id: str = Field(primary_key=True, max_length=36)
    ocpi_location_id: str = Field(
        foreign_key=f"{SCHEMA}.ocpi_locations.id", ondelete="CASCADE", unique=True, max_length=36
    )
    network_id: int = _cpo_fk()
    slug: str = Field(max_length=80)
    name: str = Field(max_length=255)
    timezone: str = Field(max_length=64)
    owner_name: str | None = Field(default=None, max_length=255)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class ChargePoint(SQLModel, table=True):
    __tablename__ = "charge_points"
    __table_args__ = (
        UniqueConstraint("network_id", "identity", name="uq_charge_points_network_identity"),
        {"schema": SCHEMA},
    )

    id: str = Field(primary_key=True, max_length=36)
    location_id: str = _fk("locations.id")
    network_id: int = _cpo_fk()
    position: int
    identity: str = Field(max_length=48)
    vendor: str = Field(max_length=20)
    model: str = Field(max_length=20)
    ocpp_version: str = Field(max_length=16)
    connector_type: str = Field(max_length=16)
    max_power_kw: float
    csms_url: str = Field(max_length=255)
    created_at: datetime = _ts()


class ChargePointConnector(SQLModel, table=True):
    __tablename__ = "charge_point_connectors"
    __table_args__ = {"schema": SCHEMA}

    charge_point_id: str = Field(
        primary_key=True, foreign_key=f"{SCHEMA}.charge_points.id", ondelete="CASCADE", max_length=36
    )
    connector_id: int = Field(primary_key=True, description="OCPP connectorId, 1-based")
    connector_type: str = Field(max_length=16)
    max_power_kw: float
    status: str = Field(default="Unavailable", max_length=16)


class ChargePointCredential(SQLModel, table=True):
    """Basic-auth secret of a charger (security profile 1/2), stored as its SHA-256."""

    __tablename__ = "charge_point_credentials"
    __table_args__ = {"schema": SCHEMA}

    charge_point_id: str = Field(
        primary_key=True, foreign_key=f"{SCHEMA}.charge_points.id", ondelete="CASCADE", max_length=36
    )
    username: str = Field(max_length=48)
    secret_hash: str = Field(max_length=64)
    security_profile: int = 1
    created_at: datetime = _ts()


# --------------------------------------------------------------------------- topology (8)


class NetworkTopology(SQLModel, table=True):
    """Routing: network ↔ OCPI location ↔ OCPP location ↔ charger connector ↔ OCPI EVSE."""

    __tablename__ = "network_topology"
    __table_args__ = (
        UniqueConstraint("charge_point_id", "connector_id", name="uq_topology_cp_connector"),
        {"schema": SCHEMA},
    )

    id: str = Field(primary_key=True, max_length=36)
    network_id: int = _cpo_fk(index=True)
    ocpi_location_id: str = _fk("ocpi_locations.id")
    ocpp_location_id: str = _fk("locations.id")
    charge_point_id: str = _fk("charge_points.id", index=False)
    connector_id: int
    evse_uid: str = Field(
        foreign_key=f"{SCHEMA}.ocpi_evses.uid", ondelete="CASCADE", unique=True, max_length=36
    )
    ocpi_connector_id: str = Field(max_length=36)


# --------------------------------------------------------------------------- deployment + ECS (9-10)


class ChargerDeployment(SQLModel, table=True):
    __tablename__ = "charger_deployments"
    __table_args__ = {"schema": SCHEMA}

    id: str = Field(primary_key=True, max_length=36)
    charge_point_id: str = Field(
        foreign_key=f"{SCHEMA}.charge_points.id", ondelete="CASCADE", unique=True, max_length=36
    )
    ocpi_location_id: str = _fk("ocpi_locations.id")
    image: str = Field(max_length=255)
    desired_config: dict[str, Any] = _json(nullable=False)
    state: str = Field(default="PENDING", max_length=16)
    last_error: str | None = None
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class EcsTask(SQLModel, table=True):
    __tablename__ = "ecs_tasks"
    __table_args__ = {"schema": SCHEMA}

    task_arn: str = Field(primary_key=True, max_length=255)
    deployment_id: str = Field(
        foreign_key=f"{SCHEMA}.charger_deployments.id",
        ondelete="CASCADE",
        unique=True,
        max_length=36,
    )
    cluster: str = Field(max_length=255)
    task_definition_arn: str = Field(max_length=255)
    last_status: str = Field(max_length=32)
    desired_status: str = Field(max_length=32)
    started_at: datetime | None = _ts(nullable=True)
    stopped_at: datetime | None = _ts(nullable=True)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


# --------------------------------------------------------------------------- OCPI parties (outside the ten)


class OcpiTokenA(SQLModel, table=True):
    """A CPO's OCPI token A: handed to one eMSP out of band, good for one registration only.

    Stored as its SHA-256 (we only ever verify it); `used_at` is set by the registration that
    spends it, after which it opens nothing (OCPI 2.2.1 credentials module)."""

    __tablename__ = "ocpi_token_a"
    __table_args__ = {"schema": SCHEMA}

    id: int | None = Field(default=None, sa_column=Column(BigInteger, Identity(), primary_key=True))
    cpo_id: int = _cpo_fk(index=True)
    token_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = _ts()
    used_at: datetime | None = _ts(nullable=True)
    # past this it opens nothing (`ocpi_token_a_ttl_seconds`); the admin may revoke it sooner
    expires_at: datetime | None = _ts(nullable=True)
    revoked_at: datetime | None = _ts(nullable=True)


class OcpiPartner(SQLModel, table=True):
    """An eMSP registered with one CPO through the OCPI credentials handshake (either way round).

    `token_hash` is the SHA-256 of the token the eMSP presents to us (we only verify it);
    `their_token` is the token we present to the eMSP, kept as given because we must send it;
    `endpoints` is the eMSP's 2.2.1 version details (module/role -> URL)."""

    __tablename__ = "ocpi_partners"
    __table_args__ = (
        UniqueConstraint("cpo_id", "country_code", "party_id", name="uq_ocpi_partners_party"),
        {"schema": SCHEMA},
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, Identity(), primary_key=True))
    cpo_id: int = _cpo_fk(index=True)
    # null only while we register with an eMSP and do not know its party yet
    country_code: str | None = Field(default=None, max_length=2)
    party_id: str | None = Field(default=None, max_length=3)
    role: str = Field(default="EMSP", max_length=8)
    name: str | None = Field(default=None, max_length=100)
    roles: list[dict[str, Any]] | None = _json()
    versions_url: str = Field(max_length=255)
    version: str = Field(default="2.2.1", max_length=8)
    endpoints: list[dict[str, Any]] | None = _json()
    token_hash: str | None = Field(default=None, max_length=64, unique=True)
    # our next token while we rotate it at the eMSP (it may call us back with it meanwhile)
    pending_token_hash: str | None = Field(default=None, max_length=64, index=True)
    their_token: str | None = Field(default=None, max_length=255)
    # REGISTERING (only while we register with it, briefly) | REGISTERED | SUSPENDED | UNREGISTERED
    status: str = Field(default="REGISTERED", max_length=16)
    # who started the handshake: "EMSP" (with our token A) or "CPO" (we POSTed to it)
    registered_by: str = Field(default="EMSP", max_length=8)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class OcpiDelivery(SQLModel, table=True):
    """What one eMSP was last sent of one location, as sent: the next push is the difference
    between this and what the Sender serves now (a PATCH of the changed fields, or a PUT)."""

    __tablename__ = "ocpi_deliveries"
    __table_args__ = {"schema": SCHEMA}

    partner_id: int = Field(
        sa_type=BigInteger,
        primary_key=True,  # type: ignore[call-overload]
        foreign_key=f"{SCHEMA}.ocpi_partners.id",
        ondelete="CASCADE",
    )
    location_id: str = Field(
        primary_key=True,
        foreign_key=f"{SCHEMA}.ocpi_locations.id",
        ondelete="CASCADE",
        index=True,
        max_length=36,
    )
    version: int = Field(sa_type=BigInteger)  # type: ignore[call-overload]
    object: dict[str, Any] = _json(nullable=False)
    method: str = Field(max_length=8)
    # a push was sent after this one and its outcome is unknown (its worker died, or the eMSP's
    # answer was lost): the eMSP may hold that object instead, so the next push is a PUT
    in_doubt: bool = Field(default=False, sa_column_kwargs={"server_default": "false"})
    delivered_at: datetime = _ts()
