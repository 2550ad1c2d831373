"""`exchange local up|status`: a cluster of node processes on this machine.

``exchange local up --nodes 3`` starts one ``exchange node`` process per
member, each with its own data directory under ``--data-root``, waits until
the cluster has a leader, prints the API, metrics and stream addresses and
keeps running until Ctrl-C (or SIGTERM), when it stops every node with
SIGTERM (a leader hands leadership over first). Running it again on the same
``--data-root`` restarts the same members on their data: ports, admin token
and API keys are kept in ``<data-root>/cluster.json``.

One name per replica: the member with Raft id ``i`` is ``node-<i>`` everywhere:
its ``--name`` (logs, ``/v1/cluster``, admin status), its data directory
``<data-root>/node-<i>``, its log ``<data-root>/node-<i>.log``, and the name every
other member gives it (the node names a bootstrap peer ``node-<id>``).

Ports: node ``i`` (1-based) serves HTTP on ``base-port + i - 1``, gRPC on
``base-port + 100 + i - 1`` and the admin API on ``base-port + 200 + i - 1``.

Peers talk mutual TLS: the first start writes a throwaway CA and one member
certificate per node under ``<data-root>/pki/`` (keys and ``cluster.json`` are
0600). ``--insecure-peers`` (``LocalCluster.create(peer_tls=False)``) runs the
peer port without TLS instead, for experiments that need it.

``exchange local status`` prints every member's role, term, indexes and lag.

``LocalCluster`` is the same machinery as a library: the integration tests
and ``exchange bench cluster`` use it to start, kill -9, freeze and restart
real processes.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CLUSTER_FILE = "cluster.json"
PKI_DIR = "pki"
BENCH_RATE_LIMIT = 1_000_000
"""Orders per second of the ``bench*`` keys (a market maker's tier): the cluster bench
must fill the cluster with a few keys; every other key has the node's default."""


def _key_entry(token: str, client: str) -> str:
    """One entry of the keys file's list form (docs/api.md)."""
    entry = f"- {{token: {token}, client_id: {client}"
    if client.startswith("bench"):
        entry += f", rate_limit: {BENCH_RATE_LIMIT}"
    return entry + "}\n"


LOCAL_CLUSTER_ID = "local"


def member_name(node_id: int) -> str:
    """The one name of the member with Raft id ``node_id`` in a local cluster: its
    ``--name``, data directory and log file (``node-<id>``; the shell names the
    bootstrap peers it has not heard from the same way)."""
    return f"node-{node_id}"


def free_ports(count: int) -> list[int]:
    """Ports the kernel just handed out on loopback (free at the time of asking)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class MemberSpec:
    node_id: int
    http_port: int
    grpc_port: int
    data_dir: str
    initial: bool = True
    # 0 in a cluster.json written before the admin API had its own port (see load).
    admin_port: int = 0
    # The address the node listens on; the chaos target puts each node in its own
    # network namespace with an address of its own.
    host: str = "127.0.0.1"

    @property
    def http(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def admin(self) -> str:
        return f"{self.host}:{self.admin_port}"

    @property
    def grpc(self) -> str:
        return f"{self.host}:{self.grpc_port}"


@dataclass
class ClusterSpec:
    members: list[MemberSpec]
    admin_token: str
    api_keys: dict[str, str]
    election_ms: int = 500
    heartbeat_ms: int = 50
    snapshot_threshold: int = 50_000
    extra_args: list[str] = field(default_factory=list)
    peer_tls: bool = True
    cluster_id: str = LOCAL_CLUSTER_ID

    def save(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / (CLUSTER_FILE + ".tmp")
        # It holds the admin token and API keys: owner-only from the first byte.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(json.dumps(asdict(self), indent=2))
        os.replace(tmp, root / CLUSTER_FILE)

    @classmethod
    def load(cls, root: Path) -> ClusterSpec:
        doc = json.loads((root / CLUSTER_FILE).read_text())
        doc["members"] = [MemberSpec(**m) for m in doc["members"]]
        for m in doc["members"]:
            if not m.admin_port:
                m.admin_port = m.http_port + 200
        return cls(**doc)


class LocalCluster:
    """Node processes on loopback, each on its own data directory."""

    def __init__(self, root: Path, spec: ClusterSpec, *, python: str = sys.executable) -> None:
        self.root = root
        self.spec = spec
        self.python = python
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        # Node processes run in their own sessions (Ctrl-C goes to ``local up``, which
        # stops them in order); make sure none outlives this process by accident.
        atexit.register(self._kill_leftovers)

    def _kill_leftovers(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()

    # ---- building -------------------------------------------------------------

    @classmethod
    def create(
        cls,
        root: Path,
        nodes: int,
        *,
        base_port: int | None = None,
        election_ms: int = 500,
        heartbeat_ms: int = 50,
        snapshot_threshold: int = 50_000,
        extra_args: list[str] | None = None,
        peer_tls: bool = True,
    ) -> LocalCluster:
        """The cluster saved under ``root``, or a new one with ``nodes`` members.

        ``peer_tls=False``: the nodes run with ``--insecure-peers``.
        """
        if (root / CLUSTER_FILE).exists():
            return cls(root, ClusterSpec.load(root))
        if base_port is None:
            ports = free_ports(3 * nodes)
            triples = [(ports[i], ports[nodes + i], ports[2 * nodes + i]) for i in range(nodes)]
        else:
            triples = [
                (base_port + i, base_port + 100 + i, base_port + 200 + i) for i in range(nodes)
            ]
        members = [
            MemberSpec(i + 1, http, grpc, str(root / member_name(i + 1)), admin_port=admin)
            for i, (http, grpc, admin) in enumerate(triples)
        ]
        spec = ClusterSpec(
            members=members,
            admin_token=secrets.token_urlsafe(24),
            api_keys={
                f"key-{name}-{secrets.token_hex(6)}": name
                for name in ("alice", "bob", "carol", "dave", *(f"bench{i}" for i in range(8)))
            },
            election_ms=election_ms,
            heartbeat_ms=heartbeat_ms,
            snapshot_threshold=snapshot_threshold,
            extra_args=list(extra_args or []),
            peer_tls=peer_tls,
        )
        spec.save(root)
        return cls(root, spec)

    def member(self, node_id: int) -> MemberSpec:
        for m in self.spec.members:
            if m.node_id == node_id:
                return m
        raise KeyError(node_id)

    def add_member_spec(self, node_id: int | None = None) -> MemberSpec:
        """Reserve ports and a data directory for a member to be added later."""
        node_id = node_id or max(m.node_id for m in self.spec.members) + 1
        http, grpc, admin = free_ports(3)
        spec = MemberSpec(
            node_id,
            http,
            grpc,
            str(self.root / member_name(node_id)),
            initial=False,
            admin_port=admin,
        )
        self.spec.members.append(spec)
        self.spec.save(self.root)
        return spec

    def log_path(self, node_id: int) -> Path:
        """Where member ``node_id``'s process writes its log: ``<data-root>/node-<id>.log``."""
        return self.root / f"{member_name(node_id)}.log"

    def key_for(self, client: str) -> str:
        for token, name in self.spec.api_keys.items():
            if name == client:
                return token
        raise KeyError(client)

    # ---- processes --------------------------------------------------------------

    def command(self, m: MemberSpec) -> list[str]:
        initial = [x for x in self.spec.members if x.initial]
        peers = ",".join(f"{x.node_id}={self.peer_address(m, x)}" for x in initial)
        peer_http = ",".join(f"{x.node_id}={x.http}" for x in initial)
        return [
            self.python,
            "-m",
            "exchange_node.cli",
            "node",
            f"--node-id={m.node_id}",
            f"--name={member_name(m.node_id)}",
            f"--peers={peers}",
            f"--peer-http={peer_http}",
            f"--cluster-state={'new' if m.initial else 'existing'}",
            f"--listen-host={m.host}",
            f"--http-port={m.http_port}",
            f"--grpc-port={m.grpc_port}",
            f"--admin-port={m.admin_port}",
            f"--advertise-address={m.grpc}",
            f"--advertise-http={m.http}",
            f"--data-dir={m.data_dir}",
            f"--election-ms={self.spec.election_ms}",
            f"--heartbeat-ms={self.spec.heartbeat_ms}",
            f"--snapshot-threshold={self.spec.snapshot_threshold}",
            f"--admin-token-file={self.root / 'admin-token'}",
            f"--api-keys-file={self.root / 'api-keys'}",
            "--shutdown-grace-seconds=10",
            f"--cluster-id={self.spec.cluster_id}",
            *self.peer_args(m.node_id),
            *self.spec.extra_args,
        ]

    def peer_address(self, source: MemberSpec, peer: MemberSpec) -> str:
        """The gRPC address ``source`` dials to reach ``peer`` (a chaos target puts a
        proxy in between)."""
        return peer.grpc

    def launch_prefix(self, node_id: int) -> list[str]:
        """Words put before the node's command (a chaos target adds ``ip netns exec``)."""
        return []

    def node_env(self, node_id: int, env: dict[str, str]) -> dict[str, str]:
        """The node's environment (a chaos target adds libfaketime's variables)."""
        return env

    def member_cert_paths(self, node_id: int) -> tuple[Path, Path, Path]:
        """(certificate, key, CA) files of member ``node_id``."""
        pki = self.root / PKI_DIR
        return pki / f"member-{node_id}.crt", pki / f"member-{node_id}.key", pki / "ca.crt"

    def peer_args(self, node_id: int) -> list[str]:
        if not self.spec.peer_tls:
            return ["--insecure-peers"]
        cert, key, ca = self.member_cert_paths(node_id)
        return [f"--peer-tls-cert={cert}", f"--peer-tls-key={key}", f"--peer-tls-ca={ca}"]

    def ensure_certificates(self) -> None:
        """A throwaway CA and a certificate per member, created once under ``pki/``."""
        if not self.spec.peer_tls:
            return
        from exchange_node.security.certs import (
            CertKeyPair,
            generate_ca,
            issue_member_cert,
            write_pair,
        )

        pki = self.root / PKI_DIR
        pki.mkdir(mode=0o700, parents=True, exist_ok=True)
        ca_cert, ca_key = pki / "ca.crt", pki / "ca.key"
        if ca_cert.exists() and ca_key.exists():
            ca = CertKeyPair(ca_cert.read_bytes(), ca_key.read_bytes())
        else:
            ca = generate_ca(f"raft-exchange local cluster {self.spec.cluster_id}")
            write_pair(ca, ca_cert, ca_key)
        for m in self.spec.members:
            cert, key, _ = self.member_cert_paths(m.node_id)
            if not (cert.exists() and key.exists()):
                pair = issue_member_cert(
                    ca, self.spec.cluster_id, m.node_id, ip_addresses=["127.0.0.1"]
                )
                write_pair(pair, cert, key)

    def _write_secrets(self) -> None:
        token = self.root / "admin-token"
        token.write_text(self.spec.admin_token + "\n")
        keys = self.root / "api-keys"
        keys.write_text("".join(_key_entry(t, c) for t, c in self.spec.api_keys.items()))
        for path in (token, keys):
            path.chmod(0o600)

    def start(self, node_id: int) -> subprocess.Popen[bytes]:
        m = self.member(node_id)
        self.root.mkdir(parents=True, exist_ok=True)
        self._write_secrets()
        self.ensure_certificates()
        log = open(self.log_path(node_id), "ab")  # noqa: SIM115 - owned by the child
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env = self.node_env(node_id, env)
        proc = subprocess.Popen(
            [*self.launch_prefix(node_id), *self.command(m)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        log.close()
        self.procs[node_id] = proc
        return proc

    def start_all(self) -> None:
        for m in self.spec.members:
            if m.initial or Path(m.data_dir).exists():
                self.start(m.node_id)

    def alive(self, node_id: int) -> bool:
        proc = self.procs.get(node_id)
        return proc is not None and proc.poll() is None

    def signal(self, node_id: int, sig: int) -> None:
        proc = self.procs[node_id]
        if proc.poll() is None:
            proc.send_signal(sig)

    def kill(self, node_id: int) -> None:
        """kill -9: no flush, no goodbye."""
        proc = self.procs[node_id]
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    def pause(self, node_id: int) -> None:
        self.signal(node_id, signal.SIGSTOP)

    def resume(self, node_id: int) -> None:
        self.signal(node_id, signal.SIGCONT)

    def stop(self, node_id: int, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait; kill -9 if it does not exit in ``timeout``."""
        proc = self.procs.get(node_id)
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def stop_all(self, timeout: float = 15.0) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGCONT)
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def log_tail(self, node_id: int, lines: int = 30) -> str:
        path = self.log_path(node_id)
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # ---- HTTP --------------------------------------------------------------------

    def request(
        self,
        node_id: int,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        timeout: float = 2.0,
    ) -> tuple[int, Any]:
        m = self.member(node_id)
        data = None if body is None else json.dumps(body).encode()
        # The admin API listens on its own port (--admin-port); everything else on HTTP.
        address = m.admin if path.startswith("/v1/admin/") else m.http
        req = urllib.request.Request(f"http://{address}{path}", data=data, method=method)
        req.add_header("Authorization", f"Bearer {token or self.spec.admin_token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            status = exc.code
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def status(self, node_id: int, timeout: float = 1.0) -> dict[str, Any] | None:
        try:
            code, doc = self.request(node_id, "GET", "/v1/admin/status", timeout=timeout)
        except (OSError, urllib.error.URLError):
            return None
        return doc if code == 200 and isinstance(doc, dict) else None

    def leader(self, among: list[int] | None = None) -> int | None:
        """The id a majority of the reachable nodes' status documents agree leads."""
        ids = among or [m.node_id for m in self.spec.members if self.alive(m.node_id)]
        for node_id in ids:
            st = self.status(node_id)
            if st and st["role"] == "leader":
                return node_id
        return None

    def wait_for_leader(self, timeout: float = 30.0, among: list[int] | None = None) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node_id, proc in self.procs.items():
                if proc.poll() is not None and proc.returncode not in (0, -9, -15):
                    raise RuntimeError(
                        f"node {node_id} exited with {proc.returncode}:\n{self.log_tail(node_id)}"
                    )
            leader = self.leader(among)
            if leader is not None:
                return leader
            time.sleep(0.05)
        raise TimeoutError("no leader elected in time")

    def wait_ready(self, node_ids: list[int] | None = None, timeout: float = 30.0) -> None:
        """Wait until every node answers /readyz 200 and lists the configured symbols."""
        ids = node_ids or [m.node_id for m in self.spec.members if self.alive(m.node_id)]
        deadline = time.monotonic() + timeout
        pending = list(ids)
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nodes {pending} not ready in time")
            node_id = pending[0]
            try:
                ready, _ = self.request(node_id, "GET", "/readyz", timeout=1.0)
                code, doc = self.request(
                    node_id, "GET", "/v1/symbols", token=self.key_for("alice"), timeout=1.0
                )
            except (OSError, urllib.error.URLError):
                ready, code, doc = 0, 0, None
            if ready == 200 and code == 200 and isinstance(doc, dict) and doc.get("symbols"):
                pending.pop(0)
            else:
                time.sleep(0.05)

    def wait_caught_up(self, node_id: int, slack: int = 200, timeout: float = 60.0) -> None:
        """Wait until ``node_id`` has applied to within ``slack`` of the leader's commit
        (for use while load keeps the cluster moving)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader()
            mine = self.status(node_id)
            theirs = self.status(leader) if leader is not None else None
            if (
                mine
                and theirs
                and mine["leader"] == leader
                and theirs["commit_index"] - mine["applied_index"] <= slack
            ):
                return
            time.sleep(0.05)
        raise TimeoutError(f"node {node_id} did not catch up in time")

    def wait_converged(
        self, node_ids: list[int], timeout: float = 30.0
    ) -> dict[int, dict[str, Any]]:
        """Wait until the nodes report the same applied index and state hash."""
        deadline = time.monotonic() + timeout
        last: dict[int, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            last = {i: st for i in node_ids if (st := self.status(i)) is not None}
            if len(last) == len(node_ids):
                applied = {st["applied_index"] for st in last.values()}
                hashes = {st["state_hash"] for st in last.values()}
                commits = {st["commit_index"] for st in last.values()}
                fresh = all(
                    st.get("state_hash_index", st["applied_index"]) == st["applied_index"]
                    for st in last.values()
                )
                if len(applied) == 1 and len(hashes) == 1 and applied == commits and fresh:
                    return last
            time.sleep(0.1)
        raise TimeoutError(f"replicas did not converge: {json.dumps(last)[:2000]}")


# ---- CLI ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="local_command", required=True, metavar="ACTION")
    up = sub.add_parser("up", help="start (or restart) the local cluster and wait for Ctrl-C")
    up.add_argument("--nodes", type=int, default=3, help="members of a new cluster (default 3)")
    up.add_argument(
        "--base-port",
        type=int,
        default=8080,
        help="HTTP of node i is base+i-1, gRPC base+100+i-1, admin base+200+i-1 (default 8080)",
    )
    up.add_argument("--data-root", type=Path, default=Path("./local-cluster"))
    up.add_argument("--election-ms", type=int, default=500)
    up.add_argument("--heartbeat-ms", type=int, default=50)
    up.add_argument("--snapshot-threshold", type=int, default=50_000)
    up.add_argument(
        "--insecure-peers",
        action="store_true",
        help="a new cluster's peers without TLS (default: mutual TLS with a throwaway CA)",
    )
    st = sub.add_parser("status", help="members, roles and lag of the local cluster")
    st.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="default: $EXCHANGE_DATA_ROOT, else ./local-cluster, else ./.demo (`make demo`)",
    )
    st.add_argument("--json", action="store_true", help="print the raw status documents")


def _usage_error(message: str) -> int:
    print(f"exchange local: error: {message}", file=sys.stderr)
    return 2


def main(args: argparse.Namespace) -> int:
    if args.local_command == "up":
        return _up(args)
    return _status(args)


def _up(args: argparse.Namespace) -> int:
    if not 1 <= args.nodes <= 9:
        return _usage_error("--nodes must be between 1 and 9")
    if not 1024 <= args.base_port <= 65_000:
        return _usage_error("--base-port must be between 1024 and 65000")
    if args.election_ms < 2 * args.heartbeat_ms:
        return _usage_error("--election-ms must be at least twice --heartbeat-ms")
    root: Path = args.data_root.resolve()
    existing = (root / CLUSTER_FILE).exists()
    cluster = LocalCluster.create(
        root,
        args.nodes,
        base_port=args.base_port,
        election_ms=args.election_ms,
        heartbeat_ms=args.heartbeat_ms,
        snapshot_threshold=args.snapshot_threshold,
        peer_tls=not args.insecure_peers,
    )
    if existing:
        print(f"restarting the cluster in {root} on its data")
    if not cluster.spec.peer_tls:
        print("WARNING: peers without TLS (--insecure-peers): anyone on this host can forge them")
    stop = {"now": False}

    def on_signal(signum: int, frame: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    cluster.start_all()
    try:
        leader = cluster.wait_for_leader(60.0)
    except (TimeoutError, RuntimeError) as exc:
        print(f"exchange local: {exc}", file=sys.stderr)
        cluster.stop_all()
        return 1
    try:
        cluster.wait_ready(timeout=60.0)
    except TimeoutError as exc:
        print(f"exchange local: {exc}", file=sys.stderr)
    print(f"cluster up in {root}: {len(cluster.procs)} nodes, leader {leader}")
    for m in cluster.spec.members:
        if m.node_id not in cluster.procs:
            continue
        print(
            f"  {member_name(m.node_id)}: api http://{m.http}/v1  stream ws://{m.http}/v1/ws  "
            f"metrics http://{m.http}/metrics  admin http://{m.admin}/v1/admin  grpc {m.grpc}  "
            f"log {cluster.log_path(m.node_id)}"
        )
    print(f"  admin token: {root}/admin-token   API keys: {root}/api-keys")
    if cluster.spec.peer_tls:
        print(f"  peers: mutual TLS, CA and member certificates in {root / PKI_DIR}")
    for token, client in cluster.spec.api_keys.items():
        if not client.startswith("bench"):
            print(f"    {client}: {token}")
    print("Ctrl-C stops every node (a leader hands leadership over first).", flush=True)
    try:
        while not stop["now"]:
            time.sleep(0.2)
            for node_id, proc in list(cluster.procs.items()):
                if proc.poll() is not None and not stop["now"]:
                    print(
                        f"node {node_id} exited with {proc.returncode}; restarting it", flush=True
                    )
                    cluster.start(node_id)
    finally:
        print("stopping...", flush=True)
        cluster.stop_all()
    return 0


def _status_root(given: Path | None) -> Path:
    """--data-root, or the first of $EXCHANGE_DATA_ROOT, ./local-cluster and ./.demo
    (where `make demo` keeps its cluster) that holds a cluster."""
    if given is not None:
        return given
    env = os.environ.get("EXCHANGE_DATA_ROOT")
    candidates = [Path(env)] if env else [Path("./local-cluster"), Path("./.demo")]
    return next((c for c in candidates if (c / CLUSTER_FILE).exists()), candidates[0])


def _status(args: argparse.Namespace) -> int:
    root: Path = _status_root(args.data_root).resolve()
    if not (root / CLUSTER_FILE).exists():
        return _usage_error(f"--data-root {root} holds no local cluster (run `exchange local up`)")
    cluster = LocalCluster(root, ClusterSpec.load(root))
    docs = {m.node_id: cluster.status(m.node_id) for m in cluster.spec.members}
    if args.json:
        print(json.dumps(docs, indent=2))
        return 0
    print(
        f"{'id':>3} {'name':<8} {'role':<13} {'term':>5} {'leader':>6} {'commit':>9} "
        f"{'applied':>9}  http"
    )
    for node_id, st in docs.items():
        http = cluster.member(node_id).http
        if st is None:
            name = member_name(node_id)
            print(f"{node_id:>3} {name:<8} {'down':<13} {'':>5} {'':>6} {'':>9} {'':>9}  {http}")
            continue
        print(
            f"{node_id:>3} {st['name']:<8} {st['role']:<13} {st['term']:>5} {st['leader']:>6} "
            f"{st['commit_index']:>9} {st['applied_index']:>9}  {http}"
            + ("  DIVERGED" if st.get("diverged") else "")
        )
    leader_doc = next((st for st in docs.values() if st and st["role"] == "leader"), None)
    if leader_doc:
        print("\nmembers (as the leader sees them):")
        print(f"{'id':>3} {'name':<8} {'voter':<6} {'match':>9} {'lag':>7} {'healthy':<8} grpc")
        for m in leader_doc["members"]:
            print(
                f"{m['id']:>3} {m['name']:<8} {str(m['voter']).lower():<6} {m['match_index']:>9} "
                f"{m['lag']:>7} {str(m['healthy']).lower():<8} {m['address']}"
            )
    else:
        print("\nno leader reachable")
    return 0 if leader_doc else 1
