"""The Raft state machine: roles, elections, replication, membership.

Pure and deterministic: no clock (the caller calls ``tick``), no network
(messages go out in a ``Ready``), no disk (entries and hard state go out in a
``Ready``), no randomness but ``random.Random`` seeded from the config.
Section numbers refer to the Raft paper (Ongaro and Ousterhout, 2014) and
the dissertation (Ongaro, 2014).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from itertools import count, repeat
from operator import attrgetter

from .config import RaftConfig
from .log import RaftLog
from .progress import Progress, ProgressState
from .quorum import VoteResult, committed_index, majority, vote_result
from .readonly import ReadOnly, ReadRequest
from .status import PeerProgress, Status
from .types import (
    MAX_TERM,
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    NotLeaderError,
    ProposalDroppedError,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SoftState,
)

TRANSFER_CONTEXT = b"transfer"
"""VOTE context of a forced election (leader transfer): may bypass the leader lease,
under the conditions in ``_is_transfer_vote``."""

_EMPTY_HARD_STATE = HardState()
_CONF_CHANGE = int(EntryType.CONF_CHANGE)
_entry_type = attrgetter("type")

_APP = MessageType.APP
_APP_RESP = MessageType.APP_RESP
_VOTE = MessageType.VOTE
_VOTE_RESP = MessageType.VOTE_RESP
_PRE_VOTE = MessageType.PRE_VOTE
_PRE_VOTE_RESP = MessageType.PRE_VOTE_RESP
_HEARTBEAT = MessageType.HEARTBEAT
_HEARTBEAT_RESP = MessageType.HEARTBEAT_RESP
_SNAP = MessageType.SNAP
_TIMEOUT_NOW = MessageType.TIMEOUT_NOW
_READ_INDEX = MessageType.READ_INDEX
_READ_INDEX_RESP = MessageType.READ_INDEX_RESP
_TRANSFER_LEADER = MessageType.TRANSFER_LEADER
MAX_TERM_STEP = 1 << 32
"""The largest term increase a message may bring. With pre-vote a term grows only by
elections a majority took part in; 2**32 of them while one member was away take
decades even at one per millisecond. Refusing larger jumps keeps one buggy or forged
message from moving a cluster to MAX_TERM, where nobody could campaign again."""
_FROM_ANYONE = frozenset((_APP, _HEARTBEAT, _SNAP, _VOTE, _PRE_VOTE, _TIMEOUT_NOW))
"""What a node may hear from an id outside its configuration: a leader that is adding
it or whose addition it has not applied yet (the shell narrows this further); vote
requests (refused below unless from a voter); TIMEOUT_NOW from the leader it follows
(refused below otherwise), which is outside the configuration when it is the removed
leader handing over."""
_ANSWERS = frozenset((_APP_RESP, _HEARTBEAT_RESP, _VOTE_RESP, _PRE_VOTE_RESP))
"""Answers echo the nonce of the message they answer in ``Message.nonce``."""
_REPLICATE = ProgressState.REPLICATE
_PROBE = ProgressState.PROBE
_SNAPSHOT = ProgressState.SNAPSHOT


class RaftCore:
    """One member's consensus state. See ``types.Ready`` for the driving loop.

    Construction covers three cases:

    * restart: ``hard_state``, the newest ``snapshot`` and the stored ``entries``
      after it, as recovered from storage; applying restarts at the snapshot;
    * first start of an initial member: empty storage and ``bootstrap`` listing one
      ``PROMOTE`` per initial voter, identical on every initial member; they become
      committed term-1 entries 1..N, handed out by the first Ready both to persist
      and to apply (``bootstrap`` is ignored once storage holds anything);
    * a member added later: empty storage and no ``bootstrap``; it has no
      configuration, never campaigns, and waits for the leader to replicate one.
    """

    def __init__(
        self,
        config: RaftConfig,
        *,
        hard_state: HardState = _EMPTY_HARD_STATE,
        snapshot: Snapshot | None = None,
        entries: Sequence[Entry] = (),
        bootstrap: Sequence[ConfChange] | None = None,
    ) -> None:
        config.validate()
        if hard_state.term > MAX_TERM:
            raise ValueError(
                f"stored term {hard_state.term} is above MAX_TERM ({MAX_TERM}): the hard state is corrupt"
            )
        self.config = config
        self.id = config.node_id
        # Mix the node id in so that members sharing a seed still draw different timeouts.
        self._rng = random.Random((config.seed << 20) ^ config.node_id)
        self._prev_hard_state = hard_state
        fresh = hard_state == _EMPTY_HARD_STATE and snapshot is None and not entries
        if bootstrap and fresh:
            # Every initial member writes the same configuration at term 1, committed,
            # so all logs start identical and later members learn it by replication.
            entries = [
                Entry(1, i, change.encode(), _CONF_CHANGE) for i, change in enumerate(bootstrap, 1)
            ]
            hard_state = HardState(1, NONE, len(entries))
        self.log = RaftLog(snapshot, entries, hard_state.commit)
        if bootstrap and fresh:
            self.log.stable_index = self.log.persisting_index = 0
        self.term = hard_state.term
        self.vote = hard_state.vote
        self.leader = NONE
        self.role = Role.FOLLOWER

        conf = snapshot.meta.conf_state if snapshot else ConfState()
        self._voters: set[int] = set(conf.voters)
        self._learners: set[int] = set(conf.learners)
        self._voter_ids: tuple[int, ...] = tuple(sorted(self._voters))
        self._conf_index = self.log.offset
        """Index of the newest configuration entry applied to the membership."""
        # The membership is known as soon as the log is: committed changes apply now,
        # not when the caller gets around to the first Ready.
        self._apply_conf_changes(self.log.slice(self.log.offset + 1, self.log.commit_index + 1))

        self.progress: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.read_only = ReadOnly()
        self._postponed_reads: list[tuple[int, bytes]] = []
        """Reads that arrived before this leader committed an entry of its term."""
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = config.election_tick
        self.lead_transferee = NONE
        self._campaign_after_apply = False
        """A TIMEOUT_NOW arrived while a committed configuration change was unapplied."""
        self.pending_conf_index = 0
        """Index of the newest configuration change this leader may have proposed."""
        # A separate stream, so election timeouts stay what they were for each seed.
        self._nonce_rng = random.Random((config.seed << 21) ^ (config.node_id << 1) ^ 1)
        self._nonce = 0
        """Drawn when this node campaigns or starts to lead; see "Nonces" in README."""
        self._leader_nonce = 0
        """The nonce of the leader we follow in this term (0: not heard yet)."""
        self._transfer_notice = (0, NONE)
        """(term, transferee): our leader announced a transfer to transferee in term."""
        self._leader_lost = False
        """``leader_unreachable`` shortened the election timeout; undone when the
        leader is heard again or the short timeout has fired once."""
        self._recovering_to = 0
        """Nonzero while recovering a lost or corrupt log (``start_recovering``)."""
        self._recovering_term = 0
        self._recovering_last_term = 0
        self._become_follower(self.term, NONE)
        self._prev_soft_state = SoftState(NONE, Role.FOLLOWER)

    # ------------------------------------------------------------------ public API

    @property
    def node_id(self) -> int:
        return self.id

    def tick(self) -> None:
        if self.role is Role.LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def step(self, m: Message) -> None:
        """Handle a message from a peer. Stale, duplicate or malformed ones are dropped."""
        if m.to != self.id or m.frm == NONE or m.frm == self.id:
            return
        if m.type.__class__ is not MessageType:
            # Handlers compare types by identity; accept a plain int once, here.
            try:
                m = dataclasses.replace(m, type=MessageType(m.type))
            except ValueError:
                return
        t = m.type
        if m.frm not in self._voters and m.frm not in self._learners and t not in _FROM_ANYONE:
            # Answers and requests only ever come from members; a stranger's would
            # move our term or count as an acknowledgement.
            return
        if (t is _VOTE or t is _PRE_VOTE) and m.frm not in self._voters:
            # Only voters campaign. A voter whose promotion this node has not applied
            # yet campaigns again after its next timeout.
            return
        if t is _TIMEOUT_NOW and (
            m.frm != self.leader or m.term != self.term or self.role is not Role.FOLLOWER
        ):
            # Only the leader we follow, in its term, may tell us to campaign at once.
            return
        if m.term > self.term:
            if m.term > MAX_TERM or m.term > self.term + MAX_TERM_STEP:
                # Forged, corrupt or buggy: above MAX_TERM our term could not be encoded;
                # a jump past MAX_TERM_STEP would bring MAX_TERM (no more elections) close.
                return
            if m.type is _VOTE or m.type is _PRE_VOTE:
                forced = self._is_transfer_vote(m)
                in_lease = (
                    self.config.check_quorum
                    and self.leader != NONE
                    and self.election_elapsed < self.config.election_tick
                )
                if in_lease and not forced:
                    # Dissertation 4.2.3: a live leader is not disturbed by a
                    # server that cannot hear it (e.g. one being removed).
                    return
            elif (t is not _APP and t is not _HEARTBEAT and t is not _SNAP) and (
                t not in _ANSWERS or m.nonce != self._nonce or not self._nonce
            ):
                # Besides a leader or a candidate, only an answer to one of our own
                # messages (echoing our nonce) brings a higher term legitimately.
                return
            if m.type is _PRE_VOTE:
                pass  # a pre-vote never changes our term
            elif m.type is _PRE_VOTE_RESP and not m.reject:
                pass  # granted pre-votes carry the term we would campaign in
            elif m.type is _APP or m.type is _HEARTBEAT or m.type is _SNAP:
                self._become_follower(m.term, m.frm)
            else:
                # Only the leader's messages or a granted vote restart a follower's
                # election timer (paper, figure 2). A higher-term vote request moves
                # us to its term but keeps the time already waited, or a stale-log
                # node campaigning over and over would keep the up-to-date nodes
                # from ever timing out (found by the simulator, pre-vote off).
                waited = (
                    self.election_elapsed if m.type is _VOTE and self.role is Role.FOLLOWER else 0
                )
                self._become_follower(m.term, NONE)
                self.election_elapsed = waited
        elif m.term < self.term:
            if (self.config.check_quorum or self.config.pre_vote) and (
                m.type is _APP or m.type is _HEARTBEAT
            ):
                # A leader cut off from us kept its old term; tell it ours so it
                # steps down instead of staying stuck (pre-vote never bumps our term).
                self._send(Message(_APP_RESP, m.frm, self.id, self.term, nonce=m.nonce))
            elif m.type is _PRE_VOTE:
                self._send(
                    Message(
                        _PRE_VOTE_RESP,
                        m.frm,
                        self.id,
                        self.term,
                        nonce=m.nonce,
                        reject=True,
                    )
                )
            return

        if m.type is _VOTE or m.type is _PRE_VOTE:
            self._handle_vote_request(m)
        elif self.role is Role.LEADER:
            self._step_leader(m)
        elif self.role is Role.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _is_transfer_vote(self, m: Message) -> bool:
        """A vote request from a real leadership transfer, which may skip the lease.

        Seen from here, a real transfer is: the leader we follow (term ``t``) saw the
        transferee's log match its own last entry, which is of term ``t`` (a leader
        appends an entry of its term on election), and sent it TIMEOUT_NOW; the
        transferee skips pre-vote and asks for votes in ``t + 1``. So the request is a
        VOTE (never a PRE_VOTE), exactly one term above ours, with a last log term
        equal to our term, from a voter other than our leader, while we follow one.
        The leader itself also knows whom it chose. Anything else that claims the
        transfer context is treated as an ordinary vote request (lease applies), so
        a buggy or forged one can force at most what an ordinary election could.
        """
        if m.type is not _VOTE or m.context != TRANSFER_CONTEXT:
            return False
        if m.term != self.term + 1 or m.log_term != self.term or self.leader == NONE:
            return False
        if self.role is Role.LEADER:
            return m.frm == self.lead_transferee
        return m.frm != self.leader and self._transfer_notice == (self.term, m.frm)

    def propose(self, data: bytes) -> tuple[int, int]:
        return self.propose_many((data,))

    def propose_many(self, datas: Sequence[bytes]) -> tuple[int, int]:
        """Append ``datas`` as consecutive entries; returns (term, first index)."""
        self._check_can_propose()
        if not datas:
            raise ValueError("nothing to propose")
        first = self.log.last_index() + 1
        term = self.term
        self._append_entries(list(map(Entry, repeat(term), count(first), datas)))
        return term, first

    def propose_conf_change(self, change: ConfChange) -> tuple[int, int]:
        self._check_can_propose()
        if self.pending_conf_index > self.log.applying_index:
            raise ProposalDroppedError("a configuration change is still pending")
        if self.log.term(self.log.commit_index) != self.term:
            # Dissertation errata (2015): until an entry of its own term commits, a new
            # leader may not know about a change the previous leader committed.
            raise ProposalDroppedError("no entry of the leader's term is committed yet")
        if change.type not in (0, 1, 2) or change.node_id == NONE:
            raise ProposalDroppedError("malformed configuration change")
        if change.type == ConfChangeType.REMOVE and self._voters == {change.node_id}:
            raise ProposalDroppedError("cannot remove the last voter")
        index = self.log.last_index() + 1
        self._append_entries([Entry(self.term, index, change.encode(), _CONF_CHANGE)])
        self.pending_conf_index = index
        return self.term, index

    def read_index(self, ctx: bytes) -> None:
        """Ask for a linearizable read index; the answer is a ``ReadState`` in a later Ready."""
        if self.role is Role.LEADER:
            self._handle_read_index(self.id, ctx)
        elif self.role is Role.FOLLOWER and self.leader != NONE:
            self._send(Message(_READ_INDEX, self.leader, self.id, self.term, context=ctx))
        else:
            raise NotLeaderError(NONE)

    def transfer_leadership(self, target: int) -> None:
        """Hand leadership to ``target`` (dissertation 3.10); a follower forwards the request."""
        if self.role is Role.LEADER:
            self._handle_transfer(target)
        elif self.leader != NONE:
            # ``index`` carries the transferee so ``frm`` stays the real sender.
            # ``nonce``: the leader's nonce, so a forged request moves nobody.
            self._send(
                Message(
                    _TRANSFER_LEADER,
                    self.leader,
                    self.id,
                    self.term,
                    index=target,
                    nonce=self._leader_nonce,
                )
            )
        else:
            raise NotLeaderError(NONE)

    def start_recovering(
        self, promised_index: int, promised_term: int = 0, promised_last_term: int | None = None
    ) -> None:
        """Protocol-aware recovery (docs/recovery.md): storage found a lost tail or
        corruption, so this node may once have acknowledged entries, up to
        ``promised_index``, that it no longer holds, in a term up to ``promised_term``.
        ``promised_last_term``: the term of the entry at ``promised_index`` when the
        promise was made (unknown: ``promised_term``, which bounds it from above).

        Until a leader of a term >= ``promised_term`` has brought its log back to at
        least ``promised_index``, the node does not count itself in elections as if
        it still held that log: it does not campaign, ignores TIMEOUT_NOW, and grants
        a vote or pre-vote only to a candidate whose log is at least as up to date as
        the promised one (``promised_last_term``, ``promised_index``), which holds
        every committed entry the node ever acknowledged (docs/recovery.md, section 3).
        It still appends and acknowledges what a leader sends: those acknowledgements
        are true of its log now (the leader's regression check, ``Progress.regress``,
        forgets the old ones). Call it after construction, before the first tick."""
        if promised_index <= 0:
            raise ValueError("a promised index is >= 1")
        self._recovering_to = promised_index
        self._recovering_term = promised_term
        self._recovering_last_term = (
            promised_term if promised_last_term is None else promised_last_term
        )
        if self.role is not Role.FOLLOWER:
            self._become_follower(self.term, NONE)

    @property
    def recovering(self) -> bool:
        """Recovering a lost or corrupt log: not counted in elections yet."""
        return self._recovering_to != 0

    def _maybe_end_recovery(self, matched_index: int, leader_term: int) -> None:
        """The leader of ``leader_term`` showed our log agrees with its own up to
        ``matched_index``."""
        if (
            self._recovering_to
            and matched_index >= self._recovering_to
            and leader_term >= self._recovering_term
        ):
            self._recovering_to = 0
            self._recovering_term = self._recovering_last_term = 0

    def compact(self, snapshot: Snapshot) -> None:
        """The application snapshotted its state at ``snapshot.meta.index`` (at most the
        last index handed out for applying): keep it for followers behind the log and
        drop the entries it covers. A snapshot older than the log's start is ignored."""
        self.log.compact(snapshot)

    def report_unreachable(self, peer: int) -> None:
        pr = self.progress.get(peer) if self.role is Role.LEADER else None
        if pr is not None and pr.state is _REPLICATE:
            # Optimistic sends are probably lost; find out where the follower is.
            pr.become_probe()

    def leader_unreachable(self, peer: int) -> None:
        """The transport saw ``peer``'s process go away: the connection to it broke
        and a new one was refused (nobody listens on its port). When ``peer`` is the
        leader this follower follows, its lease on that leader ends now and it
        campaigns soon, without waiting out the election timeout (docs/elections.md).

        Only a hint, never a safety input: a follower that still hears the leader
        keeps its lease and drops the (pre-)vote requests this may send (dissertation
        4.2.3), and a wrong hint costs one pre-vote round. Who campaigns first is
        fixed, not drawn, so the followers of a crashed leader do not split their
        votes: among the voters other than the lost leader, the lowest id
        pre-campaigns at once (and once more at its next tick, in case a peer had
        not noticed the loss yet and dropped the request); the next one waits two
        ticks, the next three, and so on. Every other peer, or a repeated hint,
        changes nothing."""
        if self.role is not Role.FOLLOWER or peer == NONE or peer != self.leader:
            return
        if self._leader_lost:
            return
        self._leader_lost = True
        rank = sum(1 for v in self._voter_ids if v < self.id and v != peer)
        # The lease ends: from now on a vote request is judged on the log alone.
        self.election_elapsed = max(self.election_elapsed, self.config.election_tick)
        self.randomized_election_timeout = self.election_elapsed + rank + 1
        if rank == 0 and self.config.pre_vote:
            # A pre-vote keeps the timer as set above, so the request goes out again at
            # the next tick, for a peer that had not noticed yet and dropped it.
            self._hup(transfer=False)

    def is_replicating(self, peer: int) -> bool:
        """This node leads and streams to ``peer`` optimistically (its log is known to
        agree up to its match index). An empty APP to such a peer only carries the
        commit index: losing it costs nothing but that news, which the next APP or
        heartbeat brings again. An APP to a peer in any other state is a probe."""
        pr = self.progress.get(peer) if self.role is Role.LEADER else None
        return pr is not None and pr.state is _REPLICATE

    def report_snapshot(self, peer: int, success: bool) -> None:
        pr = self.progress.get(peer) if self.role is Role.LEADER else None
        if pr is None or pr.state is not _SNAPSHOT:
            return
        if not success:
            pr.pending_snapshot = 0
        pr.become_probe()
        # Wait for the follower's answer (or a heartbeat response) before probing.
        pr.probe_sent = True

    def has_ready(self) -> bool:
        log = self.log
        return bool(
            self.msgs
            or self.read_states
            or log.pending_snapshot is not None
            or log.persisting_index < log.last_index()
            or log.commit_index > max(log.applying_index, log.offset)
            or self._campaign_after_apply
            or self._prev_soft_state != (self.leader, self.role)
            or self._prev_hard_state != (self.term, self.vote, log.commit_index)
        )

    def ready(self) -> Ready:
        """Hand out the work accumulated since the last ``ready()``."""
        log = self.log
        rd = Ready()
        committed = log.committed_to_apply()
        if committed:
            log.applying_index = committed[-1].index
            # Membership takes effect as its entry is handed out for applying, so every
            # member switches at the same point of the log (may queue messages).
            if _CONF_CHANGE in map(_entry_type, committed):
                self._apply_conf_changes(committed)
            rd.committed_entries = committed
        if self._campaign_after_apply and not self._has_unapplied_conf_change():
            self._campaign_after_apply = False
            self._hup(transfer=True)
        soft = SoftState(self.leader, self.role)
        if soft != self._prev_soft_state:
            rd.soft_state = self._prev_soft_state = soft
        hard = HardState(self.term, self.vote, log.commit_index)
        assert hard.term >= self._prev_hard_state.term, "term went backwards"
        assert hard.commit >= self._prev_hard_state.commit, "commit index went backwards"
        if hard != self._prev_hard_state:
            rd.hard_state = self._prev_hard_state = hard
        if log.pending_snapshot is not None:
            rd.snapshot = log.snapshot_in_progress = log.pending_snapshot
            log.pending_snapshot = None
        unstable = log.unstable_entries()
        if unstable:
            rd.entries = unstable
            log.persisting_index = unstable[-1].index
        if self.msgs:
            rd.messages = self.msgs
            self.msgs = []
        if self.read_states:
            rd.read_states = self.read_states
            self.read_states = []
        return rd

    def advance(self, rd: Ready) -> None:
        """The caller persisted, sent and applied ``rd``."""
        log = self.log
        if rd.snapshot is not None:
            if log.snapshot_in_progress is rd.snapshot:
                log.snapshot_in_progress = None
            log.applied_to(max(rd.snapshot.meta.index, log.applied_index))
        if rd.entries:
            last = rd.entries[-1]
            log.stable_to(last.index, last.term)
        if rd.committed_entries:
            log.applied_to(rd.committed_entries[-1].index)

    def status(self) -> Status:
        progress: dict[int, PeerProgress] = {}
        if self.role is Role.LEADER:
            progress = {
                peer: PeerProgress(
                    pr.match_index,
                    pr.next_index,
                    pr.state.value,
                    pr.recent_active,
                    pr.regressions,
                    pr.healthy,
                )
                for peer, pr in sorted(self.progress.items())
            }
        return Status(
            id=self.id,
            term=self.term,
            role=self.role,
            leader=self.leader,
            vote=self.vote,
            commit=self.log.commit_index,
            applied=self.log.applied_index,
            last_index=self.log.last_index(),
            conf_state=self.conf_state,
            progress=progress,
            lead_transferee=self.lead_transferee,
            recovering=self._recovering_to,
        )

    @property
    def conf_state(self) -> ConfState:
        return ConfState(self._voter_ids, tuple(sorted(self._learners)))

    @property
    def commit_index(self) -> int:
        return self.log.commit_index

    # ------------------------------------------------------------------ roles

    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.leader = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._redraw_election_timeout()
        self.lead_transferee = NONE
        self._campaign_after_apply = False
        self._leader_nonce = 0
        self.votes = {}
        self.progress = {}
        self.read_only = ReadOnly()
        self._postponed_reads = []

    def _redraw_election_timeout(self) -> None:
        self._leader_lost = False
        self.randomized_election_timeout = self.config.election_tick + self._rng.randrange(
            self.config.election_tick
        )

    def _become_follower(self, term: int, leader: int) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.leader = leader

    def _become_pre_candidate(self) -> None:
        assert self.role is not Role.LEADER, "a leader does not pre-campaign"
        # Term and vote stay as they are: a pre-vote round must not disturb anyone.
        self.role = Role.PRE_CANDIDATE
        self.leader = NONE
        self.votes = {}

    def _become_candidate(self) -> None:
        assert self.role is not Role.LEADER, "a leader does not campaign"
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def _become_leader(self) -> None:
        assert self.role is not Role.FOLLOWER, "only a candidate wins an election"
        self._reset(self.term)
        self.role = Role.LEADER
        self.leader = self.id
        self._nonce = self._nonce_rng.randrange(1, 1 << 62)
        last = self.log.last_index()
        # Sorted: message order must not depend on set iteration order.
        for peer in sorted(self._voters | self._learners):
            self.progress[peer] = Progress(last + 1, self.config.max_inflight)
        me = self.progress.get(self.id)
        if me is not None:
            me.match_index = last
            me.recent_active = True
            me.become_replicate()
        # Conservative: any entry we have might be a configuration change.
        self.pending_conf_index = last
        # Paper 5.4.2: commit an entry of our own term, which commits all before it.
        self._append_entries([Entry(self.term, last + 1)])

    def _promotable(self) -> bool:
        return (
            not self._recovering_to
            and self.id in self._voters
            and self.log.pending_snapshot is None
            and self.log.snapshot_in_progress is None
        )

    # ------------------------------------------------------------------ elections

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self._promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            if self._leader_lost:
                # The short timeout after a lost leader serves once; then the usual.
                self._redraw_election_timeout()
            self._hup(transfer=False)

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.config.election_tick:
            self.election_elapsed = 0
            self._expire_snapshots()
            if self.config.check_quorum and not self._quorum_active():
                # Dissertation 6.2: a leader that cannot hear a majority steps down
                # so clients go looking for the real leader.
                self._become_follower(self.term, NONE)
                return
            if self.lead_transferee != NONE:
                # The transfer did not finish within an election timeout: give up.
                self.lead_transferee = NONE
        if self.heartbeat_elapsed >= self.config.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat(self.read_only.last_pending_context())

    def _expire_snapshots(self) -> None:
        """Backstop for a SNAP lost without ``report_snapshot``: after a full election
        timeout without an answer, probe again (which resends the snapshot if needed)."""
        for pr in self.progress.values():
            if pr.state is _SNAPSHOT:
                pr.snapshot_rounds += 1
                if pr.snapshot_rounds >= 2:
                    pr.pending_snapshot = 0
                    pr.become_probe()

    def _quorum_active(self) -> bool:
        active = 0
        for peer, pr in self.progress.items():
            if peer == self.id:
                active += peer in self._voters
                continue
            if pr.recent_active and peer in self._voters:
                active += 1
            pr.recent_active = False
        return active >= majority(len(self._voters))

    def _has_unapplied_conf_change(self) -> bool:
        log = self.log
        pending = log.slice(max(self._conf_index, log.offset) + 1, log.commit_index + 1)
        return _CONF_CHANGE in map(_entry_type, pending)

    def _hup(self, transfer: bool) -> None:
        if self.role is Role.LEADER or not self._promotable():
            return
        if self.term >= MAX_TERM:
            # A campaign would need a term that can no longer be encoded or persisted.
            return
        if self._has_unapplied_conf_change():
            # The configuration we would campaign in is about to change.
            return
        self._campaign(pre=self.config.pre_vote and not transfer, transfer=transfer)

    def _campaign(self, pre: bool, transfer: bool) -> None:
        if pre:
            self._become_pre_candidate()
            msg_type, term = _PRE_VOTE, self.term + 1
        else:
            self._become_candidate()
            msg_type, term = _VOTE, self.term
        if self._record_vote(self.id, True, pre):
            return
        # Only answers echoing this nonce count: a forged grant cannot win an election.
        nonce = self._nonce = self._nonce_rng.randrange(1, 1 << 62)
        context = TRANSFER_CONTEXT if transfer else b""
        last_index, last_term = self.log.last_index(), self.log.last_term()
        for peer in self._voter_ids:
            if peer != self.id:
                self._send(
                    Message(
                        msg_type,
                        peer,
                        self.id,
                        term,
                        log_term=last_term,
                        index=last_index,
                        nonce=nonce,
                        context=context,
                    )
                )

    def _record_vote(self, voter: int, granted: bool, pre: bool) -> bool:
        """Count a vote; True when the election is decided."""
        self.votes.setdefault(voter, granted)
        result = vote_result(self._voter_ids, self.votes)
        if result is VoteResult.WON:
            if pre:
                self._campaign(pre=False, transfer=False)
            else:
                self._become_leader()
            return True
        if result is VoteResult.LOST:
            self._become_follower(self.term, NONE)
            return True
        return False

    def _handle_vote_request(self, m: Message) -> None:
        pre = m.type is _PRE_VOTE
        can_vote = (
            self.vote == m.frm
            or (self.vote == NONE and self.leader == NONE)
            or (pre and m.term > self.term)
        )
        resp_type = _PRE_VOTE_RESP if pre else _VOTE_RESP
        if (
            can_vote
            and self.log.is_up_to_date(m.index, m.log_term)
            and (
                # Recovering: our log may lack entries we acknowledged; the candidate's
                # must be at least as up to date as the log we had when we promised.
                not self._recovering_to
                or m.log_term > self._recovering_last_term
                or (m.log_term == self._recovering_last_term and m.index >= self._recovering_to)
            )
        ):
            # A granted pre-vote answers in the candidate's future term so it counts.
            self._send(Message(resp_type, m.frm, self.id, m.term, nonce=m.nonce))
            if not pre:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self._send(Message(resp_type, m.frm, self.id, self.term, nonce=m.nonce, reject=True))

    # ------------------------------------------------------------------ followers

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t is _APP or t is _HEARTBEAT or t is _SNAP:
            nonce = m.nonce
            if nonce != self._leader_nonce or m.frm != self.leader:
                if self._leader_nonce:
                    # One leader per term, one nonce per leader: this is neither.
                    return
                self._leader_nonce = nonce
            self.election_elapsed = 0
            self.leader = m.frm
            if self._leader_lost:
                # The leader is alive after all (``leader_unreachable`` was wrong).
                self._redraw_election_timeout()
            if t is _APP:
                self._handle_append(m)
            elif t is _HEARTBEAT:
                self._handle_heartbeat(m)
            else:
                self._handle_snapshot(m)
        elif t is _TIMEOUT_NOW:
            if m.nonce != self._leader_nonce or not self._leader_nonce:
                return  # not from the leader we follow (see _send_timeout_now)
            if m.index != self.id:
                # A transfer to another voter: its forced vote may pass our lease.
                self._transfer_notice = (self.term, m.index)
                return
            if self._has_unapplied_conf_change():
                # Typically the removed leader's hand-over, arriving together with the
                # commit of its removal: campaign once that change is applied.
                self._campaign_after_apply = True
            else:
                self._hup(transfer=True)
        elif t is _READ_INDEX_RESP and self._leader_nonce and m.nonce == self._leader_nonce:
            # Before this term's leader has been heard (nonce 0) no answer is genuine.
            self.read_states.append(ReadState(m.index, m.context))
        # READ_INDEX or TRANSFER_LEADER here means the sender's idea of the leader was
        # stale: dropped rather than relayed under another sender's name; the
        # requester retries once it learns the leader.

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        if t is _APP or t is _HEARTBEAT or t is _SNAP:
            # Someone won this term's election: follow it.
            self._become_follower(m.term, m.frm)
            self._step_follower(m)
        elif (
            t is (_PRE_VOTE_RESP if self.role is Role.PRE_CANDIDATE else _VOTE_RESP)
            and m.frm in self._voters
            and m.nonce == self._nonce
        ):
            self._record_vote(m.frm, not m.reject, self.role is Role.PRE_CANDIDATE)

    def _handle_append(self, m: Message) -> None:
        log = self.log
        entries = m.entries
        if entries and (
            entries[0].index != m.index + 1 or entries[-1].index != m.index + len(entries)
        ):
            return  # malformed: entries must run on from the previous index
        if m.index < log.commit_index:
            # Everything up to our commit index is settled; say so.
            self._send(
                Message(
                    _APP_RESP,
                    m.frm,
                    self.id,
                    self.term,
                    nonce=self._leader_nonce,
                    index=log.commit_index,
                )
            )
            return
        last_new = log.maybe_append(m.index, m.log_term, m.commit, entries)
        if last_new is not None:
            self._maybe_end_recovery(last_new, m.term)
            # An answer echoes the leader's nonce (README, "Nonces").
            self._send(
                Message(
                    _APP_RESP,
                    m.frm,
                    self.id,
                    self.term,
                    nonce=self._leader_nonce,
                    index=last_new,
                )
            )
            return
        # Paper 5.3 optimisation: hint the largest index whose term is <= the
        # leader's term at m.index, so the leader can skip whole terms at once.
        hint_index, hint_term = log.find_conflict_by_term(
            min(m.index, log.last_index()), m.log_term
        )
        self._send(
            Message(
                _APP_RESP,
                m.frm,
                self.id,
                self.term,
                nonce=self._leader_nonce,
                index=m.index,
                reject=True,
                reject_hint=hint_index,
                hint_term=hint_term,
            )
        )

    def _handle_heartbeat(self, m: Message) -> None:
        # The leader sends min(match, commit), which we are known to hold.
        log = self.log
        log.commit_to(min(m.commit, log.last_index()))
        # Our commit index tells a leader waiting on a snapshot that it has landed.
        self._send(
            Message(
                _HEARTBEAT_RESP,
                m.frm,
                self.id,
                self.term,
                nonce=self._leader_nonce,
                commit=log.commit_index,
                context=m.context,
            )
        )

    def _handle_snapshot(self, m: Message) -> None:
        snapshot = m.snapshot
        if snapshot is None:
            return
        meta = snapshot.meta
        log = self.log
        if meta.index > log.commit_index:
            if log.match_term(meta.index, meta.term):
                # We already hold everything the snapshot covers: just commit it.
                log.commit_to(meta.index)
            else:
                # Restored even when this node is not in the snapshot's configuration:
                # a member added after the snapshot was taken learns of its own
                # addition from the entries that follow it.
                log.restore(snapshot)
                self._set_conf(meta.conf_state)
                self._conf_index = meta.index
            self._maybe_end_recovery(meta.index, m.term)
        self._send(
            Message(
                _APP_RESP,
                m.frm,
                self.id,
                self.term,
                nonce=self._leader_nonce,
                index=log.commit_index,
            )
        )

    # ------------------------------------------------------------------ leaders

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t is _APP_RESP:
            pr = self.progress.get(m.frm)
            # An answer proves it saw our messages by echoing our nonce: a forged
            # acknowledgement cannot commit anything (README, "Nonces").
            if pr is not None and m.nonce == self._nonce:
                self._handle_append_response(m, pr)
        elif t is _HEARTBEAT_RESP:
            pr = self.progress.get(m.frm)
            if pr is not None and m.nonce == self._nonce:
                self._handle_heartbeat_response(m, pr)
        elif t is _READ_INDEX:
            self._handle_read_index(m.frm, m.context)
        elif t is _TRANSFER_LEADER and m.nonce == self._nonce:
            self._handle_transfer(m.index)

    def _handle_append_response(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        log = self.log
        if m.index > log.last_index():
            return  # acknowledges entries we never sent: garbage
        if m.reject:
            probe_from = m.reject_hint
            if m.hint_term > 0:
                # Skip every entry of ours whose term the follower cannot have.
                probe_from, _ = log.find_conflict_by_term(m.reject_hint, m.hint_term)
            if (
                m.index >= pr.match_index > m.reject_hint
                and pr.state is not _SNAPSHOT
                and pr.match_index > 0
            ):
                # The follower rejects an index at or above what it acknowledged, and its
                # log ends below that: it went backwards (restarted with a shorter log).
                # A follower that still holds its acknowledged entries always hints at or
                # above match (docs/recovery.md, "Progress regression").
                matched = m.hint_term > 0 and log.term(m.reject_hint) == m.hint_term
                pr.regress(m.reject_hint if matched else 0, probe_from + 1)
                self._send_append(m.frm, send_if_empty=True)
                return
            if pr.maybe_decrease_to(m.index, probe_from):
                if pr.state is _REPLICATE:
                    pr.become_probe()
                self._send_append(m.frm, send_if_empty=True)
            return
        was_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state is _PROBE:
            pr.become_replicate()
        elif pr.state is _SNAPSHOT:
            if pr.match_index >= pr.pending_snapshot or pr.match_index + 1 >= log.first_index():
                pr.become_probe()
                pr.become_replicate()
        else:
            pr.inflights.free_le(m.index)
        if self._maybe_commit():
            self._bcast_append(send_if_empty=True)
        else:
            # A follower we held back missed any commit broadcast meanwhile.
            self._send_append(m.frm, send_if_empty=was_paused)
        if m.frm == self.lead_transferee and pr.match_index == log.last_index():
            self._send_timeout_now(m.frm)

    def _handle_heartbeat_response(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        if pr.state is _SNAPSHOT and m.commit >= pr.pending_snapshot > 0:
            # The snapshot was installed but its acknowledgement was lost: the
            # follower holds everything up to its commit index, so probe from there.
            pr.become_probe()
        pr.probe_sent = False
        if pr.state is not _SNAPSHOT and m.commit < pr.previous_heartbeat_floor:
            # The last two heartbeats told it to commit at least this far, and a follower
            # holding what it acknowledged would have: it may have restarted with a
            # shorter log (or this answers a much older heartbeat). One empty APP at its
            # match index tells: held, it acknowledges again; lost, it rejects, and that
            # rejection is a regression (_handle_append_response).
            self._probe_at_match(m.frm, pr)
        if pr.state is _REPLICATE and pr.inflights.full():
            # An acknowledgement may have been lost: make room for one more APP,
            # whose answer will tell where the follower really is.
            pr.inflights.free_first()
        if pr.match_index < self.log.last_index():
            self._send_append(m.frm, send_if_empty=True)
        if not m.context:
            return
        acks = self.read_only.ack(m.context, m.frm)
        if acks is None or len(acks & self._voters) < majority(len(self._voters)):
            return
        for request in self.read_only.release(m.context):
            self._answer_read(request)

    def _probe_at_match(self, to: int, pr: Progress) -> None:
        match_term = self.log.term(pr.match_index)
        if match_term is None:
            return  # compacted: the follower's next rejection or snapshot will tell
        self._send(
            Message(
                _APP,
                to,
                self.id,
                self.term,
                log_term=match_term,
                index=pr.match_index,
                commit=self.log.commit_index,
                nonce=self._nonce,
            )
        )

    def _handle_read_index(self, requester: int, ctx: bytes) -> None:
        log = self.log
        if self._voters == {self.id}:
            self._answer_read(ReadRequest(log.commit_index, requester, ctx))
        elif log.term(log.commit_index) != self.term:
            # Dissertation 6.4 step 1: until an entry of its term commits, a new
            # leader's commit index may lag the true one.
            self._postponed_reads.append((requester, ctx))
        elif self.read_only.add(log.commit_index, requester, ctx, self.id):
            self._bcast_heartbeat(ctx)

    def _answer_read(self, request: ReadRequest) -> None:
        if request.requester == self.id:
            self.read_states.append(ReadState(request.index, request.context))
        else:
            self._send(
                Message(
                    _READ_INDEX_RESP,
                    request.requester,
                    self.id,
                    self.term,
                    index=request.index,
                    nonce=self._nonce,
                    context=request.context,
                )
            )

    def _handle_transfer(self, target: int) -> None:
        if target == self.id or target not in self._voters:
            return
        if self.lead_transferee == target:
            return
        self.lead_transferee = target
        # The transfer must finish within one election timeout or be abandoned.
        self.election_elapsed = 0
        if self.progress[target].match_index == self.log.last_index():
            self._send_timeout_now(target)
        else:
            self._send_append(target, send_if_empty=True)

    def _send_timeout_now(self, target: int) -> None:
        """Start a transfer to ``target`` (dissertation 3.10), in a way a forger cannot.

        TIMEOUT_NOW carries our nonce, which only our followers have seen, so one
        injected by a process that cannot read our streams is refused. The other
        voters get a notice first (a TIMEOUT_NOW whose ``index`` names the
        transferee) so they know the transfer vote they are about to see is real.
        """
        nonce = self._nonce
        for voter in self._voter_ids:
            if voter != self.id and voter != target:
                self._send(
                    Message(_TIMEOUT_NOW, voter, self.id, self.term, index=target, nonce=nonce)
                )
        self._send(Message(_TIMEOUT_NOW, target, self.id, self.term, index=target, nonce=nonce))

    def _check_can_propose(self) -> None:
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader)
        if self.lead_transferee != NONE:
            raise ProposalDroppedError("leadership transfer in progress")
        if self.id not in self.progress:
            raise ProposalDroppedError("this leader is being removed from the cluster")

    def _append_entries(self, entries: list[Entry]) -> None:
        self.log.append(entries)
        me = self.progress.get(self.id)
        if me is not None:
            # The leader's own entries count once appended: the Ready contract
            # persists them before any message that could produce an acknowledgement.
            me.maybe_update(entries[-1].index)
        self._maybe_commit()
        self._bcast_append(send_if_empty=False)

    def _maybe_commit(self) -> bool:
        progress = self.progress
        index = committed_index([progress[v].match_index for v in self._voter_ids])
        log = self.log
        # Paper 5.4.2 / figure 8: only entries of the current term commit by counting.
        if index <= log.commit_index or log.term(index) != self.term:
            return False
        log.commit_to(index)
        if self._postponed_reads:
            postponed, self._postponed_reads = self._postponed_reads, []
            for requester, ctx in postponed:
                self._handle_read_index(requester, ctx)
        return True

    def _bcast_append(self, send_if_empty: bool) -> None:
        for peer in self.progress:
            if peer != self.id:
                self._send_append(peer, send_if_empty)

    def _send_append(self, to: int, send_if_empty: bool) -> None:
        """Send what ``to`` is missing: as many APPs as its window allows, or a snapshot."""
        pr = self.progress[to]
        log = self.log
        config = self.config
        while not pr.is_paused():
            prev_index = pr.next_index - 1
            prev_term = log.term(prev_index)
            if prev_term is None:
                self._send_snapshot(to, pr)
                return
            if pr.next_index <= log.last_index():
                entries = log.slice_limited(
                    pr.next_index, config.max_msg_entries, config.max_msg_bytes
                )
            elif send_if_empty:
                entries = []
            else:
                return
            self.msgs.append(
                Message(
                    _APP,
                    to,
                    self.id,
                    self.term,
                    log_term=prev_term,
                    index=prev_index,
                    entries=entries,
                    commit=log.commit_index,
                    nonce=self._nonce,
                )
            )
            if pr.state is _REPLICATE:
                if not entries:
                    return
                last = entries[-1].index
                pr.next_index = last + 1
                pr.inflights.add(last)
                # Pipelining: keep going while the window has room.
                send_if_empty = False
            else:
                pr.probe_sent = True
                return

    def _send_snapshot(self, to: int, pr: Progress) -> None:
        if not pr.recent_active:
            # Do not ship a whole snapshot to a peer that may be down.
            return
        snapshot = self.log.snapshot
        assert snapshot is not None, "entries compacted without a snapshot"
        self._send(Message(_SNAP, to, self.id, self.term, nonce=self._nonce, snapshot=snapshot))
        pr.become_snapshot(snapshot.meta.index)

    def _bcast_heartbeat(self, ctx: bytes) -> None:
        commit = self.log.commit_index
        for peer, pr in self.progress.items():
            if peer != self.id:
                # Never tell a follower to commit beyond what it is known to hold.
                pr.previous_heartbeat_floor = pr.heartbeat_floor
                pr.heartbeat_floor = min(pr.match_index, commit)
                self._send(
                    Message(
                        _HEARTBEAT,
                        peer,
                        self.id,
                        self.term,
                        commit=min(pr.match_index, commit),
                        nonce=self._nonce,
                        context=ctx,
                    )
                )

    def _send(self, m: Message) -> None:
        self.msgs.append(m)

    # ------------------------------------------------------------------ membership

    def _set_conf(self, conf: ConfState) -> None:
        self._voters = set(conf.voters)
        self._learners = set(conf.learners)
        self._voter_ids = tuple(sorted(self._voters))

    def _apply_conf_changes(self, entries: Sequence[Entry]) -> None:
        for entry in entries:
            if entry.type == _CONF_CHANGE and entry.index > self._conf_index:
                self._conf_index = entry.index
                self._apply_conf_change(ConfChange.decode(entry.data))

    def _apply_conf_change(self, change: ConfChange) -> None:
        node = change.node_id
        if change.type == ConfChangeType.ADD_LEARNER:
            if node in self._voters or node in self._learners:
                return
            self._learners.add(node)
        elif change.type == ConfChangeType.PROMOTE:
            if node in self._voters:
                return
            self._learners.discard(node)
            self._voters.add(node)
        else:
            self._voters.discard(node)
            self._learners.discard(node)
        self._voter_ids = tuple(sorted(self._voters))
        if self.role is not Role.LEADER:
            return
        if change.type == ConfChangeType.REMOVE:
            self.progress.pop(node, None)
            if node == self.id:
                self._step_down_removed()
                return
            if self.lead_transferee == node:
                self.lead_transferee = NONE
        elif node not in self.progress:
            pr = Progress(self.log.last_index() + 1, self.config.max_inflight)
            # A new member has not had a chance to answer yet: do not count it dead.
            pr.recent_active = True
            self.progress[node] = pr
            self._send_append(node, send_if_empty=True)
        if self._maybe_commit():
            self._bcast_append(send_if_empty=True)

    def _step_down_removed(self) -> None:
        """This leader applied its own removal (dissertation 4.2.2): hand over and step down."""
        # Tell everyone the commit index that includes the removal, then let the
        # most up-to-date voter campaign at once instead of waiting for a timeout.
        self._bcast_append(send_if_empty=True)
        last = self.log.last_index()
        caught_up = [
            peer
            for peer, pr in sorted(self.progress.items())
            if peer in self._voters and pr.match_index == last
        ]
        if caught_up:
            self._send_timeout_now(caught_up[0])
        self._become_follower(self.term, NONE)
