"""The log's command encoding: round trips, and garbage is refused with CommandDecodeError."""

from __future__ import annotations

import contextlib
import random
import struct

import pytest
from engine_workload import random_commands
from exchange_node.engine.commands import (
    WIRE_VERSION,
    AddSymbol,
    Cancel,
    CancelReplace,
    CommandDecodeError,
    CommandEncodeError,
    HaltSymbol,
    MassCancel,
    NewOrder,
    OrderType,
    RejectReason,
    ResumeSymbol,
    SelfTradeMode,
    SetRetention,
    SetRiskLimits,
    Side,
    SymbolSpec,
    TimeInForce,
    decode_batch,
    encode_batch,
    validate_format,
)
from hypothesis import given, settings
from hypothesis import strategies as st

int64 = st.integers(-(1 << 63), (1 << 63) - 1)
uint64 = st.integers(0, (1 << 64) - 1)
text = st.text(max_size=40)
ident = st.text(min_size=1, max_size=20)

any_command = st.one_of(
    st.builds(
        NewOrder,
        text,
        text,
        text,
        st.sampled_from(list(Side)),
        st.sampled_from(list(OrderType)),
        st.sampled_from(list(TimeInForce)),
        int64,
        int64,
        st.booleans(),
        st.sampled_from(list(SelfTradeMode)),
    ),
    st.builds(Cancel, text, st.one_of(st.none(), uint64), st.one_of(st.none(), text)),
    st.builds(
        CancelReplace,
        text,
        st.one_of(st.none(), uint64),
        st.one_of(st.none(), text),
        text,
        int64,
        int64,
    ),
    st.builds(MassCancel, text, st.one_of(st.none(), text)),
    st.builds(AddSymbol, text, int64, int64, int64, int64),
    st.builds(HaltSymbol, text),
    st.builds(ResumeSymbol, text),
    st.builds(SetRiskLimits, st.one_of(st.none(), text), int64, int64, int64),
    st.builds(SetRetention, int64, int64, int64),
)


@settings(settings.get_profile("engine"), max_examples=300)
@given(int64, st.lists(any_command, max_size=12))
def test_batches_round_trip(timestamp_ns: int, commands: list) -> None:
    data = encode_batch(timestamp_ns, commands)
    assert data[0] == WIRE_VERSION
    assert decode_batch(data) == (timestamp_ns, commands)
    assert decode_batch(bytearray(data)) == (timestamp_ns, commands)


def test_every_prefix_of_a_batch_is_refused() -> None:
    data = encode_batch(123, random_commands(4, 60))
    for cut in range(len(data)):
        with pytest.raises(CommandDecodeError):
            decode_batch(data[:cut])


def test_trailing_bytes_unknown_version_and_unknown_tag_are_refused() -> None:
    data = encode_batch(1, [HaltSymbol("AAA")])
    with pytest.raises(CommandDecodeError, match="trailing"):
        decode_batch(data + b"\x00")
    with pytest.raises(CommandDecodeError, match="version"):
        decode_batch(b"\x02" + data[1:])
    header = struct.pack("<BqI", WIRE_VERSION, 1, 1)
    with pytest.raises(CommandDecodeError, match="tag"):
        decode_batch(header + b"\x63")
    with pytest.raises(CommandDecodeError):
        decode_batch(b"")
    with pytest.raises(CommandDecodeError):
        decode_batch(header + b"\x11\x02\xff\xfe")  # HALT with invalid UTF-8
    with pytest.raises(CommandDecodeError, match="flags"):
        order = encode_batch(
            1, [NewOrder("c", "o", "S", Side.BUY, OrderType.LIMIT, TimeInForce.GTC, 1, 1)]
        )
        flags_at = len(header) + 1 + 2 + 2 + 2
        decode_batch(order[:flags_at] + bytes([order[flags_at] | 0x0C]) + order[flags_at + 1 :])
    with pytest.raises(CommandDecodeError):
        decode_batch(header[:-4] + struct.pack("<I", 1 << 30))
    with pytest.raises(CommandDecodeError):
        decode_batch("not bytes")  # type: ignore[arg-type]


@settings(settings.get_profile("engine"), max_examples=500)
@given(st.binary(max_size=200))
def test_garbage_decodes_or_raises_command_decode_error(garbage: bytes) -> None:
    for data in (garbage, bytes([WIRE_VERSION]) + garbage):
        with contextlib.suppress(CommandDecodeError):
            decode_batch(data)


def test_bit_flips_never_raise_anything_else() -> None:
    data = encode_batch(99, random_commands(6, 40))
    rng = random.Random(2)
    for _ in range(2_000):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        with contextlib.suppress(CommandDecodeError):
            decode_batch(bytes(damaged))


def test_unencodable_commands_raise_command_encode_error() -> None:
    with pytest.raises(CommandEncodeError):
        encode_batch(1, [HaltSymbol("x" * 256)])
    with pytest.raises(CommandEncodeError):
        encode_batch(1, [Cancel("c", -1, None)])
    with pytest.raises(CommandEncodeError):
        encode_batch(
            1,
            [NewOrder("c", "o", "S", Side.BUY, OrderType.LIMIT, TimeInForce.GTC, 1 << 63, 1)],
        )
    with pytest.raises(CommandEncodeError):
        encode_batch(1, ["not a command"])  # type: ignore[list-item]
    with pytest.raises(CommandEncodeError):
        encode_batch(1 << 64, [])


def test_encoding_is_compact() -> None:
    order = NewOrder(
        "client-7", "order-123", "AAA", Side.BUY, OrderType.LIMIT, TimeInForce.GTC, 10_000, 5
    )
    one = len(encode_batch(0, [order]))
    assert len(encode_batch(0, [order] * 2)) - one == 1 + 9 + 10 + 4 + 17


SPECS = {"AAA": SymbolSpec("AAA", 5, 10, 100, 1_000)}


def limit(**changes: object) -> NewOrder:
    order = NewOrder("c", "o", "AAA", Side.BUY, OrderType.LIMIT, TimeInForce.GTC, 1_000, 10)
    for name, value in changes.items():
        setattr(order, name, value)
    return order


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        (limit(), None),
        (limit(order_type=OrderType.MARKET, price=0, time_in_force=TimeInForce.IOC), None),
        (limit(client_id=""), RejectReason.INVALID_FIELD),
        (limit(client_order_id=""), RejectReason.INVALID_FIELD),
        (limit(client_order_id="x" * 256), RejectReason.INVALID_FIELD),
        (limit(symbol="ZZZ"), RejectReason.UNKNOWN_SYMBOL),
        (limit(quantity=0), RejectReason.INVALID_QUANTITY),
        (limit(quantity=-10), RejectReason.INVALID_QUANTITY),
        (limit(quantity=15), RejectReason.QUANTITY_OFF_LOT),
        (limit(price=0), RejectReason.INVALID_PRICE),
        (limit(price=-5), RejectReason.INVALID_PRICE),
        (limit(price=1_001), RejectReason.PRICE_OFF_TICK),
        (limit(order_type=OrderType.MARKET), RejectReason.INVALID_PRICE),
        (limit(post_only=True, time_in_force=TimeInForce.IOC), RejectReason.INVALID_FIELD),
        (limit(price=1.5), RejectReason.INVALID_FIELD),
        (limit(quantity=True), RejectReason.INVALID_FIELD),
        (limit(side=7), RejectReason.INVALID_FIELD),
        (limit(time_in_force=9), RejectReason.INVALID_FIELD),
        (limit(stp=3), RejectReason.INVALID_FIELD),
        (Cancel("c", None, None), RejectReason.INVALID_FIELD),
        (Cancel("c", 1, "o"), RejectReason.INVALID_FIELD),
        (Cancel("c", 1, None), None),
        (CancelReplace("c", 1, None, "n", 1_000, 0), RejectReason.INVALID_QUANTITY),
        (CancelReplace("c", 1, None, "n", 0, 10), RejectReason.INVALID_PRICE),
        (CancelReplace("c", 1, None, "", 1_000, 10), RejectReason.INVALID_FIELD),
        (MassCancel("c", "ZZZ"), RejectReason.UNKNOWN_SYMBOL),
        (MassCancel("c", ["AAA"]), RejectReason.UNKNOWN_SYMBOL),  # type: ignore[arg-type]
        (MassCancel("c"), None),
        (AddSymbol("AAA", 1, 1, 0, 0), RejectReason.SYMBOL_EXISTS),
        (AddSymbol("BBB", 0, 1, 0, 0), RejectReason.INVALID_SYMBOL_SPEC),
        (AddSymbol("BBB", 5, 1, 0, 7), RejectReason.INVALID_SYMBOL_SPEC),
        (AddSymbol("BBB", 5, 1, -1, 0), RejectReason.INVALID_SYMBOL_SPEC),
        (AddSymbol("BBB", 5, 1, 100, 10), None),
        (HaltSymbol("ZZZ"), RejectReason.UNKNOWN_SYMBOL),
        (ResumeSymbol("AAA"), None),
        (SetRiskLimits(None, -1, 0, 0), RejectReason.INVALID_FIELD),
        (SetRiskLimits("", 1, 0, 0), RejectReason.INVALID_FIELD),
        (SetRiskLimits("c", 1, 2, 3), None),
        (SetRetention(3_600 * 10**9, 1_000, 500), None),
        (SetRetention(0, 1_000, 500), RejectReason.INVALID_FIELD),
        (SetRetention(367 * 86_400 * 10**9, 1_000, 500), RejectReason.INVALID_FIELD),
        (SetRetention(1, 0, 500), RejectReason.INVALID_FIELD),
        (SetRetention(1, 1 << 32, 500), RejectReason.INVALID_FIELD),
        (SetRetention(1, 1, -5), RejectReason.INVALID_FIELD),
        ("not a command", RejectReason.INVALID_FIELD),
    ],
)
def test_validate_format(command: object, reason: RejectReason | None) -> None:
    rejection = validate_format(command, SPECS)  # type: ignore[arg-type]
    assert (rejection.reason if rejection else None) == reason
    if rejection:
        assert rejection.message
