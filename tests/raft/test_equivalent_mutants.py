"""The list of equivalent mutants (equivalent_mutants.toml) cannot silently rot.

``make mutate`` leaves listed survivors out of the mutation score. Each entry names a
module of raft/, a function in it and the original code the mutant changes; when the
code is edited or moved, the entry must be revisited, so this fast check fails as
soon as the function or the original line is gone.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

RAFT = Path(__file__).resolve().parents[2] / "node" / "exchange_node" / "raft"
LIST = Path(__file__).with_name("equivalent_mutants.toml")


def normalise(code: str) -> str:
    return " ".join(code.split())


def function_source(file: str, qualified: str) -> str | None:
    path = RAFT / file
    if not path.is_file():
        return None
    source = path.read_text()
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


def problems(entry: dict[str, str]) -> list[str]:
    """Why an entry no longer names a mutant location that exists (empty: it does)."""
    where = f"{entry.get('file')} {entry.get('function')}"
    missing = [k for k in ("file", "function", "original", "mutated", "reason") if k not in entry]
    if missing:
        return [f"{where}: missing {', '.join(missing)}"]
    if not entry["reason"].strip():
        return [f"{where}: no reason given"]
    if normalise(entry["original"]) == normalise(entry["mutated"]):
        return [f"{where}: the mutant does not change the code"]
    body = function_source(entry["file"], entry["function"])
    if body is None:
        return [f"{where}: no such function in raft/{entry['file']}"]
    lines = {normalise(line) for line in body.splitlines()}
    code = normalise(body)
    out = []
    for part in entry["original"].split(" / "):
        part = normalise(part)
        if part and part not in lines and part not in code:
            out.append(f"{where}: original code {part!r} is no longer there")
    return out


def test_every_listed_equivalent_mutant_names_code_that_still_exists():
    entries = tomllib.loads(LIST.read_text()).get("mutant", [])
    found = [p for entry in entries for p in problems(entry)]
    assert found == []


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        (
            {"file": "core.py", "function": "RaftCore.no_such_method", "original": "x"},
            "missing",
        ),
        (
            {
                "file": "core.py",
                "function": "RaftCore.no_such_method",
                "original": "pass",
                "mutated": "return",
                "reason": "r",
            },
            "no such function",
        ),
        (
            {
                "file": "quorum.py",
                "function": "majority",
                "original": "return voter_count // 3 + 1",
                "mutated": "return voter_count // 3 + 2",
                "reason": "r",
            },
            "no longer there",
        ),
    ],
)
def test_the_check_flags_an_entry_whose_location_is_gone(entry, complaint):
    found = problems(entry)
    assert found and complaint in found[0]


def test_the_check_accepts_an_entry_whose_location_exists():
    entry = {
        "file": "quorum.py",
        "function": "majority",
        "original": "return voter_count // 2 + 1",
        "mutated": "return voter_count // 2 + 2",
        "reason": "r",
    }
    assert problems(entry) == []
