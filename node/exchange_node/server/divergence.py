"""Divergence detection: replicas compare state hashes at the same applied index.

Every replica records the hash of its state at some applied indexes (each
snapshot, and the idle applied index) and sends its newest one to the others
every ``DIGEST_INTERVAL_S``. ``DivergenceWatch`` compares what the voters claim
with what this replica recorded at the same index:

* a voter's newest digest is its verdict on this replica; a contradiction counts
  only once it has stood ``CONFIRM_S`` without that voter's own later digests
  refuting it;
* two different claims by one voter about one index cancel each other (one was
  forged: possible without peer TLS);
* any confirmed contradiction raises the alarm (``diverged``); only the replica a
  majority of voters contradict fences itself (``fenced``: it serves nothing and
  a leader hands leadership over), so one bad replica cannot take the healthy ones
  down with it.

A replica can also fall behind without any hash differing: a follower whose log
is stuck below the leader's (probing that never succeeds, a disk that stopped
writing), whose apply stalled, or whose process froze. ``ProgressWatch`` finds
it: a member is *stuck* once it has not reached, for ``STUCK_S``, the commit index
this replica knew ``STUCK_S`` earlier:

* every replica checks itself: its applied index against its commit index
  (``applying``: entries committed and received, not applied);
* the leader checks every other member: the match index it holds for it, while it
  hears from that member (``behind``: connected, yet not keeping up); and one that
  it has not heard from and whose digests (sent every ``DIGEST_INTERVAL_S``)
  stopped arriving for ``STUCK_S`` (``silent``: a frozen, crashed or cut-off
  process), even when nothing is being committed.

No I/O and no clock of its own: the node passes ``now`` in.
"""

from __future__ import annotations

import hashlib
import logging
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

log = logging.getLogger("exchange.node")

DIGEST_INTERVAL_S = 1.0
"""How often replicas exchange (applied_index, state_hash) digests."""
IDLE_HASH_SECONDS = 2.0
"""A fresh state hash (for status documents and digests) is computed only after this
long without applying: hashing is a full engine snapshot and would stall the loop."""
HASH_RING = 64
"""Recorded (index, hash) pairs kept for comparison with peers' digests."""
CONFIRM_S = 3.0
"""A voter's contradicting digest raises the divergence alarm (and counts towards
fencing) only once it has stood this long without that voter's own later digests
refuting it. Voters resend their digest every DIGEST_INTERVAL_S, so a forged digest
(possible without peer TLS) is refuted long before; a real divergence never is."""


def state_digest(engine_state: bytes) -> bytes:
    """BLAKE2b-256 of the engine's canonical snapshot (as ``Engine.state_hash``)."""
    return hashlib.blake2b(engine_state, digest_size=32).digest()


class DivergenceWatch:
    """See the module docstring."""

    def __init__(
        self,
        node_id: int,
        voters: Callable[[], Collection[int]],
        *,
        reject: Callable[[str, int, str], None],
        log_due: Callable[[str, int], bool],
        on_diverged: Callable[[], None],
        on_fenced: Callable[[], None],
    ) -> None:
        self.node_id = node_id
        self._voters = voters
        self._reject = reject
        self._log_due = log_due
        self._on_diverged = on_diverged
        self._on_fenced = on_fenced
        self.hash_ring: dict[int, bytes] = {}
        """applied index -> this replica's state hash there (the newest HASH_RING)."""
        self._remote: dict[int, list[tuple[int, bytes]]] = {}
        """Peers' digests at indexes this replica has not recorded yet."""
        self.claims: dict[tuple[int, int], bytes] = {}
        """(voter, applied index) -> the hash it claimed there; b"" once two claims
        conflicted (one of them was forged: both are ignored)."""
        self.verdicts: dict[int, tuple[int, bool, float]] = {}
        """voter -> (index, agrees, since) of its newest digest compared with ours."""
        self.diverged = False
        """A replica's state hash differed from a peer's at the same index (alarm)."""
        self.fenced = False
        """A majority of voters contradict this replica's state: it serves nothing."""
        self.compared = 0
        self.digest_at: dict[int, float] = {}
        """voter -> when its newest digest arrived (``ProgressWatch``: silent members)."""

    def record(self, index: int, digest: bytes, now: float) -> None:
        """This replica's state hash at applied ``index``."""
        self.hash_ring[index] = digest
        while len(self.hash_ring) > HASH_RING:
            del self.hash_ring[next(iter(self.hash_ring))]
        for peer, theirs in self._remote.pop(index, []):
            self.compare(peer, index, theirs, digest, now)

    def on_digest(
        self, peer: int, index: int, state_hash: bytes, applied_index: int, now: float
    ) -> None:
        """Voter ``peer`` says its state hash at ``index`` is ``state_hash``."""
        if peer == self.node_id or peer not in self._voters():
            # Only voters' states decide anything; anyone else's digest is noise.
            self._reject("digest_not_voter", peer, "digest")
            return
        self.digest_at[peer] = now
        if len(self.digest_at) > HASH_RING:
            voters = self._voters()
            for gone in [p for p in self.digest_at if p not in voters]:
                del self.digest_at[gone]
        mine = self.hash_ring.get(index)
        if mine is not None:
            self.compare(peer, index, state_hash, mine, now)
        elif index >= applied_index:
            pending = self._remote.setdefault(index, [])
            pending.append((peer, state_hash))
            while len(self._remote) > HASH_RING:
                del self._remote[next(iter(self._remote))]

    def compare(self, peer: int, index: int, theirs: bytes, mine: bytes, now: float) -> None:
        """Record what voter ``peer`` says about ``index`` (see the module docstring)."""
        self.compared += 1
        key = (peer, index)
        claimed = self.claims.get(key)
        if claimed is not None and claimed != theirs:
            if claimed:
                self.claims[key] = b""
                self._reject("digest_conflict", peer, f"digest at {index}")
                if self.verdicts.get(peer, (-1,))[0] == index:
                    del self.verdicts[peer]
            return
        if claimed is None:
            self.claims[key] = theirs
            while len(self.claims) > HASH_RING * 8:
                del self.claims[next(iter(self.claims))]
        agrees = theirs == mine
        newest = self.verdicts.get(peer)
        if newest is not None and newest[0] > index:
            return  # an older digest: the newer one stands
        if newest is None or newest[1] != agrees or newest[0] != index:
            since = newest[2] if newest is not None and newest[1] == agrees else now
            self.verdicts[peer] = (index, agrees, since)
        if not agrees and self._log_due("digest_mismatch", peer):
            log.warning(
                "peer %d reports another state hash at applied index %d (divergence "
                "alarm if it stands %.0f s)",
                peer,
                index,
                CONFIRM_S,
                extra={"peer": peer, "index": index, "mine": mine.hex(), "theirs": theirs.hex()},
            )
        self.check(now)

    def check(self, now: float) -> None:
        """Raise the alarm, or fence, on contradictions that have stood CONFIRM_S."""
        voters = self._voters()
        standing = sorted(
            peer
            for peer, (_index, agrees, since) in self.verdicts.items()
            if not agrees and now - since >= CONFIRM_S and peer in voters and peer != self.node_id
        )
        if not standing:
            return
        if not self.diverged:
            self.diverged = True
            self._on_diverged()
            log.error(
                "STATE DIVERGENCE: voter(s) %s report another state hash than this replica "
                "at the same applied index; compare state_hash and state_hash_index of every "
                "member (GET /v1/admin/status on each) to find the odd one out",
                standing,
                extra={"peers": standing, "verdicts": {p: self.verdicts[p][0] for p in standing}},
            )
        if not self.fenced and len(standing) >= len(voters) // 2 + 1:
            self.fenced = True
            index = max(self.verdicts[p][0] for p in standing)
            log.critical(
                "FENCED: voters %s (a majority) agree on another state than this replica's at "
                "applied index %d; refusing reads and writes. Check first: (1) compare "
                "state_hash and state_hash_index of every member (GET /v1/admin/status on "
                "each) to confirm this replica is the odd one out; (2) this host's disk and "
                "memory (kernel log, SMART, ECC) and WAL or snapshot errors in this log; "
                "(3) copy the data directory aside for analysis. Only then remove this "
                "member, empty its data directory and add it back as a new member.",
                standing,
                index,
                extra={"peers": standing, "index": index},
            )
            self._on_fenced()


STUCK_S = 10.0
"""How long a member may stay short of an index committed that long ago before it
counts as stuck behind (``ProgressWatch``). Longer than a snapshot transfer or an
election; short enough that an operator hears of a cluster running on a bare quorum."""


@dataclass(frozen=True, slots=True)
class StuckMember:
    """A member found stuck behind (``ProgressWatch``)."""

    reason: str
    """``applying`` (this replica: applied stays behind commit), ``behind`` (the leader
    hears the member, its log does not keep up) or ``silent`` (no message, no digest)."""
    since: float
    """When the check first found it stuck (``now`` as passed in)."""
    progress: int
    """Its last known index (applied for itself, match for a peer)."""
    target: int
    """The commit index it has not reached in ``STUCK_S``."""


class ProgressWatch:
    """Finds members stuck behind; see the module docstring."""

    def __init__(
        self,
        node_id: int,
        *,
        bound_s: float = STUCK_S,
        on_change: Callable[[int, StuckMember | None], None] | None = None,
    ) -> None:
        self.node_id = node_id
        self.bound_s = bound_s
        self._on_change = on_change
        self.stuck: dict[int, StuckMember] = {}
        """member -> why it is stuck now (members that are not stuck are absent)."""
        self._commits: deque[tuple[float, int]] = deque()
        """(time, commit index) samples, enough to know the commit index ``bound_s`` ago."""
        self._leader_since: float | None = None
        """When this replica became leader (None: it is not): its match indexes for
        the others mean something only once it has led for ``bound_s``."""

    def _commit_before(self, now: float, commit_index: int) -> int | None:
        """The commit index as of ``bound_s`` ago (None: not watched that long yet)."""
        commits = self._commits
        if not commits or commits[-1][1] != commit_index:
            commits.append((now, commit_index))
        horizon = now - self.bound_s
        # Keep the newest sample at or before the horizon; drop the older ones.
        while len(commits) > 1 and commits[1][0] <= horizon:
            commits.popleft()
        first_at, first_commit = commits[0]
        return first_commit if first_at <= horizon else None

    def check(
        self,
        now: float,
        *,
        commit_index: int,
        applied_index: int,
        members: Collection[int],
        leader: bool,
        match: Mapping[int, int],
        heard: Mapping[int, float],
        digests: Mapping[int, float],
    ) -> dict[int, StuckMember]:
        """Update ``stuck``: ``members`` are the voters and learners, ``match`` the
        leader's match index per peer (empty on a follower: it judges only itself),
        ``heard`` when this replica last heard from each peer and ``digests`` when each
        peer's newest digest arrived (``DivergenceWatch.digest_at``). Returns ``stuck``."""
        target = self._commit_before(now, commit_index)
        if not leader:
            self._leader_since = None
        elif self._leader_since is None:
            self._leader_since = now
        found: dict[int, tuple[str, int, int]] = {}
        if target is not None and self.node_id in members and applied_index < target:
            found[self.node_id] = ("applying", applied_index, target)
        since = self._leader_since
        if since is not None and now - since >= self.bound_s:
            for peer in members:
                if peer == self.node_id:
                    continue
                progress = match.get(peer, 0)
                last_heard = max(heard.get(peer, since), since)
                last_digest = max(digests.get(peer, since), since)
                if now - last_heard >= self.bound_s and now - last_digest >= self.bound_s:
                    found[peer] = ("silent", progress, commit_index if target is None else target)
                elif target is not None and progress < target:
                    found[peer] = ("behind", progress, target)
        for member in list(self.stuck):
            if member not in found:
                del self.stuck[member]
                log.warning(
                    "member %d is no longer stuck behind",
                    member,
                    extra={"member": member},
                )
                if self._on_change is not None:
                    self._on_change(member, None)
        for member, (reason, progress, behind_target) in found.items():
            current = self.stuck.get(member)
            if current is not None and current.reason == reason:
                self.stuck[member] = StuckMember(reason, current.since, progress, behind_target)
                continue
            entry = StuckMember(reason, now, progress, behind_target)
            self.stuck[member] = entry
            what = {
                "applying": f"its applied index stayed at {progress}",
                "behind": f"its match index stayed at {progress} while this leader hears it",
                "silent": f"no message and no digest for {self.bound_s:.0f} s (match "
                f"index {progress})",
            }[reason]
            log.error(
                "STUCK BEHIND: member %d %s: %s, short of index %d committed %.0f s ago. "
                "Check: GET /v1/cluster on the leader (match_index, lag, stuck) and "
                "GET /v1/admin/status on that member; its process (paused? loop "
                "blocked?), its disk (writes hanging?) and its log for WAL or snapshot errors",
                member,
                reason,
                what,
                behind_target,
                self.bound_s,
                extra={
                    "member": member,
                    "reason": reason,
                    "progress": progress,
                    "target": behind_target,
                },
            )
            if self._on_change is not None:
                self._on_change(member, entry)
        return self.stuck
