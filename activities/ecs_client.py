"""The ECS and Secrets Manager clients, and the line between transient and permanent ECS errors.

botocore's `standard` retry mode absorbs short throttling bursts inside one attempt; what it
cannot absorb surfaces as a retryable error and Temporal retries with backoff. Permanent errors
become non-retryable ApplicationErrors whose type is the location's stable error code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import ClientError
from temporalio.exceptions import ApplicationError

from contracts.vocabulary import ErrorCode
from settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_ecs import ECSClient
    from types_aiobotocore_secretsmanager import SecretsManagerClient

PERMANENT_ECS_ERRORS: dict[str, ErrorCode] = {
    "InvalidParameterException": ErrorCode.ECS_INVALID_PARAMETER,
    "AccessDeniedException": ErrorCode.ECS_ACCESS_DENIED,
    "UnauthorizedOperation": ErrorCode.ECS_ACCESS_DENIED,
    "ClusterNotFoundException": ErrorCode.ECS_CONFIGURATION,
    "PlatformUnknownException": ErrorCode.ECS_CONFIGURATION,
    "PlatformTaskDefinitionIncompatibilityException": ErrorCode.ECS_CONFIGURATION,
}


def ecs_client(settings: Settings) -> AbstractAsyncContextManager[ECSClient]:
    return _session(settings).client("ecs", endpoint_url=settings.aws_endpoint_url, config=_config())


def secrets_client(settings: Settings) -> AbstractAsyncContextManager[SecretsManagerClient]:
    """Secrets Manager (the chargers' secrets), on the same endpoint and with the same retries."""
    return _session(settings).client(
        "secretsmanager", endpoint_url=settings.aws_endpoint_url, config=_config()
    )


def _session(settings: Settings) -> aioboto3.Session:
    return aioboto3.Session(
        aws_access_key_id=settings.aws_access_key_id,
        aws_secret_access_key=settings.aws_secret_access_key,
        region_name=settings.aws_region,
    )


def _config() -> AioConfig:
    return AioConfig(
        retries={"mode": "standard", "max_attempts": 3},
        # botocore's client-side check of every request against the service model (a tenth of
        # each call's CPU): the requests are built here from validated input, and ECS and
        # Secrets Manager check them again and answer InvalidParameterException (permanent)
        parameter_validation=False,
        max_pool_connections=100,
        connect_timeout=5,
        read_timeout=20,
    )


def permanent_or_raise(err: ClientError) -> ApplicationError:
    """A permanent error as a non-retryable ApplicationError; anything else is re-raised as is."""
    code = err.response.get("Error", {}).get("Code", "")
    if code in PERMANENT_ECS_ERRORS:
        message = err.response.get("Error", {}).get("Message", str(err))
        return ApplicationError(
            f"ECS {code}: {message}", type=PERMANENT_ECS_ERRORS[code].value, non_retryable=True
        )
    raise err


def run_task_failure(failures: Sequence[Mapping[str, Any]]) -> ApplicationError:
    """RunTask answered `failures` (capacity, quota, bad subnet…) instead of a task."""
    failure = failures[0]
    reason = f"{failure.get('reason', 'unknown')} {failure.get('detail', '')}".strip()
    capacity = any(word in reason.upper() for word in ("RESOURCE", "CAPACITY", "LIMIT", "QUOTA"))
    return ApplicationError(
        f"RunTask failed: {reason}",
        type=(ErrorCode.ECS_CAPACITY if capacity else ErrorCode.ECS_RUN_TASK_FAILED).value,
        non_retryable=True,
    )
