from exchange_node.raft import Role
from raftnet import Network


def test_three_nodes_elect_replicate_and_commit():
    net = Network([1, 2, 3])
    leader = net.elect(1)
    assert [net.cores[i].role for i in (2, 3)] == [Role.FOLLOWER, Role.FOLLOWER]
    _term, index = leader.propose(b"hello")
    net.deliver()
    for i in (1, 2, 3):
        assert net.cores[i].commit_index == index
        assert net.data_applied(i) == [b"hello"]
