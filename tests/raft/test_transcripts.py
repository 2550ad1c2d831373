"""Scripted interactions, asserted message by message (etcd-style transcripts)."""

from exchange_node.raft import Message
from exchange_node.raft import MessageType as T
from raftnet import Network


def line(m: Message) -> str:
    text = f"{m.frm}->{m.to} {m.type.name} term={m.term}"
    if m.type is T.APP:
        entries = [e.index for e in m.entries]
        text += f" prev=({m.index},{m.log_term}) entries={entries} commit={m.commit}"
    elif m.type is T.APP_RESP:
        text += f" index={m.index}"
        if m.reject:
            text += f" reject hint=({m.reject_hint},{m.hint_term})"
    elif m.type in (T.VOTE, T.PRE_VOTE):
        text += f" last=({m.index},{m.log_term})"
    elif m.type in (T.VOTE_RESP, T.PRE_VOTE_RESP):
        text += " reject" if m.reject else " granted"
    elif m.type is T.HEARTBEAT:
        text += f" commit={m.commit}"
    return text


def test_transcript_first_election_and_first_proposal():
    net = Network([1, 2, 3])
    net.campaign(1)
    assert [line(m) for m in net.sent] == [
        # Pre-vote asks for term 2 without anyone moving to it.
        "1->2 PRE_VOTE term=2 last=(3,1)",
        "1->3 PRE_VOTE term=2 last=(3,1)",
        "2->1 PRE_VOTE_RESP term=2 granted",
        "3->1 PRE_VOTE_RESP term=2 granted",
        "1->2 VOTE term=2 last=(3,1)",
        "1->3 VOTE term=2 last=(3,1)",
        "2->1 VOTE_RESP term=2 granted",
        "3->1 VOTE_RESP term=2 granted",
        # The new leader's empty entry, probing after the bootstrap entries 1..3.
        "1->2 APP term=2 prev=(3,1) entries=[4] commit=3",
        "1->3 APP term=2 prev=(3,1) entries=[4] commit=3",
        "2->1 APP_RESP term=2 index=4",
        "3->1 APP_RESP term=2 index=4",
        # 1 and 2 make a majority: 4 commits and the commit index goes out.
        "1->2 APP term=2 prev=(4,2) entries=[] commit=4",
        "1->3 APP term=2 prev=(4,2) entries=[] commit=4",
        "2->1 APP_RESP term=2 index=4",
        "3->1 APP_RESP term=2 index=4",
    ]
    net.sent.clear()
    net.cores[1].propose_many([b"x", b"y"])
    net.deliver()
    assert [line(m) for m in net.sent] == [
        "1->2 APP term=2 prev=(4,2) entries=[5, 6] commit=4",
        "1->3 APP term=2 prev=(4,2) entries=[5, 6] commit=4",
        "2->1 APP_RESP term=2 index=6",
        "3->1 APP_RESP term=2 index=6",
        "1->2 APP term=2 prev=(6,2) entries=[] commit=6",
        "1->3 APP term=2 prev=(6,2) entries=[] commit=6",
        "2->1 APP_RESP term=2 index=6",
        "3->1 APP_RESP term=2 index=6",
    ]


def test_transcript_a_follower_with_a_stale_tail_is_repaired():
    net = Network([1, 2, 3], pre_vote=False, check_quorum=False)
    old = net.elect(1)
    net.isolate(1)
    old.propose_many([b"lost-1", b"lost-2"])  # term 2, never leaves node 1
    net.process(1)
    net.heal()
    net.isolate(1)
    net.elect(2)  # term 3
    net.cores[2].propose(b"kept")
    net.deliver()
    net.heal()
    net.sent.clear()
    net.tick(2)  # heartbeat; 1 learns of term 3 and answers
    net.deliver()
    repair = [line(m) for m in net.sent if 1 in (m.frm, m.to)]
    assert repair == [
        "2->1 HEARTBEAT term=3 commit=0",
        "1->2 HEARTBEAT_RESP term=3",
        # The probe paused while 1 was away resumes where 2's term began: 1 holds
        # (4,2), so it takes 5 and 6 and drops its own conflicting 5 and 6 (term 2).
        "2->1 APP term=3 prev=(4,2) entries=[5, 6] commit=6",
        "1->2 APP_RESP term=3 index=6",
        # Replicating now; the commit index follows in an empty APP.
        "2->1 APP term=3 prev=(6,3) entries=[] commit=6",
        "1->2 APP_RESP term=3 index=6",
    ]
    assert net.log_terms(1) == net.log_terms(2)
    assert b"lost-1" not in net.data_applied(1)
