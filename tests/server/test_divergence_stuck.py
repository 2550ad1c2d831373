"""A replica stuck behind is found, not only one whose state hash differs.

``ProgressWatch`` (server/divergence.py) is pure: each test drives it with a clock,
a commit index and what the leader knows of its peers, as the node's digest timer
does every second.
"""

import logging

from exchange_node.server.divergence import STUCK_S, DivergenceWatch, ProgressWatch

BOUND = 10.0


class Cluster:
    """Leader 1 of voters (1, 2, 3); every second commit moves by ``rate``."""

    def __init__(self, node_id: int = 1, leader: bool = True) -> None:
        self.changes: list[tuple[int, str | None]] = []
        self.watch = ProgressWatch(
            node_id,
            bound_s=BOUND,
            on_change=lambda member, stuck: self.changes.append(
                (member, stuck.reason if stuck is not None else None)
            ),
        )
        self.leader = leader
        self.commit = 100
        self.applied = 100
        self.match = {2: 100, 3: 100}
        self.heard = {2: 0.0, 3: 0.0}
        self.digests = {2: 0.0, 3: 0.0}

    def second(self, now: float, *, rate: int = 10, frozen: tuple[int, ...] = ()) -> dict:
        self.commit += rate
        self.applied = self.commit if 1 not in frozen else self.applied
        for peer in (2, 3):
            if peer not in frozen:
                self.match[peer] = self.commit
                self.heard[peer] = now
                self.digests[peer] = now
        return self.check(now)

    def check(self, now: float) -> dict:
        return self.watch.check(
            now,
            commit_index=self.commit,
            applied_index=self.applied,
            members=(1, 2, 3),
            leader=self.leader,
            match=self.match if self.leader else {},
            heard=self.heard,
            digests=self.digests,
        )


def test_the_default_bound_is_longer_than_an_election_and_short_of_a_minute():
    assert 5.0 <= STUCK_S <= 60.0


def test_a_healthy_busy_cluster_has_nobody_stuck():
    c = Cluster()
    for second in range(60):
        assert c.second(float(second), rate=500) == {}
    assert c.changes == []


def test_a_connected_follower_whose_log_stops_is_stuck_behind_within_the_bound():
    c = Cluster()
    for second in range(15):
        c.second(float(second))
    # Follower 3 still answers heartbeats (heard, digests) but its match stops.
    stuck_at = None
    for second in range(15, 40):
        c.commit += 10
        c.applied = c.commit
        c.match[2] = c.commit
        for peer in (2, 3):
            c.heard[peer] = c.digests[peer] = float(second)
        if 3 in c.check(float(second)):
            stuck_at = second
            break
    assert stuck_at is not None and stuck_at - 15 <= BOUND + 1, stuck_at
    assert c.watch.stuck[3].reason == "behind"
    assert c.watch.stuck[3].progress == 250 and c.watch.stuck[3].target > 250
    assert c.changes == [(3, "behind")]
    # Caught up: no longer stuck.
    c.match[3] = c.commit
    assert c.check(float(stuck_at + 1)) == {}
    assert c.changes == [(3, "behind"), (3, None)]


def test_a_frozen_follower_is_silent_even_when_nothing_commits():
    c = Cluster()
    for second in range(12):
        c.second(float(second))
    # SIGSTOP: no message, no digest from 2, and no writes either.
    # Last heard at 11 s: silent from 11 s + BOUND on, not a second earlier.
    for second in range(12, 11 + int(BOUND)):
        assert c.second(float(second), rate=0, frozen=(2,)) == {}, second
    stuck = c.second(11.0 + BOUND, rate=0, frozen=(2,))
    assert set(stuck) == {2} and stuck[2].reason == "silent"


def test_a_follower_judges_only_itself_applying_behind_its_commit():
    c = Cluster(node_id=1, leader=False)
    for second in range(12):
        c.second(float(second), frozen=(2, 3))  # a follower knows no match, hears no one
    assert c.watch.stuck == {}
    for second in range(12, 12 + int(BOUND)):
        c.second(float(second), frozen=(1, 2, 3))
    stuck = c.second(12.0 + BOUND, frozen=(1, 2, 3))
    assert set(stuck) == {1} and stuck[1].reason == "applying"


def test_a_new_leader_judges_its_peers_only_after_leading_for_the_bound():
    c = Cluster(leader=False)
    for second in range(30):
        c.second(float(second))
    c.leader = True
    c.match = {2: 0, 3: 0}  # a new leader's progress starts from nothing
    for second in range(30, 30 + int(BOUND)):
        assert c.check(float(second)) == {}, second
        c.commit += 10
        c.match = {2: c.commit, 3: c.commit}
        c.heard = c.digests = {2: float(second), 3: float(second)}
    assert c.check(30.0 + BOUND) == {}


def test_the_log_line_names_the_member_the_reason_and_where_to_look(caplog):
    c = Cluster()
    for second in range(12):
        c.second(float(second))
    with caplog.at_level(logging.ERROR, logger="exchange.node"):
        for second in range(12, 30):
            c.second(float(second), frozen=(3,))
    messages = [r.getMessage() for r in caplog.records if "STUCK BEHIND" in r.getMessage()]
    assert len(messages) == 1, messages  # once per change, not once per check
    assert "member 3 silent" in messages[0] and "/v1/cluster" in messages[0]


def test_digests_are_timed_per_voter_for_the_silence_check():
    watch = DivergenceWatch(
        1,
        lambda: (1, 2, 3),
        reject=lambda *_: None,
        log_due=lambda *_: True,
        on_diverged=lambda: None,
        on_fenced=lambda: None,
    )
    watch.on_digest(2, 7, b"h", applied_index=7, now=4.5)
    watch.on_digest(9, 7, b"h", applied_index=7, now=5.0)  # not a voter: ignored
    assert watch.digest_at == {2: 4.5}
