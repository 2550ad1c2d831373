"""Protocol-aware recovery in the core (docs/recovery.md; PAR, Alagappan et al., FAST 2018).

A node whose storage found a lost acknowledged tail or corruption starts with
``start_recovering(promised_index, promised_term)``: it grants no vote or
pre-vote and does not campaign until a leader of a term >= the promised term has
brought its log back to the promised index.
"""

from __future__ import annotations

import pytest
from exchange_node.raft import HardState, Message, MessageType, Role, Snapshot
from raftnet import Network

ORDERS = [b"order-%d" % i for i in range(20)]


def _lose_tail(net: Network, node: int, keep_through: int) -> tuple[int, int]:
    """Cut ``node``'s disk back to ``keep_through`` as a bad disk would, hard state
    included (it lived in the lost tail). Returns what it had promised: (index, term)."""
    disk = net.disks[node]
    promised = (disk.entries[-1].index, disk.hard_state.term)
    disk.entries = [e for e in disk.entries if e.index <= keep_through]
    hs = disk.hard_state
    disk.hard_state = HardState(hs.term, hs.vote, min(hs.commit, keep_through))
    return promised


def _issue_scenario(recover: bool) -> tuple[Network, int]:
    """Issue 14: a follower (3) frozen, 20 orders acknowledged by the leader (1) and the
    other follower (2); 2 loses that tail, 1 dies, 2 restarts next to 3."""
    net = Network([1, 2, 3])
    leader = net.elect(1)
    net.isolate(3)
    before = leader.log.last_index()
    leader.propose_many(ORDERS)
    net.deliver()
    assert leader.commit_index == before + len(ORDERS)
    promised = _lose_tail(net, 2, keep_through=before)
    net.heal()
    net.isolate(1)
    restarted = net.crash_and_restart(2)
    if recover:
        restarted.start_recovering(*promised)
    return net, before


def test_a_node_that_lost_acknowledged_entries_helps_elect_no_leader_without_them():
    net, _ = _issue_scenario(recover=True)
    for _ in range(5):
        net.campaign(3)
        net.tick(2, 50)  # its own election timer fires, and nothing happens
    assert net.cores[2].role is Role.FOLLOWER and net.cores[2].recovering
    assert net.cores[3].role is not Role.LEADER
    assert net.cores[2].status().recovering > 0


def test_planted_fault_without_recovery_the_acknowledged_orders_are_lost():
    """The bug of the issue, kept as a check on the test above: a node that treats a
    lost tail as torn votes for a leader that never had the orders."""
    net, _ = _issue_scenario(recover=False)
    net.elect(3, attempts=5)
    assert not set(ORDERS) & {e.data for e in net.cores[3].log.entries}


def test_acknowledged_orders_survive_and_the_node_rejoins_once_caught_up():
    net, _ = _issue_scenario(recover=True)
    for _ in range(3):
        net.campaign(3)
    net.heal()
    leader = net.elect(1, attempts=5)
    for _ in range(2):  # heartbeats find that 2's log went backwards
        net.tick(1, leader.config.heartbeat_tick)
        net.deliver()
    for node in (1, 2, 3):
        assert net.data_applied(node)[-len(ORDERS) :] == ORDERS
    assert not net.cores[2].recovering
    # Counted in elections again: without 1, a leader needs its vote or its campaign.
    net.isolate(1)
    for _ in range(200):
        net.tick(2)
        net.tick(3)
        net.deliver()
        if {2, 3} & set(net.leaders()):
            break
    assert {2, 3} & set(net.leaders())


def test_a_recovering_node_votes_only_for_a_log_as_good_as_the_one_it_promised():
    net = Network([1, 2, 3])
    net.elect(1)
    net.deliver()
    core = net.crash_and_restart(2)
    promised, term = core.log.last_index() + 5, core.term
    core.start_recovering(promised, term, promised_last_term=term)
    # Better than what it holds now, short of what it promised: refused.
    for kind in (MessageType.PRE_VOTE, MessageType.VOTE):
        core.step(Message(kind, 2, 3, core.term + 1, log_term=term, index=promised - 1, nonce=7))
    answers = core.ready().messages
    assert [(m.type, m.reject) for m in answers] == [
        (MessageType.PRE_VOTE_RESP, True),
        (MessageType.VOTE_RESP, True),
    ]
    assert core.vote == 0
    # At least the promised log: it holds everything the node acknowledged.
    core.step(
        Message(MessageType.VOTE, 2, 3, core.term + 1, log_term=term, index=promised, nonce=8)
    )
    assert [(m.type, m.reject) for m in core.ready().messages] == [(MessageType.VOTE_RESP, False)]
    assert core.vote == 3 and core.recovering


def test_recovery_needs_the_promised_index_from_a_leader_of_the_promised_term():
    net = Network([1, 2, 3])
    leader = net.elect(1)
    net.deliver()
    core = net.crash_and_restart(2)
    promised = leader.log.last_index() + 3
    core.start_recovering(promised, leader.term)
    net.tick(1, leader.config.heartbeat_tick)
    net.deliver()
    assert core.recovering  # in step with the leader, but below its promise
    leader.propose_many([b"a", b"b"])
    net.deliver()
    assert core.recovering and core.log.last_index() == promised - 1
    leader.propose(b"c")
    net.deliver()
    assert not core.recovering


def test_a_leader_of_an_older_term_cannot_end_recovery():
    net = Network([1, 2, 3])
    leader = net.elect(1)
    net.deliver()
    core = net.crash_and_restart(2)
    core.start_recovering(leader.log.last_index(), leader.term + 1)
    leader.propose(b"a")
    net.deliver()
    assert core.recovering


def test_a_snapshot_from_the_leader_ends_recovery():
    net = Network([1, 2, 3])
    leader = net.elect(1)
    leader.propose_many([b"a", b"b", b"c"])
    net.deliver()
    net.take_snapshot(1)
    net.disks[3].entries = []
    net.disks[3].hard_state = HardState(net.disks[3].hard_state.term, 0, 0)
    core = net.crash_and_restart(3)
    core.start_recovering(leader.log.last_index(), leader.term)
    for _ in range(2):
        net.tick(1, leader.config.heartbeat_tick)
        net.deliver()
    assert isinstance(net.disks[3].snapshot, Snapshot)
    assert not core.recovering


def test_a_recovering_node_ignores_a_transfer_and_never_campaigns():
    net = Network([1, 2, 3])
    leader = net.elect(1)
    net.deliver()
    core = net.crash_and_restart(2)
    core.start_recovering(leader.log.last_index() + 10, leader.term)
    net.tick(1, leader.config.heartbeat_tick)
    leader.transfer_leadership(2)
    net.deliver()
    assert net.leaders() == [1] and core.role is Role.FOLLOWER


def test_start_recovering_wants_an_index():
    net = Network([1])
    with pytest.raises(ValueError):
        net.cores[1].start_recovering(0)


def test_recovering_shows_in_status_and_not_after():
    net = Network([1, 2, 3])
    net.elect(1)
    net.deliver()
    core = net.crash_and_restart(2)
    assert core.status().recovering == 0
    core.start_recovering(2, 1)
    assert core.status().recovering == 2
