"""Records built on the engine's hot paths (``object.__new__`` plus slot stores, see
``engine._new_object``) must be indistinguishable from ones built by their constructors:
every field set, equal to a constructor-built copy. A field added to a record class but
not to the hot path fails here, not in production."""

from __future__ import annotations

import dataclasses

from exchange_node.engine.book import RestingOrder
from exchange_node.engine.commands import Cancel, CancelReplace, MassCancel, NewOrder
from exchange_node.tools.bench import engine as bench


def _rebuilt(record: object) -> object:
    cls = type(record)
    return cls(**{f.name: getattr(record, f.name) for f in dataclasses.fields(cls)})


def test_every_result_and_event_has_every_field_and_equals_a_constructed_copy() -> None:
    commands = bench.mixed_workload(6_000, seed=11, clients=8)
    # Cover the rarer paths too: replaces, mass cancels, bad and repeated commands.
    commands += [
        CancelReplace("c1", None, "o5", "o5-r", 10_000, 5),
        MassCancel("c2", None),
        NewOrder("c3", "", "AAA", 0, 0, 0, 10_000, 5),  # type: ignore[arg-type]
        Cancel("c4", None, "never-placed"),
        commands[0],
    ]
    engine = bench.new_engine()
    seen: set[type] = set()
    for index, command in enumerate(commands, start=1):
        result = engine.apply(command, index, bench.BASE_TIME_NS + index)
        assert _rebuilt(result) == result
        for event in result.events:
            seen.add(type(event))
            assert _rebuilt(event) == event, event
    names = {cls.__name__ for cls in seen}
    assert {"Accepted", "Fill", "BookUpdate", "Cancelled", "Rejected", "Expired"} <= names


def test_resting_orders_built_on_the_hot_path_have_every_slot() -> None:
    engine = bench.new_engine()
    for index, command in enumerate(bench.mixed_workload(3_000, seed=3, clients=8), start=1):
        engine.apply(command, index, bench.BASE_TIME_NS + index)
    orders = [o for side in engine.live_orders_in_priority("AAA") for o in side]
    assert orders
    for order in orders:
        for slot in RestingOrder.__slots__:
            getattr(order, slot)  # AttributeError if the hot path forgot one
