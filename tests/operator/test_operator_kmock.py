"""The real kopf operator against KMock's emulated API server (level 2 of proof).

The harness plays the API server, the StatefulSet controller, the garbage
collector and the kubelet; a RaftWorld model stands behind the pods and
answers the node's admin API, so the operator's status, scale and upgrade
logic runs end to end. Waits poll for a state with a generous deadline that
only guards against hangs; nothing asserts on timing.
"""

from __future__ import annotations

import asyncio
import datetime
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import api_rules
import kmock
import kopf
import pytest
from cryptography import x509
from exchange_operator import crd, names
from exchange_operator.handlers import OperatorConfig, register
from kmock_harness import ClusterEmulator, WorldKubelet, drive, dump, secret_value
from raft_world import RaftWorld

NS = "trading"
NAME = "xc"
CR_PATH = f"/apis/{names.GROUP}/{names.VERSION}/namespaces/{NS}/{names.PLURAL}"
DEADLINE = 60.0


@dataclass
class Env:
    emulator: ClusterEmulator
    world: RaftWorld
    http: aiohttp.ClientSession
    base: str
    # Added to the operator's (and the modelled nodes') clock: certificates see the future.
    clock_offset: list[datetime.timedelta]
    kubelet: WorldKubelet | None = None
    # Stops the operator (its Deployment deleted): nothing removes its finalizers then.
    stop_operator: Callable[[], Awaitable[None]] | None = None

    def cr(self) -> dict[str, Any] | None:
        return self.emulator.get(f"{names.GROUP}/{names.VERSION}/{names.PLURAL}", NS, NAME)

    def obj(self, res: str, name: str) -> dict[str, Any] | None:
        return self.emulator.get(res, NS, name)

    def pods(self) -> list[dict[str, Any]]:
        return sorted(
            (p for _, p in self.emulator.live("v1/pods")), key=lambda p: p["metadata"]["name"]
        )

    def condition(self, kind: str) -> str | None:
        cr = self.cr() or {}
        for cond in (cr.get("status") or {}).get("conditions") or ():
            if cond["type"] == kind:
                return str(cond["status"])
        return None

    async def request(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        async with self.http.request(method, self.base + path, json=body, **kw) as response:
            return response.status, await response.json(content_type=None)

    async def create(self, spec: dict[str, Any]) -> tuple[int, Any]:
        body = {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "metadata": {"name": NAME},
            "spec": spec,
        }
        return await self.request("POST", CR_PATH, body)

    async def patch_spec(self, spec: dict[str, Any], sub: str = "") -> tuple[int, Any]:
        headers = {"Content-Type": "application/merge-patch+json"}
        return await self.request(
            "PATCH", f"{CR_PATH}/{NAME}{sub}", {"spec": spec}, headers=headers
        )

    async def until(self, what: str, predicate: Callable[[], bool]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE
        while not predicate():
            if loop.time() > deadline:
                raise AssertionError(
                    f"never reached: {what}\nstatus: {dump((self.cr() or {}).get('status'))}\n"
                    f"world: {self.world.log}\nerrors: {self.emulator.errors[-3:]}"
                )
            await asyncio.sleep(0.05)


def fast_kopf(settings: kopf.OperatorSettings) -> None:
    settings.queueing.idle_timeout = 0.5


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    world = RaftWorld(cluster=NAME, namespace=NS)
    emulator = ClusterEmulator()
    async with emulator, kmock.Server(emulator) as server:
        emulator.add_namespace(NS)
        emulator.install_crd(crd.build_crd())
        emulator.declare_prometheus_operator()
        # The operator gets exactly the RBAC the chart renders for this namespace.
        rbac, user = api_rules.chart_rbac({"operator": {"watchNamespaces": [NS]}})
        emulator.authorize(rbac, {api_rules.OPERATOR_TOKEN: user})
        offset = [datetime.timedelta(0)]
        kubelet = WorldKubelet(
            world,
            token=lambda: secret_value(emulator, NS, names.admin_secret(NAME), "token"),
            ca=lambda: secret_value(emulator, NS, names.http_tls_secret(NAME), "ca.crt"),
            now=lambda: datetime.datetime.now(datetime.UTC) + offset[0],
        )
        await kubelet.start()
        emulator.kubelet = kubelet
        url = str(server.url).rstrip("/")
        config = OperatorConfig(
            now=lambda: datetime.datetime.now(datetime.UTC) + offset[0],
            reconcile_interval=0.2,
            admin_url_template=kubelet.url_template,
            admin_timeout=1.0,
            error_backoff=0.2,
            tune=fast_kopf,
            login=lambda: kopf.ConnectionInfo(server=url, token=api_rules.OPERATOR_TOKEN),
        )
        registry = kopf.OperatorRegistry()
        runtime = register(registry, config)
        # kopf owns every task created in its loop after it starts (and cancels
        # them on exit), so the operator gets a thread and an event loop of its
        # own; it reaches the emulator over HTTP like any operator would.
        stop_operator, ready = threading.Event(), threading.Event()

        def run_operator() -> None:
            async def main() -> None:
                try:
                    await kopf.operator(
                        registry=registry,
                        namespaces=[NS],
                        standalone=True,
                        stop_flag=stop_operator,
                        ready_flag=ready,
                    )
                finally:
                    await runtime.close()

            asyncio.run(main())

        operator = threading.Thread(target=run_operator, name="kopf-operator", daemon=True)
        stop_clock = asyncio.Event()
        clock = asyncio.create_task(drive(emulator, world, stop_clock))
        operator.start()
        async with aiohttp.ClientSession() as http:
            try:
                assert await asyncio.to_thread(ready.wait, DEADLINE), "kopf never became ready"

                async def stop() -> None:
                    stop_operator.set()
                    await asyncio.to_thread(operator.join, DEADLINE)

                yield Env(emulator, world, http, url, offset, kubelet, stop)
            finally:
                await stop()
                stop_clock.set()
                await clock
                await kubelet.stop()
        # A real API server would have refused none of the operator's requests.
        assert [r for r in emulator.refusals if r.startswith("token")] == []


def owned_by(obj: dict[str, Any], owner: dict[str, Any]) -> bool:
    refs = obj["metadata"].get("ownerReferences") or []
    return any(r["uid"] == owner["metadata"]["uid"] and r.get("controller") for r in refs)


async def test_create_builds_children_and_reports_a_running_cluster(env: Env) -> None:
    status, created = await env.create({"replicas": 3})
    assert status in (200, 201), created["message"] + created["details"].get("traceback", "")
    cr = env.cr()
    assert cr is not None
    assert cr["spec"]["storage"]["size"] == "1Gi"  # defaulted at admission
    await env.until(
        "phase Running", lambda: (env.cr() or {}).get("status", {}).get("phase") == "Running"
    )

    cr = env.cr()
    assert cr is not None
    expected = {
        "apps/v1/statefulsets": NAME,
        "v1/services": f"{NAME}-peers",
        "v1/configmaps": f"{NAME}-config",
        "v1/secrets": f"{NAME}-admin",
        "policy/v1/poddisruptionbudgets": NAME,
        "networking.k8s.io/v1/networkpolicies": f"{NAME}-peers",
        "monitoring.coreos.com/v1/servicemonitors": NAME,
        "monitoring.coreos.com/v1/prometheusrules": NAME,
    }
    for res, name in expected.items():
        child = env.obj(res, name)
        assert child is not None, res
        assert owned_by(child, cr), res
        assert child["metadata"]["labels"][names.LABEL_INSTANCE] == NAME
    for name in (NAME, f"{NAME}-leader"):
        assert env.obj("v1/services", name) is not None
    assert env.obj("policy/v1/poddisruptionbudgets", NAME)["spec"]["maxUnavailable"] == 1

    status_ = cr["status"]
    assert env.condition("Ready") == "True"  # kubectl wait --for=condition=Ready
    assert status_["observedGeneration"] == cr["metadata"]["generation"]
    assert status_["replicas"] == 3 and status_["readyReplicas"] == 3
    assert status_["leader"] == f"{NAME}-0" and status_["leaderId"] == 1
    assert status_["term"] >= 1 and status_["commitIndex"] > 0
    assert status_["bootstrapped"] is True
    assert [m["name"] for m in status_["members"]] == ["xc-0", "xc-1", "xc-2"]
    assert all(m["voter"] and m["healthy"] for m in status_["members"])
    conds = {c["type"]: c for c in status_["conditions"]}
    assert conds["Available"]["status"] == "True"
    assert conds["Degraded"]["status"] == "False"
    assert conds["QuorumLost"]["status"] == "False"
    assert all(c["lastTransitionTime"] and c["reason"] for c in conds.values())

    # The leader's pod carries role=leader, the others follower.
    await env.until(
        "role labels",
        lambda: (
            [p["metadata"]["labels"].get("role") for p in env.pods()]
            == ["leader", "follower", "follower"]
        ),
    )
    # After bootstrap, pods created later must not bootstrap on an empty volume.
    sts = env.obj("apps/v1/statefulsets", NAME)
    env_vars = {
        e["name"]: e.get("value") for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env_vars["EXCHANGE_CLUSTER_STATE"] == "existing"


async def test_admission_rejects_even_replicas(env: Env) -> None:
    status, body = await env.create({"replicas": 4})
    assert status == 422
    assert "odd" in body["message"]
    assert env.cr() is None


async def test_scale_up_and_down_through_the_scale_subresource(env: Env) -> None:
    await env.create({"replicas": 3})
    await env.until("running", lambda: env.condition("Available") == "True")
    status, _ = await env.patch_spec({"replicas": 5}, sub="/scale")
    assert status == 200
    await env.until(
        "5 voters",
        lambda: (
            sum(1 for m in env.world.members.values() if m.voter) == 5
            and (env.cr() or {}).get("status", {}).get("phase") == "Running"
        ),
    )
    assert len(env.pods()) == 5
    assert [e.split()[0] for e in env.world.log] == ["add", "promote", "add", "promote"]
    assert env.obj("policy/v1/poddisruptionbudgets", NAME)["spec"]["maxUnavailable"] == 2

    status, _ = await env.patch_spec({"replicas": 3})
    assert status == 200
    await env.until("3 pods", lambda: len(env.pods()) == 3 and len(env.world.members) == 3)
    removes = [e for e in env.world.log if e.startswith("remove")]
    assert len(removes) == 2
    # Claims of removed members go with them (whenScaled: Delete).
    claims = sorted(
        p["metadata"]["name"] for _, p in env.emulator.live("v1/persistentvolumeclaims")
    )
    assert claims == ["data-xc-0", "data-xc-1", "data-xc-2"]


async def test_image_upgrade_rolls_followers_first_then_the_leader(env: Env) -> None:
    await env.create({"replicas": 3, "image": "ghcr.io/raft-exchange/exchange:0.1.0"})
    await env.until("running", lambda: env.condition("Available") == "True")
    before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in env.pods()}
    status, _ = await env.patch_spec({"image": "ghcr.io/raft-exchange/exchange:0.2.0"})
    assert status == 200

    def upgraded() -> bool:
        pods = env.pods()
        return (
            len(pods) == 3
            and all(p["spec"]["containers"][0]["image"].endswith(":0.2.0") for p in pods)
            and env.condition("Progressing") == "False"
        )

    await env.until("all pods on 0.2.0", upgraded)
    after = {p["metadata"]["name"]: p["metadata"]["uid"] for p in env.pods()}
    assert all(before[n] != after[n] for n in before)  # every pod was restarted
    log = [e for e in env.world.log if e.startswith(("delete pod", "transfer"))]
    # Followers (highest ordinal first), then leadership moves, then the old leader.
    assert log[:2] == ["delete pod 2", "delete pod 1"]
    assert log[2].startswith("transfer")
    assert log[3] == "delete pod 0"
    cr = env.cr()
    assert cr is not None and cr["status"]["observedGeneration"] == cr["metadata"]["generation"]


async def test_conditions_follow_member_failures(env: Env) -> None:
    await env.create({"replicas": 3})
    await env.until("running", lambda: env.condition("Available") == "True")
    env.world.kill(2)
    await env.until("degraded", lambda: env.condition("Degraded") == "True")
    assert env.condition("QuorumLost") == "False"
    env.world.kill(1)
    await env.until("quorum lost", lambda: env.condition("QuorumLost") == "True")
    assert env.condition("Available") == "False"
    assert (env.cr() or {})["status"]["phase"] == "QuorumLost"


async def test_pod_that_lost_its_volume_rejoins_as_a_new_member(env: Env) -> None:
    await env.create({"replicas": 3})
    await env.until("running", lambda: env.condition("Available") == "True")
    await env.request("DELETE", f"/api/v1/namespaces/{NS}/persistentvolumeclaims/data-xc-1")
    await env.request("DELETE", f"/api/v1/namespaces/{NS}/pods/xc-1")
    await env.until(
        "member 2 replaced",
        lambda: (
            2 not in env.world.members
            and len([m for m in env.world.members.values() if m.voter]) == 3
        ),
    )
    membership = [e.split()[0] for e in env.world.log if not e.startswith("delete pod")]
    assert membership == ["remove", "add", "promote"]


async def test_delete_cascades_to_every_child(env: Env) -> None:
    await env.create({"replicas": 1})
    await env.until("running", lambda: env.condition("Available") == "True")
    assert env.obj("policy/v1/poddisruptionbudgets", NAME)["spec"]["maxUnavailable"] == 0
    status, _ = await env.request("DELETE", f"{CR_PATH}/{NAME}")
    assert status == 200
    await env.until("cr gone", lambda: env.cr() is None)
    leftovers = [
        (env.emulator._key(res), raw["metadata"]["name"])
        for res, raw in env.emulator.live()
        if raw["metadata"].get("namespace") == NS
    ]
    # Only the claim survives: whenDeleted defaults to Retain, the data is kept.
    assert leftovers == [("v1/persistentvolumeclaims", "data-xc-0")]


async def test_storage_growth_expands_the_claims_not_the_template(env: Env) -> None:
    await env.create({"replicas": 3, "storage": {"size": "1Gi"}})
    await env.until("running", lambda: env.condition("Available") == "True")
    status, _ = await env.patch_spec({"storage": {"size": "4Gi"}})
    assert status == 200

    def sizes() -> list[str]:
        return [
            c["spec"]["resources"]["requests"]["storage"]
            for _, c in env.emulator.live("v1/persistentvolumeclaims")
        ]

    await env.until("claims grown", lambda: sizes() == ["4Gi", "4Gi", "4Gi"])
    sts = env.obj("apps/v1/statefulsets", NAME)
    assert (
        sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "1Gi"
    )
    # Shrinking is refused at admission.
    status, body = await env.patch_spec({"storage": {"size": "2Gi"}})
    assert status == 422 and "shrink" in body["message"]


async def test_paused_cluster_neither_scales_nor_restarts(env: Env) -> None:
    await env.create({"replicas": 3})
    await env.until("running", lambda: env.condition("Available") == "True")
    uids = sorted(p["metadata"]["uid"] for p in env.pods())
    await env.patch_spec(
        {"paused": True, "replicas": 5, "image": "ghcr.io/raft-exchange/exchange:9.9.9"}
    )
    await env.until(
        "phase Paused", lambda: (env.cr() or {}).get("status", {}).get("phase") == "Paused"
    )
    cr = env.cr()
    assert cr is not None and cr["status"]["observedGeneration"] == cr["metadata"]["generation"]
    assert sorted(p["metadata"]["uid"] for p in env.pods()) == uids
    assert len(env.world.members) == 3
    # The template carries the new image for later, but nothing restarted.
    sts = env.obj("apps/v1/statefulsets", NAME)
    assert sts["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":9.9.9")
    assert sts["spec"]["replicas"] == 3


def _member_cert(env: Env, ordinal: int) -> bytes:
    """The certificate the modelled node holds (installed by the operator's PUT)."""
    assert env.kubelet is not None
    member = env.kubelet.enrollment(ordinal)
    return member.cert_file.read_bytes() if member and member.cert_file.exists() else b""


def _member_key(env: Env, ordinal: int) -> bytes:
    assert env.kubelet is not None
    member = env.kubelet.enrollment(ordinal)
    assert member is not None
    return member.key_file.read_bytes()


async def test_certificates_are_signed_per_member_and_rotated_before_expiry(env: Env) -> None:
    from exchange_node.security import certs

    status, created = await env.create({"replicas": 3})
    assert status in (200, 201), created
    await env.until(
        "phase Running and three signed members",
        lambda: (
            (env.cr() or {}).get("status", {}).get("phase") == "Running"
            and env.cr()["status"].get("certificates", {}).get("members") == 3
        ),
    )
    ca_pem = secret_value(env.emulator, NS, names.ca_secret(NAME), "tls.crt")
    assert ca_pem
    now = datetime.datetime.now(datetime.UTC)
    for ordinal in range(3):
        pem, key = _member_cert(env, ordinal), _member_key(env, ordinal)
        certs.check_member_chain(pem, key, ca_pem.encode(), f"{NAME}-{NS}", ordinal + 1, now)
    # No member key or certificate in any Secret.
    secrets = [s for _, s in env.emulator.live("v1/secrets")]
    assert not any(s["metadata"]["name"].startswith(f"{NAME}-member-") for s in secrets)
    first = {o: _member_cert(env, o) for o in range(3)}
    keys = {o: certs.public_key_der(_member_key(env, o)) for o in range(3)}
    shown = env.cr()["status"]["certificates"]
    assert shown["source"] == "operator" and shown["members"] == 3
    assert env.cr()["status"]["clusterId"] == f"{NAME}-{NS}"
    earliest = min(certs.not_after(pem) for pem in first.values())
    # Issued over a few seconds on a loaded machine (2.0 s apart in one CI run): the
    # status names the earliest expiry within that spread, not another certificate's.
    assert abs(datetime.datetime.fromisoformat(shown["notAfter"]) - earliest).total_seconds() < 10

    # Nothing is re-signed while more than a third of the lifetime is left.
    env.clock_offset[0] = datetime.timedelta(days=59)
    await asyncio.sleep(1.0)
    assert {o: _member_cert(env, o) for o in range(3)} == first
    # With less than a third left, every member gets a certificate for a fresh key,
    # from the same CA, for the same member; the status moves on.
    env.clock_offset[0] = datetime.timedelta(days=61)
    await env.until(
        "rotated member certificates",
        lambda: all(_member_cert(env, o) not in (first[o], b"") for o in range(3)),
    )
    assert secret_value(env.emulator, NS, names.ca_secret(NAME), "tls.crt") == ca_pem
    for ordinal in range(3):
        assert certs.member_identity(_member_cert(env, ordinal)) == (f"{NAME}-{NS}", ordinal + 1)
        assert certs.public_key_der(_member_key(env, ordinal)) != keys[ordinal]
    await env.until(
        "status shows the new expiry",
        lambda: env.cr()["status"]["certificates"]["notAfter"] != shown["notAfter"],
    )


async def _fake_cert_manager(
    env: Env, ca: Any, stop: asyncio.Event, signed: list[tuple[str, int]]
) -> None:
    """Fulfils Certificates and CertificateRequests as cert-manager with a CA Issuer
    would: a Secret per Certificate (tls.crt, tls.key, ca.crt, the secretTemplate
    labels); a request's CSR signed into status.certificate (and status.ca)."""
    import base64

    from exchange_node.security import certs

    while not stop.is_set():
        for _, cert in env.emulator.live("cert-manager.io/v1/certificates"):
            spec = cert["spec"]
            if env.obj("v1/secrets", spec["secretName"]) is not None:
                continue
            pair = certs.issue_server_cert(ca, spec["dnsNames"])
            data = {"tls.crt": pair.cert_pem, "tls.key": pair.key_pem, "ca.crt": ca.cert_pem}
            secret = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/tls",
                "metadata": {
                    "name": spec["secretName"],
                    "namespace": NS,
                    "labels": dict(spec["secretTemplate"]["labels"]),
                },
                "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
            }
            await env.emulator._store("v1/secrets", env.emulator._filled(secret, NS))
        for _, request in env.emulator.live("cert-manager.io/v1/certificaterequests"):
            if (request.get("status") or {}).get("certificate"):
                continue
            csr = base64.b64decode(request["spec"]["request"])
            san = x509.load_pem_x509_csr(csr).extensions.get_extension_for_class(
                x509.SubjectAlternativeName
            )
            cluster_id, node_id = certs.parse_member_uri(
                san.value.get_values_for_type(x509.UniformResourceIdentifier)[0]
            )
            pem = certs.issue_member_cert_from_csr(ca, csr, cluster_id, node_id, valid_days=30)
            signed.append((request["metadata"]["name"], node_id))
            done = dict(request)
            done["status"] = {
                "certificate": base64.b64encode(pem).decode(),
                "ca": base64.b64encode(ca.cert_pem).decode(),
                "conditions": [{"type": "Ready", "status": "True", "reason": "Issued"}],
            }
            await env.emulator._store("cert-manager.io/v1/certificaterequests", done)
        await asyncio.sleep(0.05)


async def test_with_cert_manager_the_operator_requests_certificates(env: Env) -> None:
    from exchange_node.security import certs

    env.emulator.declare("Certificate", "cert-manager.io/v1/certificates", True, ())
    env.emulator.declare(
        "CertificateRequest", "cert-manager.io/v1/certificaterequests", True, ("status",)
    )
    ca = certs.generate_ca("cert-manager CA issuer", valid_days=30)
    stop = asyncio.Event()
    signed: list[tuple[str, int]] = []
    fulfil = asyncio.create_task(_fake_cert_manager(env, ca, stop, signed))
    try:
        spec = {"replicas": 3, "tls": {"issuerRef": {"name": "exchange-ca"}, "certificateDays": 30}}
        status, created = await env.create(spec)
        assert status in (200, 201), created
        await env.until(
            "certificates from cert-manager",
            lambda: (
                ((env.cr() or {}).get("status") or {}).get("certificates", {}).get("members") == 3
            ),
        )
        shown = env.cr()["status"]["certificates"]
        assert shown["source"] == "cert-manager" and shown["notAfter"]
        # No operator-made CA; one Certificate (the listeners'); a CertificateRequest per
        # member key, each deleted once its certificate is on the node.
        assert env.obj("v1/secrets", names.ca_secret(NAME)) is None
        made = [
            c["metadata"]["name"] for _, c in env.emulator.live("cert-manager.io/v1/certificates")
        ]
        assert made == [f"{NAME}-http-tls"]
        assert sorted(node_id for _, node_id in signed) == [1, 2, 3]
        assert all(name.startswith(f"{NAME}-member-") for name, _ in signed)
        await env.until(
            "requests cleaned up",
            lambda: not env.emulator.live("cert-manager.io/v1/certificaterequests"),
        )
        now = datetime.datetime.now(datetime.UTC)
        for ordinal in range(3):
            certs.check_member_chain(
                _member_cert(env, ordinal), _member_key(env, ordinal), ca.cert_pem,
                f"{NAME}-{NS}", ordinal + 1, now,
            )  # fmt: skip
    finally:
        stop.set()
        await fulfil


async def test_member_secrets_of_an_older_operator_go_once_every_pod_enrolled(env: Env) -> None:
    """Before nodes enrolled, each member's key sat in <name>-member-<ordinal>: deleted
    once every pod runs the current template and holds an enrolled certificate."""
    import base64

    from exchange_node.security import certs

    ca = certs.generate_ca("the old operator's CA")
    old = certs.issue_member_cert(ca, f"{NAME}-{NS}", 1)
    legacy = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {
            "name": names.member_tls_secret(NAME, 0),
            "namespace": NS,
            "labels": names.standard_labels(NAME, names.COMPONENT_NODE),
        },
        "data": {
            "tls.crt": base64.b64encode(old.cert_pem).decode(),
            "tls.key": base64.b64encode(old.key_pem).decode(),
        },
    }
    await env.emulator._store("v1/secrets", env.emulator._filled(legacy, NS))
    status, created = await env.create({"replicas": 3})
    assert status in (200, 201), created
    await env.until(
        "three enrolled members",
        lambda: ((env.cr() or {}).get("status") or {}).get("certificates", {}).get("members") == 3,
    )
    await env.until(
        "the old member Secret deleted",
        lambda: env.obj("v1/secrets", names.member_tls_secret(NAME, 0)) is None,
    )


async def test_a_csr_for_another_member_is_never_sent_to_cert_manager(env: Env) -> None:
    """Pod 1 (member 2) is compromised and serves a CSR for member 1: the operator
    creates no CertificateRequest for it, while the honest pods get theirs."""
    from exchange_node.security import certs

    env.emulator.declare("Certificate", "cert-manager.io/v1/certificates", True, ())
    env.emulator.declare(
        "CertificateRequest", "cert-manager.io/v1/certificaterequests", True, ("status",)
    )
    assert env.kubelet is not None
    env.kubelet.forged_csr[1] = certs.member_csr(certs.new_private_key_pem(), f"{NAME}-{NS}", 1)
    ca = certs.generate_ca("cert-manager CA issuer", valid_days=30)
    stop = asyncio.Event()
    signed: list[tuple[str, int]] = []
    fulfil = asyncio.create_task(_fake_cert_manager(env, ca, stop, signed))
    try:
        spec = {"replicas": 3, "tls": {"issuerRef": {"name": "exchange-ca"}, "certificateDays": 30}}
        status, created = await env.create(spec)
        assert status in (200, 201), created
        await env.until(
            "the honest members signed",
            lambda: (
                ((env.cr() or {}).get("status") or {}).get("certificates", {}).get("members") == 2
            ),
        )
        await asyncio.sleep(1.0)  # several reconciles
        assert sorted(node_id for _, node_id in signed) == [1, 3]
        assert _member_cert(env, 1) == b""
        # Healed (the pod serves its own CSR again): it is signed like the others.
        del env.kubelet.forged_csr[1]
        await env.until(
            "all three signed",
            lambda: env.cr()["status"]["certificates"]["members"] == 3,
        )
        assert sorted(node_id for _, node_id in signed) == [1, 2, 3]
    finally:
        stop.set()
        await fulfil


async def test_deleting_everything_at_once_leaves_nothing_terminating(env: Env) -> None:
    """`kubectl delete -f k8s/` or `helm uninstall` with clusters: the operator and its
    clusters go together. Worst order: the operator is gone before the cluster's
    deletion is seen, so nothing it would do on deletion can be relied on. The cluster
    starts with the finalizer an older operator put on it: this one takes it off."""
    body = {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": NAME, "finalizers": [f"{names.GROUP}/finalizer"]},
        "spec": {"replicas": 3},
    }
    status, _ = await env.request("POST", CR_PATH, body)
    assert status == 200
    await env.until(
        "phase Running", lambda: (env.cr() or {}).get("status", {}).get("phase") == "Running"
    )
    await env.until(
        "finalizer removed", lambda: not ((env.cr() or {}).get("metadata") or {}).get("finalizers")
    )
    assert env.stop_operator is not None
    await env.stop_operator()
    status, _ = await env.request("DELETE", f"/api/v1/namespaces/{NS}")
    assert status == 200
    await env.emulator.settle()
    assert env.emulator.terminating() == []
    assert env.emulator.get("v1/namespaces", None, NS) is None
    assert [raw for _, raw in env.emulator.live() if raw["metadata"].get("namespace") == NS] == []


async def test_expose_and_backup_children_come_and_go_with_the_spec(env: Env) -> None:
    ingress = {"host": "exchange.example.com", "className": "nginx"}
    backup = {"schedule": "0 * * * *", "pvc": {"claimName": "backups"}}
    await env.create(
        {"replicas": 3, "expose": {"serviceType": "NodePort", "ingress": ingress}, "backup": backup}
    )
    ingresses, cronjobs = "networking.k8s.io/v1/ingresses", "batch/v1/cronjobs"
    await env.until("the Ingress", lambda: env.obj(ingresses, NAME) is not None)
    await env.until("the backup CronJob", lambda: env.obj(cronjobs, f"{NAME}-backup") is not None)
    service = env.obj("v1/services", NAME)
    assert service is not None and service["spec"]["type"] == "NodePort"
    status, _ = await env.patch_spec({"expose": {"ingress": None}, "backup": None})
    assert status == 200
    assert "ingress" not in (env.cr() or {})["spec"]["expose"], env.cr()
    await env.until("the Ingress deleted", lambda: env.obj(ingresses, NAME) is None)
    await env.until("the CronJob deleted", lambda: env.obj(cronjobs, f"{NAME}-backup") is None)
