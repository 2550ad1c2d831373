"""Deterministic simulation of the consensus core (in the spirit of TigerBeetle's VOPR).

A whole cluster of cores runs in one process on virtual time, driven by one
seed, through crashes, partitions, lossy links, membership changes and
snapshot installs; safety invariants are checked after every step and
liveness after every heal. ``exchange sim`` is the command line.
"""

from exchange_node.sim.disk import SimStorage
from exchange_node.sim.runner import BatchReport, replay_command, run_batch
from exchange_node.sim.simulator import SeedResult, Simulation, run_seed

__all__ = [
    "BatchReport",
    "SeedResult",
    "SimStorage",
    "Simulation",
    "replay_command",
    "run_batch",
    "run_seed",
]
