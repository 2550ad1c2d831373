"""Bounded resources per client, against real node processes.

Each node here is a real ``exchange node`` process (one voter, fsync on),
configured through the documented ``--api-*`` flags and ``EXCHANGE_API_*``
variables. Hostile clients are raw sockets where the point is what a normal
client library would never do: never reading, or sending half a request.
Bounds are generous (two busy cores); the measured figures are printed
(``pytest -s``) and the fairness figures are ``exchange bench fairness``'s.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from exchange_node.tools.bench.fairness import measure, start_cluster
from exchange_node.tools.local import LocalCluster

pytestmark = pytest.mark.slow

MiB = 1 << 20


# ---------------------------------------------------------------- helpers


def http(
    cluster: LocalCluster,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = None,
    raw: bytes | None = None,
    timeout: float = 10.0,
) -> tuple[int, Any, dict[str, str]]:
    m = cluster.spec.members[0]
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(f"http://{m.http}{path}", data=data, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, payload, headers = resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        status, payload, headers = exc.code, exc.read(), dict(exc.headers)
    try:
        return status, json.loads(payload) if payload else None, headers
    except ValueError:
        return status, payload.decode(errors="replace"), headers


def address(cluster: LocalCluster) -> tuple[str, int]:
    host, _, port = cluster.spec.members[0].http.rpartition(":")
    return host, int(port)


def ws_handshake(
    cluster: LocalCluster, token: str | None = None, rcvbuf: int | None = None
) -> tuple[int, socket.socket]:
    """Open /v1/ws by hand: (HTTP status, socket). Nothing after the headers is read."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:  # a small window: the kernel absorbs little for a non-reader
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(address(cluster))
    key = base64.b64encode(os.urandom(16)).decode()
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    sock.sendall(
        (
            "GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{auth}\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)  # byte by byte: nothing beyond the headers is consumed
        if not chunk:
            break
        head += chunk
    status = int(head.split(b" ", 2)[1]) if head else 0
    return status, sock


def ws_frame(message: dict[str, Any]) -> bytes:
    """One masked text frame (clients must mask)."""
    payload = json.dumps(message).encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    short = n < 126  # our frames stay below 64 KiB: a 7- or 16-bit length
    header = struct.pack("!BB", 0x81, 0x80 | n) if short else struct.pack("!BBH", 0x81, 0xFE, n)
    return header + mask + masked


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def refusals(cluster: LocalCluster, limit: str) -> float:
    """``exchange_api_refusals_total{limit=...}`` as the node exports it."""
    status, text, _ = http(cluster, "GET", "/metrics")
    assert status == 200
    match = re.search(rf'^exchange_api_refusals_total{{limit="{limit}"}} (\S+)$', text, re.M)
    assert match is not None, f"no exchange_api_refusals_total for {limit}"
    return float(match.group(1))


def leader_pid(cluster: LocalCluster) -> int:
    return cluster.procs[cluster.spec.members[0].node_id].pid


@pytest.fixture(scope="module")
def limited(tmp_path_factory) -> Iterator[LocalCluster]:
    """A node with low limits, from flags and (two of them) from the environment."""
    root = tmp_path_factory.mktemp("limited")
    config = root / "exchange.yaml"
    config.write_text("risk:\n  max_open_orders: 3\n")
    saved = dict(os.environ)
    os.environ["EXCHANGE_API_PUBLIC_MARKET_DATA"] = "false"
    os.environ["EXCHANGE_API_MAX_BODY_BYTES"] = "2048"
    try:
        cluster = start_cluster(
            root / "cluster",
            1,
            [
                f"--config={config}",
                "--api-max-batch=3",
                "--api-rate-limit=0.5",
                "--api-rate-burst=5",
                "--api-auth-failure-rate=0.2",
                "--api-auth-failure-burst=5",
                "--api-http-idle-timeout-seconds=1",
                "--api-http-body-timeout-seconds=1",
                "--api-ws-max-connections-per-key=2",
            ],
        )
    finally:
        os.environ.clear()
        os.environ.update(saved)
    yield cluster
    cluster.stop_all(15)


ORDER = {
    "symbol": "BTC-USD",
    "side": "BUY",
    "order_type": "LIMIT",
    "time_in_force": "IOC",
    "price": 41_000,
    "quantity": 1,
}


# ---------------------------------------------------------------- settings


def test_documented_settings_reach_the_node_and_are_enforced(limited: LocalCluster) -> None:
    bob, carol = limited.key_for("bob"), limited.key_for("carol")
    # --api-max-batch=3: 413 batch_too_large naming the field (docs/api.md).
    status, doc, _ = http(limited, "POST", "/v1/orders/batch", {"orders": [ORDER] * 4}, token=bob)
    assert status == 413 and doc["error"]["code"] == "batch_too_large", doc
    assert doc["error"]["field"] == "orders" and "limit is 3" in doc["error"]["message"]
    status, doc, _ = http(limited, "POST", "/v1/orders/batch", {"orders": [ORDER] * 3}, token=bob)
    assert status == 200 and len(doc["results"]) == 3, doc
    # EXCHANGE_API_PUBLIC_MARKET_DATA=false: market data needs a key.
    status, doc, _ = http(limited, "GET", "/v1/book/BTC-USD")
    assert status == 401 and doc["error"]["field"] == "Authorization", doc
    assert http(limited, "GET", "/v1/book/BTC-USD", token=bob)[0] == 200
    # EXCHANGE_API_MAX_BODY_BYTES=2048: 413 (another key: bob's 3 orders, his batch
    # refused 413 and his book read spent 5 tokens, his whole burst).
    big = json.dumps({**ORDER, "client_order_id": "x" * 10}).encode() + b" " * 3000
    status, doc, _ = http(limited, "POST", "/v1/orders", raw=big, token=limited.key_for("alice"))
    assert status == 413 and doc["error"]["field"] == "body", doc
    # --api-rate-limit=0.5 --api-rate-burst=5: five at once, then 429 with Retry-After.
    statuses = [http(limited, "GET", "/v1/positions", token=carol)[0] for _ in range(5)]
    assert statuses == [200] * 5
    status, doc, headers = http(limited, "GET", "/v1/positions", token=carol)
    assert status == 429 and doc["error"]["code"] == "rate_limited"
    assert int(headers["Retry-After"]) >= 1
    # --api-ws-max-connections-per-key=2: the third socket of one key is refused.
    dave = limited.key_for("dave")
    opened = [ws_handshake(limited, dave) for _ in range(3)]
    try:
        assert [status for status, _ in opened] == [101, 101, 429]
    finally:
        for _, sock in opened:
            sock.close()


def test_a_market_makers_key_gets_its_own_rate_limit_from_the_keys_file(
    tmp_path: Path,
) -> None:
    # Every key at 0.01 orders/s, burst 10 (nothing refills during the test), except
    # bench7's, given 1,000 at once in the list form of the keys file.
    cluster = LocalCluster.create(tmp_path / "cluster", 1, extra_args=["--log-level=warning"])
    keys = tmp_path / "api-keys.yaml"
    entries = [{"token": t, "client_id": c} for t, c in cluster.spec.api_keys.items()]
    for entry in entries:
        if entry["client_id"] == "bench7":
            entry.update(rate_limit=0.01, rate_burst=1_000)
    keys.write_text(json.dumps(entries))  # JSON is YAML
    cluster.spec.extra_args += [
        f"--api-keys-file={keys}",
        "--api-rate-limit=0.01",
        "--api-rate-burst=10",
    ]
    cluster.start_all()
    try:
        cluster.wait_for_leader(120)
        cluster.wait_ready(timeout=120)
        retail, maker = cluster.key_for("bob"), cluster.key_for("bench7")
        batch = {"orders": [ORDER] * 10}
        # A batch of 10 orders spends the retail key's whole burst.
        assert http(cluster, "POST", "/v1/orders/batch", batch, token=retail)[0] == 200
        status, doc, headers = http(cluster, "POST", "/v1/orders", ORDER, token=retail)
        assert status == 429, doc
        assert doc["error"]["limit"] == "rate_limit_per_second", doc
        assert (doc["error"]["rate"], doc["error"]["burst"]) == (0.01, 10)
        assert int(headers["Retry-After"]) >= 1
        # The maker's key: 1,000 orders at once, then refused too.
        big = {"orders": [ORDER] * 500}
        for _ in range(2):
            status, doc, _ = http(cluster, "POST", "/v1/orders/batch", big, token=maker)
            assert status == 200, doc
        status, doc, _ = http(cluster, "POST", "/v1/orders/batch", big, token=maker)
        assert status == 429 and doc["error"]["burst"] == 1_000, doc
        assert refusals(cluster, "rate_limit") == 2
    finally:
        cluster.stop_all(15)


def test_resting_orders_per_client_are_capped_from_the_yaml_config(
    limited: LocalCluster,
) -> None:
    token = limited.key_for("bench2")
    rest = {**ORDER, "time_in_force": "GTC"}
    statuses = []
    for i in range(4):
        status, doc, _ = http(
            limited, "POST", "/v1/orders", {**rest, "price": 41_000 + i}, token=token
        )
        statuses.append(status)
    # risk.max_open_orders: 3 -> the engine rejects the fourth resting order.
    assert statuses == [200, 200, 200, 422], statuses
    assert doc["error"]["code"] == "risk_max_open_orders", doc
    # An IOC order does not rest: still accepted.
    assert http(limited, "POST", "/v1/orders", ORDER, token=token)[0] == 200


def test_unknown_token_flood_from_one_address_gets_429(limited: LocalCluster) -> None:
    statuses = []
    for i in range(8):
        status, doc, _ = http(limited, "GET", "/v1/positions", token=f"guess-{i}")
        statuses.append(status)
    # --api-auth-failure-burst=5: five failures answer 401, then 429 (JSON, Retry-After).
    assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}, statuses
    assert doc["error"]["code"] == "rate_limited" and doc["error"]["field"] == "Authorization"
    # WebSocket handshakes with unknown tokens are charged to the same limit.
    status, sock = ws_handshake(limited, "guess-ws")
    sock.close()
    assert status == 429
    # A valid key from the same address is not affected.
    assert http(limited, "GET", "/v1/book/BTC-USD", token=limited.key_for("alice"))[0] == 200
    assert refusals(limited, "auth_failure") >= 4  # three over HTTP, one handshake


def test_slowloris_idle_and_slow_body_connections_are_closed(limited: LocalCluster) -> None:
    # Half a request line, never finished: closed after --api-http-idle-timeout-seconds=1.
    half = socket.create_connection(address(limited), timeout=15)
    half.sendall(b"GET /healthz HT")
    started = time.monotonic()
    assert half.recv(1024) == b""
    slowloris_seconds = time.monotonic() - started
    half.close()
    # Headers dribbled one line a second never complete either.
    drip = socket.create_connection(address(limited), timeout=15)
    started = time.monotonic()
    closed = False
    for line in [b"GET /healthz HTTP/1.1\r\n"] + [b"X-Pad: 1\r\n"] * 10:
        try:
            drip.sendall(line)
        except OSError:
            closed = True
            break
        time.sleep(0.4)
        drip.settimeout(0.01)
        try:
            if drip.recv(1024) == b"":
                closed = True
                break
        except TimeoutError:
            pass
    drip_seconds = time.monotonic() - started
    drip.close()
    # An idle keep-alive connection after a complete answer is closed too.
    idle = socket.create_connection(address(limited), timeout=15)
    idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    first = idle.recv(4096)
    assert first.startswith(b"HTTP/1.1 200")
    started = time.monotonic()
    while idle.recv(4096):
        pass
    idle_seconds = time.monotonic() - started
    idle.close()
    # A body that stops arriving: 408 after --api-http-body-timeout-seconds=1.
    slow = socket.create_connection(address(limited), timeout=15)
    slow.sendall(
        b"POST /v1/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + limited.key_for("alice").encode() + b"\r\n"
        b'Content-Length: 200\r\n\r\n{"symbol":'
    )
    started = time.monotonic()
    answer = slow.recv(4096)
    body_seconds = time.monotonic() - started
    slow.close()
    print(
        f"\nclosed after: half request line {slowloris_seconds:.2f} s, dripped headers "
        f"{drip_seconds:.2f} s, idle {idle_seconds:.2f} s; slow body answered in "
        f"{body_seconds:.2f} s"
    )
    assert slowloris_seconds < 5 and closed and drip_seconds < 5 and idle_seconds < 5
    assert answer.startswith(b"HTTP/1.1 408") and b"body_timeout" in answer, answer[:300]
    assert body_seconds < 5


# ---------------------------------------------------------------- WebSocket


@pytest.fixture(scope="module")
def deep(tmp_path_factory) -> Iterator[LocalCluster]:
    """A node with a 10,000-order book and a 1 MiB WebSocket send limit."""
    root = tmp_path_factory.mktemp("deep")
    cluster = start_cluster(
        root / "cluster",
        1,
        [
            f"--api-ws-send-queue-bytes={MiB}",
            "--api-ws-max-anonymous-per-address=4",
            "--api-ws-max-connections-per-address=64",
        ],
    )
    alice = cluster.key_for("alice")
    price = 40_000
    for batch in range(20):
        orders = [
            {**ORDER, "time_in_force": "GTC", "price": price + 500 * batch + k} for k in range(500)
        ]
        status, doc, headers = http(
            cluster, "POST", "/v1/orders/batch", {"orders": orders}, token=alice
        )
        if status == 429:  # alice's orders/s limit: wait as told, like any client
            time.sleep(int(headers["Retry-After"]))
            status, doc, _ = http(
                cluster, "POST", "/v1/orders/batch", {"orders": orders}, token=alice
            )
        assert status == 200, doc
    yield cluster
    cluster.stop_all(15)


def test_one_anonymous_address_cannot_take_every_slot(deep: LocalCluster) -> None:
    opened = [ws_handshake(deep) for _ in range(6)]
    keyed = ws_handshake(deep, deep.key_for("bob"))
    try:
        statuses = [status for status, _ in opened]
        # --api-ws-max-anonymous-per-address=4.
        assert statuses == [101] * 4 + [429] * 2, statuses
        assert keyed[0] == 101  # an authenticated client still connects
    finally:
        for _, sock in [*opened, keyed]:
            sock.close()
    time.sleep(0.5)
    status, sock = ws_handshake(deep)  # slots come back when sockets close
    sock.close()
    assert status == 101


def test_slow_readers_are_closed_with_bounded_memory_and_a_live_loop(deep: LocalCluster) -> None:
    readers = 20
    pid = leader_pid(deep)
    status, doc, _ = http(deep, "GET", "/v1/book/BTC-USD?depth=1000", token=deep.key_for("bob"))
    assert status == 200 and len(doc["bids"]) == 1000
    before = rss_bytes(pid)

    health: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                code = http(deep, "GET", "/healthz", timeout=30)[0]
            except OSError:
                code = 0
            health.append(time.monotonic() - started if code == 200 else float("inf"))
            time.sleep(0.05)

    peak = [before]

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_bytes(pid))
            time.sleep(0.02)

    threads = [threading.Thread(target=probe), threading.Thread(target=sample)]
    for t in threads:
        t.start()
    token = deep.key_for("bench1")
    # Per connection: the send limit plus a constant (one frame in aiohttp's hands, the
    # connection's objects); plus slack for the allocator and the node's own churn.
    bound = readers * (MiB + 256 * 1024) + 64 * MiB
    sockets = []
    try:
        for _ in range(readers):
            status, sock = ws_handshake(deep, token, rcvbuf=4096)
            assert status == 101
            sock.settimeout(1.0)
            sockets.append(sock)
        # Never read; ask for the 10,000-level snapshot over and over.
        closed_at: dict[int, float] = {}
        started = time.monotonic()
        subscribe = ws_frame({"op": "subscribe", "channels": ["book:BTC-USD"]})
        unsubscribe = ws_frame({"op": "unsubscribe", "channels": ["book:BTC-USD"]})
        while len(closed_at) < readers and time.monotonic() - started < 60:
            if peak[0] - before > bound:
                break  # failed already; do not take the machine's memory with it
            for i, sock in enumerate(sockets):
                if i in closed_at:
                    continue
                try:
                    sock.sendall(subscribe + unsubscribe)
                except (TimeoutError, BlockingIOError):
                    pass  # the server is not reading us: it is closing us
                except OSError:
                    closed_at[i] = time.monotonic() - started
            time.sleep(0.01)
    finally:
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join()
        for sock in sockets:
            sock.close()
    growth = peak[0] - before
    worst_health = max(health)
    print(
        f"\n{readers} slow readers of a 10,000-level book: closed after "
        f"{max(closed_at.values(), default=float('nan')):.2f} s (last), leader RSS "
        f"{before / MiB:.0f} -> peak {peak[0] / MiB:.0f} MiB (+{growth / MiB:.1f}, bound "
        f"{bound / MiB:.0f}), /healthz worst {worst_health * 1000:.0f} ms over {len(health)} probes"
    )
    assert len(closed_at) == readers, f"only {len(closed_at)} of {readers} slow readers closed"
    assert refusals(deep, "ws_slow_consumer") == readers
    assert growth <= bound
    assert worst_health < 2.0
    # The node still serves, and a fresh reader gets its snapshot.
    assert http(deep, "GET", "/readyz")[0] == 200


# ---------------------------------------------------------------- fairness


def test_one_client_hogging_does_not_starve_another(tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path / "cluster", 1)
    try:
        figures = measure(cluster, tmp_path, phase_seconds=1.0, hog_batches=40, hog_batch_size=500)
    finally:
        cluster.stop_all(15)
    alone, hogged, hog = figures["alone"], figures["hogged"], figures["hog"]
    print(
        f"\nvictim alone p50 {alone['p50']:.1f} ms p99 {alone['p99']:.1f} ms; while a client "
        f"keeps 40 batches of 500 going: p50 {hogged['p50']:.1f} ms p99 {hogged['p99']:.1f} ms; "
        f"hog {hog['orders_per_s']:.0f} orders/s, {hog['429_per_s']:.0f} answers 429/s"
    )
    assert hog["limited"], "the hog never reached its limit"
    assert hogged["errors"] == {}, hogged["errors"]  # no 503: the hog cannot fill the queue
    # Generous: the issue measured 3 ms -> 787 ms median with 15% 503s.
    assert hogged["p50"] <= max(20 * alone["p50"], 60.0)
    assert hogged["p99"] <= max(20 * alone["p99"], 250.0)


def test_bench_fairness_reports_every_figure(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [
            *(sys.executable, "-m", "exchange_node.cli", "bench", "fairness", "--json"),
            *("--nodes=1", "--phase-seconds=0.3", "--rounds=1", "--hog-batches=4"),
            f"--data-root={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    names = {r["name"] for r in doc["results"]}
    assert names == {
        "victim_p50_ms_unloaded",
        "victim_p99_ms_unloaded",
        "victim_p50_ms_hogged",
        "victim_p99_ms_hogged",
        "victim_p99_ratio",
        "victim_errors",
        "victim_orders_hogged",
        "hog_orders_per_s",
        "hog_429_per_s",
        "hog_other_per_s",
    }
