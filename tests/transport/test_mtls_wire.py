"""Mutual TLS on the wire, and what it costs per message (counted, never timed).

A TCP relay between two PeerTransports records every byte they exchange: over mTLS a
marker carried in the entries never shows up in those bytes and the connection opens
with a TLS handshake, while the same traffic without TLS shows the marker (the
control, so the test cannot pass because the relay saw nothing). The refusal tests
(no certificate, another CA, another member, expired) are in tests/security/.

What mTLS may cost per message is the cipher and gRPC's record framing, nothing in our
code: the certificate files are checked per handshake and every few seconds, and the
member a stream authenticated as is read once per stream. A test counts both while
hundreds of envelopes flow, so a check moved into the per-message path fails it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from exchange_node.raft.types import Entry, Message, MessageType
from exchange_node.security import generate_ca, issue_member_cert, write_pair
from exchange_node.transport import PeerTransport
from exchange_node.transport import tls as peer_tls
from exchange_node.transport import transport as transport_module
from exchange_node.transport.tls import PeerTLS

CLUSTER = "wire"
MARKER = b"plaintext-marker-0123456789"
WAIT_LIMIT_S = 30.0
"""Only a guard against hanging forever: no test asserts on how long anything takes."""


async def until(predicate: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_LIMIT_S
    while not predicate():
        if loop.time() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        await asyncio.sleep(0.005)


def write_pki(root: Path) -> dict[int, PeerTLS]:
    ca = generate_ca("wire test ca")
    (root / "ca.crt").write_bytes(ca.cert_pem)
    files = {}
    for node_id in (1, 2):
        cert, key = root / f"member-{node_id}.crt", root / f"member-{node_id}.key"
        write_pair(issue_member_cert(ca, CLUSTER, node_id), cert, key)
        files[node_id] = PeerTLS(cert, key, root / "ca.crt")
    return files


class Relay:
    """Forwards TCP connections to ``target`` and keeps every byte in both directions."""

    def __init__(self, target: str) -> None:
        self.host, port = target.rsplit(":", 1)
        self.port = int(port)
        self.seen = bytearray()
        self.first_bytes: list[bytes] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        first = await reader.read(65536)
        self.first_bytes.append(first)
        self.seen += first
        up_writer.write(first)
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        self._tasks.update(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
        for w in (writer, up_writer):
            w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while chunk := await reader.read(65536):
                self.seen += chunk
                writer.write(chunk)
                await writer.drain()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class Pair:
    """Node 1 dials node 2 through a relay; node 2 answers node 1 directly."""

    def __init__(self) -> None:
        self.received: list[Message] = []
        self.answers: list[Message] = []
        self.transports: list[PeerTransport] = []
        self.relay: Relay | None = None

    async def start(self, tls: dict[int, PeerTLS] | None, **options: Any) -> None:
        def on_follower(msg: Message) -> None:
            self.received.append(msg)
            if msg.type == MessageType.APP:
                follower.send([Message(MessageType.APP_RESP, 1, 2, term=3, index=msg.index + 1)])

        leader = PeerTransport(
            1,
            "127.0.0.1:0",
            self.answers.append,
            cluster_id=CLUSTER,
            tls=tls[1] if tls else None,
            **options,
        )
        follower = PeerTransport(
            2,
            "127.0.0.1:0",
            on_follower,
            cluster_id=CLUSTER,
            tls=tls[2] if tls else None,
            **options,
        )
        self.transports = [leader, follower]
        for t in self.transports:
            await t.start()
        self.relay = Relay(follower.address)
        leader.set_peers({2: await self.relay.start()})
        follower.set_peers({1: leader.address})

    @property
    def leader(self) -> PeerTransport:
        return self.transports[0]

    async def stop(self) -> None:
        await asyncio.gather(*(t.stop() for t in self.transports))
        if self.relay is not None:
            await self.relay.stop()


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    p = Pair()
    yield p
    await p.stop()


def app(index: int, entries: int = 1) -> Message:
    return Message(
        MessageType.APP,
        2,
        1,
        term=3,
        log_term=3,
        index=index,
        commit=index,
        entries=[Entry(3, index + i + 1, MARKER) for i in range(entries)],
    )


async def ping_pong(pair: Pair, count: int) -> None:
    """``count`` APPs one after the other, each sent when the previous one was answered."""
    for k in range(count):
        answered = len(pair.answers)
        pair.leader.send([app(k)])
        await until(lambda n=answered: len(pair.answers) > n, f"the answer to APP {k}")


@pytest.mark.parametrize("mode", ["mtls", "plaintext"])
async def test_entries_cross_the_wire_encrypted_only_with_mtls(
    pair: Pair, tmp_path: Path, mode: str
) -> None:
    tls = write_pki(tmp_path) if mode == "mtls" else None
    await pair.start(tls)
    await ping_pong(pair, 5)
    assert pair.relay is not None
    assert [m.entries[0].data for m in pair.received] == [MARKER] * 5
    assert pair.relay.first_bytes, "the leader's stream did not go through the relay"
    handshake = pair.relay.first_bytes[0][:1] == b"\x16"  # TLS record type: handshake
    if mode == "mtls":
        assert pair.leader.stats.tls_enabled
        assert handshake
        assert MARKER not in pair.relay.seen
    else:
        assert not handshake
        assert pair.relay.seen.startswith(b"PRI * HTTP/2.0")
        assert MARKER in pair.relay.seen


async def test_certificates_are_checked_per_connection_not_per_message(
    pair: Pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refreshes = 0
    authentications = 0
    refresh = peer_tls.PeerCredentials.refresh
    authenticate = transport_module.PeerTransport._authenticate

    def counted_refresh(self: peer_tls.PeerCredentials) -> bool:
        nonlocal refreshes
        refreshes += 1
        return refresh(self)

    def counted_authenticate(self: PeerTransport, context: Any) -> Any:
        nonlocal authentications
        authentications += 1
        return authenticate(self, context)

    monkeypatch.setattr(peer_tls.PeerCredentials, "refresh", counted_refresh)
    monkeypatch.setattr(transport_module.PeerTransport, "_authenticate", counted_authenticate)
    # The periodic file check is not what this test is about: out of the way.
    await pair.start(write_pki(tmp_path), tls_check_interval=3600.0)
    await ping_pong(pair, 3)
    assert authentications == 2  # one Replicate stream each way
    before = (refreshes, authentications)
    await ping_pong(pair, 200)
    assert len(pair.received) == 203
    assert pair.leader.stats.reconnects == 0
    # 200 round trips (400 envelopes) later: no file check, no new authentication.
    assert (refreshes, authentications) == before


def test_transport_bench_measures_both_modes() -> None:
    """``exchange bench transport --tls both`` streams over mTLS and plaintext and prints
    the CPU per round trip of each and their ratio (figures only, never judged here)."""
    command = [sys.executable, "-m", "exchange_node.cli", "bench", "transport", "--json"]
    command += ["--batches", "1", "--window", "1", "--entries", "20", "--tls", "both"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    figures = {r["name"]: r["value"] for r in json.loads(done.stdout)["results"]}
    for name in (
        "cpu_us_per_round_trip_batch1",
        "cpu_us_per_round_trip_batch1_mtls",
        "cpu_us_per_round_trip_batch1_mtls_vs_plain",
        "stream_messages_per_s_batch1_mtls_vs_plain",
    ):
        assert figures[name] > 0, name
