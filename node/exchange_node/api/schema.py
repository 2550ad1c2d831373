"""Request body schemas: one declaration gives both the validator and the OpenAPI schema.

Validators are built once (at import) and check, in order: the body is an
object, no unknown fields, required fields present, each value's JSON type
(a boolean is never an integer), then ranges, enums and patterns. The first
problem raises ``ApiError`` 400 naming the field by its JSON path.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import errors
from .errors import ApiError

INT64_MAX = (1 << 63) - 1
UINT64_MAX = (1 << 64) - 1

_MISSING: Any = object()


def json_type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    kind: str
    """``integer``, ``string``, ``boolean``, ``enum`` or ``array`` (of ``items``)."""
    required: bool = False
    default: Any = _MISSING
    minimum: int | None = None
    maximum: int | None = None
    enum: tuple[str, ...] = ()
    pattern: str | None = None
    min_length: int | None = None
    max_length: int | None = None
    items: ObjectSchema | None = None
    min_items: int = 0
    max_items: int | None = None
    nullable: bool = False
    description: str = ""

    def openapi(self) -> dict[str, Any]:
        out: dict[str, Any]
        if self.kind == "enum":
            out = {"type": "string", "enum": list(self.enum)}
        elif self.kind == "array":
            assert self.items is not None
            out = {"type": "array", "items": self.items.openapi(), "minItems": self.min_items}
            if self.max_items is not None:
                out["maxItems"] = self.max_items
        else:
            out = {"type": self.kind}
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        if self.pattern is not None:
            out["pattern"] = self.pattern
        if self.min_length is not None:
            out["minLength"] = self.min_length
        if self.max_length is not None:
            out["maxLength"] = self.max_length
        if self.default is not _MISSING:
            out["default"] = self.default
        if self.nullable:
            out["type"] = [out["type"], "null"]
        if self.description:
            out["description"] = self.description
        return out


Checker = Callable[[Any, str], Any]


def _passthrough(value: Any, path: str) -> Any:
    # Arrays are checked by ``validate_array`` with the limit in force.
    return value


def _field_checker(spec: Field) -> Checker:
    kind = spec.kind
    minimum, maximum = spec.minimum, spec.maximum
    enum = frozenset(spec.enum)
    enum_text = ", ".join(spec.enum)
    regex = re.compile(spec.pattern) if spec.pattern else None
    min_length, max_length = spec.min_length, spec.max_length
    nullable = spec.nullable

    def bad_type(value: Any, path: str, expected: str) -> ApiError:
        return errors.bad_request(
            errors.INVALID_TYPE,
            f"{path} must be {expected}, got {json_type_name(value)}",
            path,
        )

    def check(value: Any, path: str) -> Any:
        if value is None and nullable:
            return None
        if kind == "integer":
            if type(value) is not int:
                raise bad_type(value, path, "an integer")
            if minimum is not None and value < minimum:
                raise errors.bad_request(
                    errors.INVALID_VALUE, f"{path} must be >= {minimum}, got {value}", path
                )
            if maximum is not None and value > maximum:
                raise errors.bad_request(
                    errors.INVALID_VALUE, f"{path} must be <= {maximum}, got {value}", path
                )
            return value
        if kind == "string" or kind == "enum":
            if type(value) is not str:
                raise bad_type(value, path, "a string")
            if kind == "enum":
                if value not in enum:
                    raise errors.bad_request(
                        errors.INVALID_VALUE,
                        f"{path} must be one of {enum_text}, got {value[:40]!r}",
                        path,
                    )
                return value
            if min_length is not None and len(value) < min_length:
                raise errors.bad_request(
                    errors.INVALID_VALUE, f"{path} must have at least {min_length} characters", path
                )
            if max_length is not None and len(value) > max_length:
                raise errors.bad_request(
                    errors.INVALID_VALUE, f"{path} must have at most {max_length} characters", path
                )
            if regex is not None and regex.fullmatch(value) is None:
                raise errors.bad_request(
                    errors.INVALID_VALUE, f"{path} must match {regex.pattern}", path
                )
            return value
        if kind == "boolean":
            if type(value) is not bool:
                raise bad_type(value, path, "a boolean")
            return value
        raise AssertionError(f"unsupported field kind {kind}")

    return check


@dataclass(slots=True)
class ObjectSchema:
    name: str
    fields: list[Field]
    description: str = ""
    _checks: list[tuple[str, bool, Any, Checker]] = field(default_factory=list, repr=False)
    _names: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        self._names = frozenset(f.name for f in self.fields)
        self._checks = [
            (
                f.name,
                f.required,
                f.default,
                _passthrough if f.kind == "array" else _field_checker(f),
            )
            for f in self.fields
        ]

    def openapi(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "object",
            "additionalProperties": False,
            "properties": {f.name: f.openapi() for f in self.fields},
        }
        required = [f.name for f in self.fields if f.required]
        if required:
            out["required"] = required
        if self.description:
            out["description"] = self.description
        return out

    def validate(self, value: Any, prefix: str = "") -> dict[str, Any]:
        """A new dict of the known fields with defaults filled in, or raise 400."""
        if type(value) is not dict:
            where = prefix or "body"
            raise errors.bad_request(
                errors.INVALID_TYPE,
                f"{where} must be a JSON object, got {json_type_name(value)}",
                prefix or None,
            )
        if not self._names.issuperset(value):
            unknown = sorted(k for k in value if k not in self._names)[0]
            path = f"{prefix}.{unknown}" if prefix else unknown
            raise errors.bad_request(errors.UNKNOWN_FIELD, f"unknown field {path!r}", path)
        out: dict[str, Any] = {}
        for name, required, default, check in self._checks:
            raw = value.get(name, _MISSING)
            if raw is _MISSING:
                if required:
                    path = f"{prefix}.{name}" if prefix else name
                    raise errors.bad_request(
                        errors.MISSING_FIELD, f"missing required field {path!r}", path
                    )
                if default is not _MISSING:
                    out[name] = default
                continue
            out[name] = check(raw, f"{prefix}.{name}" if prefix else name)
        return out


def validate_array(
    value: Any, path: str, item: ObjectSchema, max_items: int
) -> list[dict[str, Any]]:
    checked = check_array(value, path, max_items)
    return [item.validate(entry, f"{path}[{i}]") for i, entry in enumerate(checked)]


def check_array(value: Any, path: str, max_items: int) -> list[Any]:
    """``value`` as a non-empty array of at most ``max_items`` (400, or 413 when longer);
    its items are left to the caller (a batch checks them in slices, see orders.py)."""
    if type(value) is not list:
        raise errors.bad_request(
            errors.INVALID_TYPE, f"{path} must be an array, got {json_type_name(value)}", path
        )
    if not value:
        raise errors.bad_request(errors.INVALID_VALUE, f"{path} must not be empty", path)
    if len(value) > max_items:
        raise ApiError(
            413,
            errors.BATCH_TOO_LARGE,
            f"{path} has {len(value)} items; the limit is {max_items}",
            path,
        )
    return value


# --------------------------------------------------------------------------- the bodies

CLIENT_ORDER_ID_PATTERN = r"^[A-Za-z0-9._:~-]{1,64}$"
CLIENT_ORDER_ID_RE = re.compile(CLIENT_ORDER_ID_PATTERN)
SYMBOL_PATTERN = r"^[A-Za-z0-9._:/-]{1,32}$"


def _client_order_id(name: str, description: str) -> Field:
    return Field(name, "string", pattern=CLIENT_ORDER_ID_PATTERN, description=description)


ORDER_FIELDS = [
    _client_order_id(
        "client_order_id",
        "Your id for the order, unique among your live orders (1-64 of A-Z a-z 0-9 . _ : ~ -). "
        "Re-sending the same id returns the original result instead of a second order. "
        "Generated when absent (and returned in the result's events).",
    ),
    Field(
        "symbol", "string", required=True, pattern=SYMBOL_PATTERN, description="A listed symbol."
    ),
    Field("side", "enum", required=True, enum=("BUY", "SELL")),
    Field("order_type", "enum", enum=("LIMIT", "MARKET"), default="LIMIT"),
    Field("time_in_force", "enum", enum=("GTC", "IOC", "FOK"), default="GTC"),
    Field(
        "price",
        "integer",
        minimum=0,
        maximum=INT64_MAX,
        description="Limit price in integer price units, a positive multiple of the symbol's "
        "tick_size. Required for LIMIT; absent or 0 for MARKET.",
    ),
    Field(
        "quantity",
        "integer",
        required=True,
        minimum=1,
        maximum=INT64_MAX,
        description="A positive multiple of the symbol's lot_size.",
    ),
    Field(
        "post_only",
        "boolean",
        default=False,
        description="Reject instead of taking liquidity (GTC LIMIT only).",
    ),
    Field(
        "stp",
        "enum",
        enum=("CANCEL_INCOMING", "CANCEL_RESTING", "CANCEL_BOTH"),
        default="CANCEL_INCOMING",
        description="Self-trade prevention when this order would match your own resting order.",
    ),
]

NEW_ORDER = ObjectSchema("NewOrder", ORDER_FIELDS, "One new order.")

REPLACE = ObjectSchema(
    "Replace",
    [
        _client_order_id(
            "new_client_order_id",
            "The order's client order id after the replace (generated when absent).",
        ),
        Field(
            "price",
            "integer",
            required=True,
            minimum=1,
            maximum=INT64_MAX,
            description="New limit price (a positive multiple of the tick size).",
        ),
        Field(
            "quantity",
            "integer",
            required=True,
            minimum=1,
            maximum=INT64_MAX,
            description="New TOTAL quantity (filled plus open); if not above the filled "
            "quantity the order is cancelled.",
        ),
    ],
    "Cancel-replace: new price and total quantity for a live order.",
)

MASS_CANCEL = ObjectSchema(
    "MassCancel",
    [
        Field(
            "symbol",
            "string",
            pattern=SYMBOL_PATTERN,
            nullable=True,
            description="Cancel only in this symbol; absent or null: in every symbol.",
        )
    ],
    "Cancel all of your live orders (in one symbol or all).",
)

BATCH_ITEMS_FIELD = "orders"

BATCH = ObjectSchema(
    "Batch",
    [
        Field(
            BATCH_ITEMS_FIELD,
            "array",
            required=True,
            items=NEW_ORDER,
            min_items=1,
            description=(
                "New orders, applied in this order; as one log entry unless the key is at its "
                "rate limit (then in pieces of 100 spaced at its rate)."
            ),
        )
    ],
    "A batch of new orders.",
)

WS_CANCEL = ObjectSchema(
    "WsCancel",
    [
        Field("order_id", "integer", minimum=1, maximum=UINT64_MAX),
        _client_order_id("client_order_id", "The client order id of the order to cancel."),
    ],
)
