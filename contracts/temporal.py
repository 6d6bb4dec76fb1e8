"""Temporal names shared by the starters and the workers, and the one way to connect."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from temporalio.client import Client, Plugin
from temporalio.common import Priority, SearchAttributeKey
from temporalio.envconfig import ClientConfig, ClientConnectConfig
from temporalio.runtime import Runtime

if TYPE_CHECKING:
    from settings import Settings

# Custom search attributes (registered by the dev server's --search-attribute, by the tests
# through the operator service, and by `temporal operator search-attribute create` in production).
CPO_ID = SearchAttributeKey.for_keyword("CpoId")
JOB_STATUS = SearchAttributeKey.for_keyword("JobStatus")
# The error codes of a job's failed locations (each code once), so that an operator finds the
# jobs that hit one: `ErrorCode = 'ECS_CAPACITY'` in a visibility query.
ERROR_CODES = SearchAttributeKey.for_keyword_list("ErrorCode")
SEARCH_ATTRIBUTES: dict[str, str] = {"CpoId": "Keyword", "JobStatus": "Keyword", "ErrorCode": "KeywordList"}

# Task priority on the shared task queues (lower goes first): a PATCH, a DELETE or a job's cancel,
# which someone waits on, goes ahead of bulk provisioning. Within a priority, the fairness key (the
# CPO) shares dispatch between CPOs: one CPO's 10,000 locations do not hold another's one.
# Children and activities inherit their workflow's priority.
PRIORITY_INTERACTIVE = 1
PRIORITY_BULK = 3  # the server's default level of 1..5


def fairness_key(cpo_id: int | str) -> str:
    return f"cpo-{cpo_id}"


def bulk_priority(cpo_id: int | str) -> Priority:
    return Priority(priority_key=PRIORITY_BULK, fairness_key=fairness_key(cpo_id))


def interactive_priority(cpo_id: int | str) -> Priority:
    return Priority(priority_key=PRIORITY_INTERACTIVE, fairness_key=fairness_key(cpo_id))


# Each Temporal setting and the standard variable of the Temporal SDKs and CLI it stands for.
STANDARD_VARIABLES: dict[str, str] = {
    "temporal_address": "TEMPORAL_ADDRESS",
    "temporal_namespace": "TEMPORAL_NAMESPACE",
    "temporal_api_key": "TEMPORAL_API_KEY",
    "temporal_tls": "TEMPORAL_TLS",
    "temporal_tls_client_cert_path": "TEMPORAL_TLS_CLIENT_CERT_PATH",
    "temporal_tls_client_key_path": "TEMPORAL_TLS_CLIENT_KEY_PATH",
    "temporal_tls_server_ca_cert_path": "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
    "temporal_tls_server_name": "TEMPORAL_TLS_SERVER_NAME",
    "temporal_profile": "TEMPORAL_PROFILE",
    "temporal_config_file": "TEMPORAL_CONFIG_FILE",
}


def connect_config(settings: Settings, environ: Mapping[str, str] | None = None) -> ClientConnectConfig:
    """`Client.connect`'s keyword arguments, read the way every Temporal SDK and the CLI read
    them (`temporalio.envconfig`): a profile of the TOML configuration file, overridden by the
    standard `TEMPORAL_*` variables. A setting given explicitly (from the environment, from
    `.data/stack.env`, or as an argument) is one of those variables, so it wins over the file;
    an address or namespace that no one gives falls back to the settings' defaults. An API key
    turns TLS on unless `TEMPORAL_TLS=false`; client certificate paths give mTLS."""
    env = dict(os.environ if environ is None else environ)
    for field, variable in STANDARD_VARIABLES.items():
        value = getattr(settings, field)
        if field in settings.model_fields_set and value is not None:
            env[variable] = str(value).lower() if isinstance(value, bool) else str(value)
    config = ClientConfig.load_client_connect_config(
        profile=env.get("TEMPORAL_PROFILE") or None,
        config_file=env.get("TEMPORAL_CONFIG_FILE") or None,
        override_env_vars=env,
    )
    config.setdefault("target_host", settings.temporal_address)
    config.setdefault("namespace", settings.temporal_namespace)
    return config


async def connect(
    settings: Settings, runtime: Runtime | None = None, plugins: Sequence[Plugin] = ()
) -> Client:
    """The client of the API, the worker, the dev stack and the tests. `runtime`: the worker's,
    which serves the SDK's metrics; `plugins`: tracing (`observability.tracing`), which the
    workers built on this client inherit."""
    return await Client.connect(**connect_config(settings), runtime=runtime, plugins=plugins)
