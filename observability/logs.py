"""Log lines that say which job, location, workflow and activity they belong to.

One handler on the root logger, JSON (production: one object a line, for a log pipeline) or
text (`make run`: readable), chosen by `LOG_FORMAT`. A filter on that handler adds the context:

- in the worker, from the Temporal SDK: `activity.logger` / `workflow.logger` put the workflow
  and activity ids on the record (`temporal_activity` / `temporal_workflow`); any other log line
  emitted inside an activity (SQLAlchemy, botocore, ours) gets them from `activity.info()`. The
  job id and location index come from the workflow id (`job-…`, `job-…/location-N`,
  `decommission/loc-…`), so workflows need no logging code of their own;
- in the API, from a per-request context (`request_context()`, set by `api.request_log`), to
  which a route adds what it learns (`bind(job_id=…)`).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from opentelemetry import trace  # imported here: a workflow's log call must not import in the sandbox
from temporalio import activity, workflow

LogFormat = Literal["json", "text"]

# the fields a line may carry, in the order the text format prints them
CONTEXT_FIELDS = (
    "request_id",
    "cpo_id",
    "job_id",
    "location_index",
    "location_id",
    "workflow_type",
    "workflow_id",
    "run_id",
    "activity_type",
    "activity_id",
    "attempt",
    "trace_id",
)
_WORKFLOW_ID = re.compile(r"^(?P<job>job-[0-9a-f]+)(?:/location-(?P<index>\d+))?$")
_LOCATION_ID = re.compile(r"\bloc-[0-9a-f]{32}\b")
_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_request: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("log_request", default=None)
_MARK = "_ocpplab_handler"


@contextmanager
def request_context(**fields: Any) -> Iterator[dict[str, Any]]:
    """The fields of every line logged while it is open (one HTTP request); `bind` adds to it.
    A mutable dict under a token, so what a route binds is seen by the rest of the request and
    by nothing after it."""
    fields = {k: v for k, v in fields.items() if v is not None}
    token = _request.set(fields)
    try:
        yield fields
    finally:
        _request.reset(token)


def bind(**fields: Any) -> None:
    """Add fields to the current request's log context (no-op outside a request)."""
    current = _request.get()
    if current is not None:
        current.update({k: v for k, v in fields.items() if v is not None})


def ids_from_workflow_id(workflow_id: str) -> dict[str, Any]:
    """The job id and location index (or location id) that our workflow ids carry."""
    found: dict[str, Any] = {}
    match = _WORKFLOW_ID.match(workflow_id)
    if match:
        found["job_id"] = match["job"]
        if match["index"] is not None:
            found["location_index"] = int(match["index"])
    else:
        loc = _LOCATION_ID.search(workflow_id)
        if loc:
            found["location_id"] = loc.group(0)
    return found


def _temporal_fields(record: logging.LogRecord) -> dict[str, Any]:
    found: dict[str, Any] = {}
    wf: Mapping[str, Any] | None = getattr(record, "temporal_workflow", None)
    act: Mapping[str, Any] | None = getattr(record, "temporal_activity", None)
    if act is None and wf is None and activity.in_activity():
        info = activity.info()
        act = {
            "workflow_type": info.workflow_type,
            "workflow_id": info.workflow_id,
            "workflow_run_id": info.workflow_run_id,
            "activity_type": info.activity_type,
            "activity_id": info.activity_id,
            "attempt": info.attempt,
        }
    if wf is not None:
        found.update(
            workflow_type=wf.get("workflow_type"),
            workflow_id=wf.get("workflow_id"),
            run_id=wf.get("run_id"),
            attempt=wf.get("attempt"),
        )
    if act is not None:
        found.update(
            workflow_type=act.get("workflow_type"),
            workflow_id=act.get("workflow_id"),
            run_id=act.get("workflow_run_id"),
            activity_type=act.get("activity_type"),
            activity_id=act.get("activity_id"),
            attempt=act.get("attempt"),
        )
    if found.get("workflow_id"):
        found.update(ids_from_workflow_id(str(found["workflow_id"])))
    return {k: v for k, v in found.items() if v is not None}


def _trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


class ContextFilter(logging.Filter):
    """Puts the context fields on the record (`record.ctx`), for either formatter."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx: dict[str, Any] = dict(_request.get() or {})
        ctx.update(_temporal_fields(record))
        trace_id = _trace_id()
        if trace_id:
            ctx.setdefault("trace_id", trace_id)
        record.ctx = ctx
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, the context, any other `extra`."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(getattr(record, "ctx", {}))
        for key, value in vars(record).items():  # a caller's own `extra=`
            if (
                key not in _STANDARD_ATTRS
                and key not in line
                and key not in ("ctx", "temporal_workflow", "temporal_activity", "taskName", "color_message")
            ):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger message [job_id=… location_index=…]` for a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ctx: dict[str, Any] = getattr(record, "ctx", {})
        shown = " ".join(
            f"{k}={ctx[k]}"
            for k in CONTEXT_FIELDS
            if k in ctx and k not in ("run_id", "trace_id", "request_id")
        )
        return f"{text} [{shown}]" if shown else text


class _Below(logging.Filter):
    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level


def make_handler(
    fmt: LogFormat, stream: TextIO | None = None, max_level: int | None = None
) -> logging.Handler:
    """A handler in format `fmt` with the context filter; `max_level`: only records below it."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    if max_level is not None:
        handler.addFilter(_Below(max_level))
    handler.addFilter(ContextFilter())
    return handler


def configure_logging(fmt: LogFormat, level: str = "INFO") -> None:
    """The root handlers of a process (idempotent). uvicorn's own loggers hand their lines to them,
    so access lines are JSON too; the SDK's loggers put workflow/activity info in `extra`
    rather than at the end of the message when the format is JSON."""
    root = logging.getLogger()
    for existing in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(existing)
    # as uvicorn does: information (access lines) on stdout, warnings and errors on stderr
    info = make_handler(fmt, sys.stdout, max_level=logging.WARNING)
    problems = make_handler(fmt, sys.stderr)
    problems.setLevel(logging.WARNING)
    for handler in (info, problems):
        setattr(handler, _MARK, True)
        root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uv = logging.getLogger(name)
        uv.handlers = []
        uv.propagate = True
    structured = fmt == "json"
    activity.logger.activity_info_on_message = not structured
    workflow.logger.workflow_info_on_message = not structured
