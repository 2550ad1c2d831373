"""A linearizability checker for one object: Wing & Gong's search with Lowe's memoisation.

The search is Lowe's "just-in-time" linearization (the one Knossos calls
``linear``): walk the history's call and return events in time order, keeping
the set of *configurations* (model state, operations called but not yet
linearized). A call adds its operation to every configuration's pending set.
At a return, an operation must have taken effect, so each configuration is
expanded by linearizing pending operations, in every order, until that one is
done; configurations already seen are not expanded again (the memo of
(state, linearized set) that Lowe suggests), and a read that fits the
current state is linearized at once rather than tried at every later point
(that configuration subsumes the others: a read changes nothing). No
configuration left means no
linearization exists, and the operation that returned is the witness.

Indeterminate operations (``end`` None) never return: they stay pending, may
be linearized at any later point, or never, which is exactly "an info
operation may or may not have taken effect". Models may be nondeterministic
(``step`` yields every possible next state), which is how an indeterminate
outcome or a change the history does not show (a fill by someone else's
order) is modelled.

Partition a history per object first (as Porcupine and Knossos do): the
search is exponential in the number of concurrent operations, not in the
length of the history. ``budget`` bounds the configurations explored; past
it the verdict is ``unknown``, never a hang.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

S = TypeVar("S", bound=Hashable)
I = TypeVar("I")  # noqa: E741
I_in = TypeVar("I_in", contravariant=True)

DEFAULT_BUDGET = 200_000


@dataclass(slots=True, frozen=True)
class Op(Generic[I]):
    start: int
    """When it was invoked; it cannot take effect before."""
    end: int | None
    """When it returned; it took effect before. None: indeterminate (maybe never)."""
    input: I
    """Whatever the model needs: the request, the answer."""


class Model(Protocol[S, I_in]):
    """What the search needs of a model. It also uses, when a model has them:

    - ``observes(op) -> bool``: ``op`` never changes the object, only what is
      known of it (a read);
    - ``settled(state) -> bool``: no operation can change ``state`` any more,
      only refine what is known of it (a finished order).
    """

    def init(self) -> S: ...

    def step(self, state: S, op: I_in) -> Iterable[S]:
        """Every state the object can be in after ``op`` took effect in ``state`` (none: it can't)."""
        ...


@dataclass(slots=True)
class Verdict:
    result: str
    """``ok``, ``violation`` or ``unknown`` (the budget ran out)."""
    failed: int | None = None
    """Index of the operation that no linearization can account for."""
    explored: int = 0
    states: list[object] = field(default_factory=list)
    """For a violation: the states the object could be in just before ``failed`` returned."""


def check(model: Model[S, I], ops: Sequence[Op[I]], budget: int = DEFAULT_BUDGET) -> Verdict:
    """Is there a linearization of ``ops`` under ``model``?"""
    events: list[tuple[int, int, int]] = []
    for index, op in enumerate(ops):
        events.append((op.start, 0, index))
        if op.end is not None:
            if op.end < op.start:
                raise ValueError(f"operation {index} returns before it is called")
            # Calls sort before returns at the same instant: such operations
            # count as concurrent, the lenient reading of a coarse clock.
            events.append((op.end, 1, index))
    events.sort()
    observes = getattr(model, "observes", None)
    observer = [bool(observes and observes(op.input)) for op in ops]
    settled = getattr(model, "settled", None)
    indeterminate = sum(1 << i for i, op in enumerate(ops) if op.end is None)
    configs: set[tuple[S, int]] = {(model.init(), 0)}
    explored = 0
    for _time, kind, index in events:
        bit = 1 << index
        if kind == 0:
            configs = {(state, pending | bit) for state, pending in configs}
            continue
        done: set[tuple[S, int]] = set()
        seen: set[tuple[S, int]] = set()
        stack = list(configs)
        while stack:
            config = stack.pop()
            if config in seen:
                continue
            seen.add(config)
            explored += 1
            if explored > budget:
                return Verdict("unknown", index, explored)
            state, pending = config
            calm = settled is not None and settled(state)
            if pending & indeterminate and calm:
                # Nothing pending that may never happen can change this state: forget
                # them, or every subset of them would be a configuration of its own.
                stack.append((state, pending & ~indeterminate))
                continue
            if not pending & bit:
                done.add(config)
                continue
            successors: list[tuple[S, int]] = []
            seen_now = 0
            rest = pending
            while rest:
                low = rest & -rest
                rest ^= low
                index_low = low.bit_length() - 1
                afters = list(model.step(state, ops[index_low].input))
                if (calm or observer[index_low]) and len(afters) == 1 and afters[0] == state:
                    seen_now |= low
                else:
                    successors.extend((after, pending ^ low) for after in afters)
            if seen_now:
                # A read that fits the state as it is now is linearized at once: it never
                # changes the object, so this configuration can do everything the ones
                # that keep it pending can, and it is not tried at every later point too.
                # Once settled, no operation changes the state: the same holds for all.
                stack.append((state, pending & ~seen_now))
            else:
                stack.extend(successors)
        if not done:
            return Verdict("violation", index, explored, sorted({s for s, _ in configs}, key=repr))
        configs = done
    return Verdict("ok", None, explored)
