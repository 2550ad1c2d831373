"""FairQueue: deficit round robin over clients, counted in commands."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from exchange_node.server.fairqueue import FairQueue


@dataclass
class Cmd:
    client_id: str | None


@dataclass
class Prop:
    commands: list[Cmd]
    tag: str = ""


def prop(client: str | None, n: int, tag: str = "") -> Prop:
    return Prop([Cmd(client)] * n, tag)


def test_a_single_order_is_not_stuck_behind_another_clients_backlog():
    q = FairQueue(quantum=500)
    for i in range(40):
        q.append(prop("hog", 500, f"h{i}"))
    q.append(prop("victim", 1, "v"))
    first = q.take(max_commands=1_000, max_proposals=100)
    # One hog batch, then the victim's turn, within the first Ready.
    assert [p.tag for p in first] == ["h0", "v"]
    assert len(q) == 39


def test_order_is_kept_within_one_client_and_budget_is_respected():
    q = FairQueue(quantum=3)
    for i in range(6):
        q.append(prop("a", 1, f"a{i}"))
    for i in range(6):
        q.append(prop("b", 1, f"b{i}"))
    taken = q.take(max_commands=8, max_proposals=100)
    assert [p.tag for p in taken] == ["a0", "a1", "a2", "b0", "b1", "b2", "a3", "a4"]
    rest = q.take(max_commands=100, max_proposals=100)
    assert [p.tag for p in rest if p.tag.startswith("a")] == ["a5"]
    assert [p.tag for p in rest if p.tag.startswith("b")] == ["b3", "b4", "b5"]
    assert not q


def test_a_request_larger_than_the_budget_goes_alone_and_nothing_starves():
    q = FairQueue(quantum=2)
    q.append(prop("big", 10, "big"))
    q.append(prop("small", 1, "s"))
    seen = []
    while q:
        seen.append([p.tag for p in q.take(max_commands=4, max_proposals=10)])
    assert sorted(t for batch in seen for t in batch) == ["big", "s"]
    assert ["big"] in seen


def test_proposals_without_a_client_share_one_queue_and_popleft_drains():
    q = FairQueue()
    q.append(prop(None, 1, "admin1"))
    q.append(Prop([], "empty"))
    q.append(prop("a", 1, "a"))
    drained = [q.popleft().tag for _ in range(3)]
    assert sorted(drained) == ["a", "admin1", "empty"]
    with pytest.raises(IndexError):
        q.popleft()
