"""Membership as the node sees it: the applied configuration, and which peers'
messages may reach the consensus core.

Which peer messages reach the core (docs/node-contract.md, "Peer messages"):

- from a member of the core's configuration (voters, learners) or a member being
  added by a configuration change in the log that is not applied yet: all;
- while this node is not in its own configuration (it joins, or replays an old
  configuration on its way to its own addition): also from the initial voters in
  --peers, the members the bootstrap entries name;
- TIMEOUT_NOW from the leader this node follows (a removed leader hands over after
  its removal applied; the core checks the term);
- a node with no configuration at all (started empty, waiting to be added): APP,
  HEARTBEAT and SNAP from any id, since it cannot know which member leads (the
  first entries or snapshot tell it the configuration);
- anything else is dropped, counted and logged.

Without peer TLS a sender id can be forged; the core's own checks (raft/README.md,
"Hostile inputs") bound what a forged member id can do. No I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from exchange_node.raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
)

JOINING_ADMITS = frozenset((MessageType.APP, MessageType.HEARTBEAT, MessageType.SNAP))
"""What a node with no configuration yet accepts from any id (a leader's messages)."""
REJECT_LOG_INTERVAL_S = 10.0
"""At most one log line per (reason, sender) for refused peer messages in this long."""


def apply_change(conf: ConfState, change: ConfChange) -> ConfState:
    """The configuration after one committed change (one server at a time)."""
    voters, learners = set(conf.voters), set(conf.learners)
    if change.type == ConfChangeType.REMOVE:
        voters.discard(change.node_id)
        learners.discard(change.node_id)
    elif change.type == ConfChangeType.PROMOTE:
        learners.discard(change.node_id)
        voters.add(change.node_id)
    elif change.node_id not in voters:
        learners.add(change.node_id)
    return ConfState(tuple(sorted(voters)), tuple(sorted(learners)))


class PeerGate:
    """Decides which senders' messages reach the core (see the module docstring)."""

    def __init__(self, node_id: int, initial_peers: Collection[int]) -> None:
        self.node_id = node_id
        self.initial_peers = frozenset(initial_peers)
        self.ids: frozenset[int] = frozenset()
        """Senders whose messages reach the core: members and members being added."""
        self._pending: dict[int, int] = {}
        """index -> member id of configuration changes in the log not applied yet."""

    def note(self, entries: Iterable[Entry]) -> bool:
        """Remember the members that log ``entries`` add; True if any entry changes
        the configuration."""
        changed = False
        for entry in entries:
            if entry.type != EntryType.CONF_CHANGE:
                continue
            changed = True
            try:
                change = ConfChange.decode(entry.data)
            except Exception:
                continue
            if change.type != ConfChangeType.REMOVE:
                self._pending[entry.index] = change.node_id
        return changed

    def refresh(self, conf: ConfState, applied_index: int) -> None:
        """Members of the core's configuration and members being added, except us."""
        for index in [i for i in self._pending if i <= applied_index]:
            del self._pending[index]
        ids = set(conf.voters) | set(conf.learners) | set(self._pending.values())
        if self.node_id not in ids:
            ids.update(self.initial_peers)
        ids.discard(self.node_id)
        self.ids = frozenset(ids)

    def refuse(self, message: Message, leader: int, has_configuration: bool) -> str | None:
        """Why a message from a sender outside ``ids`` is refused (None: admitted)."""
        frm = message.frm
        if frm == self.node_id:
            return "self"
        if message.type == MessageType.TIMEOUT_NOW and frm == leader:
            return None
        if not has_configuration:
            return None if message.type in JOINING_ADMITS else "joining"
        return "not_member"


class RateLimitedLog:
    """True at most once per (kind, peer) every ``interval`` (a forged flood must not
    flood the log too)."""

    def __init__(self, interval: float = REJECT_LOG_INTERVAL_S, capacity: int = 1024) -> None:
        self.interval = interval
        self.capacity = capacity
        self._last: dict[tuple[str, int], float] = {}

    def due(self, kind: str, peer: int, now: float) -> bool:
        key = (kind, peer)
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            return False
        if len(self._last) > self.capacity:
            self._last.clear()
        self._last[key] = now
        return True
