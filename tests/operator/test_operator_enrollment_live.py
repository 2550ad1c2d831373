"""The operator signs each real node's CSR; no member key ever leaves its pod.

The real operator, the emulated API server and real `exchange node` processes
(ProcessKubelet): every node makes its member key on its own volume, the operator
fetches the CSR over the admin API (HTTPS, verified with the cluster CA), signs it
with its CA and PUTs the certificate; the three nodes then form a cluster over mTLS.
Nothing the API server stores, and nothing the rendered pods mount, holds a member key.
"""

from __future__ import annotations

import base64
import datetime
import os
import stat
from typing import Any

import pytest
from exchange_node.security import certs
from exchange_node.security.enrollment import ENROLL_DIR
from exchange_operator import names
from test_operator_live_nodes import NAME, NS, Live, live  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow
CLUSTER_ID = f"{NAME}-{NS}"


def _secret_names_mounted(pod_spec: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    for volume in pod_spec.get("volumes") or ():
        if "secret" in volume:
            found.add(volume["secret"]["secretName"])
        for source in (volume.get("projected") or {}).get("sources") or ():
            if "secret" in source:
                found.add(source["secret"]["name"])
    return found


def assert_no_member_key_mounted(
    statefulset: dict[str, Any], secrets: list[dict[str, Any]]
) -> None:
    """No Secret the pod template mounts or references holds a member certificate's key."""
    template = statefulset["spec"]["template"]["spec"]
    referenced = _secret_names_mounted(template)
    for container in template["containers"]:
        for item in container.get("env") or ():
            ref = (item.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                referenced.add(ref["name"])
        env = {e["name"]: e.get("value") for e in container.get("env") or ()}
        assert env.get("EXCHANGE_PEER_TLS_ENROLL") == "true"
        assert "EXCHANGE_PEER_TLS_KEY" not in env and "EXCHANGE_PEER_TLS_CERT" not in env
    by_name = {s["metadata"]["name"]: s for s in secrets}
    for name in referenced:
        assert not name.startswith(f"{NAME}-member-"), f"{name}: a member Secret is mounted"
        data = (by_name.get(name) or {}).get("data") or {}
        for value in data.values():
            pem = base64.b64decode(value)
            if b"BEGIN CERTIFICATE" in pem:
                for cert in pem.split(b"-----END CERTIFICATE-----")[:-1]:
                    full = cert + b"-----END CERTIFICATE-----\n"
                    assert certs.member_identity(full) is None, f"{name} holds a member cert"


async def test_the_operator_signs_each_nodes_csr_and_no_member_key_leaves_its_pod(
    live: Live,  # noqa: F811 - the fixture
) -> None:
    body = {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": NAME},
        "spec": {"replicas": 3},
    }
    path = f"/apis/{names.GROUP}/{names.VERSION}/namespaces/{NS}/{names.PLURAL}"
    async with live.http.post(live.base + path, json=body) as response:
        assert response.status in (200, 201), await response.text()

    def running() -> bool:
        status = live.status()
        members = status.get("members") or []
        return (
            status.get("phase") == "Running"
            and (status.get("certificates") or {}).get("members") == 3
            and len(members) == 3
            and all(m.get("voter") and m.get("healthy") for m in members)
        )

    await live.until("three enrolled members in a running cluster", running)
    shown = live.status()["certificates"]
    assert shown["source"] == "operator" and shown["notAfter"]

    # Each node's key is on its own volume, 0600, and certified for its own id.
    secrets = [s for _, s in live.emulator.live("v1/secrets")]
    stored = b"".join(base64.b64decode(v) for s in secrets for v in (s.get("data") or {}).values())
    ca = live.emulator.get("v1/secrets", NS, names.ca_secret(NAME))
    assert ca is not None
    ca_pem = base64.b64decode(ca["data"][names.TLS_CERT_KEY])
    for ordinal in range(3):
        directory = live.kubelet.workdir / "volumes" / str(ordinal) / ENROLL_DIR
        key = (directory / "tls.key").read_bytes()
        assert stat.S_IMODE(os.stat(directory / "tls.key").st_mode) == 0o600
        chain = (directory / "tls.crt").read_bytes()
        identity = certs.member_identity(chain)
        assert identity is not None and identity[0] == CLUSTER_ID
        certs.check_member_chain(
            chain, key, ca_pem, CLUSTER_ID, identity[1], datetime.datetime.now(datetime.UTC)
        )
        # The API server never saw this key (nor any member key).
        body_b64 = b"".join(key.splitlines()[1:-1])
        assert base64.b64decode(body_b64) not in stored and body_b64 not in stored
    assert not any(s["metadata"]["name"].startswith(f"{NAME}-member-") for s in secrets), (
        "no per-member Secret"
    )

    sts = live.emulator.get("apps/v1/statefulsets", NS, NAME)
    assert sts is not None
    assert_no_member_key_mounted(sts, secrets)
    # And what the kubelet materialised for each pod holds no private key but the
    # listeners' (the HTTP server key every pod shares).
    for ordinal in range(3):
        root = live.kubelet.workdir / f"pod-{ordinal}"
        keys = [p for p in root.rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()]
        assert [p.relative_to(root).as_posix() for p in keys] == [
            f"{names.HTTP_TLS_DIR.lstrip('/')}/{names.TLS_KEY_KEY}"
        ]


def test_the_check_catches_a_mounted_member_secret() -> None:
    """The StatefulSet check itself: a template that mounts a member Secret fails it."""
    ca = certs.generate_ca("t")
    pair = certs.issue_member_cert(ca, CLUSTER_ID, 1)
    secret = {
        "metadata": {"name": f"{NAME}-member-0"},
        "data": {"tls.crt": base64.b64encode(pair.cert_pem).decode()},
    }
    sts = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"env": [{"name": "EXCHANGE_PEER_TLS_ENROLL", "value": "true"}]}
                    ],
                    "volumes": [{"name": "m", "secret": {"secretName": f"{NAME}-member-0"}}],
                }
            }
        }
    }
    with pytest.raises(AssertionError, match="a member Secret is mounted"):
        assert_no_member_key_mounted(sts, [secret])
    secret["metadata"]["name"] = "innocent"
    sts["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"] = "innocent"
    with pytest.raises(AssertionError, match="holds a member cert"):
        assert_no_member_key_mounted(sts, [secret])
