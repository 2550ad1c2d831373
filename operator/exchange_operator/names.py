"""Every name the operator shares with Kubernetes, defined once.

The API group, kind, labels, ports and object names are used by the CRD, the
renderers, the handlers, the chart generator and the tests; changing one here
changes it everywhere.
"""

from __future__ import annotations

import hashlib
import re

DOMAIN = "raft-exchange.dev"
GROUP = f"exchange.{DOMAIN}"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ExchangeCluster"
PLURAL = "exchangeclusters"
SINGULAR = "exchangecluster"
SHORT_NAMES = ("xc",)
CATEGORIES = ("raft-exchange",)
CRD_NAME = f"{PLURAL}.{GROUP}"

APP_NAME = "raft-exchange"
MANAGER = "exchange-operator"
FIELD_MANAGER = MANAGER

# Ports and paths from docs/node-contract.md.
HTTP_PORT = 8080
GRPC_PORT = 7070
ADMIN_PORT = 8081
HTTP_PORT_NAME = "http"
GRPC_PORT_NAME = "grpc"
ADMIN_PORT_NAME = "admin"
DATA_DIR = "/var/lib/exchange"
CONFIG_DIR = "/etc/exchange/config"
CONFIG_FILE_NAME = "exchange.yaml"
API_KEYS_DIR = "/etc/exchange/api-keys"
HTTP_TLS_DIR = "/etc/exchange/http-tls"
TLS_CERT_KEY = "tls.crt"
TLS_KEY_KEY = "tls.key"
CA_CERT_KEY = "ca.crt"
# Kubernetes >= 1.28 labels every StatefulSet pod with its ordinal.
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
SHUTDOWN_GRACE_SECONDS = 20
NODE_UID = 10001

# Labels. `role` is the literal label the issue asks for: services and chaos
# experiments select `role=leader`.
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_VERSION = "app.kubernetes.io/version"
LABEL_ROLE = "role"
LABEL_CLUSTER_ID = f"{GROUP}/cluster-id"
LABEL_SERVICE = f"{GROUP}/service"  # peers | client | leader: lets a ServiceMonitor pick one
# The Prometheus label that carries the ExchangeCluster's name (relabelled from
# the pod's app.kubernetes.io/instance label by the ServiceMonitor).
PROM_CLUSTER_LABEL = "exchangecluster"
ROLE_LEADER = "leader"
ROLE_FOLLOWER = "follower"
ROLE_LEARNER = "learner"

ANNOTATION_RESTART_HASH = f"{GROUP}/restart-hash"
ANNOTATION_CONFIG_HASH = f"{GROUP}/config-hash"
# A hash of spec.apiKeysSecretRef's keys file: a changed Secret rolls the pods one at a
# time (leadership moved first), and each restarted node reads the new keys.
ANNOTATION_API_KEYS_HASH = f"{GROUP}/api-keys-hash"
ANNOTATION_PREFIX = GROUP  # kopf's progress and diff-base annotations

COMPONENT_NODE = "node"
COMPONENT_OPERATOR = "operator"
COMPONENT_MONITORING = "monitoring"
COMPONENT_DASHBOARDS = "dashboards"
COMPONENT_BACKUP = "backup"


def peers_service(cluster: str) -> str:
    """The headless Service that gives each pod its stable DNS name."""
    return f"{cluster}-peers"


def client_service(cluster: str) -> str:
    return cluster


def leader_service(cluster: str) -> str:
    return f"{cluster}-leader"


def config_map(cluster: str) -> str:
    return f"{cluster}-config"


def admin_secret(cluster: str) -> str:
    """The Secret the operator creates once with the cluster's admin token."""
    return f"{cluster}-admin"


ADMIN_TOKEN_KEY = "token"


def ca_secret(cluster: str) -> str:
    """The operator-made CA (self-managed certificates only)."""
    return f"{cluster}-ca"


def member_tls_secret(cluster: str, ordinal: int) -> str:
    """Before nodes enrolled: the member key and certificate of this ordinal's pod
    (deleted on upgrade); now the prefix of its cert-manager CertificateRequests."""
    return f"{cluster}-member-{ordinal}"


def http_tls_secret(cluster: str) -> str:
    """The server certificate of the HTTP and admin listeners (every pod)."""
    return f"{cluster}-http-tls"


def raft_cluster_id(cluster: str, namespace: str, explicit: str | None = None) -> str:
    """The node's --cluster-id: a DNS label naming this Raft group.

    ``spec.clusterId`` when it is already a DNS label, else ``<name>-<namespace>``
    (dots become dashes); longer than 63 characters, it is cut to 54 and given
    an 8-hex hash of the full text, so it stays unique and never changes.
    """
    text = explicit or f"{cluster}-{namespace}"
    label = re.sub(r"[^a-z0-9-]", "-", text.lower()).strip("-")
    if len(label) <= 63 and (label == text or not explicit):
        return label
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{label[:54].rstrip('-')}-{digest}"


def pdb(cluster: str) -> str:
    return cluster


def network_policy(cluster: str) -> str:
    """The allow rules (peer, HTTP, admin, metrics, egress) for the cluster's pods."""
    return f"{cluster}-peers"


def default_deny_policy(cluster: str) -> str:
    return f"{cluster}-default-deny"


def service_monitor(cluster: str) -> str:
    return cluster


def prometheus_rule(cluster: str) -> str:
    return cluster


def dashboard_config_map(cluster: str, dashboard: str) -> str:
    return f"{cluster}-dashboard-{dashboard}"


def pod_name(cluster: str, ordinal: int) -> str:
    return f"{cluster}-{ordinal}"


def peer_host(cluster: str, ordinal: int, namespace: str) -> str:
    """`<cluster>-<i>.<cluster>-peers.<namespace>.svc`, per the node contract."""
    return f"{pod_name(cluster, ordinal)}.{peers_service(cluster)}.{namespace}.svc"


def peer_address(cluster: str, ordinal: int, namespace: str) -> str:
    return f"{peer_host(cluster, ordinal, namespace)}:{GRPC_PORT}"


def peer_http_address(cluster: str, ordinal: int, namespace: str) -> str:
    """The HTTP address followers forward writes to (`--advertise-http`, `http_address`)."""
    return f"{peer_host(cluster, ordinal, namespace)}:{HTTP_PORT}"


def initial_node_id(ordinal: int) -> int:
    """Members 0..N-1 of a new cluster get ids ordinal + 1 (0 means nobody)."""
    return ordinal + 1


_ORDINAL = re.compile(r"^(?P<pod>.+)-(?P<ordinal>\d+)$")


def ordinal_of_pod(cluster: str, pod: str) -> int | None:
    match = _ORDINAL.match(pod)
    if match is None or match.group("pod") != cluster:
        return None
    return int(match.group("ordinal"))


def ordinal_of_address(cluster: str, address: str) -> int | None:
    """The pod ordinal a member's gRPC address points at, or None for foreign hosts."""
    host = address.rsplit(":", 1)[0]
    return ordinal_of_pod(cluster, host.split(".", 1)[0])


def operator_selector_labels() -> dict[str, str]:
    """Labels every operator pod carries (chart: raft-exchange.selectorLabels)."""
    return {LABEL_NAME: APP_NAME, LABEL_COMPONENT: COMPONENT_OPERATOR}


def selector_labels(cluster: str) -> dict[str, str]:
    """The labels that select a cluster's node pods; immutable once created."""
    return {LABEL_NAME: APP_NAME, LABEL_INSTANCE: cluster, LABEL_COMPONENT: COMPONENT_NODE}


_LABEL_VALUE_BAD = re.compile(r"[^A-Za-z0-9._-]")


def label_value(text: str) -> str:
    """A valid label value (<= 63 chars, alphanumeric at both ends)."""
    value = _LABEL_VALUE_BAD.sub("-", text)[:63]
    return value.strip("-._")


def image_version(image: str) -> str:
    """The tag (or digest prefix) of an image reference, for app.kubernetes.io/version."""
    if "@" in image:
        return label_value(image.split("@", 1)[1].replace("sha256:", "")[:12])
    last = image.rsplit("/", 1)[-1]
    return label_value(last.split(":", 1)[1]) if ":" in last else "latest"


def standard_labels(cluster: str, component: str, image: str | None = None) -> dict[str, str]:
    labels = {
        LABEL_NAME: APP_NAME,
        LABEL_INSTANCE: cluster,
        LABEL_COMPONENT: component,
        LABEL_PART_OF: APP_NAME,
        LABEL_MANAGED_BY: MANAGER,
    }
    if image is not None:
        labels[LABEL_VERSION] = image_version(image)
    return labels
