"""Majority maths for one (non-joint) configuration of voters.

Membership changes one server at a time, so a single majority is always
enough: any two majorities of consecutive configurations overlap.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import IntEnum


class VoteResult(IntEnum):
    PENDING = 0
    WON = 1
    LOST = 2


def majority(voter_count: int) -> int:
    return voter_count // 2 + 1


def committed_index(match_indexes: list[int]) -> int:
    """The largest index stored on a majority, given every voter's match index."""
    if not match_indexes:
        return 0
    match_indexes.sort()
    # Ascending order: the element at n - majority is reached by exactly a majority.
    n = len(match_indexes)
    return match_indexes[n - (n // 2 + 1)]


def vote_result(voters: Iterable[int], votes: Mapping[int, bool]) -> VoteResult:
    voter_ids = tuple(voters)
    need = majority(len(voter_ids))
    granted = rejected = 0
    for v in voter_ids:
        answer = votes.get(v)
        if answer is True:
            granted += 1
        elif answer is False:
            rejected += 1
    if granted >= need:
        return VoteResult.WON
    if len(voter_ids) - rejected < need:
        return VoteResult.LOST
    return VoteResult.PENDING
