"""The generic search, on a register: known verdicts, and agreement with brute force."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from exchange_node.chaos.linearizability import Op, check
from hypothesis import given, settings
from hypothesis import strategies as st


@dataclass(frozen=True)
class RegOp:
    kind: str  # "w" writes value, "r" reads value, "cas" compare-and-set (old, new)
    value: int
    new: int = 0


class Register:
    def init(self) -> int:
        return 0

    def observes(self, op: RegOp) -> bool:
        return op.kind == "r"

    def step(self, state: int, op: RegOp) -> list[int]:
        if op.kind == "w":
            return [op.value]
        if op.kind == "r":
            return [state] if state == op.value else []
        return [op.new] if state == op.value else []


class FlakyRegister(Register):
    """A write may store its value or its value + 1: a nondeterministic model."""

    def step(self, state: int, op: RegOp) -> list[int]:
        if op.kind == "w":
            return [op.value, op.value + 1]
        return super().step(state, op)


def w(start, end, value):
    return Op(start, end, RegOp("w", value))


def r(start, end, value):
    return Op(start, end, RegOp("r", value))


def test_sequential_history():
    assert check(Register(), [w(0, 1, 1), r(2, 3, 1), w(4, 5, 2), r(6, 7, 2)]).result == "ok"


def test_stale_read_after_a_completed_write_is_a_violation():
    verdict = check(Register(), [w(0, 1, 1), w(2, 3, 2), r(4, 5, 1)])
    assert verdict.result == "violation"
    assert verdict.failed == 2
    assert verdict.states == [2]


def test_concurrent_read_may_see_either_value():
    assert check(Register(), [w(0, 10, 1), r(1, 2, 0), r(3, 4, 1)]).result == "ok"
    # ... but not go back once a read saw the new one.
    assert check(Register(), [w(0, 10, 1), r(1, 2, 1), r(3, 4, 0)]).result == "violation"


def test_indeterminate_write_may_or_may_not_take_effect():
    assert check(Register(), [w(0, None, 1), r(5, 6, 0)]).result == "ok"
    assert check(Register(), [w(0, None, 1), r(5, 6, 1)]).result == "ok"
    assert check(Register(), [w(0, None, 1), r(5, 6, 1), r(7, 8, 0)]).result == "violation"
    # It cannot take effect before it was invoked.
    assert check(Register(), [r(0, 1, 1), w(2, None, 1)]).result == "violation"


def test_nondeterministic_model():
    assert check(FlakyRegister(), [w(0, 1, 1), r(2, 3, 2)]).result == "ok"
    assert check(FlakyRegister(), [w(0, 1, 1), r(2, 3, 2), r(4, 5, 1)]).result == "violation"


def test_budget_gives_unknown_not_a_hang():
    # Many concurrent indeterminate writes: the configurations multiply.
    ops = [w(0, None, value) for value in range(1, 40)] + [r(100, 101, 5)]
    verdict = check(Register(), ops, budget=50)
    assert verdict.result == "unknown"
    assert verdict.explored == 51


def brute_force(model, ops) -> bool:
    """Try every order of every subset that includes all definite operations."""
    definite = [i for i, op in enumerate(ops) if op.end is not None]
    optional = [i for i, op in enumerate(ops) if op.end is None]
    for k in range(len(optional) + 1):
        for chosen in itertools.combinations(optional, k):
            members = definite + list(chosen)
            for order in itertools.permutations(members):
                if not _respects_real_time(ops, order):
                    continue
                states = [model.init()]
                for i in order:
                    states = [after for s in states for after in model.step(s, ops[i].input)]
                    if not states:
                        break
                if states:
                    return True
    return False


def _respects_real_time(ops, order) -> bool:
    # a before b in real time (a returned before b was called) => a before b in the order.
    position = {op: n for n, op in enumerate(order)}
    for a in order:
        for b in order:
            end = ops[a].end
            if end is not None and end < ops[b].start and position[a] > position[b]:
                return False
    return True


@st.composite
def register_histories(draw):
    n = draw(st.integers(1, 6))
    ops = []
    for _ in range(n):
        start = draw(st.integers(0, 20))
        indeterminate = draw(st.booleans()) and draw(st.booleans())
        end = None if indeterminate else start + draw(st.integers(0, 10))
        kind = draw(st.sampled_from(["w", "r", "cas"]))
        value = draw(st.integers(0, 2))
        ops.append(Op(start, end, RegOp(kind, value, draw(st.integers(0, 2)))))
    return ops


@settings(max_examples=2000, derandomize=True, deadline=None)
@given(register_histories(), st.booleans())
def test_agrees_with_brute_force(ops, flaky):
    model = FlakyRegister() if flaky else Register()
    expected = brute_force(model, ops)
    assert (check(model, ops).result == "ok") == expected
