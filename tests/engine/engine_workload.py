"""Seeded random command streams covering every command kind (for non-hypothesis tests)."""

from __future__ import annotations

import random

from exchange_node.engine.commands import (
    AddSymbol,
    Cancel,
    CancelReplace,
    Command,
    HaltSymbol,
    MassCancel,
    NewOrder,
    OrderType,
    ResumeSymbol,
    SelfTradeMode,
    SetRiskLimits,
    Side,
    TimeInForce,
)

SYMBOLS = [AddSymbol("AAA", 1, 1, 500, 100), AddSymbol("BBB", 5, 10, 0, 0)]
CLIENTS = ["alice", "bob", "carol", "dave"]


def random_command(rng: random.Random, n: int) -> Command:
    client_id = rng.choice(CLIENTS)
    roll = rng.random()
    if roll < 0.55:
        symbol = rng.choice(["AAA", "AAA", "BBB", "ZZZ"] if rng.random() < 0.05 else ["AAA", "BBB"])
        market = rng.random() < 0.1
        tif = rng.choice([TimeInForce.GTC] * 4 + [TimeInForce.IOC, TimeInForce.FOK])
        if symbol == "BBB":
            price = 0 if market else rng.choice([rng.randrange(80, 121, 5)] * 9 + [101])
            quantity = rng.choice([rng.randrange(10, 101, 10)] * 9 + [15, 0])
        else:
            price = 0 if market else rng.randint(93, 107)
            quantity = rng.choice([rng.randint(1, 30)] * 19 + [0])
        return NewOrder(
            client_id,
            f"o{rng.randrange(n + 5)}",
            symbol,
            rng.choice([Side.BUY, Side.SELL]),
            OrderType.MARKET if market else OrderType.LIMIT,
            tif,
            price,
            quantity,
            post_only=rng.random() < 0.1 and tif == TimeInForce.GTC and not market,
            stp=rng.choice(list(SelfTradeMode)),
        )
    if roll < 0.75:
        if rng.random() < 0.5:
            return Cancel(client_id, rng.randint(1, n + 2), None)
        return Cancel(client_id, None, f"o{rng.randrange(n + 5)}")
    if roll < 0.88:
        by_id = rng.random() < 0.5
        return CancelReplace(
            client_id,
            rng.randint(1, n + 2) if by_id else None,
            None if by_id else f"o{rng.randrange(n + 5)}",
            f"o{rng.randrange(n + 5)}",
            rng.choice([rng.randint(93, 107), rng.randrange(80, 121, 5)]),
            rng.choice([rng.randint(1, 30), rng.randrange(10, 61, 10)]),
        )
    if roll < 0.92:
        return MassCancel(client_id, rng.choice([None, "AAA", "BBB"]))
    if roll < 0.95:
        symbol = rng.choice(["AAA", "BBB", "ZZZ"])
        return HaltSymbol(symbol) if rng.random() < 0.5 else ResumeSymbol(symbol)
    if roll < 0.98:
        return SetRiskLimits(
            rng.choice([None, client_id]),
            rng.choice([0, 25, 40]),
            rng.choice([0, 2_000, 5_000]),
            rng.choice([0, 40, 80]),
        )
    return AddSymbol(rng.choice(["CCC", "AAA"]), 1, 1, rng.choice([0, 300]), rng.choice([0, 50]))


def random_commands(seed: int, count: int) -> list[Command]:
    rng = random.Random(seed)
    return [random_command(rng, n) for n in range(count)]
