"""Named chaos scenarios: each a seeded schedule of faults injected through a ``Target``.

A scenario declares the fault kinds it needs (``needs``, the strings of
``Target.capabilities()``); the runner refuses one the target lacks before
anything starts, naming what is missing. Scenarios compose: ``a+b`` runs both
schedules side by side (``compose``). Every schedule returns once its time is
up and leaves no fault in force: each fault is healed when its window closes.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from .target import DiskFault, FaultHandle, LinkFault, Target


@dataclass
class FaultWindow:
    name: str
    start_ns: int
    end_ns: int | None
    nodes: list[int]
    description: str
    outcome: str = ""
    injection_ns: int = 0
    """How long injecting took before the window opened (the fault may have taken
    effect during it: the window's unavailability can be short by up to this)."""


@dataclass
class FaultContext:
    """What a schedule works with: the target, its seeded randomness, its deadline."""

    target: Target
    rng: random.Random
    deadline: float
    """``time.monotonic()`` after which no new fault starts."""
    on_fault: Callable[[FaultWindow], None] = lambda window: None
    """Called when a window opens (``end_ns`` None) and when it closes."""
    stop: threading.Event = field(default_factory=threading.Event)

    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    def alive(self, need: float = 1.0) -> bool:
        return not self.stop.is_set() and self.time_left() >= need

    def sleep(self, seconds: float) -> None:
        self.stop.wait(max(0.0, min(seconds, self.time_left())))

    def leader(self) -> int:
        """The current leader (waits up to 10 s for one), else a seeded choice."""
        end = time.monotonic() + 10
        while time.monotonic() < end:
            leader = self.target.leader()
            if leader is not None:
                return leader
            time.sleep(0.2)
        return self.rng.choice(self.target.node_ids())

    def others(self, node_id: int) -> list[int]:
        return [n for n in self.target.node_ids() if n != node_id]

    def inject(
        self, name: str, nodes: list[int], inject: Callable[[], FaultHandle | None]
    ) -> tuple[FaultWindow, FaultHandle | None]:
        """Inject and open the fault's window once it is in force (a partition's rules
        all applied, a node killed), so unavailability counts from there."""
        began = time.monotonic_ns()
        handle = inject()
        window = FaultWindow(name, time.monotonic_ns(), None, sorted(nodes), name)
        window.injection_ns = window.start_ns - began
        if handle is not None:
            window.description = handle.description
            window.outcome = str(getattr(handle, "outcome", "") or "")
        self.on_fault(window)
        return window, handle

    def heal(
        self,
        window: FaultWindow,
        handle: FaultHandle | None,
        heal: Callable[[], None] | None = None,
    ) -> None:
        try:
            if handle is not None:
                handle.heal()
            if heal is not None:
                heal()
        finally:
            window.end_ns = time.monotonic_ns()
            self.on_fault(window)

    def during(self, name: str, nodes: list[int], action: Callable[[], None]) -> None:
        """A window around an action that is itself the fault (a graceful restart)."""
        window = FaultWindow(name, time.monotonic_ns(), None, sorted(nodes), name)
        self.on_fault(window)
        self.heal(window, None, action)

    def hold(
        self,
        name: str,
        nodes: list[int],
        inject: Callable[[], FaultHandle | None],
        seconds: float,
        heal: Callable[[], None] | None = None,
    ) -> None:
        """Inject, keep the fault ``seconds`` (not past the deadline), heal; record the
        window. ``heal`` undoes what ``inject`` did besides the handle it returns (also
        when ``inject`` fails half way)."""
        try:
            window, handle = self.inject(name, nodes, inject)
        except BaseException:
            if heal is not None:
                heal()
            raise
        try:
            self.sleep(seconds)
        finally:
            self.heal(window, handle, heal)


Schedule = Callable[[FaultContext], None]


def _heal_all(handles: list[FaultHandle], newest_first: bool = False) -> None:
    """Heal faults that one step injected together (read when the window closes)."""
    for handle in reversed(handles) if newest_first else list(handles):
        handle.heal()


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    needs: frozenset[str]
    schedule: Schedule
    min_nodes: int = 3
    default_nodes: int = 3

    def missing(self, capabilities: frozenset[str]) -> list[str]:
        return sorted(self.needs - capabilities)


# ---- the schedules -------------------------------------------------------------------------


def _network_partition(ctx: FaultContext) -> None:
    while ctx.alive(3):
        leader = ctx.leader()
        rest = ctx.others(leader)
        if len(rest) >= 4 and ctx.rng.random() < 0.5:
            minority = [leader, *ctx.rng.sample(rest, 1)]
            majority = [n for n in rest if n not in minority]
            ctx.hold(
                "partition-split",
                minority,
                partial(ctx.target.partition, [minority, majority]),
                4,
            )
        else:
            ctx.hold(
                "isolate-leader",
                [leader],
                partial(ctx.target.partition, [[leader], rest]),
                4,
            )
        ctx.sleep(3)


def _node_failure(ctx: FaultContext) -> None:
    turn = 0
    while ctx.alive(3):
        victim = ctx.leader() if turn % 2 == 0 else ctx.rng.choice(ctx.others(ctx.leader()))
        name = "kill-leader" if turn % 2 == 0 else "kill-follower"
        ctx.hold(name, [victim], partial(ctx.target.kill, victim), 3)
        ctx.sleep(3)
        turn += 1


def _byzantine(ctx: FaultContext) -> None:
    turn = 0
    while ctx.alive(3):
        leader = ctx.leader()
        follower = ctx.rng.choice(ctx.others(leader))
        if turn % 2 == 0 or "corrupt_state" not in ctx.target.capabilities():
            ctx.hold(
                "corrupt-frames",
                [leader, follower],
                partial(ctx.target.link, leader, follower, LinkFault("corrupt", probability=0.3)),
                5,
            )
        else:
            seed = ctx.rng.randrange(1 << 30)
            ctx.hold(
                "corrupt-state",
                [follower],
                partial(_corrupt_state, ctx.target, follower, seed),
                2,
            )
        ctx.sleep(3)
        turn += 1


def _corrupt_state(target: Target, node_id: int, seed: int) -> FaultHandle:
    corrupt: Any = target.corrupt_state
    with contextlib.suppress(TypeError):
        return corrupt(node_id, seed, watch_s=3.0)  # type: ignore[no-any-return]
    return target.corrupt_state(node_id, seed)


def _slow_follower(ctx: FaultContext) -> None:
    while ctx.alive(3):
        follower = ctx.rng.choice(ctx.others(ctx.leader()))
        ctx.hold(
            "slow-follower",
            [follower],
            partial(ctx.target.bandwidth, follower, 64),
            min(10.0, ctx.time_left() - 1),
        )
        ctx.sleep(2)


def _split_brain(ctx: FaultContext) -> None:
    while ctx.alive(3):
        leader = ctx.leader()
        rest = ctx.others(leader)
        old_side = [leader, *ctx.rng.sample(rest, (len(rest) - 1) // 2)]
        new_side = [n for n in rest if n not in old_side]
        ctx.hold(
            "split-brain",
            old_side,
            partial(ctx.target.partition, [old_side, new_side]),
            5,
        )
        ctx.sleep(3)


def _leader_flapping(ctx: FaultContext) -> None:
    while ctx.alive(2):
        leader = ctx.leader()
        ctx.hold(
            "isolate-leader",
            [leader],
            partial(ctx.target.partition, [[leader], ctx.others(leader)]),
            1.5,
        )
        ctx.sleep(1.5)


def _rolling_restart(ctx: FaultContext) -> None:
    while ctx.alive(3):
        for node_id in ctx.target.node_ids():
            if not ctx.alive(2):
                return
            ctx.during(f"restart {node_id}", [node_id], partial(ctx.target.restart, node_id))
            ctx.sleep(2)


def _cascading_failures(ctx: FaultContext) -> None:
    while ctx.alive(5):
        leader = ctx.leader()
        follower = ctx.rng.choice(ctx.others(leader))
        killed = ctx.inject("kill-follower", [follower], partial(ctx.target.kill, follower))
        try:
            ctx.sleep(2)
            # The second failure takes the quorum: writes stop until it is healed.
            paused = ctx.inject("pause-leader", [leader], partial(ctx.target.pause, leader))
            try:
                ctx.sleep(2)
            finally:
                ctx.heal(*paused)
        finally:
            ctx.heal(*killed)
        ctx.sleep(4)


def _clock_skew(ctx: FaultContext) -> None:
    skews = [3600.0, -600.0, 86400.0]
    turn = 0
    while ctx.alive(4):
        victim = ctx.leader() if turn % 2 else ctx.rng.choice(ctx.others(ctx.leader()))
        offset = skews[turn % len(skews)]
        ctx.hold(
            "clock-skew",
            [victim],
            partial(ctx.target.clock, victim, offset, 1.0 if offset > 0 else 1.5),
            5,
        )
        ctx.sleep(2)
        turn += 1


def _disk_stall(ctx: FaultContext) -> None:
    turn = 0
    while ctx.alive(3):
        if turn % 2 == 0:
            leader = ctx.leader()
            ctx.hold(
                "stall-fsync-leader",
                [leader],
                partial(ctx.target.disk, leader, DiskFault("stall_fsync")),
                4,
            )
        else:
            follower = ctx.rng.choice(ctx.others(ctx.leader()))
            ctx.hold(
                "slow-fsync",
                [follower],
                partial(ctx.target.disk, follower, DiskFault("slow_fsync", delay_ms=50)),
                4,
            )
        ctx.sleep(4)
        turn += 1


def _power_cut(ctx: FaultContext) -> None:
    while ctx.alive(3):
        leader = ctx.leader()
        rest = ctx.others(leader)
        majority = [leader, *ctx.rng.sample(rest, len(rest) // 2)]
        ctx.hold(
            "power-cut-majority",
            majority,
            partial(ctx.target.power_cut, majority),
            2,
        )
        ctx.sleep(6)


def _latency_loss(ctx: FaultContext) -> None:
    while ctx.alive(3):
        leader = ctx.leader()
        follower = ctx.rng.choice(ctx.others(leader))
        handles: list[FaultHandle] = []

        def inject(a: int = leader, b: int = follower, got: list[FaultHandle] = handles) -> None:
            for other in ctx.others(a):
                got.append(ctx.target.link(a, other, LinkFault("latency", 40, 20)))
            got.append(ctx.target.loss(b, 0.1))

        ctx.hold(
            "latency+loss",
            [leader, follower],
            inject,
            min(6.0, ctx.time_left() - 1),
            heal=partial(_heal_all, handles),
        )
        ctx.sleep(3)


LOST_TAIL_ACK_S = 3.0
"""How long the frozen follower misses what the leader and the cut follower acknowledge."""
LOST_TAIL_LEADER_DOWN_S = 4.0
"""How long the old leader stays down once the other two are back (no quorum can form
without it: the cut node owes what only the leader still has)."""
LOST_TAIL_START_S = 30.0
"""The longest wait for a restarted node to answer, or for a leader after the heal."""
LOST_TAIL_AFTER_S = 6.0
"""Load after the leader is back, before the next round or the end of the run (clients
that timed out during the outage retry first)."""


def _lost_tail(ctx: FaultContext) -> None:
    """Issue 14's reproduction: freeze one follower; the leader and the other follower
    acknowledge orders; kill the leader, and that follower with its WAL cut back to
    before them; restart it and resume the frozen one while the old leader stays down a
    while, then start the leader. Before protocol-aware recovery the two elected a leader
    without the orders and lost them; now the cut one does not vote for a log shorter
    than it promised, and no leader is elected until the old one is back."""
    t = ctx.target
    # One round takes about LOST_TAIL_ACK_S + LOST_TAIL_LEADER_DOWN_S + restarts, and
    # runs whole once begun (its waits are not cut short by the deadline).
    while ctx.alive(LOST_TAIL_ACK_S):
        leader = ctx.leader()
        followers = ctx.others(leader)
        if len(followers) < 2:
            return
        cut, frozen = ctx.rng.sample(followers, 2)
        handles: list[FaultHandle] = []

        def inject(
            leader: int = leader,
            cut: int = cut,
            frozen: int = frozen,
            got: list[FaultHandle] = handles,
        ) -> FaultHandle | None:
            paused = t.pause(frozen)
            got.append(paused)
            mark = t.mark_log(cut)
            ctx.stop.wait(LOST_TAIL_ACK_S)  # orders acknowledged by the leader and `cut`
            got.append(t.kill(leader))
            lost = t.cut_log(cut, mark)
            got.append(lost)
            # The two followers come back; the old leader stays down (healed last).
            lost.heal()
            paused.heal()
            return lost

        try:
            window, _ = ctx.inject("lost-tail", [leader, cut, frozen], inject)
        except BaseException:
            _heal_all(handles, newest_first=True)
            raise
        try:
            # Once the cut node answers (a restart may take seconds on a loaded
            # machine), the two followers get LOST_TAIL_LEADER_DOWN_S without the old
            # leader: time to elect a leader without the acknowledged tail, if they would.
            verdict = _recovery_verdict(t, cut, LOST_TAIL_START_S)
            ctx.stop.wait(LOST_TAIL_LEADER_DOWN_S)
            meanwhile = t.leader()
            window.outcome = f"{window.outcome}; restarted with verdict {verdict}; " + (
                f"no leader without node {leader}"
                if meanwhile is None
                else f"node {meanwhile} led without node {leader}"
            )
        finally:
            ctx.heal(window, None, partial(_heal_all, handles, newest_first=True))
        # Let the workload see the cluster back (a leader, writes acknowledged) even
        # past the deadline: the round's point is what the history says afterwards.
        back = time.monotonic() + LOST_TAIL_START_S
        while t.leader() is None and time.monotonic() < back and not ctx.stop.is_set():
            time.sleep(0.2)
        ctx.stop.wait(LOST_TAIL_AFTER_S)


def _recovery_verdict(target: Target, node_id: int, wait_s: float) -> str:
    """What the node's recovery concluded (its admin status, waited for up to
    ``wait_s``), or why it is unknown."""
    cluster: Any = getattr(target, "cluster", None)
    if cluster is None:
        return "unknown (no status on this target)"
    end = time.monotonic() + wait_s
    answer: object = None
    while time.monotonic() < end:
        try:
            code, doc = cluster.request(node_id, "GET", "/v1/admin/status", timeout=1.0)
        except OSError as exc:
            answer = exc
        else:
            if code == 200 and isinstance(doc, dict):
                return str(doc.get("recovery_verdict", "unknown"))
            answer = f"{code} {str(doc)[:200]}"
        time.sleep(0.2)
    return f"unknown (no status in {wait_s:g} s: {answer})"


MONKEY_NEEDS = frozenset({"kill"})


def _chaos_monkey(ctx: FaultContext) -> None:
    """Seeded random faults among what the target can do, one at a time."""
    kinds = [
        k
        for k in ("kill", "pause", "partition", "loss", "link", "disk")
        if k in ctx.target.capabilities()
    ]
    t = ctx.target
    while ctx.alive(3):
        kind = ctx.rng.choice(kinds)
        node = ctx.rng.choice(t.node_ids())
        other = ctx.rng.choice(ctx.others(node))
        injects: dict[str, tuple[list[int], Callable[[], FaultHandle | None]]] = {
            "kill": ([node], partial(t.kill, node)),
            "pause": ([node], partial(t.pause, node)),
            "partition": ([node], partial(t.partition, [[node], ctx.others(node)])),
            "loss": ([node], partial(t.loss, node, 0.2)),
            "link": ([node, other], partial(t.link, node, other, LinkFault("latency", 80, 40))),
            "disk": ([node], partial(t.disk, node, DiskFault("slow_fsync", delay_ms=30))),
        }
        nodes, inject = injects[kind]
        ctx.hold(f"monkey-{kind}", nodes, inject, ctx.rng.uniform(1.5, 4.0))
        ctx.sleep(ctx.rng.uniform(1.5, 3.0))


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            "network-partition",
            "isolate the leader, or split 2/3 of 5, by iptables; heal; repeat",
            frozenset({"partition"}),
            _network_partition,
        ),
        Scenario(
            "node-failure",
            "kill -9 the leader, then a follower, each restarted 3 s later",
            frozenset({"kill"}),
            _node_failure,
        ),
        Scenario(
            "byzantine",
            "bit flips on a leader->follower peer link, then a follower's state corrupted on disk",
            frozenset({"link", "corrupt_state"}),
            _byzantine,
        ),
        Scenario(
            "slow-follower",
            "a follower's egress limited to 64 kbit/s by tc tbf",
            frozenset({"bandwidth"}),
            _slow_follower,
        ),
        Scenario(
            "split-brain",
            "the leader with a minority cut off from a majority that elects another",
            frozenset({"partition"}),
            _split_brain,
            min_nodes=3,
            default_nodes=5,
        ),
        Scenario(
            "leader-flapping",
            "the current leader isolated for 1.5 s, every 3 s",
            frozenset({"partition"}),
            _leader_flapping,
        ),
        Scenario(
            "rolling-restart",
            "graceful restart of each node in turn",
            frozenset({"restart"}),
            _rolling_restart,
        ),
        Scenario(
            "cascading-failures",
            "kill a follower, then pause the leader 2 s later (no quorum), heal both",
            frozenset({"kill", "pause"}),
            _cascading_failures,
        ),
        Scenario(
            "clock-skew",
            "one node restarted with its clock +1 h, -10 min (x1.5), +1 day (libfaketime)",
            frozenset({"clock"}),
            _clock_skew,
        ),
        Scenario(
            "disk-stall",
            "the leader's fsync stalled, then a follower's slowed by 50 ms (FUSE)",
            frozenset({"disk"}),
            _disk_stall,
        ),
        Scenario(
            "power-cut",
            "a majority (with the leader) killed and its unsynced writes dropped (FUSE)",
            frozenset({"power_cut"}),
            _power_cut,
        ),
        Scenario(
            "latency-loss",
            "40+-20 ms on the leader's peer links (proxy) and 10% loss on a follower (iptables)",
            frozenset({"link", "loss"}),
            _latency_loss,
        ),
        Scenario(
            "lost-tail",
            "a follower frozen while the leader and the other follower acknowledge orders; "
            "that follower's WAL cut back to before them; all killed, the two followers "
            "restarted before the old leader (issue 14)",
            frozenset({"pause", "kill", "lost_tail"}),
            _lost_tail,
        ),
        Scenario(
            "chaos-monkey",
            "seeded random kills, pauses, partitions, loss, latency and slow disks",
            MONKEY_NEEDS,
            _chaos_monkey,
        ),
    ]
}


def compose(names: str) -> Scenario:
    """``a+b``: both schedules side by side; needs the union of their needs."""
    parts = [p for p in names.split("+") if p]
    unknown = [p for p in parts if p not in SCENARIOS]
    if unknown or not parts:
        raise KeyError(
            f"unknown scenario {', '.join(unknown) or repr(names)} "
            f"(known: {', '.join(SCENARIOS)}; compose with '+')"
        )
    if len(parts) == 1:
        return SCENARIOS[parts[0]]
    chosen = [SCENARIOS[p] for p in parts]

    def together(ctx: FaultContext) -> None:
        threads = []
        for i, scenario in enumerate(chosen):
            sub = FaultContext(
                ctx.target,
                random.Random(f"{ctx.rng.random()}:{i}"),
                ctx.deadline,
                ctx.on_fault,
                ctx.stop,
            )
            threads.append(threading.Thread(target=scenario.schedule, args=(sub,), daemon=True))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    return Scenario(
        "+".join(parts),
        " and ".join(s.summary for s in chosen),
        frozenset().union(*(s.needs for s in chosen)),
        together,
        max(s.min_nodes for s in chosen),
        max(s.default_nodes for s in chosen),
    )
