"""One output format for every `exchange bench ...` subcommand.

With ``--json`` a benchmark prints exactly one JSON object::

    {"bench": NAME, "host": {"cores": N, "python": VERSION},
     "results": [{"name": ..., "value": ..., "unit": ...}, ...]}

Without it, the same figures as a readable table. Results are compared over
time by name, so a name never changes meaning.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import asdict, dataclass
from typing import TextIO


@dataclass(frozen=True)
class BenchResult:
    name: str
    value: float | int
    unit: str


def host_info() -> dict[str, object]:
    return {"cores": os.cpu_count() or 1, "python": platform.python_version()}


def report(
    bench: str, results: list[BenchResult], *, as_json: bool, out: TextIO | None = None
) -> dict[str, object]:
    """Print ``results`` in the shared format and return the JSON document."""
    out = out or sys.stdout
    doc: dict[str, object] = {
        "bench": bench,
        "host": host_info(),
        "results": [asdict(r) for r in results],
    }
    if as_json:
        out.write(json.dumps(doc) + "\n")
    else:
        host = doc["host"]
        out.write(f"bench {bench}  (cores={host['cores']}, python={host['python']})\n")  # type: ignore[index]
        width = max((len(r.name) for r in results), default=4)
        for r in results:
            value = f"{r.value:,.3f}" if isinstance(r.value, float) else f"{r.value:,}"
            out.write(f"  {r.name:<{width}}  {value:>16}  {r.unit}\n")
    out.flush()
    return doc
