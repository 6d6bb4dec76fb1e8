"""A job's completion callback: one signed POST to the CPO's receiver, and its bookkeeping.

The event (`job_callbacks.payload`) is built once from the job's final row and sent byte for byte
the same on every attempt, with the same `Ocpplab-Event-Id`, so a receiver dedupes redeliveries;
each attempt is signed anew (`Ocpplab-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret,
"<t>.<body>")>`, Stripe's scheme) with the CPO's webhook secret. Temporal retries a failed
attempt with backoff for a bounded time (workflows/job_callback.py); each attempt is recorded.

The HTTP call is `post_callback`, through the same egress policy as the OCPI peers
(contracts/egress.py): the address checked when connecting (DNS rebinding cannot steer it), no
redirects, a total deadline, a cap on what is read, only http/https, non-public addresses
refused unless `callback_allow_private` or `egress_allow` lists them, and errors that never echo
the receiver's answer. No database connection is held across it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col
from temporalio import activity
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError

from contracts import activities as interfaces
from contracts.egress import EgressPolicy, PeerUnusable, peer_request, resolve
from contracts.ids import callback_event_id, callback_workflow_id
from contracts.payloads import CallbackInput
from contracts.vocabulary import JobStatus
from db.models import CpoWebhook, Job, JobCallback, utcnow
from settings import Settings

CALLBACK_WORKFLOW = "JobCompletionCallback"  # workflows.job_callback.JobCompletionCallback
EVENT_TYPE = "job.completed"
SIGNATURE_HEADER = "Ocpplab-Signature"
EVENT_ID_HEADER = "Ocpplab-Event-Id"


class CallbackRefused(Exception):
    """The URL may not be called (scheme, address): retrying cannot help."""


class CallbackFailed(Exception):
    """The attempt failed (connection, deadline); its message never holds the receiver's words."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The `Ocpplab-Signature` header's value."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


async def post_callback(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    deadline: float,
    max_bytes: int,
    allow_private: bool = False,
    allow: Sequence[str] = (),
) -> int:
    """POST `body` to `url` through the egress policy (contracts/egress.py: the address checked
    at connect time and connected to, no redirects, a total deadline, a byte cap); the
    receiver's HTTP status. Raises CallbackRefused (the URL may never be called: its scheme, or
    an address the policy refuses now) or CallbackFailed (try again later)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CallbackRefused("only http and https URLs with a host are called")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as err:
        raise CallbackRefused("the URL's port is invalid") from err
    entries = [*allow, *(["0.0.0.0/0", "::/0"] if allow_private else [])]
    policy = EgressPolicy.from_entries(entries, max_bytes, deadline)
    try:
        async with asyncio.timeout(deadline):
            addresses = await resolve(parts.hostname, port)
    except (OSError, TimeoutError) as err:
        raise CallbackFailed(f"cannot resolve {parts.hostname}") from err
    if not addresses or not all(policy.address_allowed(a) for a in addresses):
        raise CallbackRefused(f"{parts.hostname} resolves to an address callbacks may not reach")
    try:
        response = await peer_request(
            "POST",
            url,
            policy=policy,
            headers=headers,
            content=body,
            max_bytes=max_bytes,
            deadline_seconds=deadline,
        )
    except PeerUnusable as err:  # refused at connect, unreachable, too slow, too big
        raise CallbackFailed("the receiver could not be used") from err
    return response.status


def event_payload(job: Job) -> str:
    """The event's body, from the job's final row (compact JSON, sent as is on every attempt)."""
    ended = job.provisioned_at or job.updated_at
    failed = job.failed
    return json.dumps(
        {
            "event_id": callback_event_id(job.id),
            "type": EVENT_TYPE,
            "job_id": job.id,
            "cpo_id": str(job.cpo_id),
            "status": job.status,
            "progress": {
                "total": job.total,
                "succeeded": job.succeeded,
                "failed": failed,
                "in_progress": max(job.total - job.succeeded - failed, 0),
            },
            "ended_at": ended.isoformat().replace("+00:00", "Z"),
        },
        separators=(",", ":"),
    )


class JobCallbackActivities(interfaces.JobCallbacks):
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], settings: Settings, client: Client
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.client = client

    @activity.defn
    async def start_job_callback(self, inp: CallbackInput) -> None:
        """Start the job's JobCompletionCallback workflow (ID derived from the job: a repeated
        start finds the one already started or closed)."""
        try:
            await self.client.start_workflow(
                CALLBACK_WORKFLOW,
                inp,
                id=callback_workflow_id(inp.job_id),
                task_queue=self.settings.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                static_summary=f"completion callback of job {inp.job_id}",
            )
        except WorkflowAlreadyStartedError:
            return  # it ran already

    @activity.defn
    async def deliver_job_callback(self, job_id: str) -> str:
        """One attempt; raises (retryable) while the receiver does not take it with a 2xx."""
        async with self.sessions() as session:
            job = await session.get(Job, job_id)
            if job is None or not JobStatus(job.status).terminal:
                return "no job to report"
            hook = await session.get(CpoWebhook, job.cpo_id)
            url = job.callback_url or (hook.url if hook else None)
            if url is None:
                return "no callback configured"
            await session.execute(
                insert(JobCallback)
                .values(
                    job_id=job_id,
                    event_id=callback_event_id(job_id),
                    url=url,
                    payload=event_payload(job),
                    created_at=utcnow(),
                )
                .on_conflict_do_nothing(index_elements=["job_id"])
            )
            await session.commit()
            callback = await session.get(JobCallback, job_id)
            assert callback is not None
            if callback.delivered_at is not None:
                return "delivered"
            url, payload, event_id = callback.url, callback.payload, callback.event_id
            secret = hook.secret if hook else None
        if secret is None:  # its webhook was deleted meanwhile: nothing to sign with
            await self._record(job_id, "not sent: the CPO has no webhook secret", delivered=False)
            return "no secret"
        body = payload.encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "ocpplab-gateway-callbacks",
            EVENT_ID_HEADER: event_id,
            SIGNATURE_HEADER: sign(secret, int(time.time()), body),
        }
        try:
            status = await post_callback(
                url,
                body,
                headers,
                deadline=self.settings.callback_timeout_seconds,
                max_bytes=self.settings.callback_max_bytes,
                allow_private=self.settings.callback_allow_private,
                allow=self.settings.egress_allow,
            )
        except CallbackRefused as err:
            await self._record(job_id, f"refused: {err}", delivered=False)
            raise ApplicationError(str(err), type="CALLBACK_REFUSED", non_retryable=True) from err
        except CallbackFailed as err:
            await self._record(job_id, f"failed: {err}", delivered=False)
            raise ApplicationError(f"callback failed: {err}", type="CALLBACK_FAILED") from err
        delivered = 200 <= status < 300
        await self._record(job_id, str(status), delivered=delivered)
        if not delivered:
            raise ApplicationError(f"the receiver answered {status}", type="CALLBACK_FAILED")
        return "delivered"

    async def _record(self, job_id: str, outcome: str, *, delivered: bool) -> None:
        now = utcnow()
        values: dict[str, object] = {
            "attempts": col(JobCallback.attempts) + 1,
            "last_status": outcome[:100],
            "last_attempt_at": now,
        }
        if delivered:
            values["delivered_at"] = now
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(JobCallback).where(col(JobCallback.job_id) == job_id).values(**values)
            )
