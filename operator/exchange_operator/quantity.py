"""Kubernetes resource quantities ("1Gi", "500M", "1e3") as exact decimals.

The parsing is the `kubernetes` package's (`kubernetes.utils.quantity`), the
project's declared client library; this module only pins the one signature
the operator and the tests use and turns its error into ValueError.
"""

from __future__ import annotations

from decimal import Decimal

from kubernetes.utils.quantity import parse_quantity as _parse


def parse_quantity(text: str | int) -> Decimal:
    try:
        value = _parse(text)  # type: ignore[no-untyped-call]
    except (ValueError, TypeError) as error:
        raise ValueError(f"not a quantity: {text!r}") from error
    return Decimal(value)
