"""What the API server does with an ExchangeCluster before storing it, offline.

- `apply_defaults`: structural defaulting from the CRD schema's `default:`s.
- `schema_errors`: OpenAPI validation with jsonschema against openAPIV3Schema.
- `cel_errors`: every `x-kubernetes-validations` rule evaluated with cel-python,
  transition rules (those using oldSelf) only on update, as Kubernetes does.
  `quantity()` is the Kubernetes CEL library function (not standard CEL), so
  it is provided here, following resource.Quantity's suffixes.

`parse_quantity` is re-exported for the tests.
"""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import celpy
import celpy.celtypes as celtypes
import jsonschema
from exchange_operator.quantity import parse_quantity

Schema = dict[str, Any]
__all__ = ["apply_defaults", "cel_errors", "cel_rules", "parse_quantity", "schema_errors"]


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
