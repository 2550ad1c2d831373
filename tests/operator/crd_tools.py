"""What the API server does with an ExchangeCluster before storing it, offline.

- `apply_defaults`: structural defaulting from the CRD schema's `default:`s.
- `schema_errors`: OpenAPI validation with jsonschema against openAPIV3Schema.
- `cel_errors`: every `x-kubernetes-validations` rule evaluated with cel-python,
  transition rules (those using oldSelf) only on update, as Kubernetes does.
  `quantity()` is the Kubernetes CEL library function (not standard CEL), so
  it is provided here, following resource.Quantity's suffixes.
"""

from __future__ import annotations

import copy
import re
from decimal import Decimal
from typing import Any

import celpy
import celpy.celtypes as celtypes
import jsonschema

Schema = dict[str, Any]

_SUFFIXES = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)(?:([eE][+-]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?)$")


def parse_quantity(text: str) -> Decimal:
    match = _QUANTITY.match(text.strip())
    if match is None:
        raise ValueError(f"not a quantity: {text!r}")
    number, exponent, suffix = match.groups()
    value = Decimal(number)
    if exponent:
        return value * Decimal(10) ** int(exponent[1:])
    return value * _SUFFIXES[suffix or ""]


class Quantity(celtypes.StringType):
    """A CEL value standing for a Kubernetes quantity."""

    @property
    def amount(self) -> Decimal:
        return parse_quantity(str(self))


def _quantity(value: celtypes.Value) -> Quantity:
    return Quantity(str(value))


def _compare_to(left: Quantity, right: Quantity) -> celtypes.IntType:
    a, b = left.amount, right.amount
    return celtypes.IntType((a > b) - (a < b))


FUNCTIONS = {"quantity": _quantity, "compareTo": _compare_to}


def apply_defaults(schema: Schema, value: Any) -> Any:
    """Structural defaulting: fill absent properties that have a `default`, recursively."""
    if isinstance(value, dict) and schema.get("type") == "object":
        result = dict(value)
        for key, sub in (schema.get("properties") or {}).items():
            if key not in result and "default" in sub:
                result[key] = copy.deepcopy(sub["default"])
            if key in result:
                result[key] = apply_defaults(sub, result[key])
        return result
    if isinstance(value, list) and "items" in schema:
        return [apply_defaults(schema["items"], item) for item in value]
    return value


def schema_errors(schema: Schema, obj: Any) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return sorted(f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(obj))


_ENV = celpy.Environment()


def _evaluate(rule: str, new: Any, old: Any | None) -> bool:
    program = _ENV.program(_ENV.compile(rule), functions=FUNCTIONS)
    activation: dict[str, Any] = {"self": celpy.json_to_cel(new)}
    if old is not None:
        activation["oldSelf"] = celpy.json_to_cel(old)
    result = program.evaluate(activation)
    if isinstance(result, celpy.CELEvalError):
        raise result
    return bool(result)


def cel_errors(schema: Schema, new: Any, old: Any | None = None, path: str = "") -> list[str]:
    """Messages of the rules that fail for `new` (and `old` on an update)."""
    errors: list[str] = []
    for rule in schema.get("x-kubernetes-validations") or ():
        transition = "oldSelf" in rule["rule"]
        if transition and old is None:
            continue
        if not _evaluate(rule["rule"], new, old if transition else None):
            errors.append(f"{path or '<root>'}: {rule['message']}")
    if isinstance(new, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in new:
                old_sub = old.get(key) if isinstance(old, dict) else None
                errors.extend(cel_errors(sub, new[key], old_sub, f"{path}.{key}"))
    elif isinstance(new, list) and "items" in schema:
        for index, item in enumerate(new):
            errors.extend(cel_errors(schema["items"], item, None, f"{path}[{index}]"))
    return errors


def cel_rules(schema: Schema) -> list[dict[str, Any]]:
    found = list(schema.get("x-kubernetes-validations") or ())
    for sub in (schema.get("properties") or {}).values():
        found.extend(cel_rules(sub))
    if "items" in schema:
        found.extend(cel_rules(schema["items"]))
    return found
