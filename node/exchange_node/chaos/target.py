"""What a chaos run needs from the cluster it attacks: the ``Target`` seam.

A scenario (``chaos/scenarios.py``) drives a workload through the public API
and injects faults through a target; it never knows whether the nodes are
local processes, Docker containers or Kubernetes pods. Each target says which
fault kinds it can inject (``capabilities``); a scenario that needs one it
lacks is refused before anything starts, with the missing kind named.

Every fault is a ``FaultHandle``: injecting returns one, ``heal()`` undoes it
(idempotent), and ``Target.heal_all()`` undoes every fault still active, so a
run that stops early, or crashes, leaves no iptables rule, proxy, namespace,
faketime or FUSE mount behind.

Fault kinds (the strings in ``capabilities``):

==================  ===========================================================
``kill``            SIGKILL a node's process (``kill``), start it again (``start``)
``pause``           SIGSTOP / SIGCONT (``pause``, ``resume``)
``restart``         graceful SIGTERM then start (``restart``)
``partition``       drop traffic between groups of nodes, optionally one way
``loss``            drop a fraction of a node's packets (iptables ``statistic``)
``bandwidth``       limit a node's egress rate (``tc tbf``)
``link``            latency, jitter, stall, reset, corrupt on one peer link (proxy)
``clock``           skew or jump one node's clock (libfaketime, applied at restart)
``disk``            slow or stalled fsync, EIO on write or fsync, a full disk (FUSE)
``power_cut``       kill a node and drop its writes that were never fsynced (FUSE)
``corrupt_state``   damage a stopped node's data on disk (byzantine replica)
``lost_tail``       cut a stopped node's WAL back to an earlier mark (``mark_log``,
                    ``cut_log``): a disk that lost synced, acknowledged writes
==================  ===========================================================
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

FaultKind = Literal[
    "kill",
    "pause",
    "restart",
    "partition",
    "loss",
    "bandwidth",
    "link",
    "clock",
    "disk",
    "power_cut",
    "corrupt_state",
    "lost_tail",
]

LinkToxic = Literal["latency", "stall", "reset", "corrupt"]
DiskFaultKind = Literal["slow_fsync", "stall_fsync", "eio_write", "eio_fsync", "full"]


class CapabilityError(RuntimeError):
    """The target cannot inject this fault here (missing root, tool or kernel feature);
    the message says what is missing."""


@dataclass(frozen=True, slots=True)
class LinkFault:
    """A fault on the peer traffic from ``src`` to ``dst`` (one direction)."""

    toxic: LinkToxic
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    probability: float = 1.0
    """For ``corrupt`` and ``reset``: the share of chunks (or connections) hit."""


@dataclass(frozen=True, slots=True)
class DiskFault:
    kind: DiskFaultKind
    delay_ms: float = 0.0
    """For ``slow_fsync``: added to every fsync; ``stall_fsync`` blocks until healed."""


@dataclass(frozen=True, slots=True)
class LogMark:
    """Where a node's WAL ended at one moment (``Target.mark_log``)."""

    node_id: int
    segment: str
    """The newest segment's file name then."""
    size: int
    """Its size in bytes then."""


@dataclass(frozen=True, slots=True)
class NodeEndpoint:
    node_id: int
    http: str
    """Base URL of the node's public API, reachable from the chaos process."""
    admin: str | None = None
    """Base URL of the admin listener, when the chaos process may reach it."""


@dataclass(slots=True)
class ClusterCredentials:
    api_keys: dict[str, str] = field(default_factory=dict)
    """client id -> bearer token, one per workload client."""
    admin_token: str | None = None
    ca_file: str | None = None
    """CA bundle to verify the HTTP API's certificate, when it serves TLS."""


class FaultHandle(Protocol):
    description: str
    """One line for progress output and the report, e.g. "partition {1} | {2,3}"."""

    def heal(self) -> None:
        """Undo the fault; calling it twice is harmless."""


class ActiveFault:
    """The ``FaultHandle`` every target returns: it is listed in its target's ``active``
    list while in force, and :meth:`heal` (idempotent) removes it and calls ``undo`` once.

    ``outcome`` says what the cluster did about a fault whose effect is the question
    (``corrupt_state``); ``resources`` names what a fault made in a cluster (kind, name).
    """

    def __init__(
        self, active: list[ActiveFault], description: str, undo: Callable[[], object]
    ) -> None:
        self.description = description
        self.outcome = ""
        self.resources: list[tuple[str, str]] = []
        self._active = active
        self._undo = undo
        self.healed = False
        active.append(self)

    def heal(self) -> None:
        if self.healed:
            return
        self.healed = True
        with contextlib.suppress(ValueError):
            self._active.remove(self)
        self._undo()

    def __repr__(self) -> str:
        return f"<fault {self.description}{' (healed)' if self.healed else ''}>"


class Target(Protocol):
    """A running cluster under test. Node ids are the Raft member ids."""

    name: str
    """``local``, ``docker`` or ``kubernetes``."""

    def capabilities(self) -> frozenset[str]: ...

    def endpoints(self) -> Mapping[int, NodeEndpoint]: ...

    def credentials(self) -> ClusterCredentials: ...

    def node_ids(self) -> list[int]: ...

    def leader(self) -> int | None:
        """The leader most members report right now, or None."""
        ...

    # processes
    def kill(self, node_id: int) -> FaultHandle:
        """SIGKILL; healing starts the node again on the same data."""
        ...

    def pause(self, node_id: int) -> FaultHandle: ...

    def restart(self, node_id: int) -> None:
        """Graceful stop (SIGTERM, leadership handed over) and start; returns once started."""
        ...

    # network
    def partition(self, groups: Iterable[Iterable[int]], one_way: bool = False) -> FaultHandle:
        """No traffic between different groups (with ``one_way``, only from each group
        to the later ones). Nodes in no group keep talking to everyone (a bridge)."""
        ...

    def loss(self, node_id: int, probability: float) -> FaultHandle: ...

    def bandwidth(self, node_id: int, rate_kbit: int) -> FaultHandle: ...

    def link(self, src: int, dst: int, fault: LinkFault) -> FaultHandle: ...

    # clock, disk, state
    def clock(self, node_id: int, offset_s: float, rate: float = 1.0) -> FaultHandle:
        """Restart the node with its clock ``offset_s`` off (and running at ``rate``);
        healing restarts it with the true clock."""
        ...

    def disk(self, node_id: int, fault: DiskFault) -> FaultHandle: ...

    def power_cut(self, node_ids: Iterable[int]) -> FaultHandle:
        """Kill the nodes and drop every write they had not fsynced; healing starts them."""
        ...

    def corrupt_state(self, node_id: int, seed: int) -> FaultHandle:
        """Stop the node, damage its data on disk (seeded), start it again."""
        ...

    def mark_log(self, node_id: int) -> LogMark:
        """Where the node's WAL ends now (for ``cut_log``)."""
        ...

    def cut_log(self, node_id: int, mark: LogMark) -> FaultHandle:
        """Kill the node and cut its WAL back to ``mark`` (what it wrote since is gone,
        fsynced or not); healing starts it. ``outcome`` says what was cut."""
        ...

    def heal_all(self) -> None:
        """Undo every fault still active (also on error paths)."""
        ...

    def close(self) -> None:
        """Heal everything and release what the target made (namespaces, mounts, ...)."""
        ...
