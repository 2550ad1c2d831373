"""Real network faults: one Linux network namespace per node on a bridge, iptables, tc.

Every node runs in its own namespace (``ip netns exec``), joined by a veth pair to
a bridge this module creates in the root namespace. Addresses come from
198.18.0.0/15 (RFC 2544's benchmarking range, never routed, so no traffic can leave
the machine), one /24 per run so parallel runs do not clash: the bridge is ``.1``,
node ``i`` is ``.(10 + i)``.

Names carry a per-run prefix ``cx<pid base36>x<k>-`` (``-br`` bridge, ``-n<i>``
namespace, ``-v<i>`` the veth end in the root namespace, ``-p<i>`` the end inside),
so a run's leftovers can be found after a crash: :func:`remove_leftovers` removes
every namespace and link whose owning process is gone.

Faults are iptables rules inside the namespaces (partitions, loss) and a tbf qdisc on
the node's veth end (bandwidth); each is removed rule by rule when healed, and all of
them die with the namespace on :meth:`Network.close`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass, field

from .target import CapabilityError

RANGE = ipaddress.IPv4Network("198.18.0.0/15")
"""RFC 2544's benchmarking range; the only addresses this module ever assigns."""
PREFIX_ROOT = "cx"
_NAME = re.compile(r"^cx([0-9a-z]+)x([0-9a-z]+)-(br|n\d+|v\d+)$")


def missing_tools(*tools: str) -> str | None:
    """What keeps network faults from running here, or None."""
    if os.geteuid() != 0:
        return "root"
    absent = [t for t in tools if shutil.which(t) is None]
    return " and ".join(absent) if absent else None


def require(kind: str, *tools: str) -> None:
    missing = missing_tools(*tools)
    if missing:
        raise CapabilityError(f"{kind} needs root and {', '.join(tools)} (missing: {missing})")


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_namespaces() -> list[str]:
    out = run("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def list_links() -> list[str]:
    out = run("ip", "-o", "link", "show", check=False).stdout
    # "12: cx1x0-v1@if11: <...>" -> "cx1x0-v1"
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


def chaos_objects(prefix: str = PREFIX_ROOT) -> list[str]:
    """Namespaces and links in the root namespace whose name starts with ``prefix``."""
    return [n for n in [*list_namespaces(), *list_links()] if n.startswith(prefix)]


def remove_leftovers() -> list[str]:
    """Remove the namespaces and links of runs whose process is gone; returns their names."""
    removed = []
    for name in list_namespaces():
        m = _NAME.match(name)
        if m and not _pid_alive(int(m.group(1), 36)):
            kill_processes_in(name)
            run("ip", "netns", "del", name, check=False)
            removed.append(name)
    for name in list_links():
        m = _NAME.match(name)
        if m and not _pid_alive(int(m.group(1), 36)):
            run("ip", "link", "del", name, check=False)
            removed.append(name)
    return removed


def kill_processes_in(namespace: str) -> list[int]:
    """SIGKILL what still runs in a namespace of this tool (nodes of a run that died:
    they would keep the namespace, and their ports, alive)."""
    pids = [int(p) for p in run("ip", "netns", "pids", namespace, check=False).stdout.split()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


_counter = 0


@dataclass
class Rule:
    """One iptables rule in one namespace, deleted by the same words."""

    namespace: str
    chain: str
    spec: list[str]

    def argv(self, op: str) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, "iptables", "-w", op, self.chain, *self.spec]


@dataclass
class Network:
    """A bridge and one namespace per node, created by :meth:`create`."""

    prefix: str
    subnet: ipaddress.IPv4Network
    node_ids: list[int]
    rules: list[Rule] = field(default_factory=list)
    closed: bool = False

    @classmethod
    def create(cls, node_ids: list[int]) -> Network:
        require("a network namespace per node", "ip", "iptables", "tc")
        global _counter
        remove_leftovers()
        _counter += 1
        prefix = f"{PREFIX_ROOT}{_base36(os.getpid())}x{_base36(_counter)}-"
        net = cls(prefix, _free_subnet(), list(node_ids))
        try:
            net._build()
        except Exception:
            net.close()
            raise
        return net

    # ---- names and addresses ----------------------------------------------------

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br"

    def namespace(self, node_id: int) -> str:
        return f"{self.prefix}n{node_id}"

    def host_veth(self, node_id: int) -> str:
        return f"{self.prefix}v{node_id}"

    def node_veth(self, node_id: int) -> str:
        return f"{self.prefix}p{node_id}"

    @property
    def bridge_ip(self) -> str:
        return str(self.subnet.network_address + 1)

    def ip(self, node_id: int) -> str:
        if not 1 <= node_id <= 240:
            raise ValueError(f"node id {node_id} has no address in a /24 (1..240)")
        return str(self.subnet.network_address + 10 + node_id)

    def exec_prefix(self, node_id: int) -> list[str]:
        return ["ip", "netns", "exec", self.namespace(node_id)]

    # ---- building and removing ----------------------------------------------------

    def _build(self) -> None:
        br = self.bridge
        run("ip", "link", "add", br, "type", "bridge")
        run("ip", "addr", "add", f"{self.bridge_ip}/24", "dev", br)
        run("ip", "link", "set", br, "up")
        for node_id in self.node_ids:
            self.add_node(node_id)
        self._bridge_forwarding(True)

    def add_node(self, node_id: int) -> None:
        ns, host, inner = self.namespace(node_id), self.host_veth(node_id), self.node_veth(node_id)
        run("ip", "netns", "add", ns)
        run("ip", "link", "add", host, "type", "veth", "peer", "name", inner)
        run("ip", "link", "set", inner, "netns", ns)
        run("ip", "link", "set", host, "master", self.bridge, "up")
        run("ip", "-n", ns, "addr", "add", f"{self.ip(node_id)}/24", "dev", inner)
        run("ip", "-n", ns, "link", "set", inner, "up")
        run("ip", "-n", ns, "link", "set", "lo", "up")
        if node_id not in self.node_ids:
            self.node_ids.append(node_id)

    def _forward_rule(self) -> list[str]:
        return ["FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT"]

    def _bridge_forwarding(self, on: bool) -> None:
        """With br_netfilter loaded, bridged frames pass the root namespace's FORWARD
        chain, whose policy (Docker sets DROP) must not cut the nodes off each other."""
        if not os.path.exists("/proc/sys/net/bridge/bridge-nf-call-iptables"):
            return
        if on:
            run("iptables", "-w", "-I", *self._forward_rule())
        else:
            run("iptables", "-w", "-D", *self._forward_rule(), check=False)

    def close(self) -> None:
        """Remove every namespace, link and root rule of this run (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self._bridge_forwarding(False)
        for node_id in self.node_ids:
            kill_processes_in(self.namespace(node_id))
            run("ip", "netns", "del", self.namespace(node_id), check=False)
            run("ip", "link", "del", self.host_veth(node_id), check=False)
        run("ip", "link", "del", self.bridge, check=False)
        self.rules.clear()

    # ---- faults -----------------------------------------------------------------

    def add_rules(self, rules: list[Rule]) -> list[Rule]:
        done: list[Rule] = []
        try:
            for rule in rules:
                run(*rule.argv("-I"))
                done.append(rule)
                self.rules.append(rule)
        except Exception:
            self.remove_rules(done)
            raise
        return done

    def remove_rules(self, rules: list[Rule]) -> None:
        for rule in rules:
            if rule in self.rules:
                self.rules.remove(rule)
                run(*rule.argv("-D"), check=False)

    def cut_rules(self, src: int, dst: int) -> list[Rule]:
        """Drop every packet from ``src`` to ``dst``: at the sender and at the receiver."""
        return [
            Rule(self.namespace(src), "OUTPUT", ["-d", self.ip(dst), "-j", "DROP"]),
            Rule(self.namespace(dst), "INPUT", ["-s", self.ip(src), "-j", "DROP"]),
        ]

    def proxy_cut_rules(self, src: int, port: int) -> list[Rule]:
        """Drop ``src``'s connection to a peer proxy on the bridge (both directions)."""
        return [
            Rule(
                self.namespace(src),
                "OUTPUT",
                ["-d", self.bridge_ip, "-p", "tcp", "--dport", str(port), "-j", "DROP"],
            ),
            Rule(
                self.namespace(src),
                "INPUT",
                ["-s", self.bridge_ip, "-p", "tcp", "--sport", str(port), "-j", "DROP"],
            ),
        ]

    def loss_rules(self, node_id: int, probability: float) -> list[Rule]:
        """Drop ``probability`` of the packets the node sends and receives on its veth."""
        stat = ["-m", "statistic", "--mode", "random", "--probability", f"{probability:.6f}"]
        dev = self.node_veth(node_id)
        ns = self.namespace(node_id)
        return [
            Rule(ns, "INPUT", ["-i", dev, *stat, "-j", "DROP"]),
            Rule(ns, "OUTPUT", ["-o", dev, *stat, "-j", "DROP"]),
        ]

    def set_bandwidth(self, node_id: int, rate_kbit: int | None) -> None:
        """A tbf qdisc on the node's egress (its veth end); None removes it."""
        argv = ["ip", "netns", "exec", self.namespace(node_id), "tc", "qdisc"]
        dev = ["dev", self.node_veth(node_id), "root"]
        if rate_kbit is None:
            run(*argv, "del", *dev, check=False)
            return
        # A burst of 25 ms of the rate (at least 16 KiB: a smaller bucket than the
        # timer's granularity allows under-delivers); a queue of 200 ms.
        burst = max(16384, rate_kbit * 1000 // 8 * 25 // 1000)
        run(
            *argv,
            "replace",
            *dev,
            "tbf",
            "rate",
            f"{rate_kbit}kbit",
            "burst",
            str(burst),
            "latency",
            "200ms",
        )

    def qdiscs(self, node_id: int) -> str:
        return run(
            "ip", "netns", "exec", self.namespace(node_id), "tc", "qdisc", "show", check=False
        ).stdout

    def iptables_rules(self, node_id: int) -> list[str]:
        out = run(
            "ip", "netns", "exec", self.namespace(node_id), "iptables", "-w", "-S", check=False
        ).stdout
        return [line for line in out.splitlines() if line.startswith("-A")]


def cut_directions(groups: list[list[int]], one_way: bool = False) -> list[tuple[int, int]]:
    """The (sender, receiver) pairs a partition into ``groups`` cuts: every pair in
    different groups, or with ``one_way`` only from each group to the later ones.
    Nodes in no group are cut from nobody (a bridge)."""
    seen: set[int] = set()
    for group in groups:
        for node_id in group:
            if node_id in seen:
                raise ValueError(f"node {node_id} is in more than one partition group")
            seen.add(node_id)
    cuts = []
    for a, side_a in enumerate(groups):
        for side_b in groups[a + 1 :]:
            for src in side_a:
                for dst in side_b:
                    cuts.append((src, dst))
                    if not one_way:
                        cuts.append((dst, src))
    return cuts


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 of 198.18.0.0/15 that no interface on this machine uses yet."""
    used = set()
    out = run("ip", "-o", "-4", "addr", "show", check=False).stdout
    for match in re.finditer(r"inet (\d+\.\d+\.\d+\.\d+)/", out):
        used.add(ipaddress.ip_address(match.group(1)))
    subnets = list(RANGE.subnets(new_prefix=24))
    start = os.getpid() % len(subnets)
    for k in range(len(subnets)):
        subnet = subnets[(start + k) % len(subnets)]
        if not any(addr in subnet for addr in used):
            return subnet
    raise CapabilityError("every /24 of 198.18.0.0/15 is in use on this machine")
