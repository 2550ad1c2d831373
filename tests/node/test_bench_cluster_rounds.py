"""`exchange bench cluster --peer-tls both`: the order of the modes per round (ABBA) and
the summary of the rounds' mTLS/plaintext ratios (pure functions; no cluster)."""

from __future__ import annotations

import math

from exchange_node.tools.bench.cluster import ratio_summary, side_by_side_order


def test_rounds_alternate_which_mode_goes_first() -> None:
    orders = [side_by_side_order(r) for r in range(4)]
    assert orders == [("mtls", "plain"), ("plain", "mtls")] * 2


def test_the_ratio_is_the_median_of_the_rounds_ratios_not_the_ratio_of_medians() -> None:
    # Round 2 met a noisy neighbour on both sides: its pair still compares like with like.
    samples = {
        "mtls": [{"cpu": 1.1}, {"cpu": 1.0}, {"cpu": 3.3}, {"cpu": 1.2}],
        "plain": [{"cpu": 1.0}, {"cpu": 1.0}, {"cpu": 3.0}, {"cpu": 0.9}],
    }
    mtls, plain, ratio, lowest, highest = ratio_summary(samples, "cpu")
    assert (mtls, plain) == (1.15, 1.0)
    per_round = sorted([1.1, 1.0, 1.1, 1.2 / 0.9])
    assert math.isclose(ratio, (per_round[1] + per_round[2]) / 2)
    assert math.isclose(lowest, 1.0) and math.isclose(highest, 1.2 / 0.9)
    assert not math.isclose(ratio, mtls / plain)


def test_rounds_without_a_usable_ratio_give_nan() -> None:
    samples = {"mtls": [{"x": 1.0}], "plain": [{"x": 0.0}]}
    _mtls, _plain, ratio, lowest, highest = ratio_summary(samples, "x")
    assert math.isnan(ratio) and math.isnan(lowest) and math.isnan(highest)
    samples = {"mtls": [{"x": float("nan")}, {"x": 2.0}], "plain": [{"x": 1.0}, {"x": 1.0}]}
    assert ratio_summary(samples, "x")[2] == 2.0
