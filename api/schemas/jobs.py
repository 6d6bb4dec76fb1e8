"""The bulk-create job: its request, the 202, the dry run, the status, the jobs list."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.fields import CallbackUrl
from api.schemas.locations import LocationIn
from contracts.vocabulary import JobStatus


class BulkCreateRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "locations": [
                    {
                        "name": "Brussels Midi Hub",
                        "address": "Place Victor Horta 1",
                        "city": "Brussels",
                        "country": "BE",
                        "coordinates": {"latitude": 50.8357, "longitude": 4.3353},
                        "public": True,
                    }
                ]
            }
        }
    )

    locations: list[LocationIn] = Field(min_length=1)
    callback_url: CallbackUrl | None = Field(
        default=None,
        description="where this job's completion callback goes (instead of the CPO's "
        "webhook URL); signed with the CPO's webhook secret, so the CPO must have one (PUT …/webhook)",
    )


class BulkCreateAccepted(BaseModel):
    job_id: str
    status: JobStatus
    status_url: str
    workflow_run_id: str | None
    retry_of: str | None = Field(default=None, description="the job this one retries, if any")


class DryRunProblem(BaseModel):
    index: int | None = Field(description="the location's index in `locations`; null for the body")
    field: str = Field(description="e.g. `locations[3].address`")
    code: str = Field(description="stable: the validator's type, or duplicate_identity, identity_taken…")
    message: str


class DryRunResult(BaseModel):
    """`valid: false` with every problem at once, or `valid: true` with what the POST would do."""

    valid: bool
    problems: list[DryRunProblem] = Field(default_factory=list)
    locations: int | None = None
    chargers: int | None = None
    timezones_derived: int | None = Field(
        default=None, description="locations without a `timezone`, which is derived from coordinates"
    )
    timezones: dict[str, int] | None = Field(default=None, description="time zone -> locations")
    templates_used: dict[str, int] | None = Field(default=None, description="template slug -> locations")


class JobSummary(BaseModel):
    job_id: str
    status: JobStatus
    progress: JobProgressOut
    created_at: datetime
    ended_at: datetime | None = Field(description="when the job ended (READY: provisioned_at)")
    idempotency_key: str | None
    retry_of: str | None
    retries: list[str] = Field(description="ids of the jobs that retried this one, oldest first")


class JobPage(BaseModel):
    data: list[JobSummary]
    total: int
    page: int
    limit: int


class CallbackStatus(BaseModel):
    url: str
    event_id: str
    attempts: int
    last_status: str | None = Field(description="HTTP status of the last attempt, or why it failed")
    last_attempt_at: datetime | None
    delivered_at: datetime | None


class JobError(BaseModel):
    code: str
    message: str
    retryable: bool


class JobProgressOut(BaseModel):
    total: int
    succeeded: int
    failed: int
    in_progress: int


class JobLocationResult(BaseModel):
    index: int
    origin_index: int = Field(
        description="the location's index in the request that first carried "
        "it (a retry job's locations keep their original index here)"
    )
    name: str | None
    status: str
    location_id: str | None
    charger_ids: list[str]
    error: JobError | None


class JobResults(BaseModel):
    """One page of the job's locations (by index): a 10,000-location job answers in pages."""

    location_ids: list[str] = Field(description="ids of this page's READY locations")
    locations: list[JobLocationResult]
    page: int = Field(description="one-based page of results (`?page=`)")
    limit: int = Field(description="locations per page (`?limit=`)")
    total: int = Field(description="locations in the job")


class JobStatusOut(BaseModel):
    job_id: str
    job_type: str
    status: JobStatus
    workflow_run_id: str | None
    error: JobError | None
    progress: JobProgressOut
    results: JobResults | None = Field(
        description="null while the job runs; once it ends, one page of its locations"
    )
    provisioned_at: datetime | None
    created_at: datetime
    updated_at: datetime
    idempotency_key: str | None = None
    retry_of: str | None = Field(default=None, description="the job this one retries")
    retries: list[str] = Field(default_factory=list, description="the jobs that retried this one")
    callback: CallbackStatus | None = Field(
        default=None, description="the completion callback, once the job has ended and one is due"
    )
