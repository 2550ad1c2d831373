"""JSON schemas for the Chaos Mesh kinds the project produces (chaos-mesh.org/v1alpha1).

Written for these tests from Chaos Mesh 2.x's API reference (PodChaos, NetworkChaos,
TimeChaos, IOChaos, StressChaos): structural, covering the fields the project uses,
typed, with the enums the API declares (actions, modes, directions), and unknown
fields rejected so a typo fails. Not the upstream CRDs (which are not vendored here):
a field the real schema has but we never write is refused, which errs on our side.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

DURATION = r"^-?([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"
PERCENT = r"^(100|[0-9]{1,2})(\.[0-9]+)?$"
MODES = ["one", "all", "fixed", "fixed-percent", "random-max-percent"]

_strings = {"type": "array", "items": {"type": "string"}}
_string_map = {"type": "object", "additionalProperties": {"type": "string"}}
SELECTOR: Schema = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "namespaces": _strings,
        "labelSelectors": _string_map,
        "annotationSelectors": _string_map,
        "fieldSelectors": _string_map,
        "nodeSelectors": _string_map,
        "nodes": _strings,
        "podPhaseSelectors": _strings,
        "pods": {"type": "object", "additionalProperties": _strings},
    },
}
_COMMON: Schema = {
    "mode": {"type": "string", "enum": MODES},
    "value": {"type": "string"},
    "selector": SELECTOR,
    "duration": {"type": "string", "pattern": DURATION},
    "containerNames": _strings,
}


def _kind(kind: str, spec_props: Schema, required: list[str]) -> Schema:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "chaos-mesh.org/v1alpha1"},
            "kind": {"const": kind},
            "metadata": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                    "namespace": {"type": "string"},
                    "labels": _string_map,
                    "annotations": _string_map,
                },
            },
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["mode", "selector", *required],
                "properties": {**_COMMON, **spec_props},
            },
        },
    }


_percent = {"type": "string", "pattern": PERCENT}
SCHEMAS: dict[str, Schema] = {
    "PodChaos": _kind(
        "PodChaos",
        {
            "action": {"enum": ["pod-kill", "pod-failure", "container-kill"]},
            "gracePeriod": {"type": "integer", "minimum": 0},
        },
        ["action"],
    ),
    "NetworkChaos": _kind(
        "NetworkChaos",
        {
            "action": {
                "enum": ["netem", "delay", "loss", "duplicate", "corrupt", "partition", "bandwidth"]
            },
            "direction": {"enum": ["to", "from", "both"]},
            "target": {
                "type": "object",
                "additionalProperties": False,
                "required": ["mode", "selector"],
                "properties": {
                    "mode": {"enum": MODES},
                    "value": {"type": "string"},
                    "selector": SELECTOR,
                },
            },
            "externalTargets": _strings,
            "delay": {
                "type": "object",
                "additionalProperties": False,
                "required": ["latency"],
                "properties": {
                    "latency": {"type": "string", "pattern": DURATION},
                    "jitter": {"type": "string", "pattern": DURATION},
                    "correlation": _percent,
                },
            },
            "loss": {
                "type": "object",
                "additionalProperties": False,
                "required": ["loss"],
                "properties": {"loss": _percent, "correlation": _percent},
            },
            "corrupt": {
                "type": "object",
                "additionalProperties": False,
                "required": ["corrupt"],
                "properties": {"corrupt": _percent, "correlation": _percent},
            },
            "bandwidth": {
                "type": "object",
                "additionalProperties": False,
                "required": ["rate", "limit", "buffer"],
                "properties": {
                    "rate": {"type": "string", "pattern": r"^[0-9]+(bps|kbps|mbps|gbps|tbps)$"},
                    "limit": {"type": "integer", "minimum": 1},
                    "buffer": {"type": "integer", "minimum": 1},
                },
            },
        },
        ["action"],
    ),
    "TimeChaos": _kind(
        "TimeChaos",
        {
            "timeOffset": {"type": "string", "pattern": DURATION},
            "clockIds": {
                "type": "array",
                "items": {"enum": ["CLOCK_REALTIME", "CLOCK_MONOTONIC", "CLOCK_BOOTTIME"]},
            },
        },
        ["timeOffset"],
    ),
    "IOChaos": _kind(
        "IOChaos",
        {
            "action": {"enum": ["latency", "fault", "attrOverride", "mistake"]},
            "volumePath": {"type": "string"},
            "path": {"type": "string"},
            "delay": {"type": "string", "pattern": DURATION},
            "errno": {"type": "integer", "minimum": 1},
            "percent": {"type": "integer", "minimum": 0, "maximum": 100},
            "methods": {
                "type": "array",
                "items": {
                    "enum": [
                        "read",
                        "write",
                        "fsync",
                        "flush",
                        "open",
                        "create",
                        "rename",
                        "unlink",
                        "fsyncdir",
                        "mkdir",
                        "setattr",
                        "getattr",
                    ]
                },
            },
        },
        ["action", "volumePath"],
    ),
    "StressChaos": _kind(
        "StressChaos",
        {
            "stressors": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "cpu": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["workers"],
                        "properties": {
                            "workers": {"type": "integer", "minimum": 1},
                            "load": {"type": "integer", "minimum": 0, "maximum": 100},
                        },
                    },
                    "memory": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["workers"],
                        "properties": {
                            "workers": {"type": "integer", "minimum": 1},
                            "size": {"type": "string", "pattern": r"^[0-9]+(B|KB|MB|GB|%)$"},
                        },
                    },
                },
            },
        },
        ["stressors"],
    ),
}
