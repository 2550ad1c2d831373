"""One test per rule of Figure 2 of the Raft paper (Ongaro and Ousterhout, 2014).

Each test quotes its rule, builds one core in the state the rule talks about, steps
it with hand-written messages and checks the state and the messages it hands out,
in the style of etcd-io/raft's paper tests. The safety properties (figure 3) are
checked over random schedules of a whole cluster at the end.
docs/mutation.md lists the violations planted by hand to see these tests fail.
"""

from __future__ import annotations

import random

import pytest
from exchange_node.raft import Entry, Message, MessageType, Role
from paperkit import (
    ack,
    append,
    core,
    drain,
    fire_election_timeout,
    grant,
    log_terms,
    make_candidate,
    make_leader,
    sent,
    vote_request,
)
from raftnet import Network

APP, APP_RESP = MessageType.APP, MessageType.APP_RESP
VOTE, VOTE_RESP = MessageType.VOTE, MessageType.VOTE_RESP
HEARTBEAT = MessageType.HEARTBEAT


def in_role(role: Role, **kwargs: object):
    c = core(terms=(1, 1), term=2, commit=1, **kwargs)
    if role is Role.CANDIDATE:
        make_candidate(c)
    elif role is Role.LEADER:
        make_leader(c)
    assert c.role is role
    return c


# --------------------------------------------------------------------------- all servers


def test_all_servers_apply_each_entry_once_in_log_order_when_commit_index_passes_last_applied():
    """If commitIndex > lastApplied: increment lastApplied, apply log[lastApplied]."""
    f = core(2, terms=(1, 1, 1, 1), term=1, commit=1)
    append(f, 1, 1, 4, 1, commit=3)
    rd = drain(f)
    assert [e.index for e in rd.committed_entries] == [2, 3]
    assert f.log.applied_index == 3
    append(f, 1, 1, 4, 1, commit=4)
    assert [e.index for e in drain(f).committed_entries] == [4]
    # Nothing is applied twice, nothing beyond the commit index.
    assert drain(f).committed_entries == []


@pytest.mark.parametrize(
    "role", [Role.FOLLOWER, Role.CANDIDATE, Role.LEADER], ids=lambda v: v.name.lower()
)
@pytest.mark.parametrize("kind", [APP, VOTE], ids=lambda v: v.name.lower())
def test_all_servers_a_higher_term_in_a_request_sets_current_term_and_converts_to_follower(
    role, kind
):
    """If RPC request or response contains term T > currentTerm: set currentTerm = T,
    convert to follower."""
    c = in_role(role)
    term = c.term + 1
    if kind is APP:
        append(c, 2, term, 0, 0)
    else:
        vote_request(c, 2, term, 100, 100)
    assert (c.role, c.term) == (Role.FOLLOWER, term)
    assert c.leader == (2 if kind is APP else 0)
    # A new term clears the vote of the old one (then the request may take it).
    assert c.vote in (0, 2)


@pytest.mark.parametrize("role", [Role.CANDIDATE, Role.LEADER], ids=lambda v: v.name.lower())
def test_all_servers_a_higher_term_in_a_response_converts_to_follower(role):
    """... request or response ...: an answer from a later term ends a campaign or a reign."""
    c = in_role(role)
    kind = VOTE_RESP if role is Role.CANDIDATE else APP_RESP
    c.step(Message(kind, c.id, 2, c.term + 3, reject=True, nonce=c._nonce))
    assert c.role is Role.FOLLOWER
    assert c.term == 6


def test_all_servers_a_message_from_an_older_term_changes_nothing():
    """(Receiver rule 1 of both RPCs, seen from every role): stale terms are refused."""
    for role in (Role.FOLLOWER, Role.CANDIDATE, Role.LEADER):
        c = in_role(role)
        before = (c.term, c.role, c.vote, c.leader, log_terms(c), c.log.commit_index)
        append(c, 2, 1, 2, 1, entries=[(3, 1)], commit=3)
        vote_request(c, 2, 1, 100, 100)
        assert (c.term, c.role, c.vote, c.leader, log_terms(c), c.log.commit_index) == before
        assert not [m for m in sent(c) if not m.reject and m.type in (APP_RESP, VOTE_RESP)]


def test_persistent_state_is_in_the_same_ready_as_the_response_that_depends_on_it():
    """Persistent state on all servers (updated on stable storage before responding to
    RPCs): the term, the vote and the entries an answer relies on are handed out to be
    persisted in the Ready that carries the answer (or an earlier one)."""
    f = core(2, terms=(1,), term=1)
    vote_request(f, 3, 2, 1, 1)
    rd = drain(f)
    assert rd.hard_state is not None and (rd.hard_state.term, rd.hard_state.vote) == (2, 3)
    assert [(m.type, m.reject) for m in rd.messages] == [(VOTE_RESP, False)]
    append(f, 3, 2, 1, 1, entries=[(2, 2), (3, 2)])
    rd = drain(f)
    assert [e.index for e in rd.entries] == [2, 3]
    assert [(m.type, m.index) for m in rd.messages] == [(APP_RESP, 3)]


# --------------------------------------------------------------------------- followers


def test_followers_respond_to_rpcs_from_candidates_and_leaders():
    """Followers: respond to RPCs from candidates and leaders."""
    f = core(2, terms=(1,), term=1)
    vote_request(f, 3, 2, 1, 1)
    append(f, 3, 2, 1, 1)
    assert [(m.type, m.to, m.reject) for m in sent(f)] == [
        (VOTE_RESP, 3, False),
        (APP_RESP, 3, False),
    ]


def test_followers_election_timeout_without_leader_contact_converts_to_candidate():
    """Followers: if election timeout elapses without receiving AppendEntries from the
    current leader or granting vote to candidate: convert to candidate."""
    f = core(2, terms=(1,), term=1)
    for _ in range(f.randomized_election_timeout - 1):
        f.tick()
    assert f.role is Role.FOLLOWER
    f.tick()
    assert f.role is Role.CANDIDATE


@pytest.mark.parametrize("contact", ["append", "heartbeat", "granted vote"])
def test_followers_contact_from_the_leader_or_a_granted_vote_restarts_the_election_timer(
    contact,
):
    """... without receiving AppendEntries from current leader or granting vote."""
    f = core(2, terms=(1,), term=1)
    timeout = f.randomized_election_timeout
    for _ in range(timeout - 1):
        f.tick()
    if contact == "append":
        append(f, 1, 1, 1, 1)
    elif contact == "heartbeat":
        f.step(Message(HEARTBEAT, 2, 1, 1, nonce=7))
    else:
        vote_request(f, 3, 1, 1, 1)
        assert f.vote == 3
    for _ in range(timeout - 1):
        f.tick()
    assert f.role is Role.FOLLOWER


def test_followers_a_refused_vote_does_not_restart_the_election_timer():
    """Only granting a vote counts: a candidate with a stale log cannot hold others back."""
    f = core(2, terms=(1, 2), term=2)
    timeout = f.randomized_election_timeout
    for _ in range(timeout - 1):
        f.tick()
    vote_request(f, 3, 2, 1, 1)  # older log: refused
    assert f.vote == 0
    f.tick()
    assert f.role is Role.CANDIDATE


def test_followers_election_timeouts_are_randomized_between_one_and_two_timeouts():
    """Election timeouts are chosen randomly from a fixed interval (section 5.2)."""
    seen = set()
    for seed in range(60):
        f = core(2, terms=(1,), term=1, seed=seed, election_tick=10)
        seen.add(f.randomized_election_timeout)
    assert seen <= set(range(10, 20)) and len(seen) > 3


# --------------------------------------------------------------------------- candidates


def test_candidates_on_conversion_increment_term_vote_for_self_reset_timer_send_request_vote():
    """Candidates: on conversion to candidate, start election: increment currentTerm,
    vote for self, reset election timer, send RequestVote RPCs to all other servers."""
    c = core(1, voters=(1, 2, 3, 4, 5), terms=(1, 2), term=2)
    fire_election_timeout(c)
    assert (c.role, c.term, c.vote, c.election_elapsed) == (Role.CANDIDATE, 3, 1, 0)
    votes = sent(c, VOTE)
    assert sorted(m.to for m in votes) == [2, 3, 4, 5]
    # The request names the candidate's last log entry (the election restriction needs it).
    assert {(m.term, m.index, m.log_term) for m in votes} == {(3, 2, 2)}


@pytest.mark.parametrize(
    ("size", "answers", "role"),
    [
        (1, {}, Role.LEADER),
        (3, {2: True}, Role.LEADER),
        (3, {2: True, 3: True}, Role.LEADER),
        (3, {2: False}, Role.CANDIDATE),
        (5, {2: True}, Role.CANDIDATE),
        (5, {2: True, 3: True}, Role.LEADER),
        (5, {2: False, 3: False}, Role.CANDIDATE),
        (5, {2: False, 3: False, 4: False}, Role.FOLLOWER),
        (5, {2: True, 3: False, 4: False}, Role.CANDIDATE),
    ],
)
def test_candidates_votes_from_a_majority_make_a_leader(size, answers, role):
    """Candidates: if votes received from majority of servers: become leader.
    (A majority of refusals ends the campaign early: it can no longer win.)"""
    c = core(1, voters=tuple(range(1, size + 1)), terms=(1,), term=1)
    fire_election_timeout(c)
    for voter, granted in answers.items():
        grant(c, voter, reject=not granted)
    assert c.role is role


def test_candidates_a_duplicate_vote_counts_once():
    c = core(1, voters=(1, 2, 3, 4, 5), terms=(1,), term=1)
    fire_election_timeout(c)
    grant(c, 2)
    grant(c, 2)
    assert c.role is Role.CANDIDATE


def test_candidates_append_entries_from_the_new_leader_converts_to_follower():
    """Candidates: if AppendEntries RPC received from new leader: convert to follower."""
    c = in_role(Role.CANDIDATE)
    append(c, 3, c.term, 2, 1)
    assert (c.role, c.leader, c.term) == (Role.FOLLOWER, 3, 3)


def test_candidates_an_election_timeout_starts_a_new_election():
    """Candidates: if election timeout elapses: start new election."""
    c = in_role(Role.CANDIDATE)
    term = c.term
    fire_election_timeout(c)
    assert (c.role, c.term) == (Role.CANDIDATE, term + 1)
    assert sorted(m.to for m in sent(c, VOTE) if m.term == term + 1) == [2, 3]


# --------------------------------------------------------------------------- leaders


def test_leaders_upon_election_send_append_entries_to_each_server():
    """Leaders: upon election: send initial empty AppendEntries RPCs (heartbeat) to each
    server. (Here the first AppendEntries carries the leader's no-op entry, section 8.)"""
    c = core(1, terms=(1, 1), term=1, commit=1)
    make_candidate(c)
    drain(c)
    grant(c, 2)
    msgs = sent(c, APP)
    assert sorted(m.to for m in msgs) == [2, 3]
    assert all(m.term == 2 and m.index == 2 and m.log_term == 1 for m in msgs)
    assert all([(e.index, e.term, e.data) for e in m.entries] == [(3, 2, b"")] for m in msgs)


def test_leaders_repeat_heartbeats_during_idle_periods():
    """Leaders: ... repeat during idle periods to prevent election timeouts."""
    c = make_leader(core(1, terms=(1,), term=1, heartbeat_tick=2))
    c.tick()
    assert sent(c, HEARTBEAT) == []
    c.tick()
    beats = sent(c, HEARTBEAT)
    assert sorted(m.to for m in beats) == [2, 3]
    assert all(m.term == c.term for m in beats)


def test_leaders_append_a_client_command_to_the_local_log_and_send_it():
    """Leaders: if command received from client: append entry to local log."""
    c = make_leader(core(1, terms=(1,), term=1))
    ack(c, 2, 2)
    ack(c, 3, 2)
    drain(c)
    term, index = c.propose(b"buy")
    assert (term, index) == (2, 3)
    assert c.log.entries[-1] == Entry(2, 3, b"buy")
    rd = drain(c)
    assert [e.index for e in rd.entries] == [3]
    apps = [m for m in rd.messages if m.type is APP]
    assert sorted(m.to for m in apps) == [2, 3]
    assert all([e.data for e in m.entries] == [b"buy"] and m.index == 2 for m in apps)


def test_leaders_respond_to_the_client_only_after_the_entry_is_committed_and_applied():
    """Leaders: ... respond after entry applied to state machine: an entry reaches the
    state machine only once a majority stores it."""
    c = make_leader(core(1, voters=(1, 2, 3, 4, 5), terms=(1,), term=1, commit=1))
    _, index = c.propose(b"buy")
    drain(c)
    ack(c, 2, index)
    assert drain(c).committed_entries == []
    ack(c, 3, index)
    assert [e.data for e in drain(c).committed_entries] == [b"", b"buy"]


def test_leaders_send_entries_from_next_index_when_last_log_index_is_at_or_above_it():
    """Leaders: if last log index >= nextIndex for a follower: send AppendEntries RPC
    with log entries starting at nextIndex."""
    c = make_leader(core(1, terms=(1, 1, 1), term=1, commit=1))
    ack(c, 2, 4)
    drain(c)
    c.propose_many([b"a", b"b"])
    apps = {m.to: m for m in sent(c, APP)}
    # 2 is known to hold 4: it gets 5..6. 3 never answered: one probe at a time.
    assert [e.index for e in apps[2].entries] == [5, 6]
    assert (apps[2].index, apps[2].log_term) == (4, 2)
    assert 3 not in apps


def test_leaders_a_successful_append_updates_next_index_and_match_index():
    """Leaders: if successful: update nextIndex and matchIndex for follower."""
    c = make_leader(core(1, terms=(1, 1), term=1))
    ack(c, 2, 3)
    pr = c.progress[2]
    assert (pr.match_index, pr.next_index) == (3, 4)
    ack(c, 2, 2)  # a late, older answer changes nothing
    assert (pr.match_index, pr.next_index) == (3, 4)


def test_leaders_a_rejected_append_decrements_next_index_and_retries():
    """Leaders: if AppendEntries fails because of log inconsistency: decrement nextIndex
    and retry."""
    c = make_leader(core(1, terms=(1, 1, 1, 1), term=1, commit=1))
    # The probe after election went out with prev index 4 (the no-op is 5).
    c.step(Message(APP_RESP, 1, 2, c.term, index=4, reject=True, reject_hint=2, nonce=c._nonce))
    retry = [m for m in sent(c, APP) if m.to == 2]
    assert len(retry) == 1
    assert retry[0].index < 4
    assert retry[0].index == 2 and [e.index for e in retry[0].entries] == [3, 4, 5]


@pytest.mark.parametrize(
    ("matches", "commit"),
    [
        ((6, 6, 6, 6, 6), 6),
        ((6, 5, 4, 3, 2), 4),
        ((6, 2, 2, 6, 2), 2),  # index 6 on two of five is not a majority
        ((6, 6, 4, 2, 2), 4),
        ((6, 3, 3, 6, 6), 6),
    ],
)
def test_leaders_commit_the_highest_index_stored_on_a_majority_of_match_indexes(matches, commit):
    """Leaders: if there exists an N > commitIndex such that a majority of
    matchIndex[i] >= N, and log[N].term == currentTerm: set commitIndex = N."""
    c = make_leader(core(1, voters=(1, 2, 3, 4, 5), terms=(1,), term=1))
    c.propose_many([b"x"] * 4)  # entries 2 (no-op) .. 6, all of the current term
    for follower, match in zip((2, 3, 4, 5), matches[1:], strict=True):
        ack(c, follower, match)
    assert c.log.commit_index == commit


def test_leaders_only_an_entry_of_the_current_term_commits_by_counting_replicas():
    """Leaders: ... and log[N].term == currentTerm (figure 8): an old term's entry on a
    majority is not committed until an entry of the leader's own term is."""
    c = core(1, terms=(1, 2), term=3, commit=1)
    make_leader(c)  # term 4; its no-op is index 3
    ack(c, 2, 2)
    assert c.log.commit_index == 1
    ack(c, 2, 3)
    assert c.log.commit_index == 3


# --------------------------------------------------------------------------- RequestVote receiver


def test_request_vote_receiver_1_reply_false_if_term_is_older_than_current_term():
    """RequestVote receiver 1: reply false if term < currentTerm."""
    f = core(2, terms=(1,), term=3)
    vote_request(f, 3, 2, 5, 2)
    assert f.vote == 0
    assert all(m.reject for m in sent(f, VOTE_RESP))


@pytest.mark.parametrize(
    ("vote", "candidate", "granted"),
    [(0, 3, True), (3, 3, True), (1, 3, False), (2, 3, False)],
)
def test_request_vote_receiver_2_grant_only_if_voted_for_is_null_or_the_candidate(
    vote, candidate, granted
):
    """RequestVote receiver 2: if votedFor is null or candidateId, and ... grant vote."""
    f = core(2, terms=(1,), term=2, vote=vote)
    vote_request(f, candidate, 2, 1, 1)
    answers = sent(f, VOTE_RESP)
    assert [(m.to, not m.reject) for m in answers] == [(candidate, granted)]
    assert f.vote == (candidate if granted else vote)


@pytest.mark.parametrize(
    ("last_index", "last_term", "granted"),
    [
        (3, 2, True),  # same last term, same length
        (4, 2, True),  # same last term, longer
        (2, 2, False),  # same last term, shorter
        (1, 3, True),  # later last term wins whatever the length
        (5, 1, False),  # earlier last term loses whatever the length
    ],
)
def test_request_vote_receiver_2_grant_only_if_the_candidates_log_is_at_least_as_up_to_date(
    last_index, last_term, granted
):
    """RequestVote receiver 2: ... and candidate's log is at least as up-to-date as
    receiver's log, grant vote (section 5.4.1: compare last terms, then lengths)."""
    f = core(2, terms=(1, 2, 2), term=3)
    vote_request(f, 3, 4, last_index, last_term)
    assert [not m.reject for m in sent(f, VOTE_RESP)] == [granted]
    assert f.vote == (3 if granted else 0)


def test_request_vote_receiver_a_vote_is_cast_at_most_once_per_term():
    """Election safety's half of the bargain: one vote per term, first come first served."""
    f = core(2, terms=(1,), term=1)
    vote_request(f, 1, 2, 1, 1)
    vote_request(f, 3, 2, 1, 1)
    assert [(m.to, not m.reject) for m in sent(f, VOTE_RESP)] == [(1, True), (3, False)]


# --------------------------------------------------------------------------- AppendEntries receiver


def test_append_entries_receiver_1_reply_false_if_term_is_older_than_current_term():
    """AppendEntries receiver 1: reply false if term < currentTerm; the stale leader
    learns the newer term from the answer (pre-vote or check-quorum on)."""
    f = core(2, terms=(1, 1), term=3, pre_vote=True)
    append(f, 1, 2, 2, 1, entries=[(3, 2)], commit=3)
    assert log_terms(f) == [1, 1] and f.log.commit_index == 0
    answers = sent(f)
    assert [(m.type, m.term) for m in answers] == [(APP_RESP, 3)]
    assert f.leader == 0


@pytest.mark.parametrize(
    ("prev_index", "prev_term"),
    [(3, 2), (5, 3), (2, 1)],
)
def test_append_entries_receiver_2_reply_false_if_no_entry_at_prev_log_index_matches_its_term(
    prev_index, prev_term
):
    """AppendEntries receiver 2: reply false if log doesn't contain an entry at
    prevLogIndex whose term matches prevLogTerm."""
    f = core(2, terms=(1, 2, 3), term=3)
    append(f, 1, 3, prev_index, prev_term, entries=[(prev_index + 1, 3)], commit=3)
    answers = sent(f, APP_RESP)
    assert [(m.reject, m.index) for m in answers] == [(True, prev_index)]
    assert log_terms(f) == [1, 2, 3] and f.log.commit_index == 0


def test_append_entries_receiver_2_a_matching_prev_entry_is_acknowledged():
    f = core(2, terms=(1, 2, 3), term=3)
    append(f, 1, 3, 3, 3, entries=[(4, 3)])
    assert [(m.reject, m.index) for m in sent(f, APP_RESP)] == [(False, 4)]


def test_append_entries_receiver_3_a_conflicting_entry_and_all_that_follow_it_are_deleted():
    """AppendEntries receiver 3: if an existing entry conflicts with a new one (same
    index but different terms), delete the existing entry and all that follow it."""
    f = core(2, terms=(1, 1, 2, 2, 2), term=2, commit=2)
    append(f, 1, 3, 2, 1, entries=[(3, 3)])
    assert log_terms(f) == [1, 1, 3]
    rd = drain(f)
    assert [(e.index, e.term) for e in rd.entries] == [(3, 3)]


def test_append_entries_receiver_4_new_entries_are_appended_and_known_ones_kept():
    """AppendEntries receiver 4: append any new entries not already in the log. A
    retransmitted prefix must not cut off what follows it."""
    f = core(2, terms=(1, 1, 1), term=1)
    append(f, 1, 1, 3, 1, entries=[(4, 1), (5, 1)])
    assert log_terms(f) == [1, 1, 1, 1, 1]
    append(f, 1, 1, 1, 1, entries=[(2, 1), (3, 1)])  # old, delayed copy
    assert log_terms(f) == [1, 1, 1, 1, 1]
    assert [(m.reject, m.index) for m in sent(f, APP_RESP)] == [(False, 5), (False, 3)]


@pytest.mark.parametrize(
    ("leader_commit", "entries", "commit"),
    [
        (3, [], 2),  # last new entry is 2 (prev index): never beyond it
        (1, [], 1),
        (5, [(3, 2)], 3),  # min(leaderCommit, index of last new entry)
        (2, [(3, 2)], 2),
    ],
)
def test_append_entries_receiver_5_commit_index_is_min_of_leader_commit_and_last_new_entry(
    leader_commit, entries, commit
):
    """AppendEntries receiver 5: if leaderCommit > commitIndex, set commitIndex =
    min(leaderCommit, index of last new entry). The follower's entries past the last
    new one (3 and 4 here, from an old term) may still be replaced: not committed."""
    f = core(2, terms=(1, 1, 1, 1), term=1)
    append(f, 1, 2, 2, 1, entries=entries, commit=leader_commit)
    assert f.log.commit_index == commit


def test_append_entries_receiver_5_commit_index_never_goes_back():
    f = core(2, terms=(1, 1, 1), term=1, commit=3)
    append(f, 1, 1, 3, 1, commit=1)
    assert f.log.commit_index == 3


# --------------------------------------------------------------------------- safety (figure 3)


def run_schedule(seed: int, steps: int = 300):
    """A 5-member cluster under random loss, partitions, crashes and proposals.

    Yields the network after every step; the history it records is what the safety
    tests check.
    """
    rng = random.Random(seed)
    net = Network([1, 2, 3, 4, 5], election_tick=6, seed=seed)
    net.drop = lambda m: rng.random() < 0.15
    for step in range(steps):
        action = rng.random()
        if action < 0.05:
            net.isolate(rng.choice(net.ids))
        elif action < 0.10:
            net.heal()
            net.drop = lambda m: rng.random() < 0.15
        elif action < 0.13:
            net.crash_and_restart(rng.choice(net.ids))
        elif action < 0.45:
            for leader in net.leaders():
                net.cores[leader].propose(f"s{seed}-{step}".encode())
        net.tick_all()
        yield net


@pytest.fixture(scope="module")
def histories():
    """For several seeds: every step's (term -> leaders, logs, applied) snapshot."""
    out = []
    for seed in range(4):
        steps = []
        for net in run_schedule(seed):
            steps.append(
                {
                    "leaders": [(net.cores[i].term, i) for i in net.leaders()],
                    "logs": {
                        i: [(e.index, e.term, e.data) for e in c.log.entries]
                        for i, c in net.cores.items()
                    },
                    "offsets": {i: c.log.offset for i, c in net.cores.items()},
                    "commits": {i: c.log.commit_index for i, c in net.cores.items()},
                    "applied": {
                        i: [(e.index, e.term, e.data) for e in net.applied[i]] for i in net.cores
                    },
                }
            )
        out.append(steps)
    return out


def test_election_safety_at_most_one_leader_is_elected_in_a_given_term(histories):
    """Election Safety: at most one leader can be elected in a given term."""
    elections = 0
    for steps in histories:
        leader_of: dict[int, int] = {}
        for state in steps:
            for term, node in state["leaders"]:
                assert leader_of.setdefault(term, node) == node, f"two leaders in term {term}"
        elections += len(leader_of)
    assert elections >= 10, "the schedules should see many elections"


def test_leader_append_only_a_leader_never_overwrites_or_deletes_entries_in_its_log(histories):
    """Leader Append-Only: a leader never overwrites or deletes entries in its log; it
    only appends new entries."""
    for steps in histories:
        reign: dict[int, tuple[int, list]] = {}
        for state in steps:
            current = dict((node, term) for term, node in state["leaders"])
            for node, term in current.items():
                log = state["logs"][node]
                if node in reign and reign[node][0] == term:
                    before = reign[node][1]
                    kept = [e for e in before if e[0] > state["offsets"][node]]
                    assert log[: len(kept)] == kept, f"leader {node} rewrote its log in term {term}"
                reign[node] = (term, log)
            for node in list(reign):
                if node not in current:
                    del reign[node]


def test_log_matching_entries_with_the_same_index_and_term_have_identical_prefixes(histories):
    """Log Matching: if two logs contain an entry with the same index and term, then the
    logs are identical in all entries up through the given index."""
    for steps in histories:
        for state in steps[::3]:
            logs = list(state["logs"].values())
            for n, a in enumerate(logs):
                for b in logs[n + 1 :]:
                    by_index = {e[0]: e for e in b}
                    # The highest index where both logs hold an entry of the same term ...
                    same = [e[0] for e in a if by_index.get(e[0], (0, -1))[1] == e[1]]
                    if same:
                        top = max(same)
                        # ... and every entry up to it that both still hold is identical.
                        assert [e for e in a if e[0] <= top and e[0] in by_index] == [
                            by_index[e[0]] for e in a if e[0] <= top and e[0] in by_index
                        ]


def test_leader_completeness_a_committed_entry_is_in_the_log_of_every_later_leader(histories):
    """Leader Completeness: if a log entry is committed in a given term, that entry will
    be present in the logs of the leaders for all higher-numbered terms."""
    for steps in histories:
        committed: dict[int, tuple] = {}
        for state in steps:
            for node, commit in state["commits"].items():
                for e in state["logs"][node]:
                    if e[0] <= commit:
                        committed.setdefault(e[0], e)
            for term, node in state["leaders"]:
                log = {e[0]: e for e in state["logs"][node]}
                for index, entry in committed.items():
                    if index in log and entry[1] < term:
                        assert log[index] == entry, f"leader {node} of {term} lost {entry}"
                    if index > state["offsets"][node] and entry[1] < term:
                        assert index in log, f"leader {node} of {term} lacks {entry}"


def test_state_machine_safety_no_two_servers_apply_different_entries_at_one_index(histories):
    """State Machine Safety: if a server has applied a log entry at a given index, no
    other server will ever apply a different log entry for the same index."""
    for steps in histories:
        first: dict[int, tuple] = {}
        for state in steps:
            for entries in state["applied"].values():
                for e in entries:
                    if e[0]:
                        assert first.setdefault(e[0], e) == e, f"two entries applied at {e[0]}"
        assert len(first) > 20, "the schedule should commit something"
