"""The history of a chaos run: one JSON object per line, typed records, a writer and a reader.

A run records, in the order they happen:

* ``meta``: optional, first: what was run (free-form ``info``) and
  ``converge_within_ns``, the time the replicas are promised to agree after
  the last fault ends;
* ``invoke``: a client process starts an operation (``id`` unique in the
  file, monotonic ``time_ns``, ``process``, ``client`` id, ``node``
  addressed, ``op`` and its ``args``);
* ``complete``: that operation's outcome (same ``id``): ``ok`` with the
  answer body, ``fail`` (definite, a 4xx: ``status`` and the error body) or
  ``info`` (indeterminate: a timeout, a connection error, a 5xx); an
  invocation never completed counts as ``info``;
* ``fault``: a fault window (``start_ns``, ``end_ns``; ``end_ns`` null if it
  never ended);
* ``observation``: at the end, one per replica: applied index, state hash,
  and what the API answered for positions, orders and fills.

Operations and their ``args`` (the API's own field names and values):

====================  ===========================================================
``submit``            ``symbol, side, quantity, price, order_type, time_in_force,
                      client_order_id`` (and optionally ``stp``, ``post_only``)
``cancel``            ``order_id`` or ``client_order_id``
``replace``           ``order_id`` or ``client_order_id``; ``new_client_order_id,
                      price, quantity``
``mass_cancel``       ``symbol`` (null: every symbol)
``read_order``        ``order_id`` or ``client_order_id``; ``consistency``
``read_position``     ``consistency``
====================  ===========================================================

``consistency`` is ``linearizable`` or ``stale``. All times are one
process's monotonic clock in nanoseconds, so they compare across records.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

Outcome = Literal["ok", "fail", "info"]
OUTCOMES: tuple[str, ...] = ("ok", "fail", "info")
OPS: tuple[str, ...] = (
    "submit",
    "cancel",
    "replace",
    "mass_cancel",
    "read_order",
    "read_position",
)
WRITE_OPS = frozenset({"submit", "cancel", "replace", "mass_cancel"})
CONSISTENCIES: tuple[str, ...] = ("linearizable", "stale")
SIDES: tuple[str, ...] = ("BUY", "SELL")
ORDER_TYPES: tuple[str, ...] = ("LIMIT", "MARKET")
TIMES_IN_FORCE: tuple[str, ...] = ("GTC", "IOC", "FOK")
STP_MODES: tuple[str, ...] = ("CANCEL_INCOMING", "CANCEL_RESTING", "CANCEL_BOTH")


class HistoryError(ValueError):
    """A history line is malformed; ``line`` is 1-based."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


@dataclass(slots=True, frozen=True)
class Meta:
    info: dict[str, Any] = field(default_factory=dict)
    converge_within_ns: int | None = None
    type: str = "meta"


@dataclass(slots=True, frozen=True)
class Invoke:
    id: int
    time_ns: int
    process: str
    client: str
    node: str
    op: str
    args: dict[str, Any]
    type: str = "invoke"


@dataclass(slots=True, frozen=True)
class Complete:
    id: int
    time_ns: int
    process: str
    outcome: str
    status: int | None = None
    """The HTTP status, when there was one."""
    answer: dict[str, Any] | None = None
    """The answer body: the result for ``ok``, the error body for ``fail``."""
    error: str | None = None
    """For ``info``: what went wrong (timeout, connection refused, 503 ...)."""
    type: str = "complete"


@dataclass(slots=True, frozen=True)
class Fault:
    name: str
    start_ns: int
    end_ns: int | None
    nodes: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)
    type: str = "fault"


@dataclass(slots=True, frozen=True)
class Observation:
    """One replica's state at the end of a run, as its API and admin API answered.

    ``positions``: client -> symbol -> the API's position object. ``orders``:
    the API's order views (every order the workload knew of, plus each
    client's open orders). ``fills``: every fill the clients saw (their
    ``orders`` WebSocket channels and answers), each an API fill event with
    ``client_id`` added. A field is null when it was not read on this replica;
    ``fills_complete`` is false when a channel reported a gap.
    ``converge_within_ns``: the time the replicas were given to agree after the
    last fault ended (the run's promise; the ``meta`` record may state it instead).
    """

    node: str
    time_ns: int
    applied_index: int
    state_hash: str
    positions: dict[str, dict[str, dict[str, Any]]] | None = None
    orders: list[dict[str, Any]] | None = None
    fills: list[dict[str, Any]] | None = None
    fills_complete: bool = True
    converge_within_ns: int | None = None
    type: str = "observation"


Record = Meta | Invoke | Complete | Fault | Observation


def record_to_dict(record: Record) -> dict[str, Any]:
    return asdict(record)


# --------------------------------------------------------------------------- writer


class HistoryWriter:
    """Appends records as JSON lines, one flushed line each, so a crash leaves a valid prefix.

    Safe to share between threads; ``invoke`` hands out the operation ids.
    """

    def __init__(self, out: IO[str] | str | Path) -> None:
        if isinstance(out, str | Path):
            self._file: IO[str] = open(out, "a", encoding="utf-8")  # noqa: SIM115
            self._owned = True
        else:
            self._file = out
            self._owned = False
        self._lock = threading.Lock()
        self._next_id = 0

    def write(self, record: Record) -> None:
        line = json.dumps(record_to_dict(record), separators=(",", ":"), allow_nan=False)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def meta(self, info: dict[str, Any], converge_within_ns: int | None = None) -> None:
        self.write(Meta(info, converge_within_ns))

    def invoke(
        self,
        process: str,
        client: str,
        node: str,
        op: str,
        args: Mapping[str, Any],
        time_ns: int | None = None,
    ) -> int:
        with self._lock:
            op_id = self._next_id
            self._next_id += 1
        now = time.monotonic_ns() if time_ns is None else time_ns
        self.write(Invoke(op_id, now, process, client, node, op, dict(args)))
        return op_id

    def complete(
        self,
        op_id: int,
        process: str,
        outcome: Outcome,
        *,
        status: int | None = None,
        answer: dict[str, Any] | None = None,
        error: str | None = None,
        time_ns: int | None = None,
    ) -> None:
        now = time.monotonic_ns() if time_ns is None else time_ns
        self.write(Complete(op_id, now, process, outcome, status, answer, error))

    def fault(self, fault: Fault) -> None:
        self.write(fault)

    def observation(self, observation: Observation) -> None:
        self.write(observation)

    def close(self) -> None:
        if self._owned:
            self._file.close()

    def __enter__(self) -> HistoryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- reader


@dataclass(slots=True)
class Operation:
    """An invocation paired with its completion (``complete`` None: never completed, info)."""

    invoke: Invoke
    complete: Complete | None

    @property
    def id(self) -> int:
        return self.invoke.id

    @property
    def op(self) -> str:
        return self.invoke.op

    @property
    def args(self) -> dict[str, Any]:
        return self.invoke.args

    @property
    def client(self) -> str:
        return self.invoke.client

    @property
    def outcome(self) -> str:
        return "info" if self.complete is None else self.complete.outcome

    @property
    def answer(self) -> dict[str, Any] | None:
        return None if self.complete is None else self.complete.answer

    @property
    def status(self) -> int | None:
        return None if self.complete is None else self.complete.status

    @property
    def start_ns(self) -> int:
        return self.invoke.time_ns

    @property
    def end_ns(self) -> int | None:
        """Completion time; None for an indeterminate operation (it may take effect any time)."""
        if self.complete is None or self.complete.outcome == "info":
            return None
        return self.complete.time_ns

    def to_dict(self) -> dict[str, Any]:
        """A compact form for reports: what was asked, of whom, and what came back."""
        out: dict[str, Any] = {
            "id": self.invoke.id,
            "process": self.invoke.process,
            "client": self.invoke.client,
            "node": self.invoke.node,
            "op": self.invoke.op,
            "args": self.invoke.args,
            "invoke_ns": self.invoke.time_ns,
            "outcome": self.outcome,
        }
        if self.complete is not None:
            out["complete_ns"] = self.complete.time_ns
            if self.complete.status is not None:
                out["status"] = self.complete.status
            if self.complete.answer is not None:
                out["answer"] = self.complete.answer
            if self.complete.error is not None:
                out["error"] = self.complete.error
        return out


@dataclass(slots=True)
class History:
    meta: Meta | None
    operations: list[Operation]
    """In invocation order."""
    faults: list[Fault]
    observations: list[Observation]


def _need(data: Mapping[str, Any], name: str, kinds: type | tuple[type, ...], line: int) -> Any:
    if name not in data:
        raise HistoryError(line, f"missing field {name!r}")
    value = data[name]
    if not _is(value, kinds):
        raise HistoryError(line, f"field {name!r} has the wrong type: {value!r}")
    return value


def _opt(data: Mapping[str, Any], name: str, kinds: type | tuple[type, ...], line: int) -> Any:
    value = data.get(name)
    if value is not None and not _is(value, kinds):
        raise HistoryError(line, f"field {name!r} has the wrong type: {value!r}")
    return value


def _is(value: Any, kinds: type | tuple[type, ...]) -> bool:
    # bool is an int in Python; never where a number is meant.
    if isinstance(value, bool) and kinds is not bool and bool not in _tuple(kinds):
        return False
    return isinstance(value, kinds)


def _tuple(kinds: type | tuple[type, ...]) -> tuple[type, ...]:
    return kinds if isinstance(kinds, tuple) else (kinds,)


def _no_extra(data: Mapping[str, Any], allowed: Iterable[str], line: int, what: str) -> None:
    extra = sorted(set(data) - set(allowed))
    if extra:
        raise HistoryError(line, f"unknown field {extra[0]!r} in {what}")


def _enum(args: Mapping[str, Any], name: str, values: tuple[str, ...], line: int) -> None:
    value = args.get(name)
    if value not in values:
        raise HistoryError(line, f"args.{name} must be one of {', '.join(values)}: got {value!r}")


def _positive(args: Mapping[str, Any], name: str, line: int, minimum: int = 1) -> None:
    value = args.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise HistoryError(line, f"args.{name} must be an integer >= {minimum}: got {value!r}")


def _text(args: Mapping[str, Any], name: str, line: int) -> None:
    value = args.get(name)
    if not isinstance(value, str) or not value:
        raise HistoryError(line, f"args.{name} must be a non-empty string: got {value!r}")


def _order_ref(args: Mapping[str, Any], line: int) -> None:
    if ("order_id" in args) == ("client_order_id" in args):
        raise HistoryError(
            line, "args must name the order by exactly one of order_id, client_order_id"
        )
    if "order_id" in args:
        _positive(args, "order_id", line, minimum=0)
    else:
        _text(args, "client_order_id", line)


_ARGS: dict[str, tuple[str, ...]] = {
    "submit": (
        "symbol",
        "side",
        "quantity",
        "price",
        "order_type",
        "time_in_force",
        "client_order_id",
        "stp",
        "post_only",
    ),
    "cancel": ("order_id", "client_order_id"),
    "replace": ("order_id", "client_order_id", "new_client_order_id", "price", "quantity"),
    "mass_cancel": ("symbol",),
    "read_order": ("order_id", "client_order_id", "consistency"),
    "read_position": ("consistency",),
}


def validate_args(op: str, args: Mapping[str, Any], line: int) -> None:
    """Raise ``HistoryError`` naming the field when ``args`` do not fit ``op``."""
    if op not in _ARGS:
        raise HistoryError(line, f"op must be one of {', '.join(OPS)}: got {op!r}")
    _no_extra(args, _ARGS[op], line, f"args of {op}")
    if op == "submit":
        _text(args, "symbol", line)
        _text(args, "client_order_id", line)
        _enum(args, "side", SIDES, line)
        _enum(args, "order_type", ORDER_TYPES, line)
        _enum(args, "time_in_force", TIMES_IN_FORCE, line)
        _positive(args, "quantity", line)
        _positive(args, "price", line, minimum=0)
        if "stp" in args:
            _enum(args, "stp", STP_MODES, line)
        if "post_only" in args and not isinstance(args["post_only"], bool):
            raise HistoryError(line, "args.post_only must be true or false")
    elif op in ("cancel", "read_order"):
        _order_ref(args, line)
        if op == "read_order":
            _enum(args, "consistency", CONSISTENCIES, line)
    elif op == "replace":
        _order_ref(args, line)
        _text(args, "new_client_order_id", line)
        _positive(args, "price", line)
        _positive(args, "quantity", line)
    elif op == "mass_cancel":
        symbol = args.get("symbol")
        if symbol is not None and (not isinstance(symbol, str) or not symbol):
            raise HistoryError(line, f"args.symbol must be a non-empty string or null: {symbol!r}")
    else:
        _enum(args, "consistency", CONSISTENCIES, line)


_ORDER_VIEW: dict[str, type | tuple[type, ...]] = {
    "order_id": int,
    "client_id": str,
    "client_order_id": str,
    "symbol": str,
    "side": str,
    "price": int,
    "quantity": int,
    "filled_quantity": int,
    "leaves_quantity": int,
    "status": str,
}
_FILL: dict[str, type | tuple[type, ...]] = {
    "client_id": str,
    "trade_id": int,
    "order_id": int,
    "symbol": str,
    "price": int,
    "quantity": int,
    "aggressor_side": str,
    "liquidity": str,
}
_POSITION_NUMBERS = ("quantity", "bought_quantity", "sold_quantity")


def _validate_observation(observation: Observation, line: int) -> None:
    """The checker relies on these shapes; the workload records what the API answered."""

    def each(items: list[Any], what: str, shape: dict[str, type | tuple[type, ...]]) -> None:
        for n, item in enumerate(items):
            if not isinstance(item, dict):
                raise HistoryError(line, f"{what}[{n}] must be an object")
            for name, kinds in shape.items():
                if not _is(item.get(name), kinds):
                    raise HistoryError(
                        line,
                        f"{what}[{n}].{name} is missing or has the wrong type: {item.get(name)!r}",
                    )

    each(observation.orders or [], "orders", _ORDER_VIEW)
    each(observation.fills or [], "fills", _FILL)
    for n, fill in enumerate(observation.fills or []):
        if fill["liquidity"] not in ("MAKER", "TAKER") or fill["aggressor_side"] not in SIDES:
            raise HistoryError(
                line, f"fills[{n}]: liquidity or aggressor_side is not a known value"
            )
    for client, symbols in (observation.positions or {}).items():
        if not isinstance(symbols, dict):
            raise HistoryError(line, f"positions.{client} must be an object of symbols")
        for symbol, position in symbols.items():
            if not isinstance(position, dict) or not all(
                _is(position.get(name, 0), int) for name in _POSITION_NUMBERS
            ):
                raise HistoryError(
                    line, f"positions.{client}.{symbol} must be an object of integer quantities"
                )


def _parse(data: Any, line: int) -> Record:
    if not isinstance(data, dict):
        raise HistoryError(line, "a record must be a JSON object")
    kind = data.get("type")
    if kind == "invoke":
        _no_extra(data, Invoke.__slots__, line, "invoke")
        record = Invoke(
            _need(data, "id", int, line),
            _need(data, "time_ns", int, line),
            _need(data, "process", str, line),
            _need(data, "client", str, line),
            _need(data, "node", str, line),
            _need(data, "op", str, line),
            _need(data, "args", dict, line),
        )
        validate_args(record.op, record.args, line)
        return record
    if kind == "complete":
        _no_extra(data, Complete.__slots__, line, "complete")
        outcome = _need(data, "outcome", str, line)
        if outcome not in OUTCOMES:
            raise HistoryError(line, f"outcome must be one of ok, fail, info: got {outcome!r}")
        complete = Complete(
            _need(data, "id", int, line),
            _need(data, "time_ns", int, line),
            _need(data, "process", str, line),
            outcome,
            _opt(data, "status", int, line),
            _opt(data, "answer", dict, line),
            _opt(data, "error", str, line),
        )
        if outcome == "ok" and complete.answer is None:
            raise HistoryError(line, "an ok completion needs its answer")
        return complete
    if kind == "fault":
        _no_extra(data, Fault.__slots__, line, "fault")
        fault = Fault(
            _need(data, "name", str, line),
            _need(data, "start_ns", int, line),
            _opt(data, "end_ns", int, line),
            _opt(data, "nodes", list, line) or [],
            _opt(data, "detail", dict, line) or {},
        )
        if fault.end_ns is not None and fault.end_ns < fault.start_ns:
            raise HistoryError(line, "fault end_ns is before its start_ns")
        return fault
    if kind == "observation":
        _no_extra(data, Observation.__slots__, line, "observation")
        fills_complete = data.get("fills_complete", True)
        if not isinstance(fills_complete, bool):
            raise HistoryError(line, "field 'fills_complete' must be true or false")
        observation = Observation(
            _need(data, "node", str, line),
            _need(data, "time_ns", int, line),
            _need(data, "applied_index", int, line),
            _need(data, "state_hash", str, line),
            _opt(data, "positions", dict, line),
            _opt(data, "orders", list, line),
            _opt(data, "fills", list, line),
            fills_complete,
            _opt(data, "converge_within_ns", int, line),
        )
        _validate_observation(observation, line)
        return observation
    if kind == "meta":
        _no_extra(data, Meta.__slots__, line, "meta")
        return Meta(
            _opt(data, "info", dict, line) or {}, _opt(data, "converge_within_ns", int, line)
        )
    raise HistoryError(line, f"unknown record type {kind!r}")


def parse_lines(lines: Iterable[str]) -> Iterator[tuple[int, Record]]:
    """(line number, record) for each non-blank line; ``HistoryError`` names the first bad line."""
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise HistoryError(number, f"not JSON: {exc.msg} at column {exc.colno}") from None
        yield number, _parse(data, number)


def read_history(source: str | Path | Iterable[str]) -> History:
    """Parse and pair a history; raise ``HistoryError`` for the first malformed line."""
    if isinstance(source, str | Path):
        with open(source, encoding="utf-8") as handle:
            return read_history(list(handle))
    meta: Meta | None = None
    invocations: dict[int, Operation] = {}
    order: list[Operation] = []
    outstanding: dict[str, int] = {}
    faults: list[Fault] = []
    observations: list[Observation] = []
    for line, record in parse_lines(source):
        if isinstance(record, Invoke):
            if record.id in invocations:
                raise HistoryError(line, f"operation id {record.id} is invoked twice")
            busy = outstanding.get(record.process)
            if busy is not None:
                raise HistoryError(
                    line,
                    f"process {record.process!r} invokes while operation {busy} is outstanding "
                    "(a process is sequential: one operation at a time)",
                )
            operation = Operation(record, None)
            invocations[record.id] = operation
            order.append(operation)
            outstanding[record.process] = record.id
        elif isinstance(record, Complete):
            invoked = invocations.get(record.id)
            if invoked is None:
                raise HistoryError(line, f"completion of operation {record.id} never invoked")
            operation = invoked
            if operation.complete is not None:
                raise HistoryError(line, f"operation {record.id} completes twice")
            if record.process != operation.invoke.process:
                raise HistoryError(
                    line,
                    f"operation {record.id} was invoked by {operation.invoke.process!r}, "
                    f"completed by {record.process!r}",
                )
            if record.time_ns < operation.invoke.time_ns:
                raise HistoryError(line, f"operation {record.id} completes before it was invoked")
            operation.complete = record
            outstanding.pop(record.process, None)
        elif isinstance(record, Fault):
            faults.append(record)
        elif isinstance(record, Observation):
            observations.append(record)
        else:
            if meta is not None:
                raise HistoryError(line, "a second meta record")
            meta = record
    return History(meta, order, faults, observations)
