"""`exchange chaos run` against a deliberately broken node: the checker catches it.

The node is broken only through the TEST-ONLY ``tests/chaos/planted/sitecustomize.py``
(on ``PYTHONPATH``, so the node processes the run launches inherit it): a fill that
reduces a position is applied to it twice. Every replica agrees on the wrong state,
so convergence passes; the run must still exit 1 with the anomaly named. The control
is test_run_short.py's node-failure: the same command, scenario, seed and duration on
the unpatched node, green.
"""

from __future__ import annotations

from pathlib import Path

from test_run_short import run_chaos

PLANTED = Path(__file__).parent / "planted"


def test_a_fill_applied_twice_fails_the_run(tmp_path: Path) -> None:
    code, output, doc = run_chaos(
        "node-failure",
        tmp_path / "report",
        env={"PYTHONPATH": str(PLANTED), "EXCHANGE_TEST_PLANT": "double_fill"},
    )
    assert doc is not None, output[-3000:]
    assert code == 1, output[-3000:]
    assert doc["verdict"] == "fail"
    conservation = doc["checks"]["conservation"]
    assert conservation["verdict"] == "fail", conservation
    kinds = {a["kind"] for a in conservation["anomalies"]}
    assert "position is not the sum of fills" in kinds, kinds
    # The anomaly is named in the command's own output, with its operations in the page.
    assert "position is not the sum of fills" in output
    assert "position is not the sum of fills" in (tmp_path / "report" / "report.html").read_text()
    # Only the planted bug: nothing acknowledged was lost and the replicas agree.
    assert doc["lost_acks"] == 0 and doc["verdicts"]["convergence"] == "pass"
