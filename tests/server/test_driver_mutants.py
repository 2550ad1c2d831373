"""The driver's unit tests can fail: each planted driver bug (sim/mutation.py) breaks
the unit test of the rule it breaks. (The simulator catches each too:
tests/sim/test_planted_bugs.py.)"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import pytest
from exchange_node.sim.mutation import DRIVER, PLANTED_BUGS, load_mutant

from tests.server import test_driver

DRIVER_BUGS = sorted(name for name, bug in PLANTED_BUGS.items() if bug.module == DRIVER)

# bug -> the unit test named after the rule it breaks
EXPECTED = {
    "follower-acks-before-fsync": "test_a_follower_acknowledges_only_after_its_write_is_durable",
    "vote-before-fsync": "test_votes_and_anything_after_a_term_change_wait_for_the_write",
    "defer-vote": "test_votes_and_anything_after_a_term_change_wait_for_the_write",
    "read-before-applied": "test_a_read_waits_until_applied_reaches_its_read_index",
    "answer-replaced-entry": "test_a_request_fails_when_another_term_commits_at_its_index",
}


def test_every_driver_bug_names_the_unit_test_that_catches_it():
    assert set(EXPECTED) == set(DRIVER_BUGS)


@pytest.mark.parametrize("bug", DRIVER_BUGS)
def test_the_rules_unit_test_fails_against_the_planted_bug(bug, monkeypatch):
    mutant = importlib.import_module(load_mutant(bug))
    monkeypatch.setattr(test_driver, "Driver", mutant.Driver)
    monkeypatch.setattr(test_driver, "Failure", mutant.Failure)
    check: Callable[[], None] = getattr(test_driver, EXPECTED[bug])
    with pytest.raises(AssertionError):
        check()
