"""The SDK's pure parts: the local order book, prices, errors; and that it stands alone."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from decimal import Decimal
from pathlib import Path

import pytest
from exchange_client import LocalOrderBook, OrderResult, RejectedError, Symbol
from exchange_client.errors import BadRequestError, error_from

CLIENT_DIR = Path(__file__).resolve().parents[2] / "client"


def _book() -> LocalOrderBook:
    book = LocalOrderBook("BTC-USD")
    book.apply_snapshot({"seq": 10, "bids": [[100, 5], [99, 1]], "asks": [[101, 2]]})
    return book


def test_deltas_apply_in_sequence() -> None:
    book = _book()
    assert book.apply_update({"side": "BUY", "price": 100, "quantity": 0, "seq": 11})
    assert book.apply_update({"side": "SELL", "price": 102, "quantity": 4, "seq": 12})
    view = book.view()
    assert [(lv.price, lv.quantity) for lv in view.bids] == [(99, 1)]
    assert [(lv.price, lv.quantity) for lv in view.asks] == [(101, 2), (102, 4)]
    assert view.seq == 12


def test_an_update_already_in_the_snapshot_is_skipped() -> None:
    book = _book()
    assert book.apply_update({"side": "BUY", "price": 100, "quantity": 0, "seq": 10})
    assert book.bids[100] == 5 and book.synced


def test_a_jump_in_seq_is_a_gap_and_unsyncs_the_book() -> None:
    book = _book()
    assert not book.apply_update({"side": "BUY", "price": 98, "quantity": 1, "seq": 12})
    assert not book.synced and book.gaps == 1 and 98 not in book.bids
    # Nothing is applied until a snapshot arrives.
    assert not book.apply_update({"side": "BUY", "price": 98, "quantity": 1, "seq": 13})
    book.apply_snapshot({"seq": 13, "bids": [[98, 1]], "asks": []})
    assert book.synced and book.view().best_bid.price == 98


def test_prices_convert_exactly_and_refuse_to_round() -> None:
    spec = {"symbol": "X", "tick_size": 5, "lot_size": 1}
    symbol = Symbol.from_json(spec)
    assert symbol.price_scale == 100
    assert symbol.from_price("499.05") == 49_905
    assert symbol.to_price(49_905) == Decimal("499.05")
    with pytest.raises(ValueError, match="finer"):
        symbol.from_price("499.051")
    with pytest.raises(ValueError, match="tick"):
        symbol.from_price("499.01")
    assert Symbol.from_json({**spec, "price_scale": 10_000}).to_price(5) == Decimal("0.0005")


def test_errors_of_both_shapes() -> None:
    api = error_from(
        422, {"error": {"code": "symbol_halted", "message": "m", "reason": "SYMBOL_HALTED"}}
    )
    assert isinstance(api, RejectedError) and api.reason == "SYMBOL_HALTED"
    admin = error_from(400, {"error": "max_order_qty must be >= 0", "field": "max_order_qty"})
    assert isinstance(admin, BadRequestError) and admin.field == "max_order_qty"


def test_a_rejected_batch_item_is_a_rejected_result() -> None:
    item = {"status": 422, "error": {"code": "price_band"}, "result": {"log_index": 4}}
    result = OrderResult.from_json(item, "c-1")
    assert result.rejected and result.log_index == 4 and result.error == {"code": "price_band"}


def test_the_sdk_imports_nothing_of_the_server() -> None:
    code = (
        "import sys, exchange_client\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('exchange_node', 'grpc', 'prometheus_client', 'opentelemetry', 'kopf')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_client_builds_as_its_own_wheel(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(CLIENT_DIR),
        ],
        check=True,
        timeout=120,
    )
    (wheel,) = tmp_path.glob("raft_exchange_client-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = z.read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert {n.split("/")[0] for n in names if not n.startswith("raft_exchange_client")} == {
        "exchange_client"
    }
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist")]
    assert requires == ["Requires-Dist: aiohttp>=3.9"]
