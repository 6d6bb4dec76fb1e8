"""The documentation stays true to the repository: the configuration reference is what the
settings render, and every link, path, module and make target the docs name exists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from devstack.config_doc import OUTPUT, render
from settings import ROOT, Settings

DOCS = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP_LEVEL = {
    path.split("/", 1)[0]
    for path in subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
}

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
INLINE_CODE = re.compile(r"`([^`\n]+)`")
REPO_PATH = re.compile(r"^\.?[\w.-]+(?:/[\w.-]+)*/?$")
MODULE = re.compile(r"python -m ([\w.]+)")
MAKE_TARGET = re.compile(r"`(?:[A-Z_]+=\S+ )*make ([a-z][\w-]*)")


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in path.read_text().splitlines() if re.match(r"#+ ", line)}


def without_fences(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def test_configuration_reference_is_up_to_date() -> None:
    assert OUTPUT.exists(), "docs/configuration.md is missing: run `make docs`"
    assert OUTPUT.read_text() == render(), "docs/configuration.md is stale: run `make docs`"


def test_every_setting_is_described() -> None:
    missing = [name for name, field in Settings.model_fields.items() if not (field.description or "").strip()]
    assert not missing, f"settings without Field(description=...): {missing}"


def test_readme_is_short() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 160


@pytest.mark.parametrize("doc", DOCS, ids=_name)
def test_relative_links_resolve(doc: Path) -> None:
    broken = []
    for target in LINK.findall(without_fences(doc.read_text())):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (doc.parent / path_part).resolve() if path_part else doc
        if not resolved.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{_name(doc)}: broken links: {broken}"


@pytest.mark.parametrize("doc", DOCS, ids=_name)
def test_repository_paths_exist(doc: Path) -> None:
    """A backticked path under one of the repository's top-level folders (`db/ocpi_clock.py`,
    `deploy/ecs/`) must exist: a file moved or renamed without its docs fails here."""
    missing = []
    for token in INLINE_CODE.findall(doc.read_text()):
        token = token.strip()
        if token.startswith((".data/", "/")) or not REPO_PATH.match(token):
            continue
        if token.split("/", 1)[0] not in TOP_LEVEL:
            continue
        if not (ROOT / token).exists():
            missing.append(token)
    assert not missing, f"{_name(doc)} names paths that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=_name)
def test_modules_and_make_targets_exist(doc: Path) -> None:
    text = doc.read_text()
    makefile = (ROOT / "Makefile").read_text()
    problems = []
    for module in MODULE.findall(text):
        base = ROOT / module.replace(".", "/")
        if not (base.with_suffix(".py").exists() or (base / "__init__.py").exists()):
            problems.append(f"python -m {module}")
    for target in MAKE_TARGET.findall(text):
        if not re.search(rf"^{re.escape(target)}:", makefile, re.M):
            problems.append(f"make {target}")
    assert not problems, f"{_name(doc)} names what does not exist: {problems}"


def test_the_checks_catch_a_moved_file(tmp_path: Path) -> None:
    """The path check is not vacuous: the docs do name repository paths, and a missing one is seen."""
    named = [
        token
        for doc in DOCS
        for token in INLINE_CODE.findall(doc.read_text())
        if REPO_PATH.match(token) and token.split("/", 1)[0] in TOP_LEVEL and "/" in token
    ]
    assert "db/ocpi_clock.py" in named and len(named) > 20
    assert not (ROOT / "db/no_such_module.py").exists()
    assert slug("Runbook (`temporal` CLI)") == "runbook-temporal-cli"
