"""Safety invariants, checked incrementally as the simulation runs.

Every check hangs off something a node just did (persisted a ``Ready``, sent
messages, applied entries, became leader), so checking "after every step"
costs a few dictionary lookups per entry rather than a scan of every log.

What is checked, and where:

* election safety: at most one leader per term (``on_leader``);
* one vote per term: a node never grants its vote to two candidates in the
  same term, across restarts (``on_messages``);
* log matching: two entries with the same index and term carry the same
  data and follow entries of the same term, so by induction the logs agree
  on the whole prefix (``on_persist``, per written entry);
* leader completeness: a new leader's log holds every entry committed in an
  earlier term (``on_leader``), and a leader never overwrites its own log;
* state machine safety: the committed history is global and append-only;
  whenever a node's commit index moves, its log up to there must equal
  that history (``on_persist``); no node ever truncates an entry it has
  durably committed; every applied entry is the next entry of the history,
  and every snapshot restored carries the history's chain value at its
  index (``on_apply``, ``on_snapshot``, ``on_restart``);
* the commit rule (paper 5.4.2): a leader advances its commit index only to
  an entry of its own term, never by counting replicas of an older entry;
* commit indexes never go backwards: within a node's incarnation, and for
  the durable hard state across crashes; terms never go backwards either;
* linearizable reads: a ReadIndex answer is at least the commit index that
  any node knew when the read was asked (``on_read_states``);
* integrity: each committed application entry was proposed by a client and
  is committed once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from exchange_node.raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Snapshot,
)
from exchange_node.sim.app import chain_step, decode_snapshot

if TYPE_CHECKING:
    from exchange_node.sim.disk import SimStorage

_VOTE_RESP = MessageType.VOTE_RESP
_CONF_CHANGE = EntryType.CONF_CHANGE


class Violation(Exception):
    """An invariant does not hold; the message says which and where."""


class NodeWatch:
    """What the checkers remember about one node (kept across its restarts)."""

    __slots__ = ("applied", "commit", "durable", "node_id", "verified")

    def __init__(self, node_id: int) -> None:
        self.node_id = node_id
        self.durable = HardState()
        """The last hard state this node synced."""
        self.commit = 0
        """Highest commit index seen from the current incarnation."""
        self.verified = 0
        """The node's log is checked against the history up to here."""
        self.applied = 0
        """Index of the last entry the node's application applied."""


def apply_conf_change(conf: ConfState, change: ConfChange) -> ConfState:
    """The configuration after one committed change (one server at a time)."""
    voters = set(conf.voters)
    learners = set(conf.learners)
    node = change.node_id
    if change.type == ConfChangeType.ADD_LEARNER:
        if node not in voters:
            learners.add(node)
    elif change.type == ConfChangeType.PROMOTE:
        learners.discard(node)
        voters.add(node)
    else:
        voters.discard(node)
        learners.discard(node)
    return ConfState(tuple(sorted(voters)), tuple(sorted(learners)))


class Checker:
    """The global committed history and every invariant checked against it."""

    def __init__(self, on_commit: Callable[[Entry], None] | None = None) -> None:
        # The committed history, by index (index 0 is a sentinel).
        self.terms: list[int] = [0]
        self.datas: list[bytes] = [b""]
        self.chains: list[int] = [0]
        self.commit_terms: list[int] = [0]
        """By index: the term of the first node known to have committed it."""
        # (index, configuration from that index on), one per committed change.
        self.confs: list[tuple[int, ConfState]] = [(0, ConfState())]
        self.leaders: dict[int, int] = {}
        self.votes: dict[tuple[int, int], int] = {}
        self.written: dict[tuple[int, int], tuple[bytes, int | None]] = {}
        self.proposed: dict[bytes, int] = {}
        """Client data proposed so far -> index it committed at (0: not yet)."""
        self.reads: dict[bytes, int] = {}
        """ReadIndex context -> the least index a correct answer may carry."""
        self._on_commit = on_commit
        self.commit_rule = True
        """Check the commit rule itself, not only its consequences (figure 8)."""

    # -- queries ------------------------------------------------------------

    @property
    def commit_index(self) -> int:
        return len(self.terms) - 1

    @property
    def conf_state(self) -> ConfState:
        return self.confs[-1][1]

    def conf_at(self, index: int) -> ConfState:
        confs = self.confs
        for position in range(len(confs) - 1, -1, -1):
            if confs[position][0] <= index:
                return confs[position][1]
        return confs[0][1]

    # -- hooks the simulator calls ------------------------------------------

    def on_propose(self, data: bytes) -> None:
        self.proposed[data] = 0

    def on_read(self, context: bytes) -> None:
        self.reads[context] = self.commit_index

    def on_persist(
        self,
        watch: NodeWatch,
        storage: SimStorage,
        *,
        entries: Sequence[Entry],
        hard_state: HardState | None,
        snapshot: Snapshot | None,
        is_leader: bool,
    ) -> None:
        """Checks before a ``Ready``'s writes: nothing committed is overwritten."""
        node_id = watch.node_id
        if snapshot is not None:
            self._check_snapshot(node_id, snapshot, "installs")
            if snapshot.meta.index < watch.durable.commit:
                raise Violation(
                    f"node {node_id} installs a snapshot at {snapshot.meta.index} below "
                    f"its durable commit {watch.durable.commit}"
                )
        if entries:
            first = entries[0].index
            last = storage.last_index() if snapshot is None else snapshot.meta.index
            if first <= last:
                if is_leader and snapshot is None:
                    # Leader append-only: rewriting stored entries unchanged is harmless,
                    # changing or dropping any of them is not.
                    changed = entries[-1].index < last or any(
                        storage.term_at(entry.index) != entry.term
                        for entry in entries
                        if entry.index <= last
                    )
                    if changed:
                        raise Violation(
                            f"leader {node_id} overwrites its own log from index {first} "
                            f"(last index {last})"
                        )
                durable_commit = watch.durable.commit
                for entry in entries:
                    index = entry.index
                    if index > last or index > durable_commit:
                        break
                    if snapshot is None and storage.term_at(index) not in (entry.term, None):
                        raise Violation(
                            f"node {node_id} overwrites its committed entry at {index} "
                            f"(term {storage.term_at(index)} -> {entry.term}, "
                            f"durable commit {durable_commit})"
                        )

    def after_persist(
        self,
        watch: NodeWatch,
        storage: SimStorage,
        *,
        entries: Sequence[Entry],
        hard_state: HardState | None,
        is_leader: bool = False,
    ) -> None:
        """Checks once a ``Ready``'s writes are durable."""
        node_id = watch.node_id
        if entries:
            written = self.written
            prev_term = storage.term_at(entries[0].index - 1)
            for entry in entries:
                key = (entry.index, entry.term)
                seen = written.get(key)
                if seen is None:
                    written[key] = (entry.data, prev_term)
                elif seen[0] != entry.data or (
                    seen[1] != prev_term and seen[1] is not None and prev_term is not None
                ):
                    raise Violation(
                        f"log matching: node {node_id} stores entry {entry.index} of term "
                        f"{entry.term} with data {entry.data[:24]!r} after term {prev_term}, "
                        f"but that index and term already held {seen[0][:24]!r} after "
                        f"term {seen[1]}"
                    )
                prev_term = entry.term
        if hard_state is None:
            return
        durable = watch.durable
        if hard_state.term < durable.term:
            raise Violation(
                f"node {node_id} persists term {hard_state.term} below its durable term "
                f"{durable.term}"
            )
        if hard_state.term == durable.term and durable.vote and hard_state.vote != durable.vote:
            raise Violation(
                f"node {node_id} changes its durable vote in term {durable.term} from "
                f"{durable.vote} to {hard_state.vote}"
            )
        commit = hard_state.commit
        if commit < durable.commit:
            raise Violation(
                f"node {node_id} persists commit {commit} below its durable commit {durable.commit}"
            )
        if commit < watch.commit:
            raise Violation(
                f"node {node_id}'s commit index goes backwards from {watch.commit} to {commit}"
            )
        if is_leader and commit > durable.commit and self.commit_rule:
            term_there = storage.term_at(commit)
            if term_there != hard_state.term:
                raise Violation(
                    f"commit rule: leader {node_id} of term {hard_state.term} advances its "
                    f"commit index to {commit}, an entry of term {term_there} (paper 5.4.2: "
                    f"only entries of the leader's own term commit by counting replicas)"
                )
        watch.durable = hard_state
        watch.commit = commit
        if commit > watch.verified:
            self._verify_committed(watch, storage, commit, hard_state.term)

    def on_restart(
        self, watch: NodeWatch, storage: SimStorage, *, torn: bool, lost_tail: bool = False
    ) -> None:
        """A node came back with what its disk recovered.

        A crash in the middle of a write (``torn``) may have left some of that
        write on disk without the checks ``after_persist`` would have made, so
        then the whole recovered log is checked here too. After a disk fault cut
        synced entries off the log (``lost_tail``) the durable commit index may
        fall back; term and vote may not (the promise keeps them). Whether the
        cluster still loses nothing is what the other checks decide.
        """
        node_id = watch.node_id
        hard_state = storage.hard_state
        durable = watch.durable
        if (hard_state.commit < durable.commit and not lost_tail) or hard_state.term < durable.term:
            raise Violation(
                f"node {node_id} recovers hard state {tuple(hard_state)} older than the "
                f"durable {tuple(durable)}"
            )
        if hard_state.term == durable.term and durable.vote and hard_state.vote != durable.vote:
            raise Violation(
                f"node {node_id} recovers vote {hard_state.vote} in term {durable.term} after "
                f"voting for {durable.vote}"
            )
        first = storage.first_index()
        last = storage.last_index()
        if torn and last >= first:
            self.after_persist(
                watch, storage, entries=storage.entries(first, last + 1), hard_state=None
            )
        snapshot = storage.snapshot
        watch.applied = 0
        if snapshot is not None:
            self._check_snapshot(node_id, snapshot, "recovers")
            watch.applied = snapshot.meta.index
        watch.durable = hard_state
        watch.commit = hard_state.commit
        commit = max(hard_state.commit, storage.snapshot_index)
        if commit > watch.verified:
            self._verify_committed(watch, storage, commit, hard_state.term)

    def on_messages(self, node_id: int, messages: Sequence[Message]) -> bool:
        """Checks outgoing messages; True when they grant a vote."""
        votes = self.votes
        granted_any = False
        for message in messages:
            if message.type == _VOTE_RESP and not message.reject:
                granted_any = True
                key = (node_id, message.term)
                granted = votes.setdefault(key, message.to)
                if granted != message.to:
                    raise Violation(
                        f"node {node_id} grants its vote in term {message.term} to "
                        f"{message.to} after granting it to {granted}"
                    )
        return granted_any

    def on_leader(self, watch: NodeWatch, storage: SimStorage, term: int) -> None:
        """A node has just become leader of ``term``."""
        node_id = watch.node_id
        other = self.leaders.setdefault(term, node_id)
        if other != node_id:
            raise Violation(f"two leaders in term {term}: nodes {other} and {node_id}")
        # Leader completeness: every entry committed in an earlier term is in the
        # new leader's log. (A leader of an old term, elected late by delayed
        # votes, may legitimately lack entries committed in later terms.)
        terms = self.terms
        commit_terms = self.commit_terms
        start = storage.snapshot_index
        if start > self.commit_index:
            raise Violation(
                f"leader {node_id} (term {term}) holds a snapshot at {start} beyond the "
                f"commit index {self.commit_index}"
            )
        for index in range(start + 1, self.commit_index + 1):
            if commit_terms[index] < term and storage.term_at(index) != terms[index]:
                raise Violation(
                    f"leader completeness: leader {node_id} of term {term} lacks entry "
                    f"{index} (term {terms[index]}) committed in term {commit_terms[index]}; "
                    f"its log has term {storage.term_at(index)} there"
                )

    def on_snapshot(self, watch: NodeWatch, snapshot: Snapshot) -> None:
        """The application is restored from a snapshot the leader sent."""
        self._check_snapshot(watch.node_id, snapshot, "restores")
        watch.applied = snapshot.meta.index

    def on_apply(self, watch: NodeWatch, entries: Sequence[Entry]) -> None:
        terms = self.terms
        datas = self.datas
        applied = watch.applied
        commit = len(terms) - 1
        for entry in entries:
            index = entry.index
            if index != applied + 1:
                raise Violation(f"node {watch.node_id} applies entry {index} right after {applied}")
            if index > commit or terms[index] != entry.term or datas[index] != entry.data:
                expected = f"term {terms[index]}" if index <= commit else "nothing committed"
                raise Violation(
                    f"node {watch.node_id} applies entry {index} of term {entry.term}, "
                    f"but the committed history has {expected} there"
                )
            applied = index
        watch.applied = applied

    def on_read_states(self, node_id: int, read_states: Sequence[ReadState]) -> None:
        for read in read_states:
            least = self.reads.get(read.request_ctx)
            if least is not None and read.index < least:
                raise Violation(
                    f"node {node_id} answers read {read.request_ctx!r} with index {read.index}, "
                    f"but index {least} was committed before the read was asked"
                )

    def on_read_answer(self, node_id: int, context: bytes, index: int, applied: int) -> None:
        """The driver answers a read: the state it is served from (the node's applied
        index) must hold everything committed before the read was asked."""
        least = self.reads.pop(context, None)
        if least is not None and applied < least:
            raise Violation(
                f"node {node_id} serves read {context!r} (read index {index}) from applied "
                f"index {applied}, but index {least} was committed before the read was asked"
            )

    def on_commit_known(
        self, watch: NodeWatch, storage: SimStorage, commit: int, term: int
    ) -> None:
        """A node's driver learnt commit index ``commit`` (in memory, maybe not durable
        yet): its log up to there joins the committed history."""
        if commit < watch.commit:
            raise Violation(
                f"node {watch.node_id}'s commit index goes backwards from {watch.commit} "
                f"to {commit}"
            )
        watch.commit = commit
        if commit > watch.verified:
            self._verify_committed(watch, storage, commit, term)

    def on_ack(
        self, node_id: int, data: bytes, index: int, term: int, durable: int, voters: int
    ) -> None:
        """A client is told its proposal ``data`` committed at ``index``: that must be
        its entry, and durable on a majority of the voters (so that a power cut of
        every node at once cannot lose it)."""
        if data and (index >= len(self.datas) or self.datas[index] != data):
            raise Violation(
                f"node {node_id} acknowledges {data[:24]!r} at index {index}, where the "
                f"committed history holds another entry"
            )
        if durable < voters // 2 + 1:
            raise Violation(
                f"acknowledged entry {index} (term {term}) at node {node_id} is durable on "
                f"only {durable} of {voters} voters: a power cut now loses it"
            )

    # -- internals --------------------------------------------------------------

    def _check_snapshot(self, node_id: int, snapshot: Snapshot, verb: str) -> None:
        meta = snapshot.meta
        index = meta.index
        if index > self.commit_index:
            raise Violation(
                f"node {node_id} {verb} a snapshot at {index} beyond the commit index "
                f"{self.commit_index}"
            )
        if meta.term != self.terms[index]:
            raise Violation(
                f"node {node_id} {verb} a snapshot at {index} of term {meta.term}; the "
                f"committed entry there has term {self.terms[index]}"
            )
        data_index, _, chain = decode_snapshot(snapshot.data)
        if data_index != index or chain != self.chains[index]:
            raise Violation(
                f"node {node_id} {verb} a snapshot at {index} whose state differs from the "
                f"committed history's state there"
            )

    def _verify_committed(
        self, watch: NodeWatch, storage: SimStorage, commit: int, term: int
    ) -> None:
        """``watch``'s node, in ``term``, says its log is committed up to ``commit``."""
        node_id = watch.node_id
        last = storage.last_index()
        if commit > last:
            raise Violation(f"node {node_id} commits {commit} beyond its last index {last}")
        terms = self.terms
        datas = self.datas
        known = len(terms) - 1
        start = max(watch.verified, storage.snapshot_index) + 1
        for index in range(start, commit + 1):
            entry = storage.entry_at(index)
            if entry is None:
                raise Violation(f"node {node_id} commits {index} but cannot read that entry")
            if index <= known:
                if terms[index] != entry.term or datas[index] != entry.data:
                    raise Violation(
                        f"committed entry {index} changes: node {node_id} commits term "
                        f"{entry.term} data {entry.data[:24]!r} where the history has term "
                        f"{terms[index]} data {datas[index][:24]!r}"
                    )
            else:
                self._extend_history(node_id, entry, term)
                known = index
        watch.verified = commit

    def _extend_history(self, node_id: int, entry: Entry, term: int) -> None:
        index = entry.index
        data = entry.data
        # The term in which the entry was committed: the reporting node's term,
        # which is that term or a later one (so the completeness check stays sound).
        self.commit_terms.append(term)
        self.terms.append(entry.term)
        self.datas.append(data)
        self.chains.append(chain_step(self.chains[-1], entry.term, index, data))
        if entry.type == _CONF_CHANGE:
            conf = apply_conf_change(self.confs[-1][1], ConfChange.decode(data))
            self.confs.append((index, conf))
        elif data:
            proposed = self.proposed.get(data)
            if proposed is None:
                raise Violation(
                    f"node {node_id} commits entry {index} with data {data[:24]!r} that "
                    f"no client proposed"
                )
            if proposed:
                raise Violation(
                    f"entry data {data[:24]!r} committed twice: at {proposed} and {index}"
                )
            self.proposed[data] = index
        if self._on_commit is not None:
            self._on_commit(entry)
