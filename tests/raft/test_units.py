"""The small pieces on their own: majority maths, inflight window, the log."""

import pytest
from exchange_node.raft import ConfState, Entry, Snapshot, SnapshotMeta
from exchange_node.raft.log import RaftLog
from exchange_node.raft.progress import Inflights, Progress, ProgressState
from exchange_node.raft.quorum import VoteResult, committed_index, vote_result


def test_quorum_commit_index_is_the_highest_index_on_a_majority():
    assert committed_index([5, 3, 9]) == 5
    assert committed_index([5, 3, 9, 7]) == 5  # four voters need three
    assert committed_index([2, 2, 8, 8, 8]) == 8
    assert committed_index([4]) == 4
    assert committed_index([]) == 0


def test_quorum_vote_result_is_decided_as_soon_as_it_cannot_change():
    voters = (1, 2, 3, 4, 5)
    assert vote_result(voters, {1: True, 2: True}) is VoteResult.PENDING
    assert vote_result(voters, {1: True, 2: True, 3: True}) is VoteResult.WON
    assert vote_result(voters, {1: True, 2: False, 3: False, 4: False}) is VoteResult.LOST
    # Votes from non-voters (learners) never count.
    assert vote_result((1, 2, 3), {1: True, 7: True, 8: True}) is VoteResult.PENDING


def test_inflights_bound_and_release_in_order():
    window = Inflights(3)
    for last in (10, 20, 30):
        window.add(last)
    assert window.full()
    with pytest.raises(AssertionError):
        window.add(40)
    window.free_le(20)
    assert len(window) == 1 and not window.full()


def test_progress_rejections_that_are_stale_are_ignored():
    pr = Progress(next_index=11, max_inflight=4)
    assert not pr.maybe_decrease_to(rejected=7, match_hint=3)  # not the last probe
    assert pr.maybe_decrease_to(rejected=10, match_hint=3)
    assert pr.next_index == 4
    pr.maybe_update(6)
    pr.become_replicate()
    assert pr.state is ProgressState.REPLICATE and pr.next_index == 7
    assert not pr.maybe_decrease_to(rejected=5, match_hint=0)  # already matched


def entries(terms: list[int], start: int = 1) -> list[Entry]:
    return [Entry(t, i) for i, t in enumerate(terms, start)]


def test_log_refuses_to_append_below_the_commit_index():
    log = RaftLog(None, entries([1, 1, 2]), commit_index=2)
    with pytest.raises(AssertionError, match="commit"):
        log.append([Entry(3, 2)])
    log.append([Entry(3, 3)])  # replacing an uncommitted suffix is fine
    assert [(e.index, e.term) for e in log.entries] == [(1, 1), (2, 1), (3, 3)]
    assert log.stable_index == 2  # the replaced entry must be persisted again


def test_log_term_lookups_across_a_compaction():
    log = RaftLog(None, entries([1, 1, 2, 2, 3]), commit_index=5)
    log.applied_to(5)
    log.compact(Snapshot(SnapshotMeta(3, 2, ConfState((1,))), b""))
    assert log.first_index() == 4 and log.last_index() == 5
    assert [log.term(i) for i in range(1, 7)] == [None, None, 2, 2, 3, None]
    with pytest.raises(AssertionError):
        log.slice(2, 5)


def test_log_find_conflict_by_term_skips_whole_terms():
    log = RaftLog(None, entries([1, 1, 1, 4, 4, 5, 5, 6, 6, 6]), commit_index=0)
    assert log.find_conflict_by_term(10, 3) == (3, 1)
    assert log.find_conflict_by_term(10, 5) == (7, 5)
    assert log.find_conflict_by_term(10, 6) == (10, 6)
    assert log.find_conflict_by_term(99, 6) == (10, 6)  # clamped to the log
    assert log.find_conflict_by_term(3, 0) == (0, 0)
