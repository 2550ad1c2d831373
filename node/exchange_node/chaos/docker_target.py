"""``--target docker``: node containers on a user-defined Docker network, with real faults.

Constructor (what ``exchange chaos run --target docker`` calls)::

    DockerTarget(image="raft-exchange:dev", nodes=3, *, seed=0, election_ms=600,
                 heartbeat_ms=60, clients=4, prefix=None, start_timeout=90.0)

It creates the network ``<prefix>-net`` and containers ``<prefix>-<i>`` (node id
``i + 1``) from ``image`` (``make image`` builds ``raft-exchange:dev``), waits for a
leader, and :meth:`close` removes the containers, their volumes and the network (those of a
run killed before closing are removed by the next one: :func:`remove_leftovers`).
Peers talk on that network; the chaos process reaches each node only through
its HTTP (8080) and admin (8081) ports published on 127.0.0.1 via Docker's
default bridge, which the partition rules leave alone.

Faults (``capabilities``):

- ``kill`` (``docker kill``, healed by ``docker start`` on the same volume),
  ``pause`` (``docker pause``/``unpause``), ``restart`` (``docker stop`` then ``start``);
- ``partition`` by iptables inside the containers' network namespaces
  (``nsenter -t PID -n iptables``), cutting exactly the (sender, receiver) pairs of
  :func:`.net.cut_directions`; :meth:`disconnect` is Docker's own coarser form
  (``docker network disconnect``: the node loses the peer network altogether);
- ``loss`` (iptables ``statistic``) and ``bandwidth`` (``tc tbf``) on the node's
  interface on the peer network, in its namespace;
- ``link`` (latency and jitter per destination: a ``prio`` qdisc with a ``netem``
  band and a u32 filter on the peer's address) only where the kernel has the netem
  qdisc, probed at start; this machine's kernel has none, so ``link`` is left out
  here and :meth:`link` says why.

The iptables, tc and nsenter used are the host's (root needed); the image needs
none of them. A killed or restarted container gets a fresh namespace, so its rules
are gone: healing a partition after that is harmless.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from . import net
from .target import (
    ActiveFault,
    CapabilityError,
    ClusterCredentials,
    LinkFault,
    LogMark,
    NodeEndpoint,
)

HTTP_PORT, ADMIN_PORT, GRPC_PORT = 8080, 8081, 7070
DEFAULT_IMAGE = "raft-exchange:dev"


def docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


LABEL = "raft-exchange.chaos"
"""On everything a DockerTarget makes; its value is the pid of the process that made it."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers() -> list[str]:
    """Remove the containers (with their volumes) and networks of runs whose process is
    gone (a run killed before its close()); returns their names."""
    removed = []
    for kind in ("container", "network"):
        listed = docker(kind, "ls", *(["-a"] if kind == "container" else []), "--filter",
                        f"label={LABEL}", "--format", f'{{{{.Names}}}} {{{{.Label "{LABEL}"}}}}'
                        if kind == "container" else f'{{{{.Name}}}} {{{{.Label "{LABEL}"}}}}',
                        check=False)  # fmt: skip
        for line in listed.splitlines():
            name, _, owner = line.partition(" ")
            if owner.isdigit() and not _pid_alive(int(owner)):
                if kind == "container":
                    docker("rm", "-f", "-v", name, check=False)
                    docker("volume", "rm", "-f", f"{name}-data", check=False)
                else:
                    docker("network", "rm", name, check=False)
                removed.append(name)
    return removed


def unavailable_reason() -> str | None:
    """Why no Docker target can run here, or None."""
    if shutil.which("docker") is None:
        return "the docker command is not installed"
    try:
        if subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode != 0:
            return "the Docker engine is not running (scripts/dockerd.sh starts it as root)"
    except subprocess.TimeoutExpired:
        return "the Docker engine does not answer"
    return None


def Fault(target: DockerTarget, description: str, undo: Callable[[], object]) -> ActiveFault:
    """A fault of this target, in force until healed."""
    return ActiveFault(target._active, description, undo)


class DockerTarget:
    name = "docker"

    def __init__(
        self,
        image: str = DEFAULT_IMAGE,
        nodes: int = 3,
        *,
        seed: int = 0,
        election_ms: int = 600,
        heartbeat_ms: int = 60,
        clients: int = 4,
        prefix: str | None = None,
        start_timeout: float = 90.0,
    ) -> None:
        if not 1 <= nodes <= 9:
            raise ValueError(f"nodes must be between 1 and 9, not {nodes}")
        if clients < 1:
            raise ValueError(f"clients must be at least 1, not {clients}")
        reason = unavailable_reason()
        if reason is not None:
            raise CapabilityError(f"--target docker: {reason}")
        if not docker("image", "ls", "-q", image).strip():
            raise CapabilityError(f"--target docker: no image {image!r} here (make image)")
        self.image = image
        self.seed = seed
        self.prefix = prefix or "rxc" + secrets.token_hex(3)
        self.network = f"{self.prefix}-net"
        self.election_ms = election_ms
        self.heartbeat_ms = heartbeat_ms
        self.admin_token = "admin-" + secrets.token_hex(12)
        self.api_keys = {f"chaos-{k}": "key-" + secrets.token_hex(12) for k in range(clients)}
        self._ids = list(range(1, nodes + 1))
        self._ports: dict[int, tuple[int, int]] = {}
        self._active: list[ActiveFault] = []
        self._rules: list[tuple[int, list[str]]] = []
        self.closed = False
        self.missing_tools = net.missing_tools("nsenter", "iptables", "tc")
        self.netem_reason: str | None = "not probed"
        try:
            remove_leftovers()
            docker("network", "create", "--label", f"{LABEL}={os.getpid()}", self.network)
            from exchange_node.tools.local import free_ports

            ports = free_ports(2 * nodes)
            for k, node_id in enumerate(self._ids):
                self._ports[node_id] = (ports[2 * k], ports[2 * k + 1])
                self._create(node_id)
            self.wait_for_leader(start_timeout)
            if self.missing_tools is None:
                self.netem_reason = self._probe_netem()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> DockerTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- containers -----------------------------------------------------------------

    def container(self, node_id: int) -> str:
        return f"{self.prefix}-{node_id - 1}"

    def _create(self, node_id: int) -> None:
        name = self.container(node_id)
        peers = ",".join(f"{i}={self.container(i)}:{GRPC_PORT}" for i in self._ids)
        peer_http = ",".join(f"{i}={self.container(i)}:{HTTP_PORT}" for i in self._ids)
        keys = ",".join(f"{token}={client}" for client, token in self.api_keys.items())
        http, admin = self._ports[node_id]
        env = {
            "EXCHANGE_NAME": name,
            "EXCHANGE_NODE_ID": str(node_id),
            "EXCHANGE_PEERS": peers,
            "EXCHANGE_PEER_HTTP": peer_http,
            "EXCHANGE_ADVERTISE_ADDRESS": f"{name}:{GRPC_PORT}",
            "EXCHANGE_ADVERTISE_HTTP": f"{name}:{HTTP_PORT}",
            "EXCHANGE_ADMIN_TOKEN": self.admin_token,
            "EXCHANGE_API_KEYS": keys,
            "EXCHANGE_ELECTION_MS": str(self.election_ms),
            "EXCHANGE_HEARTBEAT_MS": str(self.heartbeat_ms),
            # A private network the target made; peer mTLS is tests/security's subject.
            "EXCHANGE_INSECURE_PEERS": "true",
        }
        argv = ["create", "--name", name, "--hostname", name, "--network", "bridge"]
        # Published on loopback only: nothing outside this machine reaches the nodes.
        argv += ["-p", f"127.0.0.1:{http}:{HTTP_PORT}", "-p", f"127.0.0.1:{admin}:{ADMIN_PORT}"]
        argv += ["-v", f"{name}-data:/var/lib/exchange", "--label", f"{LABEL}={os.getpid()}"]
        for key, value in env.items():
            argv += ["-e", f"{key}={value}"]
        docker(*argv, self.image)
        # The default bridge carries the published ports (it has no DNS); the
        # target's own network carries the peer traffic the faults act on.
        docker("network", "connect", self.network, name)
        docker("start", name)

    def _inspect(self, node_id: int) -> dict[str, Any]:
        out = json.loads(docker("inspect", self.container(node_id)))
        return dict(out[0])

    def pid(self, node_id: int) -> int:
        pid = int(self._inspect(node_id)["State"]["Pid"])
        if pid <= 0:
            raise RuntimeError(f"node {node_id}'s container is not running")
        return pid

    def ip(self, node_id: int) -> str:
        nets = self._inspect(node_id)["NetworkSettings"]["Networks"]
        if self.network not in nets:
            raise RuntimeError(f"node {node_id} is not on {self.network} (disconnected?)")
        return str(nets[self.network]["IPAddress"])

    def _peer_dev(self, node_id: int) -> str:
        """The node's interface on the peer network, found by its address."""
        ip = self.ip(node_id)
        out = self._nsenter(node_id, "ip", "-o", "-4", "addr", "show")
        for line in out.splitlines():
            fields = line.split()
            if len(fields) > 3 and fields[3].split("/")[0] == ip:
                return fields[1].split("@")[0]
        raise RuntimeError(f"node {node_id} has no interface with {ip}")

    def _nsenter(self, node_id: int, *argv: str, check: bool = True) -> str:
        return net.run("nsenter", "-t", str(self.pid(node_id)), "-n", *argv, check=check).stdout

    def _require_tools(self, kind: str) -> None:
        if self.missing_tools is not None:
            raise CapabilityError(
                f"{kind} on --target docker needs root and the host's nsenter, iptables and tc "
                f"(missing: {self.missing_tools})"
            )

    # ---- what it is ---------------------------------------------------------------

    def capabilities(self) -> frozenset[str]:
        kinds = {"kill", "pause", "restart"}
        if self.missing_tools is None:
            kinds |= {"partition", "loss", "bandwidth"}
            if self.netem_reason is None:
                kinds.add("link")
        return frozenset(kinds)

    def node_ids(self) -> list[int]:
        return list(self._ids)

    def endpoints(self) -> Mapping[int, NodeEndpoint]:
        return {
            i: NodeEndpoint(i, f"http://127.0.0.1:{http}", f"http://127.0.0.1:{admin}")
            for i, (http, admin) in self._ports.items()
        }

    def credentials(self) -> ClusterCredentials:
        return ClusterCredentials(api_keys=dict(self.api_keys), admin_token=self.admin_token)

    def status(self, node_id: int, timeout: float = 1.5) -> dict[str, Any] | None:
        _, admin = self._ports[node_id]
        request = urllib.request.Request(f"http://127.0.0.1:{admin}/v1/admin/status")
        request.add_header("Authorization", f"Bearer {self.admin_token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return dict(json.loads(response.read()))
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def leader(self) -> int | None:
        votes: collections.Counter[int] = collections.Counter()
        for node_id in self._ids:
            st = self.status(node_id, timeout=0.5)
            if st and st.get("leader"):
                votes[int(st["leader"])] += 1
        if not votes:
            return None
        leader, count = votes.most_common(1)[0]
        return leader if count * 2 > len(self._ids) else None

    def wait_for_leader(self, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader()
            if leader is not None:
                return leader
            time.sleep(0.2)
        logs = {i: docker("logs", "--tail", "5", self.container(i), check=False) for i in self._ids}
        raise TimeoutError(f"no leader in {timeout} s; last logs: {logs}")

    def _check_node(self, node_id: int) -> None:
        if node_id not in self._ids:
            raise ValueError(f"node {node_id} is not a member (members: {self._ids})")

    # ---- processes --------------------------------------------------------------------

    def _start(self, node_id: int) -> None:
        if not self._inspect(node_id)["State"]["Running"]:
            docker("start", self.container(node_id))

    def kill(self, node_id: int) -> ActiveFault:
        self._check_node(node_id)
        docker("kill", self.container(node_id))
        return Fault(self, f"kill {node_id}", lambda: self._start(node_id))

    def pause(self, node_id: int) -> ActiveFault:
        self._check_node(node_id)
        docker("pause", self.container(node_id))
        return Fault(self, f"pause {node_id}", lambda: docker("unpause", self.container(node_id)))

    def restart(self, node_id: int) -> None:
        self._check_node(node_id)
        docker("stop", "-t", "20", self.container(node_id))
        docker("start", self.container(node_id))
        deadline = time.monotonic() + 30
        while self.status(node_id, timeout=0.5) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {node_id} did not answer its status in 30 s")
            time.sleep(0.1)

    # ---- network ----------------------------------------------------------------------

    def _add_rules(self, rules: list[tuple[int, list[str]]]) -> list[tuple[int, list[str]]]:
        done: list[tuple[int, list[str]]] = []
        try:
            for node_id, spec in rules:
                self._nsenter(node_id, "iptables", "-w", "-I", *spec)
                done.append((node_id, spec))
        except Exception:
            self._remove_rules(done)
            raise
        return done

    def _remove_rules(self, rules: list[tuple[int, list[str]]]) -> None:
        for node_id, spec in rules:
            # A container killed or restarted since has a fresh namespace without them.
            with contextlib.suppress(RuntimeError):
                self._nsenter(node_id, "iptables", "-w", "-D", *spec, check=False)

    def partition(self, groups: Iterable[Iterable[int]], one_way: bool = False) -> ActiveFault:
        self._require_tools("partition")
        sides = [sorted(set(g)) for g in groups]
        for side in sides:
            for node_id in side:
                self._check_node(node_id)
        ips = {i: self.ip(i) for i in self._ids}
        rules: list[tuple[int, list[str]]] = []
        for s, d in net.cut_directions(sides, one_way):
            rules.append((s, ["OUTPUT", "-d", ips[d], "-j", "DROP"]))
            rules.append((d, ["INPUT", "-s", ips[s], "-j", "DROP"]))
        applied = self._add_rules(rules)
        arrow = " -> " if one_way else " | "
        text = arrow.join("{" + ",".join(map(str, s)) + "}" for s in sides)
        return Fault(self, f"partition {text}", lambda: self._remove_rules(applied))

    def disconnect(self, node_id: int) -> ActiveFault:
        """Docker's own partition: the node leaves the peer network (it keeps its
        published ports, so the API still answers it cannot commit)."""
        self._check_node(node_id)
        docker("network", "disconnect", self.network, self.container(node_id))
        return Fault(
            self,
            f"network disconnect of node {node_id}",
            lambda: docker("network", "connect", self.network, self.container(node_id)),
        )

    def loss(self, node_id: int, probability: float) -> ActiveFault:
        self._require_tools("loss")
        self._check_node(node_id)
        if not 0.0 < probability <= 1.0:
            raise ValueError(f"probability must be in (0, 1], not {probability}")
        dev = self._peer_dev(node_id)
        stat = ["-m", "statistic", "--mode", "random", "--probability", f"{probability:.6f}"]
        applied = self._add_rules(
            [
                (node_id, ["INPUT", "-i", dev, *stat, "-j", "DROP"]),
                (node_id, ["OUTPUT", "-o", dev, *stat, "-j", "DROP"]),
            ]
        )
        return Fault(
            self,
            f"loss {probability:.0%} on node {node_id}",
            lambda: self._remove_rules(applied),
        )

    def bandwidth(self, node_id: int, rate_kbit: int) -> ActiveFault:
        self._require_tools("bandwidth")
        self._check_node(node_id)
        if rate_kbit < 8:
            raise ValueError(f"rate_kbit must be at least 8, not {rate_kbit}")
        dev = self._peer_dev(node_id)
        burst = max(16384, rate_kbit * 1000 // 8 * 25 // 1000)
        self._nsenter(node_id, "tc", "qdisc", "replace", "dev", dev, "root", "tbf",
                      "rate", f"{rate_kbit}kbit", "burst", str(burst), "latency", "200ms")  # fmt: skip

        def undo() -> None:
            with contextlib.suppress(RuntimeError):
                self._nsenter(node_id, "tc", "qdisc", "del", "dev", dev, "root", check=False)

        return Fault(self, f"bandwidth {rate_kbit} kbit/s out of node {node_id}", undo)

    def _probe_netem(self) -> str | None:
        """None when the kernel has the netem qdisc (tried on a container's loopback)."""
        node_id = self._ids[0]
        probe = self._nsenter(
            node_id, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
            check=False,
        )  # fmt: skip
        del probe
        shown = self._nsenter(node_id, "tc", "qdisc", "show", "dev", "lo", check=False)
        if "netem" not in shown:
            return "this kernel has no netem qdisc (sch_netem): no latency on Docker links"
        self._nsenter(node_id, "tc", "qdisc", "del", "dev", "lo", "root", check=False)
        return None

    def link(self, src: int, dst: int, fault: LinkFault) -> ActiveFault:
        self._require_tools("link")
        if self.netem_reason is not None:
            raise CapabilityError(f"link on --target docker: {self.netem_reason}")
        self._check_node(src)
        self._check_node(dst)
        if fault.toxic != "latency":
            raise CapabilityError(
                f"link {fault.toxic!r} on --target docker: only latency (netem) is offered"
            )
        dev, dst_ip = self._peer_dev(src), self.ip(dst)
        # Default traffic keeps bands 1-3; only packets to dst go to the netem band.
        self._nsenter(src, "tc", "qdisc", "replace", "dev", dev, "root", "handle", "1:",
                      "prio", "bands", "4", "priomap", *(["1"] * 16))  # fmt: skip
        netem = ["delay", f"{fault.latency_ms:g}ms"]
        if fault.jitter_ms:
            netem.append(f"{fault.jitter_ms:g}ms")
        self._nsenter(src, "tc", "qdisc", "add", "dev", dev, "parent", "1:4", "handle", "40:",
                      "netem", *netem)  # fmt: skip
        self._nsenter(src, "tc", "filter", "add", "dev", dev, "parent", "1:", "protocol", "ip",
                      "u32", "match", "ip", "dst", f"{dst_ip}/32", "flowid", "1:4")  # fmt: skip

        def undo() -> None:
            with contextlib.suppress(RuntimeError):
                self._nsenter(src, "tc", "qdisc", "del", "dev", dev, "root", check=False)

        what = f"latency {fault.latency_ms:g}+-{fault.jitter_ms:g} ms"
        return Fault(self, f"link {src}->{dst}: {what}", undo)

    # ---- what Docker cannot do here ------------------------------------------------------

    def clock(self, node_id: int, offset_s: float, rate: float = 1.0) -> ActiveFault:
        raise CapabilityError("clock on --target docker is not offered (use --target local)")

    def disk(self, node_id: int, fault: object) -> ActiveFault:
        raise CapabilityError("disk on --target docker is not offered (use --target local)")

    def power_cut(self, node_ids: Iterable[int]) -> ActiveFault:
        raise CapabilityError("power_cut on --target docker is not offered (use --target local)")

    def corrupt_state(self, node_id: int, seed: int) -> ActiveFault:
        raise CapabilityError(
            "corrupt_state on --target docker is not offered (use --target local)"
        )

    def mark_log(self, node_id: int) -> LogMark:
        raise CapabilityError("lost_tail on --target docker is not offered (use --target local)")

    def cut_log(self, node_id: int, mark: LogMark) -> ActiveFault:
        raise CapabilityError("lost_tail on --target docker is not offered (use --target local)")

    # ---- cleanup ------------------------------------------------------------------------

    def heal_all(self) -> None:
        errors = []
        for fault in reversed(list(self._active)):
            try:
                fault.heal()
            except Exception as exc:  # heal the rest; report the first failure after
                errors.append(exc)
        if errors:
            raise errors[0]

    def logs(self, node_id: int, lines: int = 20) -> str:
        done = subprocess.run(
            ["docker", "logs", "--tail", str(lines), self.container(node_id)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return done.stdout + done.stderr

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self.heal_all()
        for node_id in self._ids:
            name = self.container(node_id)
            docker("rm", "-f", "-v", name, check=False)
            docker("volume", "rm", "-f", f"{name}-data", check=False)
        docker("network", "rm", self.network, check=False)
