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

No I/O and no clock of its own: the node passes ``now`` in.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Collection

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
