"""``--target kubernetes``: faults on an ExchangeCluster's pods, through the API server.

Constructor (what ``exchange chaos run --target kubernetes`` calls)::

    KubernetesTarget(namespace, cluster_name, *, kubeconfig=None, context=None,
                     in_cluster=None, api_client=None, endpoint_for=None,
                     api_keys_file=None, api_keys=None, ca_file=None,
                     via="kubernetes", seed=0, ready_timeout=180.0)

- Credentials for the API server: ``in_cluster=True`` (a Job's ServiceAccount),
  else ``kubeconfig``/``context`` (default: ``$KUBECONFIG`` or ``~/.kube/config``);
  ``in_cluster=None`` picks in-cluster when ``KUBERNETES_SERVICE_HOST`` is set.
  ``api_client`` (a ``kubernetes.client.ApiClient``) overrides all of them (tests).
- Endpoints: by default each member's own pod DNS name on the headless peer
  Service, ``https://<pod>.<cluster>-peers.<ns>.svc:8080`` (the workload addresses
  every node, not the load-balanced client Service), verified with ``ca_file`` (the
  ``ca.crt`` of the ``<cluster>-http-tls`` Secret, mounted by the experiment's Job).
  This works from inside the cluster (the Jobs in ``chaos-experiments/``). From
  outside, run ``kubectl port-forward`` per pod and pass ``endpoint_for`` (pod
  name -> base URL). No admin endpoint: the admin port is the operator's.
- API keys: ``api_keys_file`` (the node's ``token=client_id`` format, as in the
  cluster's ``apiKeysSecretRef`` Secret, mounted read-only by the Job: no RBAC on
  Secrets needed) or ``api_keys`` ({client: token}).
- Members, node ids and the leader come from the ExchangeCluster's status
  (``status.members``, ``status.leaderId``), as the operator last observed them.

Faults (``capabilities`` reflects what the cluster has):

``via`` says how kills and partitions are made: ``kubernetes`` (pod deletes and
NetworkPolicies; the Role needs pods delete and networkpolicies create/delete) or
``chaos-mesh`` (PodChaos ``pod-kill`` and NetworkChaos ``partition``; the Role needs
only those two kinds).

``kill``        delete the pod with grace 0, as Chaos Mesh's pod-kill does: the API
                object goes at once and the kubelet kills the container (SIGKILL
                after its minimum grace, 2 s); the StatefulSet recreates the pod on
                the same claim (the node's lock on its data directory keeps a
                replacement from starting before the old process is gone);
                healing waits until it is Ready.
``restart``     delete the pod with its normal grace (SIGTERM: the leader hands over).
``partition``   NetworkPolicies (``via="kubernetes"``): for each side,
                an Egress policy selecting its pods by name that allows egress to
                every pod but those of the other sides. Policies only add allowances
                and the operator's own policy admits the peer port on ingress, so the
                cut is made on egress from both sides; ``one_way`` denies only the
                earlier sides' new connections (replies on the later sides'
                connections still flow, NetworkPolicies being stateful). Refused when
                another policy already allows the pods egress (``restrictEgress``),
                which would override the cut. Whether established connections are
                cut depends on the CNI plugin. ``via="chaos-mesh"``: one NetworkChaos
                ``partition`` per pair of sides.
With Chaos Mesh's CRDs (``chaos-mesh.org/v1alpha1``, found by API discovery):
``loss`` / ``bandwidth`` / ``link`` (delay, jitter, corrupt): NetworkChaos;
``clock``: TimeChaos; ``disk`` (fsync latency, EIO on write or fsync): IOChaos;
:meth:`stress`: StressChaos; :meth:`pod_failure`: PodChaos ``pod-failure``.
Healing deletes the resource. Not offered: ``pause``, ``power_cut``, ``corrupt_state``.

Every resource the target makes is labelled ``app.kubernetes.io/component=chaos`` and
``raft-exchange.dev/chaos-run=<run id>``; :meth:`close` deletes what is left.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from .target import (
    ActiveFault,
    CapabilityError,
    ClusterCredentials,
    DiskFault,
    LinkFault,
    LogMark,
    NodeEndpoint,
)

Obj = dict[str, Any]

EXCHANGE_GROUP, EXCHANGE_VERSION, EXCHANGE_PLURAL = (
    "exchange.raft-exchange.dev",
    "v1alpha1",
    "exchangeclusters",
)
CHAOS_MESH_GROUP, CHAOS_MESH_VERSION = "chaos-mesh.org", "v1alpha1"
CHAOS_MESH_PLURALS = {
    "PodChaos": "podchaos",
    "NetworkChaos": "networkchaos",
    "TimeChaos": "timechaos",
    "IOChaos": "iochaos",
    "StressChaos": "stresschaos",
}
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_POD_NAME = "statefulset.kubernetes.io/pod-name"
LABEL_RUN = "raft-exchange.dev/chaos-run"
DATA_DIR = "/var/lib/exchange"
HTTP_PORT = 8080


def Fault(target: KubernetesTarget, description: str, undo: Callable[[], object]) -> ActiveFault:
    """A fault of this target, in force until healed."""
    return ActiveFault(target._active, description, undo)


def _api_client(kubeconfig: str | None, context: str | None, in_cluster: bool | None) -> Any:
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    if in_cluster is None:
        in_cluster = "KUBERNETES_SERVICE_HOST" in os.environ and kubeconfig is None
    configuration = client.Configuration()
    try:
        _load_config(config, configuration, kubeconfig, context, in_cluster)
    except ConfigException as exc:
        where = (
            "in_cluster=true: no ServiceAccount credentials here (run it as a Job in the cluster)"
            if in_cluster
            else f"kubeconfig={kubeconfig or '$KUBECONFIG or ~/.kube/config'}"
            + (f", context={context}" if context else "")
        )
        raise ValueError(f"--target kubernetes: {where}: {exc}") from None
    return client.ApiClient(configuration)


def _load_config(
    config: Any, configuration: Any, kubeconfig: str | None, context: str | None, in_cluster: bool
) -> None:
    if in_cluster:
        config.load_incluster_config(client_configuration=configuration)
    else:
        config.load_kube_config(
            config_file=kubeconfig, context=context, client_configuration=configuration
        )


def _read_api_keys(path: str) -> dict[str, str]:
    from exchange_node.api.config import load_api_keys_file

    return {client: token for token, client in load_api_keys_file(path).items()}


class KubernetesTarget:
    name = "kubernetes"

    def __init__(
        self,
        namespace: str,
        cluster_name: str,
        *,
        kubeconfig: str | None = None,
        context: str | None = None,
        in_cluster: bool | None = None,
        api_client: Any = None,
        endpoint_for: Callable[[str], str] | None = None,
        api_keys_file: str | None = None,
        api_keys: Mapping[str, str] | None = None,
        ca_file: str | None = None,
        via: Literal["kubernetes", "chaos-mesh"] = "kubernetes",
        seed: int = 0,
        ready_timeout: float = 180.0,
    ) -> None:
        from kubernetes import client

        if not namespace or not cluster_name:
            raise ValueError("namespace and cluster_name are required")
        if via not in ("kubernetes", "chaos-mesh"):
            raise ValueError(f"via must be kubernetes or chaos-mesh, not {via!r}")
        if ca_file is not None and not Path(ca_file).is_file():
            raise ValueError(f"ca_file {ca_file!r} does not exist")
        self.namespace = namespace
        self.cluster_name = cluster_name
        self.api = api_client or _api_client(kubeconfig, context, in_cluster)
        self.core = client.CoreV1Api(self.api)
        self.networking = client.NetworkingV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.endpoint_for = endpoint_for
        self.ca_file = ca_file
        self.api_keys = dict(api_keys or {})
        if api_keys_file is not None:
            self.api_keys.update(_read_api_keys(api_keys_file))
        self.via = via
        self.rng = random.Random(seed)
        self.ready_timeout = ready_timeout
        self.run_id = secrets.token_hex(4)
        self._active: list[ActiveFault] = []
        self.closed = False
        self.exchange_cluster()  # fails early, naming the cluster, when it is not there
        self.chaos_mesh_kinds = self._discover_chaos_mesh()

    def __enter__(self) -> KubernetesTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the cluster -------------------------------------------------------------------

    def exchange_cluster(self) -> Obj:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import MaxRetryError

        try:
            obj: Any = self.custom.get_namespaced_custom_object(
                EXCHANGE_GROUP, EXCHANGE_VERSION, self.namespace, EXCHANGE_PLURAL, self.cluster_name
            )
        except ApiException as exc:
            raise ValueError(
                f"ExchangeCluster {self.namespace}/{self.cluster_name}: {exc.status} {exc.reason}"
            ) from None
        except MaxRetryError as exc:
            raise ValueError(
                f"--target kubernetes: the API server at {self.api.configuration.host} "
                f"does not answer ({exc.reason})"
            ) from None
        return dict(obj)

    def _discover_chaos_mesh(self) -> frozenset[str]:
        """The Chaos Mesh kinds the API server serves (discovery needs no RBAC)."""
        from kubernetes.client.exceptions import ApiException

        try:
            found = self.custom.get_api_resources(CHAOS_MESH_GROUP, CHAOS_MESH_VERSION)
        except ApiException:
            return frozenset()
        kinds = {r.kind for r in (found.resources or ()) if "/" not in r.name}
        return frozenset(kinds & set(CHAOS_MESH_PLURALS))

    def members(self) -> dict[int, str]:
        """Raft member id -> pod name, from the ExchangeCluster's status."""
        status = self.exchange_cluster().get("status") or {}
        out = {int(m["id"]): str(m["name"]) for m in status.get("members") or () if m.get("id")}
        if not out:
            raise RuntimeError(
                f"ExchangeCluster {self.namespace}/{self.cluster_name} reports no members yet"
            )
        return out

    def pod_name(self, node_id: int) -> str:
        members = self.members()
        if node_id not in members:
            raise ValueError(f"node {node_id} is not a member (members: {sorted(members)})")
        return members[node_id]

    def node_pods(self) -> list[Obj]:
        selector = f"{LABEL_INSTANCE}={self.cluster_name},{LABEL_COMPONENT}=node"
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=selector)
        return [self.api.sanitize_for_serialization(p) for p in pods.items]

    def capabilities(self) -> frozenset[str]:
        kinds: set[str] = set()
        mesh = self.via == "chaos-mesh"
        if not mesh or "PodChaos" in self.chaos_mesh_kinds:
            kinds |= {"kill", "restart"}
        if not mesh or "NetworkChaos" in self.chaos_mesh_kinds:
            kinds.add("partition")
        if "NetworkChaos" in self.chaos_mesh_kinds:
            kinds |= {"loss", "bandwidth", "link"}
        if "TimeChaos" in self.chaos_mesh_kinds:
            kinds.add("clock")
        if "IOChaos" in self.chaos_mesh_kinds:
            kinds.add("disk")
        return frozenset(kinds)

    def node_ids(self) -> list[int]:
        return sorted(self.members())

    def endpoints(self) -> Mapping[int, NodeEndpoint]:
        out = {}
        for node_id, pod in self.members().items():
            if self.endpoint_for is not None:
                url = self.endpoint_for(pod)
            else:
                peers = f"{self.cluster_name}-peers"
                url = f"https://{pod}.{peers}.{self.namespace}.svc:{HTTP_PORT}"
            out[node_id] = NodeEndpoint(node_id, url)
        return out

    def credentials(self) -> ClusterCredentials:
        return ClusterCredentials(api_keys=dict(self.api_keys), ca_file=self.ca_file)

    def leader(self) -> int | None:
        leader_id = int((self.exchange_cluster().get("status") or {}).get("leaderId") or 0)
        return leader_id or None

    # ---- pods --------------------------------------------------------------------------

    def _pod(self, name: str) -> Obj | None:
        from kubernetes.client.exceptions import ApiException

        try:
            pod = self.core.read_namespaced_pod(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(self.api.sanitize_for_serialization(pod))

    def _delete_pod(self, name: str, grace: int | None) -> str:
        pod = self._pod(name)
        if pod is None:
            raise RuntimeError(f"pod {self.namespace}/{name} does not exist")
        self.core.delete_namespaced_pod(name, self.namespace, grace_period_seconds=grace)
        return str(pod["metadata"]["uid"])

    def wait_replaced(self, name: str, old_uid: str, timeout: float | None = None) -> None:
        """Until a pod named ``name`` with another uid is Ready (the StatefulSet's)."""
        deadline = time.monotonic() + (timeout or self.ready_timeout)
        while time.monotonic() < deadline:
            pod = self._pod(name)
            if pod is not None and pod["metadata"]["uid"] != old_uid and _ready(pod):
                return
            time.sleep(0.2)
        raise TimeoutError(f"pod {self.namespace}/{name} was not back and Ready in time")

    def _pod_kill(self, names: list[str], grace: int | None, text: str) -> ActiveFault:
        """PodChaos pod-kill of these pods; healing deletes it and waits for them."""
        uids = {name: str((self._pod(name) or {}).get("metadata", {}).get("uid")) for name in names}
        spec: Obj = {"action": "pod-kill", "mode": "all", "selector": self._selector(names)}
        if grace is not None:
            spec["gracePeriod"] = grace
        inner = self._chaos_mesh("PodChaos", spec, text)
        self._active.remove(inner)

        def undo() -> None:
            inner.heal()
            for name, uid in uids.items():
                self.wait_replaced(name, uid)

        fault = Fault(self, inner.description, undo)
        fault.resources = inner.resources
        return fault

    def kill(self, node_id: int) -> ActiveFault:
        """Force-delete the member's pod (grace 0: SIGKILL)."""
        name = self.pod_name(node_id)
        if self.via == "chaos-mesh":
            return self._pod_kill([name], 0, f"pod-kill {name} (node {node_id})")
        uid = self._delete_pod(name, 0)
        return Fault(self, f"delete pod {name} (node {node_id}, grace 0)",
                     lambda: self.wait_replaced(name, uid))  # fmt: skip

    def kill_pods(self, node_ids: Iterable[int]) -> ActiveFault:
        """Force-delete several members' pods at once (two pods: a majority of 3)."""
        names = [self.pod_name(i) for i in sorted(set(node_ids))]
        if self.via == "chaos-mesh":
            return self._pod_kill(names, 0, f"pod-kill {', '.join(names)}")
        uids = {name: self._delete_pod(name, 0) for name in names}

        def undo() -> None:
            for name, uid in uids.items():
                self.wait_replaced(name, uid)

        return Fault(self, f"delete pods {', '.join(names)} (grace 0)", undo)

    def random_node(self) -> int:
        return self.rng.choice(self.node_ids())

    def restart(self, node_id: int) -> None:
        name = self.pod_name(node_id)
        if self.via == "chaos-mesh":
            self._pod_kill([name], None, f"pod-kill {name} (graceful)").heal()
            return
        uid = self._delete_pod(name, None)
        self.wait_replaced(name, uid)

    def pause(self, node_id: int) -> ActiveFault:
        raise CapabilityError(
            "pause on --target kubernetes is not offered (Kubernetes cannot freeze a "
            "container; Chaos Mesh's pod-failure is pod_failure())"
        )

    # ---- network -------------------------------------------------------------------------

    def _meta(self, name: str) -> Obj:
        return {
            "name": name,
            "namespace": self.namespace,
            "labels": {
                "app.kubernetes.io/name": "raft-exchange",
                LABEL_COMPONENT: "chaos",
                "app.kubernetes.io/part-of": "raft-exchange",
                LABEL_INSTANCE: self.cluster_name,
                LABEL_RUN: self.run_id,
            },
        }

    def partition_policies(self, sides: list[list[str]], one_way: bool = False) -> list[Obj]:
        """The NetworkPolicies that cut ``sides`` (lists of pod names) apart."""
        policies = []
        for k, side in enumerate(sides):
            others = [p for j, other in enumerate(sides) if j != k for p in other]
            if one_way:
                others = [p for other in sides[k + 1 :] for p in other]
            if not others:
                continue
            policies.append(
                {
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "NetworkPolicy",
                    "metadata": self._meta(f"chaos-{self.run_id}-side{k}-{_seq()}"),
                    "spec": {
                        "podSelector": {
                            "matchLabels": {LABEL_INSTANCE: self.cluster_name},
                            "matchExpressions": [
                                {"key": LABEL_POD_NAME, "operator": "In", "values": side}
                            ],
                        },
                        "policyTypes": ["Egress"],
                        # Any pod in any namespace (DNS, tracing) but the other sides'.
                        "egress": [
                            {
                                "to": [
                                    {
                                        "namespaceSelector": {},
                                        "podSelector": {
                                            "matchExpressions": [
                                                {
                                                    "key": LABEL_POD_NAME,
                                                    "operator": "NotIn",
                                                    "values": others,
                                                }
                                            ]
                                        },
                                    }
                                ]
                            }
                        ],
                    },
                }
            )
        return policies

    def _egress_allowed_elsewhere(self, pods: list[str]) -> str | None:
        """The name of a policy not ours that allows these pods egress, if any."""
        labels = {
            p["metadata"]["name"]: p["metadata"].get("labels") or {} for p in self.node_pods()
        }
        found = self.networking.list_namespaced_network_policy(self.namespace)
        for policy in found.items:
            raw = self.api.sanitize_for_serialization(policy)
            if (raw["metadata"].get("labels") or {}).get(LABEL_COMPONENT) == "chaos":
                continue
            spec = raw.get("spec") or {}
            # A default-deny (Egress with no rules) allows nothing; rules would override.
            if "Egress" not in (spec.get("policyTypes") or ()) or not spec.get("egress"):
                continue
            match = (spec.get("podSelector") or {}).get("matchLabels") or {}
            if any(match.items() <= labels.get(p, {}).items() for p in pods):
                return str(raw["metadata"]["name"])
        return None

    def partition(self, groups: Iterable[Iterable[int]], one_way: bool = False) -> ActiveFault:
        ids = [sorted(set(g)) for g in groups]
        seen: set[int] = set()
        for side in ids:
            for node_id in side:
                if node_id in seen:
                    raise ValueError(f"node {node_id} is in more than one partition group")
                seen.add(node_id)
        sides = [[self.pod_name(i) for i in side] for side in ids]
        arrow = " -> " if one_way else " | "
        text = arrow.join("{" + ",".join(map(str, s)) + "}" for s in ids)
        if self.via == "chaos-mesh":
            return self._partition_chaos_mesh(sides, one_way, f"partition {text}")
        other = self._egress_allowed_elsewhere([p for s in sides for p in s])
        if other is not None:
            raise CapabilityError(
                f"partition by NetworkPolicy: policy {other!r} already allows these pods "
                "egress, which would override the cut (restrictEgress); use chaos-mesh"
            )
        made: list[str] = []
        try:
            for policy in self.partition_policies(sides, one_way):
                # The client takes a plain dict as the body as well as a V1NetworkPolicy.
                self.networking.create_namespaced_network_policy(self.namespace, policy)  # type: ignore[arg-type]
                made.append(policy["metadata"]["name"])
        except Exception:
            self._delete_policies(made)
            raise
        fault = Fault(self, f"partition {text} (NetworkPolicy)",
                      lambda: self._delete_policies(made))  # fmt: skip
        fault.resources = [("NetworkPolicy", n) for n in made]
        return fault

    def _delete_policies(self, names: list[str]) -> None:
        from kubernetes.client.exceptions import ApiException

        for name in names:
            try:
                self.networking.delete_namespaced_network_policy(name, self.namespace)
            except ApiException as exc:
                if exc.status != 404:
                    raise

    # ---- Chaos Mesh -------------------------------------------------------------------------

    def _selector(self, pods: list[str]) -> Obj:
        return {"namespaces": [self.namespace], "pods": {self.namespace: pods}}

    def chaos_mesh_resource(self, kind: str, spec: Obj) -> Obj:
        """A Chaos Mesh object of ``kind`` (not yet created)."""
        plural = CHAOS_MESH_PLURALS[kind]
        return {
            "apiVersion": f"{CHAOS_MESH_GROUP}/{CHAOS_MESH_VERSION}",
            "kind": kind,
            "metadata": self._meta(f"chaos-{self.run_id}-{plural}-{_seq()}"),
            "spec": spec,
        }

    def _chaos_mesh(self, kind: str, spec: Obj, description: str) -> ActiveFault:
        if kind not in self.chaos_mesh_kinds:
            raise CapabilityError(
                f"{description} needs Chaos Mesh's {kind} "
                f"({CHAOS_MESH_GROUP}/{CHAOS_MESH_VERSION} is not served by this cluster)"
            )
        obj = self.chaos_mesh_resource(kind, spec)
        plural, name = CHAOS_MESH_PLURALS[kind], obj["metadata"]["name"]
        self.custom.create_namespaced_custom_object(
            CHAOS_MESH_GROUP, CHAOS_MESH_VERSION, self.namespace, plural, obj
        )

        def undo() -> None:
            from kubernetes.client.exceptions import ApiException

            try:
                self.custom.delete_namespaced_custom_object(
                    CHAOS_MESH_GROUP, CHAOS_MESH_VERSION, self.namespace, plural, name
                )
            except ApiException as exc:
                if exc.status != 404:
                    raise

        fault = Fault(self, f"{description} (Chaos Mesh {kind} {name})", undo)
        fault.resources = [(kind, name)]
        return fault

    def _partition_chaos_mesh(
        self, sides: list[list[str]], one_way: bool, text: str
    ) -> ActiveFault:
        # One NetworkChaos per pair of sides; several faults healed as one.
        parts: list[ActiveFault] = []
        try:
            for k, side in enumerate(sides):
                for other in sides[k + 1 :]:
                    spec = {
                        "action": "partition",
                        "mode": "all",
                        "selector": self._selector(side),
                        "direction": "to" if one_way else "both",
                        "target": {"mode": "all", "selector": self._selector(other)},
                    }
                    parts.append(self._chaos_mesh("NetworkChaos", spec, text))
        except Exception:
            for part in parts:
                part.heal()
            raise
        for part in parts:
            self._active.remove(part)

        def undo() -> None:
            for part in parts:
                part.heal()

        fault = Fault(self, f"{text} (Chaos Mesh NetworkChaos)", undo)
        fault.resources = [r for p in parts for r in p.resources]
        return fault

    def loss(self, node_id: int, probability: float) -> ActiveFault:
        if not 0.0 < probability <= 1.0:
            raise ValueError(f"probability must be in (0, 1], not {probability}")
        spec = {"action": "loss", "mode": "all", "direction": "to",
                "selector": self._selector([self.pod_name(node_id)]),
                "loss": {"loss": f"{probability * 100:g}", "correlation": "0"}}  # fmt: skip
        return self._chaos_mesh("NetworkChaos", spec, f"loss {probability:.0%} on node {node_id}")

    def bandwidth(self, node_id: int, rate_kbit: int) -> ActiveFault:
        if rate_kbit < 8:
            raise ValueError(f"rate_kbit must be at least 8, not {rate_kbit}")
        spec = {"action": "bandwidth", "mode": "all", "direction": "to",
                "selector": self._selector([self.pod_name(node_id)]),
                "bandwidth": {"rate": f"{rate_kbit}kbps", "limit": 20_000, "buffer": 10_000}}  # fmt: skip
        return self._chaos_mesh(
            "NetworkChaos", spec, f"bandwidth {rate_kbit} kbit/s out of node {node_id}"
        )

    def link(self, src: int, dst: int, fault: LinkFault) -> ActiveFault:
        if src == dst:
            raise ValueError("link needs two different nodes")
        base: Obj = {"mode": "all", "direction": "to",
                     "selector": self._selector([self.pod_name(src)]),
                     "target": {"mode": "all",
                                "selector": self._selector([self.pod_name(dst)])}}  # fmt: skip
        if fault.toxic == "latency":
            spec = base | {"action": "delay", "delay": {"latency": f"{fault.latency_ms:g}ms",
                                                        "jitter": f"{fault.jitter_ms:g}ms"}}  # fmt: skip
            what = f"latency {fault.latency_ms:g}+-{fault.jitter_ms:g} ms"
        elif fault.toxic == "corrupt":
            pct = f"{fault.probability * 100:g}"
            spec = base | {"action": "corrupt", "corrupt": {"corrupt": pct, "correlation": "0"}}
            what = f"corrupt {fault.probability:.0%} of packets"
        else:
            raise CapabilityError(
                f"link {fault.toxic!r} on --target kubernetes is not offered (latency, corrupt)"
            )
        return self._chaos_mesh("NetworkChaos", spec, f"link {src}->{dst}: {what}")

    def clock(self, node_id: int, offset_s: float, rate: float = 1.0) -> ActiveFault:
        if rate != 1.0:
            raise CapabilityError("clock rate on --target kubernetes: TimeChaos only offsets")
        spec = {"mode": "all", "selector": self._selector([self.pod_name(node_id)]),
                "timeOffset": f"{offset_s:g}s", "clockIds": ["CLOCK_REALTIME"]}  # fmt: skip
        return self._chaos_mesh("TimeChaos", spec, f"clock of node {node_id} {offset_s:+g} s")

    def disk(self, node_id: int, fault: DiskFault) -> ActiveFault:
        base: Obj = {"mode": "all", "selector": self._selector([self.pod_name(node_id)]),
                     "volumePath": DATA_DIR, "path": f"{DATA_DIR}/**/*", "percent": 100}  # fmt: skip
        if fault.kind == "slow_fsync":
            spec = base | {"action": "latency", "delay": f"{fault.delay_ms:g}ms",
                           "methods": ["fsync"]}  # fmt: skip
        elif fault.kind in ("eio_write", "eio_fsync"):
            method = "write" if fault.kind == "eio_write" else "fsync"
            spec = base | {"action": "fault", "errno": 5, "methods": [method]}
        else:
            raise CapabilityError(f"disk {fault.kind!r} on --target kubernetes is not offered")
        return self._chaos_mesh("IOChaos", spec, f"disk of node {node_id}: {fault.kind}")

    def stress(self, node_id: int, cpu_workers: int = 1, memory: str | None = None) -> ActiveFault:
        stressors: Obj = {"cpu": {"workers": cpu_workers, "load": 100}}
        if memory:
            stressors["memory"] = {"workers": 1, "size": memory}
        spec = {"mode": "all", "selector": self._selector([self.pod_name(node_id)]),
                "stressors": stressors}  # fmt: skip
        return self._chaos_mesh("StressChaos", spec, f"stress on node {node_id}")

    def pod_failure(self, node_id: int) -> ActiveFault:
        spec = {"action": "pod-failure", "mode": "all",
                "selector": self._selector([self.pod_name(node_id)])}  # fmt: skip
        return self._chaos_mesh("PodChaos", spec, f"pod-failure of node {node_id}")

    def power_cut(self, node_ids: Iterable[int]) -> ActiveFault:
        raise CapabilityError("power_cut on --target kubernetes is not offered (--target local)")

    def corrupt_state(self, node_id: int, seed: int) -> ActiveFault:
        raise CapabilityError(
            "corrupt_state on --target kubernetes is not offered (--target local)"
        )

    def mark_log(self, node_id: int) -> LogMark:
        raise CapabilityError("lost_tail on --target kubernetes is not offered (--target local)")

    def cut_log(self, node_id: int, mark: LogMark) -> ActiveFault:
        raise CapabilityError("lost_tail on --target kubernetes is not offered (--target local)")

    # ---- cleanup ---------------------------------------------------------------------------

    def heal_all(self) -> None:
        errors = []
        for fault in reversed(list(self._active)):
            try:
                fault.heal()
            except Exception as exc:  # heal the rest; report the first failure after
                errors.append(exc)
        if errors:
            raise errors[0]

    def close(self) -> None:
        """Heal every fault, then delete anything of this run still labelled with its id
        (a fault whose healing failed half way)."""
        if self.closed:
            return
        self.closed = True
        try:
            self.heal_all()
        finally:
            self._delete_leftovers()

    def _delete_leftovers(self) -> None:
        from kubernetes.client.exceptions import ApiException

        selector = f"{LABEL_RUN}={self.run_id}"
        with contextlib.suppress(ApiException):
            found = self.networking.list_namespaced_network_policy(
                self.namespace, label_selector=selector
            )
            self._delete_policies([str(p.metadata.name) for p in found.items if p.metadata])
        for kind in sorted(self.chaos_mesh_kinds):
            plural = CHAOS_MESH_PLURALS[kind]
            with contextlib.suppress(ApiException):
                listed: Any = self.custom.list_namespaced_custom_object(
                    CHAOS_MESH_GROUP, CHAOS_MESH_VERSION, self.namespace, plural,
                    label_selector=selector,
                )  # fmt: skip
                for item in listed.get("items") or ():
                    self.custom.delete_namespaced_custom_object(
                        CHAOS_MESH_GROUP, CHAOS_MESH_VERSION, self.namespace, plural,
                        item["metadata"]["name"],
                    )  # fmt: skip


def _ready(pod: Obj) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or ()
    )


_counter = 0


def _seq() -> int:
    global _counter
    _counter += 1
    return _counter
