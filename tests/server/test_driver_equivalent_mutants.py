"""The driver's list of equivalent mutants cannot silently rot.

``make mutate`` (scripts/mutate.py) leaves the survivors listed under
``[[driver_mutant]]`` in tests/raft/equivalent_mutants.toml out of the driver's
mutation score. Each entry names a function of server/driver.py and the original code
the mutant changes; when that code is edited or moved the entry must be revisited, so
this fast check fails as soon as the function or the original line is gone.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "node" / "exchange_node" / "server" / "driver.py"
LIST = ROOT / "tests" / "raft" / "equivalent_mutants.toml"


def normalise(code: str) -> str:
    return " ".join(code.split())


def function_source(qualified: str, source: str) -> str | None:
    scope: list[ast.stmt] = ast.parse(source).body
    node: ast.AST | None = None
    for part in qualified.split("."):
        node = next(
            (
                n
                for n in scope
                if isinstance(n, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)
                and n.name == part
            ),
            None,
        )
        if node is None:
            return None
        scope = node.body  # type: ignore[attr-defined]
    return ast.get_source_segment(source, node) if node is not None else None


def problems(entry: dict[str, str], source: str) -> list[str]:
    """Why an entry no longer names a mutant location that exists (empty: it does)."""
    where = f"{entry.get('file')} {entry.get('function')}"
    missing = [k for k in ("file", "function", "original", "mutated", "reason") if k not in entry]
    if missing:
        return [f"{where}: missing {', '.join(missing)}"]
    if entry["file"] != "driver.py":
        return [f"{where}: a driver entry names driver.py"]
    if not entry["reason"].strip():
        return [f"{where}: no reason given"]
    if normalise(entry["original"]) == normalise(entry["mutated"]):
        return [f"{where}: the mutant does not change the code"]
    body = function_source(entry["function"], source)
    if body is None:
        return [f"{where}: no such function in server/driver.py"]
    code = normalise(body)
    return [
        f"{where}: original code {part!r} is no longer there"
        for part in (normalise(p) for p in entry["original"].split(" / "))
        if part and part not in code
    ]


def test_every_listed_driver_mutant_names_code_that_still_exists():
    entries = tomllib.loads(LIST.read_text()).get("driver_mutant", [])
    source = DRIVER.read_text()
    assert entries, "no [[driver_mutant]] entries"
    assert [p for entry in entries for p in problems(entry, source)] == []


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        ({"file": "driver.py", "function": "Driver.read", "original": "x"}, "missing"),
        (
            {
                "file": "driver.py",
                "function": "Driver.no_such_method",
                "original": "pass",
                "mutated": "return",
                "reason": "r",
            },
            "no such function",
        ),
        (
            {
                "file": "driver.py",
                "function": "Driver.read",
                "original": 'self._fail_all_of(tokens, Failure.DROPPED, "read went wrong")',
                "mutated": "pass",
                "reason": "r",
            },
            "no longer there",
        ),
        (
            {
                "file": "core.py",
                "function": "Driver.read",
                "original": "a",
                "mutated": "b",
                "reason": "r",
            },
            "names driver.py",
        ),
    ],
)
def test_the_check_flags_an_entry_whose_location_is_gone(entry, complaint):
    found = problems(entry, DRIVER.read_text())
    assert found and complaint in found[0]


def test_the_check_accepts_an_entry_whose_location_exists():
    entry = {
        "file": "driver.py",
        "function": "Driver.read",
        "original": 'self._fail_all_of(tokens, Failure.DROPPED, "read failed")',
        "mutated": 'self._fail_all_of(tokens, Failure.DROPPED, "READ FAILED")',
        "reason": "r",
    }
    assert problems(entry, DRIVER.read_text()) == []
