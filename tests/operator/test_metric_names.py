"""Every metric name in the dashboards and alerts is in the node contract's table.

The live check against a running node's /metrics comes with the node; until
then the contract (docs/node-contract.md) is the reference both sides follow.
"""

from __future__ import annotations

import re
from pathlib import Path

from exchange_operator import monitoring

CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "node-contract.md"


def contract_metrics() -> dict[str, str]:
    """name -> type, from the Metrics table of the node contract."""
    rows = re.findall(r"^\| `(exchange_[a-z0-9_]+)` \| ([a-z]+)", CONTRACT.read_text(), re.M)
    return dict(rows)


def test_contract_table_is_parsed() -> None:
    table = contract_metrics()
    assert len(table) >= 20
    assert table["exchange_raft_commit_latency_seconds"] == "histogram"
    assert table["exchange_raft_is_leader"] == "gauge"


def test_dashboards_and_alerts_use_only_contract_metrics() -> None:
    used = monitoring.metric_names_used()
    assert used, "no metric names found"
    assert used - set(contract_metrics()) == set()


def test_histogram_suffixes_only_on_histograms() -> None:
    table = contract_metrics()
    exprs = " ".join(monitoring.expressions())
    for name in re.findall(r"\b(exchange_[a-z0-9_]+)_(?:bucket|sum|count)\b", exprs):
        assert table.get(name) == "histogram", name


def test_every_contract_metric_is_shown_somewhere() -> None:
    # Not required by the contract, but a metric nobody looks at is a smell.
    assert set(contract_metrics()) - monitoring.metric_names_used() == set()


def test_the_check_can_fail() -> None:
    assert "exchange_made_up_total" not in contract_metrics()
    names = monitoring.METRIC_NAME.findall('rate(exchange_made_up_total{exchangecluster="x"}[1m])')
    assert names == ["exchange_made_up_total"]
