"""engine/events: the records whose ``to_dict`` is spelled out by hand give exactly what
the generic conversion of all their fields gives, keys in the same order (answers are
the same bytes); a field added to a record and forgotten in its ``to_dict`` fails here."""

from __future__ import annotations

import enum
import typing
from typing import Any

import pytest
from exchange_node.engine import events


def _sample(cls: type) -> Any:
    """A record with a distinct value in every field (an enum's last member)."""
    values: dict[str, Any] = {}
    for i, (name, hint) in enumerate(typing.get_type_hints(cls).items()):
        kinds = [k for k in typing.get_args(hint) if k is not type(None)] or [hint]
        kind = kinds[0]
        if isinstance(kind, type) and issubclass(kind, enum.Enum):
            values[name] = list(kind)[-1]
        elif kind is bool:
            values[name] = True
        elif kind is int:
            values[name] = 1000 + i
        else:
            values[name] = f"v{i}"
    return cls(**values)


RECORDS = [
    cls
    for cls in vars(events).values()
    if isinstance(cls, type) and issubclass(cls, events._Record) and cls is not events._Record
]


def test_every_record_type_is_checked() -> None:
    assert {c.__name__ for c in RECORDS} >= {
        "Accepted",
        "Rejected",
        "Fill",
        "Cancelled",
        "Expired",
        "Replaced",
        "BookUpdate",
        "TradingStatus",
    }


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.__name__)
def test_to_dict_is_the_generic_conversion(cls: type) -> None:
    record = _sample(cls)
    fast, generic = record.to_dict(), record.generic_dict()
    assert list(fast.items()) == list(generic.items())
    # Enums by name, nothing left that JSON cannot hold.
    assert not any(isinstance(v, enum.Enum) for v in fast.values())
