"""The order operations HTTP and WebSocket share: place, batch, cancel, replace, mass cancel.

``OrderEntry`` turns a client's schema-checked request into engine commands,
refuses whatever the engine would reject for its format (400 naming the field,
before anything reaches the log), counts each client's commands in flight
(429 over ``max_in_flight_per_client``), proposes them and answers with the
status and body a client sees. The HTTP handlers (``app.py``) and the
WebSocket hub (``ws.py``) hold the same instance; neither imports the other.
Every operation returns ``(status, body)``; errors are raised as ``ApiError``
(input, ownership, limits) or as the service's errors (``NotLeader`` and the
rest), which ``service_error`` maps to an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from exchange_node.engine.commands import (
    Cancel,
    CancelReplace,
    Command,
    MassCancel,
    NewOrder,
    OrderType,
    RejectReason,
    SelfTradeMode,
    Side,
    SymbolSpec,
    TimeInForce,
    check_price_quantity,
    validate_format,
)
from exchange_node.engine.events import CommandResult
from exchange_node.limits import API_BATCH_YIELD_EVERY
from exchange_node.service import (
    ExchangeService,
    NotLeader,
    Overloaded,
    ServiceError,
    Timeout,
    Unavailable,
)

from . import errors, jsonio, queries, schema
from .auth import BatchReservation
from .config import ApiConfig
from .errors import ApiError
from .present import REJECT_FIELD, result_answer

_SIDE = {"BUY": Side.BUY, "SELL": Side.SELL}
_ORDER_TYPE = {"LIMIT": OrderType.LIMIT, "MARKET": OrderType.MARKET}
_TIF = {"GTC": TimeInForce.GTC, "IOC": TimeInForce.IOC, "FOK": TimeInForce.FOK}
_STP = {mode.name: mode for mode in SelfTradeMode}

_REJECT_CODE = {
    RejectReason.UNKNOWN_SYMBOL: errors.UNKNOWN_SYMBOL,
    RejectReason.PRICE_OFF_TICK: errors.PRICE_OFF_TICK,
    RejectReason.QUANTITY_OFF_LOT: errors.QUANTITY_OFF_LOT,
}

ClientCommand = NewOrder | Cancel | CancelReplace | MassCancel
"""What a client may send (listings, halts and risk limits come through the admin API)."""

Answer = tuple[int, dict[str, Any]]
"""An operation's HTTP status and JSON body (the WebSocket ack carries both)."""


def _new_client_order_id() -> str:
    return f"api-{uuid.uuid4().hex}"


def service_error(exc: ServiceError, retry_after: float) -> ApiError:
    """The answer to a service error: 503 overloaded/unavailable/no leader (with
    Retry-After), 504 timeout (the outcome is unknown; a retry with the same
    client order id is safe)."""
    if isinstance(exc, Overloaded):
        return ApiError(
            503,
            errors.OVERLOADED,
            "the node is overloaded (proposal queue full); retry after the Retry-After delay",
            retry_after=exc.retry_after_seconds,
        )
    if isinstance(exc, Timeout):
        return ApiError(504, errors.TIMEOUT, errors.TIMEOUT_MESSAGE)
    if isinstance(exc, Unavailable):
        return ApiError(503, errors.UNAVAILABLE, f"unavailable: {exc}", retry_after=retry_after)
    if isinstance(exc, NotLeader):
        return errors.no_leader("this node is not the leader", retry_after)
    return ApiError(503, errors.UNAVAILABLE, f"unavailable: {exc}", retry_after=retry_after)


class OrderEntry:
    """Order entry for one node: the service, the listed symbols (cached) and the
    per-client count of commands in flight."""

    def __init__(
        self, service: ExchangeService, config: ApiConfig, refusals: dict[str, int]
    ) -> None:
        self.service = service
        self.config = config
        self.refusals = refusals
        """Limit -> requests refused by it (shared with the rest of the API)."""
        self._symbols: dict[str, SymbolSpec] = {}
        self.in_flight: dict[str, int] = {}
        """Client id -> commands submitted here and not yet answered."""

    def symbols(self) -> Mapping[str, SymbolSpec]:
        """Listed symbols -> spec, cached: a symbol's tick and lot sizes never change
        once listed and symbols are never delisted, so only a miss refreshes it."""
        return self._symbols

    def symbol_spec(self, symbol: str) -> SymbolSpec | None:
        """The spec of a listed ``symbol``, or None."""
        spec = self._symbols.get(symbol)
        if spec is None:
            self._symbols = dict(queries.symbol_specs(self.service.engine))
            spec = self._symbols.get(symbol)
        return spec

    # ------------------------------------------------------------------ commands

    def new_order_command(
        self, client_id: str, fields: dict[str, Any], prefix: str = ""
    ) -> NewOrder:
        """A validated NewOrder from schema-checked ``fields``; 400 naming the field otherwise."""

        def at(name: str) -> str:
            return f"{prefix}.{name}" if prefix else name

        symbol = fields["symbol"]
        spec = self.symbol_spec(symbol)
        if spec is None:
            raise errors.bad_request(
                errors.UNKNOWN_SYMBOL, f"unknown symbol {symbol!r}", at("symbol")
            )
        order_type = _ORDER_TYPE[fields["order_type"]]
        price = fields.get("price")
        tif = _TIF[fields["time_in_force"]]
        if order_type is OrderType.MARKET:
            if price not in (None, 0):
                raise errors.bad_request(
                    errors.INVALID_VALUE, "a MARKET order takes no price (absent or 0)", at("price")
                )
            price = 0
        elif price is None:
            raise errors.bad_request(
                errors.MISSING_FIELD,
                f"missing required field {at('price')!r} for a LIMIT order",
                at("price"),
            )
        elif price <= 0:
            raise errors.bad_request(
                errors.INVALID_VALUE,
                f"{at('price')} must be positive for a LIMIT order",
                at("price"),
            )
        if fields["post_only"] and (order_type is OrderType.MARKET or tif is not TimeInForce.GTC):
            raise errors.bad_request(
                errors.INVALID_VALUE, "post_only requires a GTC LIMIT order", at("post_only")
            )
        command = NewOrder(
            client_id=client_id,
            client_order_id=fields.get("client_order_id") or _new_client_order_id(),
            symbol=symbol,
            side=_SIDE[fields["side"]],
            order_type=order_type,
            time_in_force=tif,
            price=price,
            quantity=fields["quantity"],
            post_only=fields["post_only"],
            stp=_STP[fields["stp"]],
        )
        self.check_format(command, self.symbols(), prefix)
        return command

    @staticmethod
    def check_format(command: Command, symbols: Mapping[str, SymbolSpec], prefix: str = "") -> None:
        """The engine's own format check: whatever it would reject never reaches the log."""
        rejection = validate_format(command, symbols)
        if rejection is None:
            return
        name = REJECT_FIELD.get(rejection.reason)
        field = (f"{prefix}.{name}" if prefix else name) if name else (prefix or None)
        raise errors.bad_request(
            _REJECT_CODE.get(rejection.reason, errors.INVALID_VALUE), rejection.message, field
        )

    def check_in_flight(self, client_id: str, count: int) -> None:
        """429 naming the limit when ``count`` more commands would take ``client_id``
        over ``max_in_flight_per_client`` (a lone request larger than it may go)."""
        cap = self.config.max_in_flight_per_client
        have = self.in_flight.get(client_id, 0)
        if have and have + count > cap:
            self.refusals["in_flight"] += 1
            raise ApiError(
                429,
                errors.TOO_MANY_IN_FLIGHT,
                f"{have} commands of this client are waiting to be applied; "
                f"at most {cap} may be (max_in_flight_per_client)",
                None,
                retry_after=self.config.unavailable_retry_after_seconds,
                extra={"limit": "max_in_flight_per_client", "max": cap, "in_flight": have},
            )

    @contextlib.contextmanager
    def in_flight_slot(self, client_id: str, count: int) -> Iterator[None]:
        """Count ``count`` commands of ``client_id`` as in flight while the block runs
        (429 when over the limit): from validation to the answer, so that one client's
        requests cannot occupy the event loop beyond its share."""
        self.check_in_flight(client_id, count)
        in_flight = self.in_flight
        in_flight[client_id] = in_flight.get(client_id, 0) + count
        try:
            yield
        finally:
            left = in_flight[client_id] - count
            if left:
                in_flight[client_id] = left
            else:
                del in_flight[client_id]

    async def submit(self, commands: Sequence[ClientCommand]) -> list[CommandResult]:
        """Propose ``commands`` (all of one client) and wait until they are applied."""
        with self.in_flight_slot(commands[0].client_id, len(commands)):
            return list(await self.service.submit(commands))

    # ------------------------------------------------------------------ operations

    async def place_order(self, client_id: str, payload: Any) -> Answer:
        fields = schema.NEW_ORDER.validate(payload)
        command = self.new_order_command(client_id, fields)
        (result,) = await self.submit([command])
        return result_answer(result, client_id)

    async def place_batch(
        self, client_id: str, payload: Any, reservation: BatchReservation | None = None
    ) -> Answer:
        """``reservation``: the rate-limit tokens taken for the batch, settled at one
        per order once they are counted (a client's limit bounds the work it causes,
        not its requests)."""
        name = schema.BATCH_ITEMS_FIELD
        body = schema.BATCH.validate(payload)
        raw = schema.check_array(body[name], name, self.config.max_batch)
        if reservation is not None:
            reservation.settle(len(raw))
        with self.in_flight_slot(client_id, len(raw)):
            # Every order's schema first, then every order's command: the first problem
            # named is the same as checking the whole array at once, but the loop is
            # given back every API_BATCH_YIELD_EVERY orders (a full batch checked in one
            # piece held it for about 2.5 ms, and 5 ms with the first commands).
            items = []
            for i, entry in enumerate(raw):
                if i % API_BATCH_YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # let other clients' requests in between
                items.append(schema.NEW_ORDER.validate(entry, f"{name}[{i}]"))
            commands = []
            for i, item in enumerate(items):
                if i % API_BATCH_YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                commands.append(self.new_order_command(client_id, item, f"{name}[{i}]"))
            times = None
            if reservation is not None and self.service.leads():
                # Paced where it is proposed: a follower forwards the batch whole.
                times = reservation.pace(len(commands), API_BATCH_YIELD_EVERY)
            results: list[CommandResult | ApiError]
            if times is None or reservation is None:
                results = list(await self.service.submit(commands))
            else:
                results = await self.submit_paced(commands, times, reservation.clock)
            out = []
            for i, result in enumerate(results):
                if i % API_BATCH_YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                if isinstance(result, ApiError):
                    out.append({"status": result.status, **result.body()})
                    continue
                status, answer = result_answer(result, client_id)
                out.append({"status": status, **answer} if status != 200 else answer)
        return 200, {"results": out}

    async def submit_paced(
        self,
        commands: Sequence[ClientCommand],
        times: Sequence[float],
        clock: Callable[[], float],
    ) -> list[CommandResult | ApiError]:
        """Propose ``commands`` in pieces of API_BATCH_YIELD_EVERY, piece ``i`` at
        ``clock()`` time ``times[i]`` (``RateLimiter.pace``), and wait for them all.

        Each piece is its own proposal: other clients' orders may be applied between
        two pieces, and the pieces keep their order (the leader's queue is first in,
        first out per client). Once a piece has failed, no later piece is proposed.
        The answer has one item per command: its result, or the error of its piece
        (of the first failed piece for those never proposed). When every piece
        failed, the service error is raised instead, as for a batch proposed whole
        (a follower forwards it on ``NotLeader``): ``Timeout`` if any piece timed out
        (its outcome is unknown), else the first failure.
        """
        piece = API_BATCH_YIELD_EVERY
        if len(times) == 1 and times[0] <= clock():
            return list(await self.service.submit(commands))  # at its pace: one entry
        proposed: list[asyncio.Future[Sequence[CommandResult]]] = []
        try:
            for i, at in enumerate(times):
                delay = at - clock()
                if delay > 0:
                    await asyncio.sleep(delay)
                if any(f.done() and f.exception() is not None for f in proposed):
                    break
                part = commands[i * piece : (i + 1) * piece]
                proposed.append(asyncio.ensure_future(self.service.submit(part)))
                await asyncio.sleep(0)  # its proposal is made (or refused) before the next
        finally:
            outcomes = await asyncio.gather(*proposed, return_exceptions=True)
        failures = [o for o in outcomes if isinstance(o, ServiceError)]
        if failures and len(failures) == len(outcomes):
            raise next((f for f in failures if isinstance(f, Timeout)), failures[0])
        retry_after = self.config.unavailable_retry_after_seconds
        results: list[CommandResult | ApiError] = []
        for i, outcome in enumerate(outcomes):
            if isinstance(outcome, ServiceError):
                answer = service_error(outcome, retry_after)
                results.extend([answer] * len(commands[i * piece : (i + 1) * piece]))
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                results.extend(outcome)
        if failures:
            first = service_error(failures[0], retry_after)
            results.extend([first] * (len(commands) - len(results)))
        return results

    @staticmethod
    async def encode_batch_answer(body: dict[str, Any]) -> bytes:
        """``jsonio.dumps(body)`` for a batch's answer ``{"results": [...]}``, the same
        bytes, encoded API_BATCH_YIELD_EVERY results at a time with the loop given
        back in between (500 results in one piece held it for about 3.5 ms)."""
        results = body["results"]
        if list(body) != ["results"] or len(results) <= API_BATCH_YIELD_EVERY:
            return jsonio.dumps(body)
        parts = [b'{"results":[']
        for lo in range(0, len(results), API_BATCH_YIELD_EVERY):
            await asyncio.sleep(0)
            if lo:
                parts.append(b",")
            parts.append(jsonio.dumps(results[lo : lo + API_BATCH_YIELD_EVERY])[1:-1])
        parts.append(b"]}")
        return b"".join(parts)

    async def cancel_order(
        self, client_id: str, order_id: int | None, client_order_id: str | None
    ) -> Answer:
        if order_id is not None:
            self.check_owner(client_id, queries.order_owner(self.service.engine, order_id))
        command = Cancel(client_id=client_id, order_id=order_id, client_order_id=client_order_id)
        self.check_format(command, self.symbols())
        (result,) = await self.submit([command])
        return result_answer(result, client_id)

    async def replace_order(
        self,
        client_id: str,
        order_id: int | None,
        client_order_id: str | None,
        payload: Any,
    ) -> Answer:
        fields = schema.REPLACE.validate(payload)
        engine = self.service.engine
        if order_id is not None:
            self.check_owner(client_id, queries.order_owner(engine, order_id))
            symbol = queries.order_symbol(engine, order_id)
        else:
            assert client_order_id is not None
            symbol = queries.order_symbol_by_client_id(engine, client_id, client_order_id)
        if symbol is not None:
            spec = self.symbol_spec(symbol)
            if spec is not None:
                rejection = check_price_quantity(spec, fields["price"], fields["quantity"])
                if rejection is not None:
                    name = REJECT_FIELD.get(rejection.reason)
                    raise errors.bad_request(
                        _REJECT_CODE.get(rejection.reason, errors.INVALID_VALUE),
                        rejection.message,
                        name,
                    )
        command = CancelReplace(
            client_id=client_id,
            order_id=order_id,
            client_order_id=client_order_id,
            new_client_order_id=fields.get("new_client_order_id") or _new_client_order_id(),
            price=fields["price"],
            quantity=fields["quantity"],
        )
        self.check_format(command, self.symbols())
        (result,) = await self.submit([command])
        return result_answer(result, client_id)

    async def mass_cancel(self, client_id: str, payload: Any) -> Answer:
        fields = schema.MASS_CANCEL.validate(payload)
        symbol = fields.get("symbol")
        if symbol is not None and self.symbol_spec(symbol) is None:
            raise errors.bad_request(errors.UNKNOWN_SYMBOL, f"unknown symbol {symbol!r}", "symbol")
        command = MassCancel(client_id=client_id, symbol=symbol)
        self.check_format(command, self.symbols())
        (result,) = await self.submit([command])
        return result_answer(result, client_id)

    @staticmethod
    def check_owner(client_id: str, owner: str | None) -> None:
        if owner is not None and owner != client_id:
            raise ApiError(
                403, errors.FORBIDDEN, "this order belongs to another client", "order_id"
            )
