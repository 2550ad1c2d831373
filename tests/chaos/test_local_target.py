"""The local chaos target's faults are real and measured, and leave nothing behind.

Real node processes, real network namespaces, iptables, tc, libfaketime and the
toxic proxy. Tests that need root or a tool skip with the reason.
"""

from __future__ import annotations

import email.utils
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from exchange_node.chaos import clock as clock_faults
from exchange_node.chaos import net
from exchange_node.chaos.local_target import LocalTarget
from exchange_node.chaos.proxy import ProxyHub
from exchange_node.chaos.target import CapabilityError, DiskFault, LinkFault

NET_MISSING = net.missing_tools("ip", "iptables", "tc")
needs_netns = pytest.mark.skipif(
    NET_MISSING is not None, reason=f"network faults need root, ip, iptables, tc ({NET_MISSING})"
)
needs_faketime = pytest.mark.skipif(
    clock_faults.libfaketime_path() is None,
    reason="clock faults need libfaketime (scripts/system-deps.sh)",
)


# ---- helpers ---------------------------------------------------------------------------


def order(seq: int, prefix: str) -> tuple[str, dict[str, Any]]:
    client = "alice" if seq % 2 == 0 else "bob"
    return client, {
        "symbol": "BTC-USD",
        "side": "BUY" if client == "alice" else "SELL",
        "price": 50_000,
        "quantity": 1,
        "client_order_id": f"{prefix}-{seq}",
    }


def submit(target: LocalTarget, node_id: int, seq: int, prefix: str) -> int:
    client, body = order(seq, prefix)
    token = target.credentials().api_keys[client]
    try:
        code, _ = target.cluster.request(
            node_id, "POST", "/v1/orders", body, token=token, timeout=3
        )
    except OSError:
        return 0
    return code


def submit_until_acked(target: LocalTarget, node_id: int, prefix: str, timeout: float) -> float:
    """Seconds until one order sent to ``node_id`` is acknowledged (retrying with the
    same client order id)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if 200 <= submit(target, node_id, 0, prefix) < 300:
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"no write acknowledged by node {node_id} in {timeout} s")


def metric(target: LocalTarget, node_id: int, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` on the node's /metrics with these labels."""
    m = target.cluster.member(node_id)
    text = urllib.request.urlopen(f"http://{m.http}/metrics", timeout=3).read().decode()
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:{{(.*)}})? ([0-9.e+-]+)$", line)
        if not match:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


def wait_role_change(target: LocalTarget, old: int, among: list[int], timeout: float) -> int:
    """Wait until ``old`` is no longer leader and one of ``among`` leads; that one."""
    deadline = time.monotonic() + timeout
    states: dict[int, Any] = {}
    while time.monotonic() < deadline:
        states = {i: target.cluster.status(i, timeout=0.5) for i in [old, *among]}
        leaders = [i for i in among if states[i] and states[i]["role"] == "leader"]
        if leaders and states[old] and states[old]["role"] != "leader":
            return leaders[0]
        time.sleep(0.1)
    raise AssertionError(f"no leadership change in {timeout} s: {states}")


def in_namespace(network: net.Network, node_id: int, code: str) -> tuple[subprocess.Popen, int]:
    """A helper Python process inside a node's namespace; it prints its port first."""
    proc = subprocess.Popen(
        [*network.exec_prefix(node_id), sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return proc, port


UDP_ECHO = """
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 0))
    print(s.getsockname()[1], flush=True)
    while True:
        data, peer = s.recvfrom(2048)
        try:
            s.sendto(data, peer)
        except PermissionError:  # the OUTPUT rule dropped it
            pass
"""

TCP_SOURCE = """
    import socket
    s = socket.socket()
    s.bind(("0.0.0.0", 0))
    s.listen()
    print(s.getsockname()[1], flush=True)
    block = b"x" * 65536
    while True:
        c, _ = s.accept()
        try:
            while True:
                c.sendall(block)
        except OSError:
            c.close()
"""


def udp_reply_ratio(host: str, port: int, count: int = 400) -> float:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.02)
    got = 0
    for i in range(count):
        s.sendto(i.to_bytes(4, "big"), (host, port))
        try:
            while True:
                s.recv(64)
                got += 1
        except TimeoutError:
            pass
    s.settimeout(0.3)
    try:
        while True:
            s.recv(64)
            got += 1
    except TimeoutError:
        pass
    s.close()
    return got / count


def tcp_rate_kbit(host: str, port: int, seconds: float = 2.0) -> float:
    s = socket.create_connection((host, port), timeout=5)
    received = 0
    # The first bytes fill tbf's burst; measure after them.
    s.recv(65536)
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        received += len(s.recv(65536))
    elapsed = time.monotonic() - start
    s.close()
    return received * 8 / 1000 / elapsed


# ---- the proxy on its own (no root needed) ---------------------------------------------


@pytest.fixture
def echo_server() -> Iterator[int]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return

            def echo(c: socket.socket = conn) -> None:
                with c:
                    try:
                        while data := c.recv(65536):
                            c.sendall(data)
                    except OSError:
                        pass

            threading.Thread(target=echo, daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield srv.getsockname()[1]
    srv.close()


def median_rtt_ms(port: int, count: int = 15) -> float:
    with socket.create_connection(("127.0.0.1", port)) as s:
        samples = []
        for _ in range(count):
            t = time.monotonic()
            s.sendall(b"p")
            assert s.recv(1) == b"p"
            samples.append((time.monotonic() - t) * 1000)
    return sorted(samples)[count // 2]


def test_proxy_latency_adds_what_it_should_and_keeps_order(echo_server: int) -> None:
    hub = ProxyHub(seed=7)
    try:
        proxy = hub.add("a->b", "127.0.0.1", "127.0.0.1", echo_server)
        base = median_rtt_ms(proxy.listen_port)
        hub.set_latency("a->b", "up", 80.0)
        slowed = median_rtt_ms(proxy.listen_port)
        # One direction delayed: the round trip gains 80 ms (scheduling adds a little).
        assert 78 <= slowed - base <= 100, (base, slowed)
        hub.set_latency("a->b", "up", 40.0, jitter_ms=30.0)
        with socket.create_connection(("127.0.0.1", proxy.listen_port)) as s:
            # Jitter per chunk never reorders the stream.
            sent = b"".join(i.to_bytes(2, "big") for i in range(300))
            for i in range(0, len(sent), 2):
                s.sendall(sent[i : i + 2])
                time.sleep(0.001)
            got = b""
            s.settimeout(5)
            while len(got) < len(sent):
                got += s.recv(65536)
        assert got == sent
        hub.clear("a->b")
        assert median_rtt_ms(proxy.listen_port) < base + 5
    finally:
        hub.close()


def test_proxy_stall_reset_and_corrupt(echo_server: int) -> None:
    hub = ProxyHub(seed=7)
    try:
        proxy = hub.add("a->b", "127.0.0.1", "127.0.0.1", echo_server)
        with socket.create_connection(("127.0.0.1", proxy.listen_port)) as s:
            s.settimeout(0.5)
            hub.set_stall("a->b", "up", True)
            s.sendall(b"held")
            with pytest.raises(TimeoutError):
                s.recv(4)
            hub.set_stall("a->b", "up", False)
            assert s.recv(4) == b"held"
            # Corrupt: exactly one bit of every chunk flipped, the rest intact.
            hub.set_corrupt("a->b", "down", 1.0)
            s.sendall(bytes(64))
            got = b""
            while len(got) < 64:
                got += s.recv(64)
            assert sum(bin(b).count("1") for b in got) == 1
            hub.set_corrupt("a->b", "down", 0.0)
            # Reset: the open connection is closed with an RST.
            hub.set_reset("a->b", 1.0)
            with pytest.raises((ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
                s.sendall(b"x")
                if not s.recv(1):
                    raise ConnectionResetError("closed")
        # ... and new ones are refused while the toxic is on.
        with socket.create_connection(("127.0.0.1", proxy.listen_port)) as s2:
            s2.settimeout(2)
            with pytest.raises((ConnectionResetError, ConnectionAbortedError)):
                s2.sendall(b"y")
                if not s2.recv(1):
                    raise ConnectionResetError("closed")
        hub.set_reset("a->b", 0.0)
        assert median_rtt_ms(proxy.listen_port, 3) < 50
        assert proxy.up.corrupted == 0 and proxy.down.corrupted == 1 and proxy.resets >= 2
    finally:
        hub.close()
    assert hub.listening() == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.listen_port), timeout=1).close()


# ---- without root or tools --------------------------------------------------------------


def test_without_root_network_faults_are_refused_naming_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert net.missing_tools("ip", "iptables", "tc") == "root"
    with pytest.raises(CapabilityError, match=r"needs root and ip, iptables, tc.*missing: root"):
        net.Network.create([1, 2, 3])
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda tool: None if tool == "iptables" else "/x")
    assert net.missing_tools("ip", "iptables", "tc") == "iptables"
    monkeypatch.setattr(clock_faults, "SEARCH", ("/nonexistent/libfaketime.so.1",))
    with pytest.raises(CapabilityError, match="clock needs libfaketime"):
        clock_faults.faketime_env(10)


def test_faketime_spec() -> None:
    assert clock_faults.faketime_spec(3600) == "+3600.000"
    assert clock_faults.faketime_spec(-1.5, 2) == "-1.500 x2"
    with pytest.raises(ValueError, match="rate"):
        clock_faults.faketime_spec(0, 0)


# ---- namespaces --------------------------------------------------------------------------


@needs_netns
def test_leftovers_of_a_crashed_run_are_found_by_prefix_and_removed() -> None:
    # A run that dies without closing: its namespaces, bridge and a process inside.
    code = "from exchange_node.chaos import net; import os, subprocess; "
    code += "n = net.Network.create([1, 2]); "
    code += "p = subprocess.Popen([*n.exec_prefix(1), 'sleep', '300'], start_new_session=True, "
    code += "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
    code += "print(n.prefix, p.pid, flush=True); os._exit(0)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    prefix, orphan = out.stdout.split()
    assert prefix.startswith("cx")
    left = net.chaos_objects(prefix)
    assert sorted(left) == sorted(
        [f"{prefix}n1", f"{prefix}n2", f"{prefix}br", f"{prefix}v1", f"{prefix}v2"]
    )
    removed = net.remove_leftovers()
    # A veth goes with its namespace; the namespaces and the bridge are removed by name.
    assert {f"{prefix}n1", f"{prefix}n2", f"{prefix}br"} <= set(removed)
    assert net.chaos_objects(prefix) == []
    deadline = time.monotonic() + 5
    while Path(f"/proc/{orphan}").exists() and "Z" not in proc_state(int(orphan)):
        assert time.monotonic() < deadline, f"process {orphan} in a leftover namespace lives on"
        time.sleep(0.05)


def proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


UDP_LISTENER = """
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 9999))
    print(9999, flush=True)
    while True:
        data, _ = s.recvfrom(64)
        print(data.decode(), flush=True)
"""


def reachability(network: net.Network, ids: list[int]) -> set[tuple[int, int]]:
    """(sender, receiver) pairs whose UDP datagrams arrive, every namespace to every other."""
    listeners = {i: in_namespace(network, i, UDP_LISTENER)[0] for i in ids}
    try:
        for src in ids:
            code = "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            for dst in ids:
                if dst != src:
                    ip = network.ip(dst)
                    code += f"for _ in range(3):\n    try: s.sendto(b'{src}', ('{ip}', 9999))\n"
                    code += "    except PermissionError: pass\n"
            subprocess.run([*network.exec_prefix(src), sys.executable, "-c", code], check=True)
        time.sleep(0.3)
    finally:
        for proc in listeners.values():
            proc.kill()
    seen = set()
    for dst, proc in listeners.items():
        assert proc.stdout is not None
        for line in proc.stdout.read().split():
            seen.add((int(line), dst))
    return seen


@needs_netns
def test_partition_shapes_cut_exactly_the_pairs_they_name() -> None:
    """Split 2/3 of 5, a bridge node, one direction only, and flapping (on, off, on)."""
    ids = [1, 2, 3, 4, 5]
    everyone = {(a, b) for a in ids for b in ids if a != b}
    network = net.Network.create(ids)
    try:
        assert reachability(network, ids) == everyone

        def cut(groups: list[list[int]], one_way: bool = False) -> list[net.Rule]:
            rules = [
                r for s, d in net.cut_directions(groups, one_way) for r in network.cut_rules(s, d)
            ]
            return network.add_rules(rules)

        split = cut([[1, 2], [3, 4, 5]])
        minority = {1, 2}
        assert reachability(network, ids) == {
            (a, b) for a, b in everyone if (a in minority) == (b in minority)
        }
        network.remove_rules(split)

        # 3 talks to everyone; 1,2 and 4,5 only to their own side and to 3.
        bridge = cut([[1, 2], [4, 5]])
        assert reachability(network, ids) == {
            (a, b) for a, b in everyone if 3 in (a, b) or ({a, b} <= {1, 2}) or ({a, b} <= {4, 5})
        }
        network.remove_rules(bridge)

        # One way: 1 cannot reach 2 and 3, they still reach it.
        one_way = cut([[1], [2, 3]], one_way=True)
        assert reachability(network, [1, 2, 3]) == {
            (a, b) for a in [1, 2, 3] for b in [1, 2, 3] if a != b
        } - {(1, 2), (1, 3)}
        network.remove_rules(one_way)

        # Flapping is a scenario turning a partition on and off: each state is exact.
        for _ in range(2):
            rules = cut([[1], [2]])
            assert reachability(network, [1, 2]) == set()
            network.remove_rules(rules)
            assert reachability(network, [1, 2]) == {(1, 2), (2, 1)}
        assert network.rules == [] and all(network.iptables_rules(i) == [] for i in ids)
    finally:
        network.close()
    assert net.chaos_objects(network.prefix) == []


@needs_netns
@pytest.mark.chaos
def test_partition_loss_bandwidth_for_real_and_nothing_left_after_close(tmp_path: Path) -> None:
    target = LocalTarget(tmp_path / "cluster", 3, link_proxies=True, seed=1)
    network = target.network
    assert network is not None and target.proxies is not None
    try:
        assert {"partition", "loss", "bandwidth", "link"} <= target.capabilities()
        assert network.subnet.subnet_of(net.RANGE)
        old = target.cluster.wait_for_leader(30)
        rest = [i for i in target.node_ids() if i != old]

        # Isolate the leader: it steps down, the majority elects and acknowledges writes.
        cut = target.partition([[old], rest])
        assert len(network.iptables_rules(old)) == 8  # 2 peers x (IP + proxy) x in/out
        new = wait_role_change(target, old, rest, timeout=15)
        took = submit_until_acked(target, new, "after-cut", timeout=10)
        print(f"partition: leader {old} isolated, {new} leads, write acked in {took:.2f} s")
        assert submit(target, old, 1, "isolated") not in range(200, 300)
        cut.heal()
        assert network.iptables_rules(old) == []
        target.cluster.wait_converged(target.node_ids(), timeout=30)

        # One way: the leader's packets (and its bytes through the proxies) go nowhere,
        # the others' still reach it: they elect a leader, and it follows that one.
        old = target.cluster.wait_for_leader(30)
        rest = [i for i in target.node_ids() if i != old]
        mute = target.partition([[old], rest], one_way=True)
        new = wait_role_change(target, old, rest, timeout=15)
        deadline = time.monotonic() + 10
        while (st := target.cluster.status(old)) is None or st["leader"] != new:
            assert time.monotonic() < deadline, f"node {old} never heard of leader {new}: {st}"
            time.sleep(0.1)
        print(f"one way: leader {old} muted, {new} leads, {old} follows it")
        mute.heal()
        target.cluster.wait_converged(target.node_ids(), timeout=30)

        # Loss: 30% of packets each way on node 1's veth; an echo answers ~0.7^2.
        echo, port = in_namespace(network, 1, UDP_ECHO)
        try:
            clean = udp_reply_ratio(network.ip(1), port)
            lossy_fault = target.loss(1, 0.3)
            lossy = udp_reply_ratio(network.ip(1), port)
            lossy_fault.heal()
            healed = udp_reply_ratio(network.ip(1), port)
        finally:
            echo.kill()
            echo.wait()
        print(f"loss 30%: replies {clean:.2f} -> {lossy:.2f} -> {healed:.2f} (expected 0.49)")
        assert clean >= 0.97 and healed >= 0.97
        assert 0.37 <= lossy <= 0.61

        # Bandwidth: tbf at 4 Mbit/s on node 2's egress.
        source, port = in_namespace(network, 2, TCP_SOURCE)
        try:
            free = tcp_rate_kbit(network.ip(2), port, 1.0)
            limit = target.bandwidth(2, 4000)
            assert "tbf" in network.qdiscs(2)
            limited = tcp_rate_kbit(network.ip(2), port, 2.0)
            limit.heal()
            assert "tbf" not in network.qdiscs(2)
        finally:
            source.kill()
            source.wait()
        print(f"tbf 4000 kbit/s: {free:.0f} -> {limited:.0f} kbit/s")
        # TCP through a shallow tbf queue backs off below the rate (2,886 kbit/s seen on
        # a loaded CI machine); what matters is that it is shaped, and never above it.
        assert 2000 <= limited <= 4600
        assert free > 5 * 4000

        # Faults still active at close are undone by it too.
        target.loss(3, 0.5)
        target.partition([[1], [2]], one_way=True)
        proxy_ports = [p.listen_port for p in target.proxies.proxies.values()]
        procs = list(target.cluster.procs.values())
    finally:
        target.close()
    assert net.chaos_objects(network.prefix) == []
    assert not [n for n in net.list_namespaces() if n.startswith(network.prefix)]
    forward = net.run("iptables", "-w", "-S", "FORWARD").stdout
    assert network.bridge not in forward
    assert all(p.poll() is not None for p in procs)
    assert processes_under(tmp_path) == []
    assert target.proxies.listening() == []
    for port in proxy_ports:
        with pytest.raises(OSError):
            socket.create_connection((network.bridge_ip, port), timeout=1).close()


# ---- corrupted frames, clock skew, corrupted state -------------------------------------


def median_ack_s(target: LocalTarget, node_id: int, prefix: str, count: int = 7) -> float:
    times = []
    for seq in range(count):
        start = time.monotonic()
        assert 200 <= submit(target, node_id, seq, prefix) < 300
        times.append(time.monotonic() - start)
    return sorted(times)[count // 2]


def corrupt_link(target: LocalTarget, prefix: str) -> tuple[int, int]:
    """Flip bits in 20% of the chunks from the leader to a follower while writes flow."""
    leader = target.cluster.wait_for_leader(30)
    follower = next(i for i in target.node_ids() if i != leader)
    fault = target.link(leader, follower, LinkFault("corrupt", probability=0.2))
    deadline = time.monotonic() + 4
    seq = 0
    while time.monotonic() < deadline:
        submit(target, leader, seq, prefix)
        seq += 1
    fault.heal()
    assert target.proxies is not None
    name = f"{leader}->{follower}"
    assert target.proxies.proxies[name].up.corrupted > 0
    return leader, follower


@pytest.mark.chaos
def test_link_toxics_on_real_peers_and_corrupted_frames_under_peer_tls(
    tmp_path: Path,
) -> None:
    with LocalTarget(tmp_path / "c", 3, netns=False, link_proxies=True, seed=3) as target:
        leader = target.cluster.wait_for_leader(30)
        rest = [i for i in target.node_ids() if i != leader]

        # Latency on the leader's links: every write waits for a follower's append.
        base = median_ack_s(target, leader, "base")
        slow = [target.link(leader, f, LinkFault("latency", latency_ms=150.0)) for f in rest]
        delayed = median_ack_s(target, leader, "slow")
        for fault in slow:
            fault.heal()
        print(f"link latency 150 ms: write ack {base * 1000:.0f} -> {delayed * 1000:.0f} ms")
        assert delayed - base >= 0.14

        # Reset: the leader's connections to a follower are cut and counted as reconnects.
        before = metric(target, leader, "exchange_peer_reconnects_total", peer=str(rest[0]))
        reset = target.link(leader, rest[0], LinkFault("reset"))
        time.sleep(1.5)
        reset.heal()
        deadline = time.monotonic() + 10
        while metric(target, leader, "exchange_peer_reconnects_total", peer=str(rest[0])) <= before:
            assert time.monotonic() < deadline, "a reset link was never reconnected"
            time.sleep(0.2)

        # Stall: the followers hear nothing from the leader and elect another.
        stalled = [target.link(leader, f, LinkFault("stall")) for f in rest]
        new = wait_role_change(target, leader, rest, timeout=15)
        print(f"link stall: {leader}'s links to {rest} stalled, {new} leads")
        for fault in stalled:
            fault.heal()
        target.cluster.wait_converged(target.node_ids(), timeout=30)

        leader, follower = corrupt_link(target, "tls")
        reconnects = metric(target, leader, "exchange_peer_reconnects_total", peer=str(follower))
        checksum = metric(
            target, follower, "exchange_peer_frames_rejected_total", reason="checksum"
        )
        print(
            f"TLS: leader's reconnects to {follower}: {reconnects:g}, checksum rejects {checksum}"
        )
        # TLS's record MAC fails first: the connection drops, the frame layer never sees it.
        assert reconnects >= 1 and checksum == 0
        target.cluster.wait_converged(target.node_ids(), timeout=30)


@needs_faketime
@pytest.mark.chaos
def test_insecure_peers_checksum_clock_skew_and_corrupted_state(tmp_path: Path) -> None:
    with LocalTarget(
        tmp_path / "c",
        3,
        netns=False,
        link_proxies=True,
        peer_tls=False,
        seed=4,
        snapshot_threshold=200,
    ) as target:
        assert not {"partition", "loss", "bandwidth", "disk", "power_cut"} & target.capabilities()
        with pytest.raises(CapabilityError, match="partition needs root and iptables"):
            target.partition([[1], [2, 3]])
        with pytest.raises(CapabilityError, match="disk needs the FUSE filesystem"):
            target.disk(1, DiskFault("eio_write"))

        # Bit flips on the wire without TLS: the frame CRC rejects them and counts them.
        leader, follower = corrupt_link(target, "plain")
        checksum = metric(
            target, follower, "exchange_peer_frames_rejected_total", reason="checksum"
        )
        print(f"insecure: checksum rejects on node {follower}: {checksum:g}")
        assert checksum >= 1
        # The follower's stream from the leader can stay wedged after the bit flips
        # (see the xfail test below); a restart reconnects it.
        target.restart(follower)
        target.cluster.wait_converged(target.node_ids(), timeout=30)

        # Clock: one follower an hour ahead and running fast; the cluster is unharmed.
        skewed = next(i for i in target.node_ids() if i != target.cluster.wait_for_leader(30))
        skew = target.clock(skewed, 3600, rate=2.0)
        offset = http_clock_offset(target, skewed)
        time.sleep(3)
        later = http_clock_offset(target, skewed)
        print(f"clock: node {skewed} HTTP Date is {offset:+.0f} s off, {later:+.0f} s 3 s later")
        assert 3590 <= offset <= 3640
        assert 2 <= later - offset <= 4  # running at twice the speed (Date has 1 s steps)
        assert abs(http_clock_offset(target, leader if leader != skewed else follower)) < 5
        submit_until_acked(target, skewed, "skewed", timeout=10)  # forwarded by the skewed node
        target.cluster.wait_converged(target.node_ids(), timeout=30)
        skew.heal()
        assert abs(http_clock_offset(target, skewed)) < 5
        target.cluster.wait_converged(target.node_ids(), timeout=30)

        # A replica whose data was damaged on disk (its WAL's tail, then its snapshot):
        # it must be detected, never serve silently; what happens is reported.
        victim = next(i for i in target.node_ids() if i != target.cluster.wait_for_leader(30))
        assert list(Path(target.cluster.member(victim).data_dir).glob("snap-*.snap"))
        for where in ("wal", "snapshot"):
            damaged = target.corrupt_state(victim, seed=4, where=where)
            print(f"{damaged.description}: {damaged.outcome[:300]}")
            assert not damaged.outcome.startswith("served"), damaged.outcome
            damaged.heal()
            target.cluster.wait_converged(target.node_ids(), timeout=30)


@pytest.mark.chaos
@pytest.mark.xfail(
    # The transport's answer watch (guarded by tests/transport: test_a_peer_that_answers_
    # nothing_gets_both_streams_reset) heals the wedge
    # this test was written for; it passes in most runs. Not strict: in about 1 run in 10
    # the leader keeps reopening its stream to the follower and the follower still hears
    # nothing for 20 s, a second failure mode not yet explained (issue note).
    strict=False,
    reason="residual: after several corrupted streams a follower sometimes hears nothing on "
    "new connections either (cause not found yet)",
)
def test_a_follower_hears_the_leader_again_after_corrupted_frames_without_tls(
    tmp_path: Path,
) -> None:
    """Found by this target: without peer TLS a bit flipped in a gRPC message's length
    prefix leaves the follower's inbound stream waiting for a message of up to
    max_message_bytes; HTTP/2 keepalives still pass, so nothing reset it and the follower
    never heard the leader again. The leader now resets both streams with a peer that
    answers none of its heartbeats for two election timeouts."""
    with LocalTarget(
        tmp_path / "c", 3, netns=False, link_proxies=True, peer_tls=False, seed=4
    ) as target:
        # Seeded flips, but chunk boundaries vary: corrupt again until one run wedges.
        for round_ in range(6):
            leader, follower = corrupt_link(target, f"wedge{round_}")
            if wedged(target, leader, follower, seconds=8):
                break
            target.cluster.wait_converged(target.node_ids(), timeout=20)
        else:
            pytest.fail("six rounds of bit flips never wedged the follower's stream")
        target.cluster.wait_converged(target.node_ids(), timeout=20)


def wedged(target: LocalTarget, leader: int, follower: int, seconds: float) -> bool:
    """Whether the follower stopped hearing the leader (it lost its leader, or the leader
    reset the streams to a follower that answered nothing) within ``seconds``."""
    reset = f"peer {follower} answered nothing"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if reset in target.cluster.log_tail(leader, lines=200):
            print(f"leader {leader} reset its streams with the silent follower {follower}")
            return True
        status = target.cluster.status(follower)
        if status is not None and status["leader"] != leader:
            print(f"follower {follower} lost leader {leader}: {status['role']}")
            return True
        time.sleep(0.1)
    return False


def processes_under(root: Path) -> list[str]:
    """Command lines of live processes that name a path under ``root`` (nodes, faultfs)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(root) in cmdline:
            found.append(f"{entry.name}: {cmdline[:200]}")
    return found


def faultfs_missing() -> str | None:
    from exchange_node.chaos import faultfs

    return faultfs.unavailable_reason()


@pytest.mark.chaos
def test_power_cut_of_a_majority_keeps_every_acknowledged_order_and_a_disk_stall(
    tmp_path: Path,
) -> None:
    missing = faultfs_missing()
    if missing:
        pytest.skip(f"power cuts need the FUSE filesystem: {missing}")
    with LocalTarget(tmp_path / "c", 3, netns=False, faultfs=True, seed=5) as target:
        assert {"disk", "power_cut"} <= target.capabilities()
        leader = target.cluster.wait_for_leader(30)
        acked = []
        for seq in range(20):
            submit_until_acked_seq(target, leader, seq, "before-cut")
            acked.append(seq)
        follower = next(i for i in target.node_ids() if i != leader)
        cut = target.power_cut([leader, follower])
        print(f"{cut.description}: {cut.outcome}")
        assert not target.cluster.alive(leader) and not target.cluster.alive(follower)
        cut.heal()
        new = target.cluster.wait_for_leader(30)
        target.cluster.wait_ready(timeout=30)
        for seq in acked:
            client, body = order(seq, "before-cut")
            code, doc = target.cluster.request(
                new,
                "GET",
                f"/v1/orders/by-client-id/{body['client_order_id']}",
                token=target.credentials().api_keys[client],
                timeout=5,
            )
            assert code == 200, (seq, code, doc)
        target.cluster.wait_converged(target.node_ids(), timeout=30)

        # A stalled fsync on the leader: what writes see while it lasts, then recovery.
        leader = new
        stall = target.disk(leader, DiskFault("stall_fsync"))
        code = submit(target, leader, 0, "during-stall")
        print(f"stall_fsync on leader {leader}: a write answered {code or 'nothing'} in 3 s")
        stall.heal()
        submit_until_acked(target, target.cluster.wait_for_leader(30), "after-stall", 15)
        target.cluster.wait_converged(target.node_ids(), timeout=30)
        target.disk(leader, DiskFault("eio_fsync"))  # left for close() to heal
    from exchange_node.chaos import faultfs

    assert faultfs.leftover_mounts(tmp_path) == []
    assert processes_under(tmp_path) == []


def submit_until_acked_seq(target: LocalTarget, node_id: int, seq: int, prefix: str) -> None:
    deadline = time.monotonic() + 15
    while not 200 <= submit(target, node_id, seq, prefix) < 300:
        assert time.monotonic() < deadline, f"order {prefix}-{seq} not acknowledged"
        time.sleep(0.1)


def http_clock_offset(target: LocalTarget, node_id: int) -> float:
    """The node's wall clock (its HTTP Date header) minus ours, in seconds."""
    m = target.cluster.member(node_id)
    deadline = time.monotonic() + 15
    while True:
        try:
            with urllib.request.urlopen(f"http://{m.http}/healthz", timeout=2) as resp:
                date = resp.headers["Date"]
                break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    return email.utils.parsedate_to_datetime(date).timestamp() - time.time()
