"""A chaos run's report: ``report.json`` (verdicts and figures) and ``report.html``.

The HTML page is self-contained (inline SVG and CSS, no script, no CDN):
throughput and latency over time with each fault's window shaded, each
node's role over time, the unavailability of each fault, each verdict with
its first offending operations, and the Prometheus series scraped from the
nodes during the run.
"""

from __future__ import annotations

import html
import itertools
import json
import statistics
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from .checker import Report
from .history import WRITE_OPS, History
from .spans import trace_id_for

if TYPE_CHECKING:
    from .runner import RunOptions, RunRecord
    from .scenarios import Scenario

SHOWN_OPERATIONS = 6
ROLE_COLOURS = {
    "leader": "#2b8a3e",
    "follower": "#4dabf7",
    "candidate": "#f59f00",
    "pre_candidate": "#ffd43b",
    "learner": "#adb5bd",
    "down": "#e03131",
}


def _s(ns: int | float | None) -> float | None:
    return None if ns is None else round(ns / 1e9, 3)


def build(
    options: RunOptions,
    scenario: Scenario,
    nodes: int,
    record: RunRecord,
    history: History,
    result: Report,
    spans: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    checks = result.to_dict()["checks"]
    traces = _link_traces(checks, options.seed, spans)
    t0 = record.started_ns
    availability = checks["availability"]["figures"]
    faults = []
    by_start = {(f["fault"], f.get("start_ns")): f for f in availability.get("faults", [])}
    for window in record.faults:
        figures = by_start.get((window.name, window.start_ns), {})
        faults.append(
            {
                "name": window.name,
                "description": window.description,
                "outcome": window.outcome,
                "nodes": window.nodes,
                "start_s": _s(window.start_ns - t0),
                "end_s": _s(None if window.end_ns is None else window.end_ns - t0),
                "unavailable_s": _s(figures.get("unavailable_ns")),
                "injection_s": _s(window.injection_ns),
                "error_rate": figures.get("error_rate"),
                "operations_during": figures.get("operations"),
            }
        )
    gaps = [f["unavailable_s"] for f in faults if f["unavailable_s"] is not None]
    # Throughput and latency per second of the run (by completion time).
    seconds: dict[int, dict[str, Any]] = defaultdict(
        lambda: {"ok": 0, "fail": 0, "info": 0, "writes_ok": 0, "lat": []}
    )
    for op in history.operations:
        end = op.complete.time_ns if op.complete is not None else op.invoke.time_ns
        bucket = seconds[max(0, int((end - t0) / 1e9))]
        bucket[op.outcome] += 1
        if op.outcome == "ok":
            bucket["lat"].append((end - op.invoke.time_ns) / 1e6)
            if op.op in WRITE_OPS:
                bucket["writes_ok"] += 1
    timeline = []
    for second in range(max(seconds) + 1 if seconds else 0):
        b = seconds.get(second, {"ok": 0, "fail": 0, "info": 0, "writes_ok": 0, "lat": []})
        lat = sorted(b["lat"])
        timeline.append(
            {
                "t": second,
                "ok": b["ok"],
                "fail": b["fail"],
                "info": b["info"],
                "writes_ok": b["writes_ok"],
                "p50_ms": round(lat[len(lat) // 2], 2) if lat else None,
                "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 2) if lat else None,
            }
        )
    ops = result.stats["operations"]
    return {
        "scenario": scenario.name,
        "summary": scenario.summary,
        "target": options.target,
        "nodes": nodes,
        "seed": options.seed,
        "duration_s": options.duration,
        "verdict": result.verdict,
        "operations": ops,
        "lost_acks": checks["lost"]["anomaly_count"],
        "phantoms": checks["phantom"]["anomaly_count"],
        "duplicates": checks["exactly_once"]["anomaly_count"],
        "linearizability": checks["linearizability"]["verdict"],
        "unavailability": {
            "median_s": round(statistics.median(gaps), 3) if gaps else None,
            "max_s": max(gaps) if gaps else None,
            "faults": faults,
        },
        "converged": record.converged,
        "time_to_converge_s": None if record.converge_s is None else round(record.converge_s, 3),
        "indexes_agree_s": None
        if record.indexes_agree_s is None
        else round(record.indexes_agree_s, 3),
        "converge_within_s": options.converge_within,
        "state_hash_checked": record.state_hash_readable,
        "verdicts": {name: check["verdict"] for name, check in checks.items()},
        "checks": checks,
        "capabilities": record.capabilities,
        "timeline": timeline,
        "roles": record.roles,
        "metrics": record.metrics,
        "traces": traces,
    }


def _link_traces(
    checks: dict[str, Any], seed: int, spans: dict[str, list[dict[str, Any]]] | None
) -> dict[str, Any]:
    """Each offending operation gets the trace id its request carried and what the
    nodes' spans of that trace say (which nodes, which log index)."""
    if spans is None:
        return {"collected": None, "note": "spans are collected from --target local only"}
    for check in checks.values():
        for anomaly in check["anomalies"]:
            for op in anomaly["operations"]:
                if isinstance(op, dict) and isinstance(op.get("id"), int) and "op" in op:
                    trace_id = trace_id_for(seed, op["id"])
                    found = spans.get(trace_id, [])
                    op["trace_id"] = trace_id
                    op["spans"] = sorted(
                        f"{s['name']}@n{s['node']}"
                        + (
                            f" index {s['attributes']['exchange.log_index']}"
                            if "exchange.log_index" in s["attributes"]
                            else ""
                        )
                        for s in found
                    )
    return {
        "collected": sum(len(v) for v in spans.values()),
        "traces": len(spans),
        "note": "spans.jsonl holds them; each operation's trace id is "
        "trace_id_for(seed, operation id) (chaos/spans.py)",
    }


def summary_text(doc: dict[str, Any]) -> str:
    ops = doc["operations"]
    un = doc["unavailability"]
    lines = [
        f"{doc['scenario']}: {ops['attempted']} operations, {ops['acknowledged']} acknowledged, "
        f"{ops['failed']} failed, {ops['indeterminate']} indeterminate; lost acks "
        f"{doc['lost_acks']}, duplicates {doc['duplicates']}, linearizability "
        f"{doc['linearizability']}",
        f"faults {len(un['faults'])}, unavailable median {_fmt(un['median_s'])} s, "
        f"max {_fmt(un['max_s'])} s; converged {doc['converged']} in "
        f"{_fmt(doc['time_to_converge_s'])} s (indexes agreed in {_fmt(doc['indexes_agree_s'])} s)",
    ]
    for name, check in doc["checks"].items():
        lines.append(f"  {check['verdict'].upper():7} {name:15} {check['summary']}")
        for anomaly in check["anomalies"][:3]:
            lines.append(f"          {anomaly['kind']}: {anomaly['message'][:300]}")
        for why in check.get("unknown_because", [])[:2]:
            lines.append(f"          unknown: {why[:300]}")
    lines.append(f"verdict: {doc['verdict'].upper()}")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


# ---- HTML -----------------------------------------------------------------------------------

W, H, PAD = 860, 170, 40


def _x(t: float, span: float) -> float:
    return PAD + (W - 2 * PAD) * (t / span if span else 0)


def _shades(doc: dict[str, Any], span: float, height: int) -> str:
    parts = []
    for f in doc["unavailability"]["faults"]:
        start, end = f["start_s"] or 0, f["end_s"] if f["end_s"] is not None else span
        x0, x1 = _x(start, span), _x(end, span)
        parts.append(
            f'<rect x="{x0:.1f}" y="10" width="{max(1.0, x1 - x0):.1f}" height="{height - 30}" '
            f'fill="#ffa8a8" opacity="0.35"><title>{html.escape(f["description"])}</title></rect>'
        )
    return "".join(parts)


def _line_chart(
    doc: dict[str, Any], series: list[tuple[str, str, list[tuple[float, float]]]], unit: str
) -> str:
    span = max(1.0, float(doc["duration_s"]) + 10, *(t for _, _, pts in series for t, _ in pts))
    top = max([v for _, _, pts in series for _, v in pts] + [1.0])
    body = [
        f'<svg width="{W}" height="{H}" xmlns="http://www.w3.org/2000/svg">',
        _shades(doc, span, H),
    ]
    body.append(f'<line x1="{PAD}" y1="{H - 20}" x2="{W - PAD}" y2="{H - 20}" stroke="#888"/>')
    body.append(f'<text x="2" y="14" font-size="10">{top:.0f} {unit}</text>')
    for tick in range(0, int(span) + 1, max(1, int(span) // 10)):
        body.append(f'<text x="{_x(tick, span):.0f}" y="{H - 6}" font-size="10">{tick}s</text>')
    for _label, colour, pts in series:
        if not pts:
            continue
        path = " ".join(f"{_x(t, span):.1f},{(H - 20) - (H - 40) * v / top:.1f}" for t, v in pts)
        body.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{path}"/>')
    legend = " ".join(
        f'<span style="color:{c}">&#9632; {html.escape(label)}</span>' for label, c, _ in series
    )
    return "".join(body) + "</svg><div class=legend>" + legend + "</div>"


def _roles_chart(doc: dict[str, Any]) -> str:
    roles = doc["roles"]
    if not roles:
        return "<p>no role samples</p>"
    nodes = sorted({r["node"] for r in roles})
    span = max(1.0, float(doc["duration_s"]) + 10, *(r["t"] for r in roles))
    row = 22
    height = row * len(nodes) + 40
    body = [f'<svg width="{W}" height="{height}" xmlns="http://www.w3.org/2000/svg">']
    body.append(_shades(doc, span, height))
    for i, node in enumerate(nodes):
        samples = sorted((r for r in roles if r["node"] == node), key=lambda r: r["t"])
        y = 12 + i * row
        body.append(f'<text x="2" y="{y + 13}" font-size="11">n{node}</text>')
        for a, b in zip(samples, [*samples[1:], None], strict=True):
            end = b["t"] if b is not None else a["t"] + 1
            colour = ROLE_COLOURS.get(str(a["role"]), "#868e96")
            body.append(
                f'<rect x="{_x(a["t"], span):.1f}" y="{y}" '
                f'width="{max(1.0, _x(end, span) - _x(a["t"], span)):.1f}" height="{row - 6}" '
                f'fill="{colour}"><title>n{node} {html.escape(str(a["role"]))} '
                f"term {a.get('term')} at {a['t']}s</title></rect>"
            )
    legend = " ".join(
        f'<span style="color:{c}">&#9632; {r}</span>' for r, c in ROLE_COLOURS.items()
    )
    return "".join(body) + "</svg><div class=legend>" + legend + "</div>"


def _metrics_table(doc: dict[str, Any]) -> str:
    """Each kept series per node: its first and last value and where it moved."""
    per: dict[tuple[int, str], list[tuple[float, float]]] = defaultdict(list)
    for sample in doc["metrics"]:
        for name, value in sample["series"].items():
            per[(sample["node"], name)].append((sample["t"], value))
    rows = []
    for (node, name), points in sorted(per.items()):
        first, last = points[0][1], points[-1][1]
        jumps = [f"{t:.0f}s" for (_, a), (t, b) in itertools.pairwise(points) if b != a]
        rows.append(
            f"<tr><td>n{node}</td><td>{name}</td><td>{first:g}</td><td>{last:g}</td>"
            f"<td>{html.escape(', '.join(jumps[:12]))}{' ...' if len(jumps) > 12 else ''}</td></tr>"
        )
    if not rows:
        return "<p>no metrics scraped</p>"
    return (
        "<table><tr><th>node</th><th>series</th><th>first</th><th>last</th>"
        "<th>changed at</th></tr>" + "".join(rows) + "</table>"
    )


def render_html(doc: dict[str, Any]) -> str:
    e = html.escape
    tl = doc["timeline"]
    throughput = _line_chart(
        doc,
        [
            ("acknowledged ops/s", "#2b8a3e", [(r["t"], r["ok"]) for r in tl]),
            ("acknowledged writes/s", "#1971c2", [(r["t"], r["writes_ok"]) for r in tl]),
            ("indeterminate/s", "#e03131", [(r["t"], r["info"]) for r in tl]),
            ("failed/s", "#f59f00", [(r["t"], r["fail"]) for r in tl]),
        ],
        "ops/s",
    )
    latency = _line_chart(
        doc,
        [
            ("p50 ms", "#1971c2", [(r["t"], r["p50_ms"]) for r in tl if r["p50_ms"] is not None]),
            ("p99 ms", "#862e9c", [(r["t"], r["p99_ms"]) for r in tl if r["p99_ms"] is not None]),
        ],
        "ms",
    )

    def rate(value: float | None) -> str:
        return "-" if value is None else f"{value:.0%}"

    fault_rows = "".join(
        f"<tr><td>{e(f['name'])}</td><td>{e(f['description'])}</td><td>{f['start_s']}</td>"
        f"<td>{f['end_s']}</td><td>{_fmt(f['unavailable_s'])}</td>"
        f"<td>{_fmt(f['injection_s'])}</td>"
        f"<td>{rate(f['error_rate'])}</td>"
        f"<td>{e(f['outcome'])}</td></tr>"
        for f in doc["unavailability"]["faults"]
    )
    checks = []
    for name, check in doc["checks"].items():
        items = []
        for anomaly in check["anomalies"][:5]:
            ops = "\n".join(
                json.dumps(op, sort_keys=True)[:400]
                for op in anomaly["operations"][:SHOWN_OPERATIONS]
            )
            items.append(
                f"<li><b>{e(anomaly['kind'])}</b>: {e(anomaly['message'])}<pre>{e(ops)}</pre></li>"
            )
        for why in check.get("unknown_because", [])[:3]:
            items.append(f"<li>unknown: {e(why)}</li>")
        checks.append(
            f"<tr class={check['verdict']}><td>{e(name)}</td><td>{check['verdict'].upper()}</td>"
            f"<td>{e(check['summary'])}<ul>{''.join(items)}</ul></td></tr>"
        )
    ops = doc["operations"]
    un = doc["unavailability"]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>chaos run: {e(doc["scenario"])}</title>
<style>
body {{ font-family: sans-serif; margin: 20px; max-width: 960px; }}
table {{ border-collapse: collapse; font-size: 13px; }}
td, th {{ border: 1px solid #ccc; padding: 3px 6px; vertical-align: top; text-align: left; }}
tr.fail td {{ background: #ffe3e3; }} tr.pass td:nth-child(2) {{ color: #2b8a3e; }}
tr.unknown td:nth-child(2) {{ color: #f08c00; }}
pre {{ font-size: 11px; white-space: pre-wrap; }} .legend {{ font-size: 12px; }}
.verdict {{ font-size: 22px; font-weight: bold; }}
</style></head><body>
<h1>{e(doc["scenario"])}</h1>
<p>{e(doc["summary"])}</p>
<p class=verdict>verdict: {doc["verdict"].upper()}</p>
<p>target {e(doc["target"])}, {doc["nodes"]} nodes, seed {doc["seed"]}, {doc["duration_s"]:g} s.
{ops["attempted"]} operations: {ops["acknowledged"]} acknowledged, {ops["failed"]} failed,
{ops["indeterminate"]} indeterminate. Lost acknowledgements {doc["lost_acks"]}, duplicates
{doc["duplicates"]}, linearizability {doc["linearizability"]}. Unavailability median
{_fmt(un["median_s"])} s, max {_fmt(un["max_s"])} s. Converged: {doc["converged"]}
(in {_fmt(doc["time_to_converge_s"])} s after healing, promised {doc["converge_within_s"]:g} s).</p>
<h2>Throughput (fault windows shaded)</h2>{throughput}
<h2>Latency of acknowledged operations</h2>{latency}
<h2>Roles</h2>{_roles_chart(doc)}
<h2>Faults</h2>
<table><tr><th>fault</th><th>what</th><th>start s</th><th>end s</th><th>unavailable s</th>
<th>injection took s</th>
<th>indeterminate</th><th>outcome</th></tr>{fault_rows}</table>
<h2>Verdicts</h2><table>{"".join(checks)}</table>
<h2>Prometheus series (scraped each second)</h2>{_metrics_table(doc)}
<p>Traces: {e(json.dumps(doc["traces"]))}. Each offending operation above lists its
trace id and the spans the nodes exported for it.</p>
</body></html>
"""
