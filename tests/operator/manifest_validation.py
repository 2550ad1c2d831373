"""One function to validate any object the project produces (level 3 of proof)."""

from __future__ import annotations

from typing import Any

import chaos_mesh_schemas
import crd_tools
import kubernetes_validate
import prometheus_operator_schemas
from exchange_operator import crd, names

KUBE_VERSION = "1.31"
CR_SCHEMA = crd.open_api_schema()


def errors(obj: dict[str, Any]) -> list[str]:
    """[] when valid. Built-ins: the real Kubernetes OpenAPI schemas (strict);
    ExchangeCluster: the CRD's schema with its defaults and CEL rules;
    ServiceMonitor/PrometheusRule: prometheus_operator_schemas; Chaos Mesh kinds:
    chaos_mesh_schemas (structural)."""
    kind = obj.get("kind", "")
    if obj.get("apiVersion") == names.API_VERSION and kind == names.KIND:
        defaulted = crd_tools.apply_defaults(CR_SCHEMA, obj)
        return crd_tools.schema_errors(CR_SCHEMA, defaulted) or crd_tools.cel_errors(
            CR_SCHEMA, defaulted
        )
    if obj.get("apiVersion") == "chaos-mesh.org/v1alpha1":
        if kind not in chaos_mesh_schemas.SCHEMAS:
            return [f"{kind}: no schema for this Chaos Mesh kind"]
        return crd_tools.schema_errors(chaos_mesh_schemas.SCHEMAS[kind], obj)
    if kind in prometheus_operator_schemas.SCHEMAS:
        return crd_tools.schema_errors(prometheus_operator_schemas.SCHEMAS[kind], obj)
    try:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = ".".join(str(p) for p in error.path)
        return [f"{kind}/{obj.get('metadata', {}).get('name')}: {path}: {error.message}"]
    return []
