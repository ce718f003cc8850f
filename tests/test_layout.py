"""The package's shape, as the issue that restructured it asked: small modules, and the
prompt's path without shortcuts (front ends → core → scheduler → worker → engine)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "assistant"
MAX_LINES = 300


def imports_of(module: Path) -> set[str]:
    """Every module name `module` imports, at any level."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_no_module_is_over_300_lines() -> None:
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, long


@pytest.mark.parametrize(
    ("importer", "forbidden"),
    [
        ("voice", "assistant.mqtt.requests"),  # voice builds core Requests itself
        ("core", "assistant.mqtt"),  # the core knows no front end
        ("core", "assistant.voice"),
        ("core", "assistant.http"),
        ("core", "assistant.web"),
        ("mqtt/requests.py", "assistant.ipc"),  # its own bounded JSON parsing
        ("engine", "assistant.worker"),  # the engine knows nothing above it
        ("engine", "assistant.scheduler"),
    ],
)
def test_no_shortcuts_on_the_prompt_path(importer: str, forbidden: str) -> None:
    target = PACKAGE / importer
    modules = [target] if target.is_file() else list(target.rglob("*.py"))
    assert modules
    offenders = [
        str(m.relative_to(PACKAGE))
        for m in modules
        if any(name == forbidden or name.startswith(forbidden + ".") for name in imports_of(m))
    ]
    assert not offenders, f"{offenders} import {forbidden}"
