"""The kopf layer: thin, idempotent handlers that call the pure functions.

`register(registry, config)` installs the handlers on a registry, so tests
run the real operator with their own settings (intervals, admin URLs, the
emulated API server) and production uses kopf's default registry.

One reconcile does, in order: make sure the admin Secret exists; observe the
StatefulSet, the pods and every node's admin status; decide the single next
action; apply every child (server-side apply); carry out the action; move the
role labels; write status. Running it twice changes nothing the second time.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import kopf
from kopf._core.intents.handlers import TimerHandler

from exchange_operator import certificates, decisions, monitoring, names, render
from exchange_operator.admin import (
    DEFAULT_URL_TEMPLATE,
    AdminClient,
    AdminError,
    admin_base_url,
    pod_server_name,
    tls_context,
)
from exchange_operator.kube import KubeClient, selector_string
from exchange_operator.observed import Observed, PodState
from exchange_operator.quantity import parse_quantity
from exchange_operator.spec import MAX_REPLICAS, ClusterRef, ClusterSpec, parse_spec

Obj = dict[str, Any]


@dataclass
class OperatorConfig:
    """What differs between production and tests."""

    reconcile_interval: float = 5.0
    admin_url_template: str = DEFAULT_URL_TEMPLATE
    admin_timeout: float = 2.0
    # How soon a handler that raised runs again (kopf's default is 60 s).
    error_backoff: float = 5.0
    # Children are re-applied when their rendering changes, and at least this often.
    resync_seconds: float = 60.0
    # (cluster, namespace, pod) -> (gRPC, HTTP) address a new member is added with.
    # None: the pod's stable DNS name through the headless Service (Kubernetes).
    member_addresses: Callable[[str, str, str], tuple[str, str]] | None = None
    # Extra kopf settings (tests shorten kopf's idle and batching windows).
    tune: Callable[[kopf.OperatorSettings], None] | None = None
    # None: in-cluster service account, else ~/.kube/config (kopf's own logins).
    login: Callable[[], kopf.ConnectionInfo] | None = None
    # (cluster, namespace, pod) -> host:port of the pod's admin listener, reached over
    # TLS and verified as the pod's DNS name. None: admin_url_template.
    admin_address: Callable[[str, str, str], str] | None = None
    # The operator's own namespace: the one source of the admin port's NetworkPolicy.
    operator_namespace: str | None = None
    # Labels on every ServiceMonitor and PrometheusRule, under spec.monitoring.labels
    # (the chart: monitoring.labels, default release: kube-prometheus-stack).
    monitoring_labels: dict[str, str] = field(default_factory=dict)
    # The clock certificate decisions use (tests move it).
    now: Callable[[], datetime.datetime] = field(
        default_factory=lambda: lambda: datetime.datetime.now(datetime.UTC)
    )


@dataclass
class Runtime:
    """Shared clients and per-cluster locks; one per running operator."""

    config: OperatorConfig
    kube: KubeClient | None = None
    http: aiohttp.ClientSession | None = None
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    # (kind, namespace, name) -> (hash of the rendering, when applied)
    applied: dict[tuple[str, str, str], tuple[str, float]] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)  # cluster uids reconciled in this run
    # kind -> (served, when checked)
    served: dict[str, tuple[bool, float]] = field(default_factory=dict)

    def lock(self, namespace: str, name: str) -> asyncio.Lock:
        return self.locks.setdefault(f"{namespace}/{name}", asyncio.Lock())

    def admin_http(self) -> aiohttp.ClientSession:
        if self.http is None or self.http.closed:
            self.http = aiohttp.ClientSession()
        return self.http

    async def apply(self, kube: KubeClient, obj: Obj) -> None:
        """Server-side apply, skipped when the same rendering went out recently.

        Every reconcile renders every child, but only changes (and a periodic
        resync that repairs drift) reach the API server.
        """
        meta = obj["metadata"]
        key = (obj["kind"], meta["namespace"], meta["name"])
        digest = render.stable_hash(obj)
        now = asyncio.get_running_loop().time()
        last = self.applied.get(key)
        if last is not None and last[0] == digest and now - last[1] < self.config.resync_seconds:
            return
        await kube.apply(obj)
        self.applied[key] = (digest, now)

    def forget(self, kind: str, namespace: str, name: str) -> None:
        self.applied.pop((kind, namespace, name), None)

    def applied_once(self, cluster: ClusterRef) -> bool:
        return cluster.uid in self.seen

    def mark_applied_once(self, cluster: ClusterRef) -> None:
        self.seen.add(cluster.uid)

    async def is_served(self, kube: KubeClient, kind: str) -> bool:
        """API discovery, cached for resync_seconds (the Prometheus CRDs may come later)."""
        now = asyncio.get_running_loop().time()
        cached = self.served.get(kind)
        if cached is not None and now - cached[1] < self.config.resync_seconds:
            return cached[0]
        served = await kube.served(kind)
        self.served[kind] = (served, now)
        return served

    async def close(self) -> None:
        if self.kube is not None:
            await self.kube.close()
        if self.http is not None:
            await self.http.close()


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _login(
    config: OperatorConfig, settings: kopf.OperatorSettings, logger: logging.Logger | Any
) -> kopf.ConnectionInfo:
    if config.login is not None:
        return config.login()
    info = kopf.login_with_service_account(settings=settings, logger=logger)
    if info is None:
        info = kopf.login_with_kubeconfig(settings=settings, logger=logger)
    if info is None:
        raise kopf.PermanentError(
            "no Kubernetes credentials: neither a service account nor kubeconfig"
        )
    return info


# --- observing ---------------------------------------------------------------------


async def _admin_token(kube: KubeClient, cluster: ClusterRef) -> str:
    secret = await kube.get("Secret", cluster.namespace, names.admin_secret(cluster.name))
    if secret is None:
        token = secrets.token_urlsafe(32)
        await kube.create(render.admin_secret(cluster, token))
        return token
    data = secret.get("data") or {}
    if names.ADMIN_TOKEN_KEY in data:
        return base64.b64decode(data[names.ADMIN_TOKEN_KEY]).decode()
    return str((secret.get("stringData") or {}).get(names.ADMIN_TOKEN_KEY, ""))


def _admin_target(rt: Runtime, cluster: ClusterRef, pod: str) -> tuple[str, str | None]:
    """(base URL, TLS server name to verify) of a pod's admin listener."""
    if rt.config.admin_address is not None:
        address = rt.config.admin_address(cluster.name, cluster.namespace, pod)
        return f"https://{address}", pod_server_name(cluster.name, cluster.namespace, pod)
    base = admin_base_url(rt.config.admin_url_template, cluster.name, cluster.namespace, pod)
    return base, None


async def _observe_pods(
    rt: Runtime, kube: KubeClient, cluster: ClusterRef, token: str, ca_pem: bytes | None
) -> list[PodState]:
    pods = await kube.list("Pod", cluster.namespace, names.selector_labels(cluster.name))
    admin = AdminClient(rt.admin_http(), token, rt.config.admin_timeout, tls_context(ca_pem))

    async def one(pod: Obj) -> PodState | None:
        meta = pod["metadata"]
        ordinal = names.ordinal_of_pod(cluster.name, meta["name"])
        if ordinal is None:
            return None
        base, server_name = _admin_target(rt, cluster, meta["name"])
        conditions = (pod.get("status") or {}).get("conditions") or []
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        containers = (pod.get("spec") or {}).get("containers") or [{}]
        return PodState(
            name=meta["name"],
            ordinal=ordinal,
            ready=ready,
            deleting=bool(meta.get("deletionTimestamp")),
            restart_hash=(meta.get("annotations") or {}).get(names.ANNOTATION_RESTART_HASH, ""),
            image=str(containers[0].get("image", "")),
            role_label=(meta.get("labels") or {}).get(names.LABEL_ROLE),
            node=await admin.with_server_name(server_name).status(base),
        )

    states = await asyncio.gather(*(one(p) for p in pods))
    return sorted((s for s in states if s is not None), key=lambda s: s.ordinal)


# --- certificates -------------------------------------------------------------------------


@dataclass
class TlsSource:
    """Where this reconcile's certificates come from, and what it read."""

    cert_manager: bool
    ca: Any  # exchange_node.security.certs.CertKeyPair when the operator is the CA
    ca_pem: bytes | None
    secrets: dict[str, Obj]


async def _certificate_source(
    rt: Runtime, kube: KubeClient, cluster: ClusterRef, spec: ClusterSpec
) -> TlsSource:
    """The CA and the HTTP server certificate; one LIST reads every Secret of the cluster.

    cert-manager when spec.tls.issuerRef is set and its CRDs are served, else the
    operator's own CA (created once, kept in <cluster>-ca)."""
    from exchange_node.security import certs

    listed = await kube.list("Secret", cluster.namespace, names.selector_labels(cluster.name))
    secrets_by_name = {s["metadata"]["name"]: s for s in listed}
    http_name = names.http_tls_secret(cluster.name)
    if spec.tls.issuer_ref is not None and await rt.is_served(kube, "Certificate"):
        await rt.apply(kube, certificates.server_certificate(cluster, spec))
        http_secret = secrets_by_name.get(http_name)
        ca_pem = (
            certificates.secret_data(http_secret).get(names.CA_CERT_KEY) if http_secret else None
        )
        return TlsSource(True, None, ca_pem or None, secrets_by_name)
    ca_secret = secrets_by_name.get(names.ca_secret(cluster.name))
    ca = certificates.ca_from_secret(ca_secret) if ca_secret is not None else None
    if ca is None:
        ca = certs.generate_ca(
            f"{cluster.name}.{cluster.namespace} raft-exchange CA", spec.tls.ca_days
        )
        await kube.apply(certificates.ca_secret(cluster, ca))
    now = rt.config.now()
    http_secret = secrets_by_name.get(http_name)
    if certificates.server_reissue_reason(http_secret, ca.cert_pem, now) is not None:
        http_secret = certificates.server_secret(cluster, ca, spec.tls.cert_days, now)
        await kube.apply(http_secret)
        secrets_by_name[http_name] = http_secret
    return TlsSource(False, ca, ca.cert_pem, secrets_by_name)


async def _sign_member_certificates(
    rt: Runtime,
    kube: KubeClient,
    cluster: ClusterRef,
    spec: ClusterSpec,
    tls: TlsSource,
    obs: Observed,
    token: str,
    logger: logging.Logger | Any,
) -> certificates.CertificateStatus:
    """Each enrolling node whose certificate is missing, expiring, of another CA or
    of another id gets its CSR signed (operator CA or cert-manager) and PUT back."""
    cluster_id = names.raft_cluster_id(cluster.name, cluster.namespace, spec.cluster_id)
    now = rt.config.now()
    admin = AdminClient(rt.admin_http(), token, rt.config.admin_timeout, tls_context(tls.ca_pem))
    valid: list[bytes] = []
    for pod in obs.pods:
        node = pod.node
        if node is None or node.member_certificate is None or node.node_id < 1 or pod.deleting:
            continue
        member = node.member_certificate
        if tls.ca_pem is None:
            continue  # cert-manager has not issued the listeners' certificate (and CA) yet
        reason = certificates.enrollment_reason(member, node.node_id, cluster_id, tls.ca_pem, now)
        if reason is None:
            valid.append(member.certificate_pem or b"")
            continue
        refusal = certificates.signing_refusal(obs, cluster.name, pod.ordinal, node.node_id)
        if refusal is not None:
            logger.warning(f"not signing a member certificate for {pod.name}: {refusal}")
            continue
        base, server_name = _admin_target(rt, cluster, pod.name)
        try:
            chain = await _sign_one(
                rt, kube, cluster, spec, tls, admin.with_server_name(server_name), base,
                pod.ordinal, node.node_id, cluster_id, logger,
            )  # fmt: skip
        except (AdminError, aiohttp.ClientError, TimeoutError, ValueError) as error:
            logger.warning(f"member certificate of {pod.name} ({reason}): {error}")
            chain = None
        if chain is not None:
            logger.info(f"signed the certificate of member {node.node_id} ({pod.name}): {reason}")
            valid.append(chain)
        elif reason == "expiring" and member.certificate_pem is not None:
            valid.append(member.certificate_pem)
    http_secret = tls.secrets.get(names.http_tls_secret(cluster.name))
    return certificates.CertificateStatus(
        source="cert-manager" if tls.cert_manager else "operator",
        not_after=certificates.earliest_not_after([http_secret] if http_secret else [], valid),
        members=len(valid),
    )


async def _sign_one(
    rt: Runtime,
    kube: KubeClient,
    cluster: ClusterRef,
    spec: ClusterSpec,
    tls: TlsSource,
    admin: AdminClient,
    base: str,
    ordinal: int,
    node_id: int,
    cluster_id: str,
    logger: logging.Logger | Any,
) -> bytes | None:
    """The certificate installed on the node, or None while cert-manager is signing."""
    from exchange_node.security import certs

    csr = await admin.certificate_request(base)
    certs.check_member_csr(csr, cluster_id, node_id)  # exactly this member, or ValueError
    if tls.cert_manager:
        name = certificates.certificate_request_name(cluster, ordinal, csr)
        request = await kube.get("CertificateRequest", cluster.namespace, name)
        if request is None:
            new = certificates.certificate_request(cluster, spec, ordinal, node_id, csr)
            await kube.create(new)
            return None
        chain, failure = certificates.request_outcome(request)
        if failure is not None:
            logger.warning(f"CertificateRequest {name} {failure}; a new one follows")
            await kube.delete("CertificateRequest", cluster.namespace, name)
            return None
        if chain is None:
            return None
        await admin.install_certificate(base, chain)
        await kube.delete("CertificateRequest", cluster.namespace, name)
        return chain
    signed: bytes = certs.issue_member_cert_from_csr(
        tls.ca,
        csr,
        cluster_id,
        node_id,
        valid_days=spec.tls.cert_days,
        not_before=rt.config.now() - certificates.CLOCK_SKEW,
    )
    await admin.install_certificate(base, signed)
    return signed


async def _remove_member_secrets(
    kube: KubeClient, cluster: ClusterRef, tls: TlsSource, obs: Observed, replicas: int
) -> None:
    """Before nodes enrolled, each member's key was in a Secret <cluster>-member-<ordinal>
    (and a cert-manager Certificate of that name). Delete them once every pod runs the
    current template with an enrolled certificate: no running pod mounts them then."""
    legacy = [
        name
        for ordinal in range(MAX_REPLICAS)
        if (name := names.member_tls_secret(cluster.name, ordinal)) in tls.secrets
    ]
    if not legacy or len(obs.pods) < replicas:
        return
    for pod in obs.pods:
        enrolled = pod.node is not None and pod.node.member_certificate is not None
        if pod.restart_hash != obs.desired_restart_hash or not enrolled:
            return
    for name in legacy:
        if tls.cert_manager:
            await kube.delete("Certificate", cluster.namespace, name)
        await kube.delete("Secret", cluster.namespace, name)


# --- acting ---------------------------------------------------------------------------


async def _carry_out(
    rt: Runtime,
    kube: KubeClient,
    cluster: ClusterRef,
    token: str,
    ca_pem: bytes | None,
    obs: Observed,
    action: decisions.Action,
    logger: logging.Logger | Any,
) -> None:
    """Membership calls go to the leader's admin API; restarts delete the pod."""
    admin = AdminClient(rt.admin_http(), token, rt.config.admin_timeout, tls_context(ca_pem))
    leader_pod = obs.leader_pod()
    base, server_name = (
        _admin_target(rt, cluster, leader_pod.name) if leader_pod is not None else ("", None)
    )
    admin = admin.with_server_name(server_name)
    try:
        if isinstance(action, decisions.AddLearner) and rt.config.member_addresses is not None:
            grpc, http = rt.config.member_addresses(cluster.name, cluster.namespace, action.pod)
            action = dataclasses.replace(action, address=grpc, http_address=http)
        await _call_admin(admin, base, kube, cluster, action)
    except (AdminError, aiohttp.ClientError, TimeoutError) as error:
        # The next reconcile observes again and decides again; a lost race with
        # an election (421) or a node restart is not worth a handler failure.
        logger.warning(f"{action.kind} did not go through: {error}")


async def _call_admin(
    admin: AdminClient,
    base: str,
    kube: KubeClient,
    cluster: ClusterRef,
    action: decisions.Action,
) -> None:
    match action:
        case decisions.AddLearner(node_id=node_id, address=address, http_address=http):
            await admin.add_learner(base, node_id, address, http)
        case decisions.PromoteLearner(node_id=node_id):
            await admin.promote(base, node_id)
        case decisions.RemoveMember(node_id=node_id):
            await admin.remove(base, node_id)
        case decisions.TransferLeadership(to_id=to_id):
            await admin.transfer_leadership(base, to_id)
        case decisions.RestartPod(pod=pod):
            await kube.delete("Pod", cluster.namespace, pod)
        case _:
            pass  # ScaleStatefulSet is applied with the StatefulSet; Wait and Steady do nothing.


async def _apply_children(
    rt: Runtime, kube: KubeClient, cluster: ClusterRef, spec: ClusterSpec, state: render.RenderState
) -> None:
    for child in render.core_children(cluster, spec, state):
        await rt.apply(kube, child)

    mon, labels = spec.monitoring, rt.config.monitoring_labels
    optional: list[tuple[str, bool, Obj]] = [
        ("ServiceMonitor", mon.service_monitor, monitoring.service_monitor(cluster, mon, labels)),
        ("PrometheusRule", mon.prometheus_rule, monitoring.prometheus_rule(cluster, mon, labels)),
    ]
    optional += [
        ("ConfigMap", mon.dashboards, monitoring.dashboard_config_map(cluster, key, mon))
        for key in monitoring.DASHBOARDS
    ]
    optional.append(("Ingress", spec.expose.ingress is not None, render.ingress(cluster, spec)))
    optional.append(
        ("CronJob", spec.backup is not None, render.backup_cronjob(cluster, spec, state))
    )
    for kind, wanted, obj in optional:
        name = obj["metadata"]["name"]
        if kind not in ("ConfigMap", "Ingress", "CronJob") and not await rt.is_served(kube, kind):
            continue
        if wanted:
            await rt.apply(kube, obj)
        elif (kind, cluster.namespace, name) in rt.applied or not rt.applied_once(cluster):
            # Switched off: delete what may exist (checked once per operator run).
            await kube.delete(kind, cluster.namespace, name)
            rt.forget(kind, cluster.namespace, name)
    rt.mark_applied_once(cluster)


async def _api_keys_hash(kube: KubeClient, cluster: ClusterRef, spec: ClusterSpec) -> str | None:
    """A hash of the keys file spec.apiKeysSecretRef names: when the Secret changes the pod
    template changes, and the operator restarts the pods one at a time (docs: rotation).
    A missing Secret or key hashes as such; the pods wait for the Secret to mount."""
    ref = spec.api_keys_secret
    if ref is None:
        return None
    secret = await kube.get("Secret", cluster.namespace, ref.name)
    value = ((secret or {}).get("data") or {}).get(ref.key)
    return render.stable_hash({"secret": ref.name, "key": ref.key, "data": value})


async def _grow_claims(kube: KubeClient, cluster: ClusterRef, spec: ClusterSpec) -> None:
    """Claim templates are immutable; a larger storage.size is applied to each claim."""
    wanted = parse_quantity(spec.storage.size)
    claims = await kube.list(
        "PersistentVolumeClaim", cluster.namespace, names.selector_labels(cluster.name)
    )
    for claim in claims:
        requests = ((claim.get("spec") or {}).get("resources") or {}).get("requests") or {}
        current = requests.get("storage")
        if current is not None and parse_quantity(current) < wanted:
            body = {"spec": {"resources": {"requests": {"storage": spec.storage.size}}}}
            await kube.patch(
                "PersistentVolumeClaim", cluster.namespace, claim["metadata"]["name"], body
            )


async def _move_role_labels(kube: KubeClient, cluster: ClusterRef, obs: Observed) -> None:
    wanted = decisions.desired_role_labels(obs)
    # Take the label off a former leader before putting it on the new one, so a
    # Service never selects two leaders.
    order = sorted(obs.pods, key=lambda p: wanted.get(p.name) == names.ROLE_LEADER)
    for pod in order:
        label = wanted.get(pod.name)
        if label is not None and label != pod.role_label:
            body = {"metadata": {"labels": {names.LABEL_ROLE: label}}}
            await kube.patch("Pod", cluster.namespace, pod.name, body)


# --- the reconcile ----------------------------------------------------------------------


async def reconcile(
    rt: Runtime,
    body: kopf.Body,
    patch: kopf.Patch,
    logger: logging.Logger | Any,
) -> decisions.Action:
    meta = body["metadata"]
    cluster = ClusterRef(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])
    spec = parse_spec(body.get("spec") or {})
    status = dict(body.get("status") or {})
    assert rt.kube is not None, "the login handler creates the client"
    kube = rt.kube

    async with rt.lock(cluster.namespace, cluster.name):
        token = await _admin_token(kube, cluster)
        tls = await _certificate_source(rt, kube, cluster, spec)
        sts = await kube.get("StatefulSet", cluster.namespace, cluster.name)
        pods = await _observe_pods(rt, kube, cluster, token, tls.ca_pem)
        bootstrap_replicas = int(status.get("bootstrapReplicas") or spec.replicas)
        sts_replicas = int(sts["spec"]["replicas"]) if sts is not None else None
        claim_size = None
        if sts is not None:
            templates = sts["spec"].get("volumeClaimTemplates") or [{}]
            claim_size = (
                templates[0].get("spec", {}).get("resources", {}).get("requests", {}).get("storage")
            )
        keys_hash = await _api_keys_hash(kube, cluster, spec)
        probe = Observed(statefulset_replicas=sts_replicas, pods=tuple(pods))
        bootstrapped = bool(status.get("bootstrapped")) or probe.leader() is not None

        def state_for(replicas: int) -> render.RenderState:
            return render.RenderState(
                statefulset_replicas=replicas,
                bootstrap_replicas=bootstrap_replicas,
                bootstrapped=bootstrapped,
                claim_size=claim_size,
                operator_namespace=rt.config.operator_namespace,
                api_keys_hash=keys_hash,
            )

        current = (
            sts_replicas
            if sts_replicas is not None
            else (int(status.get("replicas") or 0) if bootstrapped else spec.replicas)
        )
        template = render.pod_template(cluster, spec, state_for(current))
        obs = Observed(
            statefulset_replicas=sts_replicas,
            pods=tuple(pods),
            bootstrapped=bootstrapped,
            desired_restart_hash=template["metadata"]["annotations"][names.ANNOTATION_RESTART_HASH],
        )
        action = decisions.next_action(cluster.name, cluster.namespace, spec, obs)
        replicas = action.replicas if isinstance(action, decisions.ScaleStatefulSet) else current

        cert_status = await _sign_member_certificates(
            rt, kube, cluster, spec, tls, obs, token, logger
        )
        await _remove_member_secrets(kube, cluster, tls, obs, current)
        await _apply_children(rt, kube, cluster, spec, state_for(replicas))
        if claim_size is not None:
            await _grow_claims(kube, cluster, spec)
        if not isinstance(action, decisions.Wait | decisions.Steady | decisions.ScaleStatefulSet):
            await _carry_out(rt, kube, cluster, token, tls.ca_pem, obs, action, logger)
        if not isinstance(action, decisions.Wait | decisions.Steady):
            logger.info(f"{action.kind}: {action.reason}")
            kopf.info(body, reason=action.kind, message=action.reason)
        await _move_role_labels(kube, cluster, obs)

        conds = decisions.conditions(spec, obs, action)
        leader = obs.leader()
        leader_pod = obs.leader_pod()
        patch.status["observedGeneration"] = meta.get("generation", 0)
        patch.status["phase"] = decisions.phase(spec, obs, action, conds)
        patch.status["message"] = action.reason
        patch.status["conditions"] = decisions.merge_conditions(
            status.get("conditions"), conds, _now(), int(meta.get("generation", 0))
        )
        patch.status["replicas"] = replicas
        patch.status["readyReplicas"] = sum(1 for p in pods if p.ready)
        patch.status["selector"] = selector_string(names.selector_labels(cluster.name))
        patch.status["members"] = decisions.member_statuses(obs)
        patch.status["bootstrapReplicas"] = bootstrap_replicas
        patch.status["bootstrapped"] = bootstrapped
        patch.status["lastAction"] = action.kind
        patch.status["certificates"] = cert_status.as_status()
        patch.status["leader"] = leader_pod.name if leader_pod is not None else ""
        patch.status["leaderId"] = leader.node_id if leader is not None else 0
        if leader is not None:
            patch.status["term"] = leader.term
            patch.status["commitIndex"] = leader.commit_index
        # The Raft group's identity (--cluster-id, in every member certificate).
        patch.status["clusterId"] = names.raft_cluster_id(
            cluster.name, cluster.namespace, spec.cluster_id
        )
        return action


def register(registry: kopf.OperatorRegistry, config: OperatorConfig) -> Runtime:
    """Install the handlers on `registry`; the returned Runtime holds the shared clients.

    Close the Runtime after kopf.operator() returns, not in a cleanup handler:
    timers may still be finishing while cleanup handlers run.
    """
    rt = Runtime(config=config)
    resource = (names.GROUP, names.VERSION, names.PLURAL)

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix=names.ANNOTATION_PREFIX
        )
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=names.ANNOTATION_PREFIX, key="last-handled-configuration"
        )
        settings.persistence.finalizer = f"{names.GROUP}/finalizer"
        settings.posting.level = logging.INFO
        settings.peering.standalone = True
        settings.watching.server_timeout = 300
        if config.tune is not None:
            config.tune(settings)

    @kopf.on.login(registry=registry)
    async def login(
        settings: kopf.OperatorSettings, logger: kopf.Logger, **_: Any
    ) -> kopf.ConnectionInfo:
        info = _login(config, settings, logger)
        if rt.kube is not None:
            await rt.kube.close()
        rt.kube = KubeClient(info)
        return info

    backoff = config.error_backoff

    @kopf.on.create(*resource, registry=registry, backoff=backoff)
    @kopf.on.resume(*resource, registry=registry, backoff=backoff)
    @kopf.on.update(*resource, field="spec", registry=registry, backoff=backoff)
    async def changed(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
        await reconcile(rt, body, patch, logger)

    @kopf.timer(*resource, interval=config.reconcile_interval, registry=registry, backoff=backoff)
    async def refresh(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
        await reconcile(rt, body, patch, logger)

    without_finalizers(registry)
    return rt


def without_finalizers(registry: kopf.OperatorRegistry) -> None:
    """No finalizer on ExchangeClusters.

    kopf puts a finalizer on every object a timer runs for (to stop the timer
    before the object goes). Nothing here needs a last word on deletion: the
    children go by their ownerReferences. With the finalizer, deleting the
    operator together with its clusters (`kubectl delete -f k8s/`, `helm
    uninstall`, deleting the namespace) left the clusters, and so their
    namespace, Terminating for ever: nobody was left to remove it. Without it
    the timer stops on the DELETED event, and kopf removes the finalizer an
    older operator put on existing clusters the next time it sees them.
    kopf has no public switch for this, hence the registry's handler list.
    """
    spawning = registry._spawning
    spawning._handlers = [
        dataclasses.replace(h, requires_finalizer=False) if isinstance(h, TimerHandler) else h
        for h in spawning._handlers
    ]
