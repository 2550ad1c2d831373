"""The Ready driver: the one place that decides the order of persist, send and apply.

The consensus core hands out ``Ready`` batches; this class decides, for each one,
what is written to disk, which messages may leave before that write is durable,
which committed entries may be applied meanwhile, and which must wait. It keeps
the requests waiting on the log (proposals, configuration changes, linearizable
reads) and answers or fails them. It does no I/O and never imports asyncio: the
asyncio node (``server/shell.py``) and the simulator (``sim/simulator.py``) both
drive this same class, one with a disk thread and gRPC, the other with a
simulated disk that loses unsynced writes on a power cut.

Shape: one ``Ready`` is one ``Batch``, handled in four calls, in this order::

    batch = driver.ready(now)            # None: nothing to do
    send(batch.send_now)                 # may leave before the write is durable
    start writing batch.write            # one fsync (disk thread / simulated disk)
    driver.apply_now(batch)              # entries durable before this Ready
    ... the write becomes durable ...
    send(driver.persisted(batch, now))   # needs the write durable
    driver.finish(batch)                 # install snapshot, apply, serve reads, advance

Between ``ready`` and ``finish`` the core takes no input at all (``tick``, ``step``,
``propose`` and ``read`` assert it): the core counts a leader's own entries as
replicated as soon as they are appended, which is safe only because no
acknowledgement can be counted before the write that holds them is durable. A
step function returning one list of mixed actions was the alternative; four calls
whose order is fixed make each rule a line of code that can be pointed at (and a
planted bug in ``sim/mutation.py`` moves exactly that line).

Why the ordering decisions live here and not in the core's ``Ready`` (as
etcd-io/raft's asynchronous storage writes do): each rule depends on one fact the
driver already has (the role, and whether the term or vote changed since the last
durable write), the core stays unchanged for the helpers writing its paper tests,
and the whole policy is in this file. docs/driver.md states each rule and why it
is safe:

1. A leader's messages in a Ready that appends entries leave before its own fsync
   (Raft thesis 10.2.1), unless the Ready changes the durable term or vote.
2. Everything else waits for the write: votes, a follower's acknowledgements,
   anything after a term or vote change.
3. A leader applies committed entries that were durable before this Ready while the
   write runs; entries this Ready writes are applied after it (with one voter an
   entry commits in the Ready that first writes it).
4. A hard state that changes only the commit index is not written on its own: it
   rides along with the next write, or ``flush_deferred`` writes it (on a tick). The
   commit index is relearnt from the leader after a restart.
5. An empty append to a follower the leader streams to only carries the commit
   index: it is held up to ``hold`` (clock units) and dropped if another append to
   that follower leaves meanwhile (that one carries a commit at least as new).
6. A read is answered once the applied index reaches its read index.
7. A request waits at the (term, index) its entry got. The entry applied there with
   another term means the leader lost it: the request fails and is safe to retry.
   A new proposal at an index someone else waited on fails the older request.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from exchange_node.raft.types import (
    NONE,
    ConfChange,
    ConfState,
    Entry,
    HardState,
    Message,
    MessageType,
    NotLeaderError,
    ProposalDroppedError,
    Ready,
    Role,
    Snapshot,
)

_APP = MessageType.APP
_LEADER = Role.LEADER

T = TypeVar("T")
"""A waiting request, opaque to the driver (the shell's futures, the simulator's ids)."""
R = TypeVar("R")
"""What the state machine returns for one applied entry."""
T_contra = TypeVar("T_contra", contravariant=True)
R_contra = TypeVar("R_contra", contravariant=True)
R_co = TypeVar("R_co", covariant=True)


class Core(Protocol):
    """What the driver uses of ``raft.core.RaftCore``."""

    def tick(self) -> None: ...
    def step(self, m: Message) -> None: ...
    def propose_many(self, datas: Sequence[bytes]) -> tuple[int, int]: ...
    def propose_conf_change(self, change: ConfChange) -> tuple[int, int]: ...
    def read_index(self, ctx: bytes) -> None: ...
    def has_ready(self) -> bool: ...
    def ready(self) -> Ready: ...
    def advance(self, rd: Ready) -> None: ...
    def is_replicating(self, peer: int) -> bool: ...
    @property
    def conf_state(self) -> ConfState: ...
    @property
    def commit_index(self) -> int: ...


class StateMachine(Protocol[R_co]):
    """The application: applies committed entries in log order."""

    def apply(self, entry: Entry) -> R_co | None:
        """Apply one committed entry; what it returns answers the request waiting there."""
        ...

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole state with a durable snapshot the leader sent."""
        ...


class Failure(enum.Enum):
    """Why a waiting request was not answered with a result."""

    NOT_LEADER = "not_leader"
    """This node does not lead (a proposal or read was not started)."""
    DROPPED = "dropped"
    """The core refused it (a transfer in progress, a configuration change pending)."""
    REPLACED = "replaced"
    """A newer entry of this node took the index it waited on."""
    LOST = "lost"
    """The entry committed at its index has another term: the leader lost it."""
    TIMEOUT = "timeout"
    """Its deadline passed first: outcome unknown."""
    SNAPSHOT = "snapshot"
    """A snapshot from the leader covered its index: outcome unknown."""
    STOPPED = "stopped"
    """The node stops: outcome unknown."""


class Replies(Protocol[T_contra, R_contra]):
    """Where answers go (the shell resolves futures; the simulator checks them)."""

    def resolved(self, token: T_contra, index: int, result: R_contra | None) -> None:
        """The request's entry was applied at ``index`` (same term as proposed)."""
        ...

    def failed(self, token: T_contra, failure: Failure, detail: str) -> None: ...

    def read_ready(self, token: T_contra, index: int) -> None:
        """The read may be served: this replica applied at least its read ``index``."""
        ...


@dataclass(slots=True)
class Write:
    """One Ready's writes: durable with one fsync. ``must_sync``: something waits on it."""

    entries: list[Entry]
    hard_state: HardState | None
    snapshot: Snapshot | None
    must_sync: bool = True


@dataclass(slots=True)
class Batch:
    """One Ready, planned. See the module docstring for the order of the calls."""

    ready: Ready
    write: Write | None = None
    send_now: list[Message] = field(default_factory=list)
    """May leave before ``write`` is durable (rule 1)."""
    apply_now: list[Entry] = field(default_factory=list)
    """Committed, and durable before this Ready: applied while ``write`` runs (rule 3)."""
    send_after: list[Message] = field(default_factory=list)
    apply_after: list[Entry] = field(default_factory=list)
    lost_leadership: bool = False
    """This Ready's soft state ends this node's leadership."""


@dataclass(slots=True)
class _Waiting(Generic[T]):
    term: int
    token: T


@dataclass(slots=True)
class _Read(Generic[T]):
    tokens: list[T]
    deadline: float
    index: int = -1


class CommitNoticeHold:
    """Rule 5: holds commit-only appends to streaming followers; sans-I/O.

    ``route`` returns what leaves now; ``release_at`` is when the adapter must call
    ``release`` (None: nothing held).
    """

    __slots__ = ("_held", "held", "hold", "merged", "release_at", "released")

    def __init__(self, hold: float) -> None:
        self.hold = hold
        self._held: dict[int, Message] = {}
        self.release_at: float | None = None
        self.held = 0
        """Commit-only appends held back."""
        self.merged = 0
        """Held appends dropped because a later append carried the commit."""
        self.released = 0
        """Held appends sent when their time was up."""

    def route(
        self, messages: list[Message], replicating: Callable[[int], bool], now: float
    ) -> list[Message]:
        if self.hold <= 0 or not messages:
            return messages
        held = self._held
        out: list[Message] = []
        for msg in messages:
            if msg.type is _APP:
                if not msg.entries and replicating(msg.to):
                    if msg.to in held:
                        self.merged += 1
                    held[msg.to] = msg
                    self.held += 1
                    continue
                if held.pop(msg.to, None) is not None:
                    self.merged += 1
            out.append(msg)
        if held and self.release_at is None:
            self.release_at = now + self.hold
        return out

    def release(self, now: float) -> list[Message]:
        """The held appends, if their time is up."""
        if self.release_at is None or now < self.release_at:
            return []
        self.release_at = None
        held = list(self._held.values())
        self._held.clear()
        self.released += len(held)
        return held

    def discard(self) -> None:
        """Forget held appends (this node stopped leading: they are stale)."""
        self._held.clear()
        self.release_at = None


class Driver(Generic[T, R]):
    """The Ready policy around one core; see the module docstring."""

    def __init__(
        self,
        core: Core,
        machine: StateMachine[R],
        replies: Replies[T, R],
        *,
        node_id: int,
        read_nonce: str = "",
        hold: float = 0.0,
        persisted_term_vote: tuple[int, int] = (0, NONE),
        applied_index: int = 0,
    ) -> None:
        self.core = core
        self.machine = machine
        self.replies = replies
        self.node_id = node_id
        self.notices = CommitNoticeHold(hold)
        self.role = Role.FOLLOWER
        self.leader = NONE
        self.term = persisted_term_vote[0]
        self.commit_index = core.commit_index
        self.applied_index = applied_index
        self._persisted_term_vote = persisted_term_vote
        self._deferred: HardState | None = None
        self._batch: Batch | None = None
        self._waiting: dict[int, _Waiting[T]] = {}
        self._deadlines: list[tuple[float, int, int, _Waiting[T]]] = []
        self._seq = itertools.count()
        self._reads: dict[bytes, _Read[T]] = {}
        self._ready_reads: list[_Read[T]] = []
        self._read_prefix = f"{node_id}:{read_nonce}:".encode()
        self._read_seq = 0

    # ------------------------------------------------------------------ inputs

    @property
    def busy(self) -> bool:
        """A Batch is between ``ready`` and ``finish``: the core takes no input."""
        return self._batch is not None

    @property
    def waiting(self) -> int:
        """Requests waiting on the log (proposals and configuration changes)."""
        return len(self._waiting)

    def tick(self) -> None:
        assert self._batch is None, "tick during a Batch"
        self.core.tick()

    def step(self, message: Message) -> None:
        assert self._batch is None, "a peer message stepped before the local write is durable"
        self.core.step(message)

    def propose(
        self, tokens: Sequence[T], datas: Sequence[bytes], deadlines: Sequence[float]
    ) -> bool:
        """Propose ``datas`` (one entry each); ``tokens[i]`` waits on entry i until
        ``deadlines[i]``.

        False (and each token failed) when this node cannot propose now.
        """
        assert self._batch is None, "propose during a Batch"
        if self.role is not _LEADER:
            self._fail_all_of(tokens, Failure.NOT_LEADER, "not the leader")
            return False
        try:
            term, first = self.core.propose_many(datas)
        except NotLeaderError:
            self._fail_all_of(tokens, Failure.NOT_LEADER, "not the leader")
            return False
        except ProposalDroppedError as exc:
            self._fail_all_of(tokens, Failure.DROPPED, str(exc))
            return False
        for offset, token in enumerate(tokens):
            self._wait(first + offset, term, token, deadlines[offset])
        return True

    def propose_conf_change(self, token: T, change: ConfChange, deadline: float) -> bool:
        assert self._batch is None, "propose during a Batch"
        try:
            term, index = self.core.propose_conf_change(change)
        except NotLeaderError:
            self.replies.failed(token, Failure.NOT_LEADER, "not the leader")
            return False
        except ProposalDroppedError as exc:
            self.replies.failed(token, Failure.DROPPED, str(exc))
            return False
        self._wait(index, term, token, deadline)
        return True

    def read(self, tokens: Sequence[T], deadline: float, ctx: bytes | None = None) -> bool:
        """Start one ReadIndex round for ``tokens``; each is answered by ``read_ready``.

        ``ctx`` names the round (default: this node's id, nonce and a sequence number).
        """
        assert self._batch is None, "read during a Batch"
        if ctx is None:
            self._read_seq += 1
            ctx = self._read_prefix + str(self._read_seq).encode()
        try:
            self.core.read_index(ctx)
        except (NotLeaderError, ProposalDroppedError):
            if self.leader == NONE:
                self._fail_all_of(tokens, Failure.NOT_LEADER, "no leader is known")
            else:
                self._fail_all_of(tokens, Failure.DROPPED, "read failed")
            return False
        self._reads[ctx] = _Read(list(tokens), deadline)
        return True

    def expire(self, now: float) -> None:
        """Fail the requests whose deadline passed."""
        deadlines = self._deadlines
        waiting = self._waiting
        while deadlines and deadlines[0][0] <= now:
            _deadline, _seq, index, waiter = heapq.heappop(deadlines)
            if waiting.get(index) is waiter:
                del waiting[index]
                self.replies.failed(
                    waiter.token, Failure.TIMEOUT, "not applied in time; outcome unknown"
                )
        for ctx in [c for c, r in self._reads.items() if r.deadline <= now]:
            self._fail_all_of(
                self._reads.pop(ctx).tokens, Failure.TIMEOUT, "read barrier timed out"
            )
        if self._ready_reads:
            keep = []
            for req in self._ready_reads:
                if req.deadline <= now:
                    self._fail_all_of(req.tokens, Failure.TIMEOUT, "read barrier timed out")
                else:
                    keep.append(req)
            self._ready_reads = keep

    def fail_everything(self, failure: Failure, detail: str) -> None:
        """Fail every waiting request (the node stops)."""
        waiting = list(self._waiting.values())
        self._waiting.clear()
        self._deadlines.clear()
        for waiter in waiting:
            self.replies.failed(waiter.token, failure, detail)
        reads = list(self._reads.values()) + self._ready_reads
        self._reads.clear()
        self._ready_reads = []
        for req in reads:
            self._fail_all_of(req.tokens, failure, detail)

    def flush_deferred(self) -> Write | None:
        """Rule 4: the commit-only hard state nothing else carried (an idle cluster)."""
        if self._deferred is None or self._batch is not None:
            return None
        hs, self._deferred = self._deferred, None
        return Write([], hs, None, must_sync=False)

    # ------------------------------------------------------------------ one Ready

    def ready(self, now: float) -> Batch | None:
        """Take the core's next Ready and plan it (None: nothing to do)."""
        assert self._batch is None, "ready() before the previous Batch finished"
        core = self.core
        if not core.has_ready():
            return None
        rd = core.ready()
        batch = Batch(rd)
        soft = rd.soft_state
        if soft is not None:
            was_leader = self.role is _LEADER
            self.leader = soft.leader
            self.role = soft.role
            if was_leader and soft.role is not _LEADER:
                batch.lost_leadership = True
                self.notices.discard()
                # Reads not yet confirmed by a quorum never will be here: fail them
                # now (503 with the new leader's hint) instead of at their deadline.
                # Confirmed ones stay: their read index held when it was confirmed.
                unconfirmed = list(self._reads.values())
                self._reads.clear()
                for req in unconfirmed:
                    self._fail_all_of(
                        req.tokens, Failure.NOT_LEADER, "leadership lost before the read"
                    )
        hs = rd.hard_state
        persisted = self._persisted_term_vote
        if hs is not None:
            self.term = hs.term
            self.commit_index = hs.commit
            if not rd.entries and rd.snapshot is None and (hs.term, hs.vote) == persisted:
                self._deferred = hs  # rule 4
                hs = None
        elif rd.entries and rd.snapshot is None:
            hs = self._deferred  # rides along with the next write
        if rd.entries or hs is not None or rd.snapshot is not None:
            if hs is not None:
                self._deferred = None
            batch.write = Write(rd.entries, hs, rd.snapshot)
        leader = self.role is _LEADER
        if (
            leader
            and rd.messages
            and rd.entries
            and (hs is None or (hs.term, hs.vote) == persisted)
        ):
            batch.send_now = self.notices.route(rd.messages, core.is_replicating, now)  # rule 1
        else:
            batch.send_after = rd.messages  # rule 2
        committed = rd.committed_entries
        if leader and rd.snapshot is None and committed:
            if rd.entries:
                first_new = rd.entries[0].index
                early = [e for e in committed if e.index < first_new]  # rule 3
            else:
                early = committed
            batch.apply_now = early
            batch.apply_after = committed[len(early) :]
        else:
            batch.apply_after = committed
        self._batch = batch
        return batch

    def apply_now(self, batch: Batch) -> None:
        """Apply the entries that were durable before this Ready (the write may run)."""
        assert batch is self._batch
        if batch.apply_now:
            self._apply(batch.apply_now)

    def persisted(self, batch: Batch, now: float) -> list[Message]:
        """``batch.write`` is durable: the messages that waited for it."""
        assert batch is self._batch
        write = batch.write
        if write is not None and write.hard_state is not None:
            hs = write.hard_state
            self._persisted_term_vote = (hs.term, hs.vote)
        if not batch.send_after:
            return []
        return self.notices.route(batch.send_after, self.core.is_replicating, now)

    def finish(self, batch: Batch) -> None:
        """Install the snapshot, apply the rest, serve reads, advance the core."""
        assert batch is self._batch
        rd = batch.ready
        if rd.snapshot is not None:
            self._install(rd.snapshot)
        if batch.apply_after:
            self._apply(batch.apply_after)
        if rd.read_states:
            for rs in rd.read_states:
                req = self._reads.pop(rs.request_ctx, None)
                if req is not None:
                    req.index = rs.index
                    self._ready_reads.append(req)
        if self._ready_reads:
            self._serve_reads()
        self.core.advance(rd)
        self._batch = None

    def release_notices(self, now: float) -> list[Message]:
        """Held commit notices whose time is up (call at ``notices.release_at``)."""
        return self.notices.release(now)

    # ------------------------------------------------------------------ internals

    def _wait(self, index: int, term: int, token: T, deadline: float) -> None:
        replaced = self._waiting.pop(index, None)
        if replaced is not None:
            # An older request waited on this index; our log now holds another entry
            # there, so that request's entry can never commit (rule 7).
            self.replies.failed(replaced.token, Failure.REPLACED, "its log entry was replaced")
        waiter = _Waiting(term, token)
        self._waiting[index] = waiter
        heapq.heappush(self._deadlines, (deadline, next(self._seq), index, waiter))

    def _apply(self, entries: list[Entry]) -> None:
        apply = self.machine.apply
        waiting = self._waiting
        replies = self.replies
        for entry in entries:
            assert entry.index == self.applied_index + 1 or self.applied_index == 0, (
                f"applies {entry.index} after {self.applied_index}"
            )
            result = apply(entry)
            index = entry.index
            self.applied_index = index
            if waiting:
                waiter = waiting.pop(index, None)
                if waiter is not None:
                    if waiter.term == entry.term:
                        replies.resolved(waiter.token, index, result)
                    else:
                        replies.failed(
                            waiter.token, Failure.LOST, "leadership changed before it committed"
                        )

    def _install(self, snapshot: Snapshot) -> None:
        self.machine.restore(snapshot)
        index = snapshot.meta.index
        self.applied_index = index
        for covered in [i for i in self._waiting if i <= index]:
            waiter = self._waiting.pop(covered)
            self.replies.failed(
                waiter.token, Failure.SNAPSHOT, "outcome unknown after a snapshot install"
            )

    def _serve_reads(self) -> None:
        applied = self.applied_index
        still: list[_Read[T]] = []
        for req in self._ready_reads:
            if req.index <= applied:
                for token in req.tokens:
                    self.replies.read_ready(token, req.index)
            else:
                still.append(req)
        self._ready_reads = still

    def _fail_all_of(self, tokens: Sequence[T], failure: Failure, detail: str) -> None:
        for token in tokens:
            self.replies.failed(token, failure, detail)
