"""Stale, duplicate and malformed messages are dropped without harm."""

from exchange_node.raft import Entry, Message, MessageType, Role
from raftnet import Network


def settled() -> Network:
    net = Network([1, 2, 3])
    leader = net.elect(1)
    leader.propose_many([b"a", b"b"])
    net.deliver()
    return net


def snapshot_of(net: Network) -> list[tuple[int, int, int, int, int]]:
    return [
        (c.term, c.role, c.leader, c.commit_index, c.log.last_index()) for c in net.cores.values()
    ]


def test_garbage_is_ignored_and_the_cluster_keeps_working():
    net = settled()
    before = snapshot_of(net)
    leader, follower = net.cores[1], net.cores[2]
    term = leader.term
    last = leader.log.last_index()
    garbage = [
        (follower, Message(MessageType.APP, 3, 1, term)),  # addressed to someone else
        (follower, Message(MessageType.APP, 2, 0, term)),  # from nobody
        (follower, Message(MessageType.APP, 2, 2, term)),  # from itself
        (follower, Message(99, 2, 1, term)),  # type: ignore[arg-type]  # unknown type
        (follower, Message(MessageType.SNAP, 2, 1, term)),  # SNAP without a snapshot
        # Entries that do not run on from the previous index.
        (
            follower,
            Message(
                MessageType.APP,
                2,
                1,
                term,
                log_term=term,
                index=last,
                entries=[Entry(term, last + 5)],
            ),
        ),
        (
            follower,
            Message(
                MessageType.APP,
                2,
                1,
                term,
                log_term=term,
                index=last,
                entries=[Entry(term, last + 1), Entry(term, last + 3)],
            ),
        ),
        (follower, Message(MessageType.HEARTBEAT, 2, 1, term, commit=10**9)),
        (leader, Message(MessageType.APP_RESP, 1, 2, term, index=10**9)),  # acks the future
        (leader, Message(MessageType.APP_RESP, 1, 9, term, index=1)),  # from a stranger
        (leader, Message(MessageType.HEARTBEAT_RESP, 1, 9, term)),
        (
            leader,
            Message(
                MessageType.APP_RESP,
                1,
                2,
                term,
                index=10**9,
                reject=True,
                reject_hint=10**9,
                hint_term=10**9,
            ),
        ),
        (leader, Message(MessageType.VOTE_RESP, 1, 2, term)),  # a late vote
        (leader, Message(MessageType.APP, 1, 2, term - 1)),  # a stale term
    ]
    for core, m in garbage:
        core.step(m)
    net.deliver()
    after = snapshot_of(net)
    assert after == before
    leader.propose(b"still fine")
    net.deliver()
    assert all(net.data_applied(i)[-1] == b"still fine" for i in (1, 2, 3))


def test_a_message_type_given_as_a_plain_int_is_understood():
    net = settled()
    follower = net.cores[2]
    nonce = net.cores[1]._nonce  # what the real leader's heartbeats carry
    follower.step(
        Message(int(MessageType.HEARTBEAT), 2, 1, follower.term, nonce=nonce)  # type: ignore[arg-type]
    )
    replies = follower.ready().messages
    assert [m.type for m in replies] == [MessageType.HEARTBEAT_RESP]


def test_duplicated_and_reordered_appends_change_nothing():
    net = settled()
    leader = net.cores[1]
    assert leader.role is Role.LEADER
    net.sent.clear()
    leader.propose(b"c")
    net.deliver()
    apps = [m for m in net.sent if m.type is MessageType.APP and m.to == 3]
    follower = net.cores[3]
    before = (follower.log.last_index(), follower.commit_index, net.log_terms(3))
    for m in reversed(apps * 3):
        follower.step(m)
    net.deliver()
    assert (follower.log.last_index(), follower.commit_index, net.log_terms(3)) == before
