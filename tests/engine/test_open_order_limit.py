"""The per-client cap on resting orders (SetOrderLimits), its encoding and snapshot."""

from __future__ import annotations

from exchange_node.engine.commands import (
    AddSymbol,
    Cancel,
    NewOrder,
    OrderType,
    RejectReason,
    SetOrderLimits,
    Side,
    TimeInForce,
    decode_batch,
    encode_batch,
)
from exchange_node.engine.engine import Engine
from exchange_node.engine.events import Rejected
from exchange_node.engine.snapshot import SNAPSHOT_VERSION


class Log:
    def __init__(self) -> None:
        self.engine = Engine()
        self.index = 0
        self.apply(AddSymbol("BTC-USD", 1, 1, 0, 0))

    def apply(self, command):  # one command per entry, through the wire encoding
        self.index += 1
        return self.engine.apply_entry(self.index, encode_batch(self.index, [command]))[0]


def order(client: str, coid: str, side: Side, price: int, tif=TimeInForce.GTC) -> NewOrder:
    return NewOrder(client, coid, "BTC-USD", side, OrderType.LIMIT, tif, price, 1)


def reject_reason(result) -> RejectReason | None:
    rejected = [e for e in result.events if isinstance(e, Rejected)]
    return rejected[0].reason if rejected else None


def test_a_client_at_its_resting_limit_cannot_rest_more_others_can():
    log = Log()
    assert log.apply(SetOrderLimits(None, 2)).events == []
    assert log.engine.max_open_orders() == 2
    assert reject_reason(log.apply(order("a", "1", Side.BUY, 100))) is None
    assert reject_reason(log.apply(order("a", "2", Side.BUY, 101))) is None
    third = log.apply(order("a", "3", Side.BUY, 102))
    assert reject_reason(third) is RejectReason.RISK_MAX_OPEN_ORDERS
    # IOC never rests: not limited. Another client has its own count.
    assert reject_reason(log.apply(order("a", "4", Side.SELL, 200, TimeInForce.IOC))) is None
    assert reject_reason(log.apply(order("b", "1", Side.SELL, 300))) is None
    # A cancel frees a slot.
    assert reject_reason(log.apply(Cancel("a", None, "1"))) is None
    assert reject_reason(log.apply(order("a", "5", Side.BUY, 103))) is None
    # A per-client limit beats the default; 0 is unlimited.
    log.apply(SetOrderLimits("a", 0))
    assert reject_reason(log.apply(order("a", "6", Side.BUY, 104))) is None
    assert log.engine.max_open_orders("a") == 0 and log.engine.max_open_orders("b") == 2


def test_the_limit_survives_a_snapshot_and_equal_states_hash_equal():
    log = Log()
    plain = Engine.restore(log.engine.snapshot())
    assert log.engine.snapshot()[4] == SNAPSHOT_VERSION
    assert plain.state_hash() == log.engine.state_hash()
    log.apply(SetOrderLimits(None, 1))
    log.apply(SetOrderLimits("b", 3))
    data = log.engine.snapshot()
    restored = Engine.restore(data)
    assert restored.state_hash() == log.engine.state_hash()
    assert restored.max_open_orders() == 1 and restored.max_open_orders("b") == 3
    log.apply(order("a", "1", Side.BUY, 100))
    again = Engine.restore(log.engine.snapshot())
    result = again.apply(order("a", "2", Side.BUY, 101), 99, 99)
    assert reject_reason(result) is RejectReason.RISK_MAX_OPEN_ORDERS


def test_set_order_limits_round_trips_and_bad_values_are_rejected():
    for command in (SetOrderLimits(None, 5), SetOrderLimits("c", 0)):
        assert decode_batch(encode_batch(7, [command])) == (7, [command])
    log = Log()
    assert reject_reason(log.apply(SetOrderLimits(None, -1))) is RejectReason.INVALID_FIELD
    assert log.engine.max_open_orders() == 0
