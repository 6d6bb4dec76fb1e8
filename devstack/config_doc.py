"""The configuration reference, docs/configuration.md, rendered from the settings class.

`make docs` (`python -m devstack.config_doc`) writes it; `tests/test_docs.py` fails when the file
is not what this renders, so a setting cannot be added, renamed or described anew without the
reference following.
"""

from __future__ import annotations

import json
import sys
import types
import typing
from typing import Any

from pydantic.fields import FieldInfo

from settings import ROOT, Settings

OUTPUT = ROOT / "docs" / "configuration.md"

HEADER = """\
# Configuration

<!-- Generated from settings.py by `make docs` (python -m devstack.config_doc): edit the
settings' `Field(description=...)`, not this file. tests/test_docs.py fails when it is stale. -->

One pydantic-settings class (`settings.py`) is read by the API, the worker and the dev stack.
Every setting is an environment variable (its name in upper case), also read from
`.data/stack.env`, which `make run` writes. Lists are JSON (`ECS_SUBNETS='["subnet-1"]'`).
The Temporal settings are the standard `TEMPORAL_*` variables of the Temporal SDKs and CLI, with
profiles from a TOML file ([deploy.md](deploy.md#the-temporal-connection)).

On the dev stack only (read by `make run` and `make bench`, not by the API or the worker):
`WORKERS` (worker processes, default 2), `WORKER_NICE` (default 10: the workers yield the CPU to
the API on a shared box), `BACKGROUND_NICE` (default 10: so do the Temporal dev server and moto)
and `TEMPORAL_FAIRNESS` (default true: the dev server's fair dispatch between CPOs; false for the
plain FIFO, to compare).

| variable | type | default | description |
|---|---|---|---|
"""


def type_name(annotation: Any) -> str:
    """`int`, `float or none`, `list of str`, `"json" or "text"`: for a reader, not for Python."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("none" if arg is type(None) else type_name(arg) for arg in args)
    if origin is typing.Literal:
        return " or ".join(json.dumps(arg) for arg in args)
    if origin is list:
        return f"list of {type_name(args[0])}" if args else "list"
    return getattr(annotation, "__name__", str(annotation))


def default_text(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    else:
        value = field.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int | float):
        return f"`{value:_}`".replace("_", ",") if isinstance(value, int) else f"`{value:g}`"
    if isinstance(value, list):
        return f"`{json.dumps(value)}`"
    return f"`{value}`"


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render() -> str:
    rows = []
    for name, field in Settings.model_fields.items():
        description = field.description or ""
        rows.append(
            f"| `{name.upper()}` | {cell(type_name(field.annotation))} | "
            f"{cell(default_text(field))} | {cell(description)} |"
        )
    return HEADER + "\n".join(rows) + "\n"


def main(argv: list[str]) -> int:
    """Write the reference; `--check`: exit 1 when the file on disk is not up to date."""
    text = render()
    if "--check" in argv:
        current = OUTPUT.read_text() if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT.relative_to(ROOT)} is stale: run `make docs`", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(ROOT)} ({len(Settings.model_fields)} settings)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
