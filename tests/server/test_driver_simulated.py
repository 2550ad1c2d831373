"""The real driver in the simulator, a few short seeds: what clients see holds.

A handful of seeds (3,000 steps each, a few seconds in all) of the deterministic
simulator, which drives ``server/driver.Driver`` with its simulated disk (power cuts
drop unsynced writes), its network and virtual time. Its checkers look at every
answer the driver gives: an acknowledged proposal is durable on a majority, a read is
served at or after its read index, a request whose entry was lost is not answered.

This is the driver's part of ``make mutate`` (scripts/mutate.py): small enough to
judge one mutant in seconds, and chosen so that it catches each planted driver bug
(``sim/mutation.py``), which the last test checks. The large batches stay in
tests/sim.
"""

from __future__ import annotations

import importlib

from exchange_node.sim import run_seed
from exchange_node.sim.mutation import DRIVER, PLANTED_BUGS, load_mutant

# 24: since crashes hint their peers (leader_unreachable), the first seed that catches
# read-before-applied is 23 (seeds 23, 26, 30 of the first 40).
SEEDS = range(24)
STEPS = 3_000
DRIVER_BUGS = sorted(name for name, bug in PLANTED_BUGS.items() if bug.module == DRIVER)


def test_short_seeds_with_power_cuts_show_clients_nothing_wrong():
    totals: dict[str, int] = {}
    for seed in SEEDS:
        result = run_seed(seed, STEPS)
        assert result.violation is None, f"seed {seed}: {result.violation}"
        for key, value in result.stats.items():
            if isinstance(value, int):
                totals[key] = totals.get(key, 0) + value
    # The seeds exercise what the driver's rules are about (else they prove little):
    # power cuts, crashes, snapshots from the leader, acknowledged writes and reads.
    for key in ("power_losses", "crashes", "snapshots_installed", "acks", "reads_answered"):
        assert totals.get(key, 0) > 0, (key, totals)


def test_the_seeds_catch_every_planted_driver_bug():
    missed = []
    for bug in DRIVER_BUGS:
        mutant = importlib.import_module(load_mutant(bug))
        if not any(run_seed(seed, STEPS, driver=mutant).violation for seed in SEEDS):
            missed.append(bug)
    assert DRIVER_BUGS and missed == []
