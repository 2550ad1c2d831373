"""``KubernetesTarget`` refuses bad input before touching a cluster, naming the option."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from exchange_node.chaos.kube_target import KubernetesTarget


def test_in_cluster_outside_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ValueError, match="in_cluster=true: no ServiceAccount credentials"):
        KubernetesTarget("raft-exchange", "demo", in_cluster=True)


def test_missing_kubeconfig(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ValueError, match=f"kubeconfig={missing}"):
        KubernetesTarget("raft-exchange", "demo", kubeconfig=str(missing))


def test_api_server_that_does_not_answer(tmp_path: Path) -> None:
    config = tmp_path / "kubeconfig"
    # Port 9 (discard) on loopback: nothing listens there.
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: x\n"
        "clusters: [{name: x, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {}}]\n"
        "contexts: [{name: x, context: {cluster: x, user: u}}]\n"
    )
    with pytest.raises(
        ValueError, match=re.escape("the API server at http://127.0.0.1:9 does not answer")
    ):
        KubernetesTarget("raft-exchange", "demo", kubeconfig=str(config))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"via": "litmus"}, "via must be kubernetes or chaos-mesh"),
        ({"ca_file": "/nonexistent/ca.crt"}, "ca_file '/nonexistent/ca.crt' does not exist"),
    ],
)
def test_bad_options(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        KubernetesTarget("raft-exchange", "demo", api_client=object(), **kwargs)  # type: ignore[arg-type]


def test_namespace_and_cluster_name_are_required() -> None:
    with pytest.raises(ValueError, match="namespace and cluster_name are required"):
        KubernetesTarget("", "demo", api_client=object())
