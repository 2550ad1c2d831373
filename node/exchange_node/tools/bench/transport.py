"""Throughput of one replication stream between two processes on loopback.

The sender (this process) plays a leader: APP messages of ``--batch`` entries
of ``--entry-bytes`` bytes each, at most ``--window`` messages in flight (like
Raft's inflight window). The receiver (a child process) plays a follower: it
answers every APP with an APP_RESP, so traffic flows both ways as in a real
cluster. Reported per batch size: entries, messages, envelopes and MB per
second from the first send to the last acknowledgement.

``--codec`` adds the single-process cost of the Message <-> protobuf
conversion per entry, for the columnar encoding used on the wire and for the
``repeated Entry`` sub-message alternative it was chosen over.

    exchange bench transport --batches 256,1024
    exchange bench transport --batches 1 --window 1 --entries 4000   # ping-pong
    exchange bench transport --batches 1,256 --window 1 --entries 4000 --tls both

``--tls on`` runs the stream over mutual TLS (a CA and two member certificates made
in a temporary directory); ``--tls both`` runs each batch size in plaintext and over
mTLS in turn and adds the mTLS/plaintext ratios of the message rate and of the CPU
per round trip (both processes' user+sys per APP and its APP_RESP: steadier than a
rate on a shared host). ``--rounds N`` repeats each run and prints medians, the
order of the two modes swapped every round.

    exchange bench transport --batches 1,256 --entries 20000 --tls both --rounds 4

Run it through ``exchange`` (not ``python -m``): the CLI picks gRPC's I/O path
before grpc is imported, as it does for a node (``exchange_node.grpc_io``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from exchange_node.raft.types import Entry, Message, MessageType
from exchange_node.tools.bench.format import BenchResult, report
from exchange_node.transport.tls import PeerTLS
from exchange_node.transport.transport import (
    DEFAULT_CLUSTER_ID,
    DEFAULT_ENVELOPE_BYTES,
    PeerTransport,
)

SENDER_ID = 1
ACK_TIMEOUT_S = 30.0
RECEIVER_ID = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--batches", default="256,1024", help="entries per APP message, comma-separated"
    )
    parser.add_argument("--entries", type=int, default=300_000, help="entries sent per batch size")
    parser.add_argument("--entry-bytes", type=int, default=100, help="bytes of data per entry")
    parser.add_argument("--window", type=int, default=64, help="APP messages in flight at most")
    parser.add_argument(
        "--envelope-bytes", type=int, default=DEFAULT_ENVELOPE_BYTES, help="envelope size target"
    )
    parser.add_argument("--uvloop", action="store_true", help="run both processes on uvloop")
    parser.add_argument("--codec", action="store_true", help="also time the codec in-process")
    parser.add_argument(
        "--tls",
        choices=("off", "on", "both"),
        default="off",
        help="mutual TLS on the stream; 'both' measures plaintext and mTLS in turn",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="runs per batch size and mode (medians are printed); with --tls both each "
        "round swaps which mode goes first",
    )
    parser.add_argument("--receiver", default="", help=argparse.SUPPRESS)
    parser.add_argument("--receiver-tls", default="", help=argparse.SUPPRESS)


def main(args: argparse.Namespace) -> int:
    if args.receiver:
        tls = _member_files(Path(args.receiver_tls), RECEIVER_ID) if args.receiver_tls else None
        _run(_receiver(args.receiver, tls), uvloop=args.uvloop)
        return 0
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.tls]
    results: list[BenchResult] = []
    with tempfile.TemporaryDirectory(prefix="bench-transport-tls-") as tmp:
        tls_dir = Path(tmp)
        if True in modes:
            _write_pki(tls_dir)
        for batch in (int(b) for b in args.batches.split(",")):
            runs: dict[bool, list[list[BenchResult]]] = {mtls: [] for mtls in modes}
            for round_ in range(args.rounds):
                # ABBA: each round swaps which mode goes first, so a machine that is
                # getting busier or quieter does not favour one of them.
                for mtls in modes if round_ % 2 == 0 else modes[::-1]:
                    sender = _sender(
                        batch,
                        args.entries,
                        args.entry_bytes,
                        args.window,
                        args.envelope_bytes,
                        args.uvloop,
                        tls_dir if mtls else None,
                    )
                    runs[mtls].append(_run(sender, uvloop=args.uvloop))
            by_mode = {mtls: _medians(r) for mtls, r in runs.items()}
            for mtls in modes:
                results.extend(by_mode[mtls])
            if len(modes) == 2:
                results.extend(_ratios(by_mode[True], by_mode[False]))
    if args.codec:
        results.extend(_codec_results(args.entry_bytes))
    # Two processes on a shared host: other load moves these figures a lot.
    results.append(BenchResult("host_load_average_1m", round(os.getloadavg()[0], 2), "tasks"))
    report("transport", results, as_json=getattr(args, "json", False))
    return 0


def _medians(runs: list[list[BenchResult]]) -> list[BenchResult]:
    """Each figure's median over the rounds (same names and units)."""
    return [
        BenchResult(first.name, statistics.median(r[i].value for r in runs), first.unit)
        for i, first in enumerate(runs[0])
    ]


def _ratios(mtls: list[BenchResult], plain: list[BenchResult]) -> list[BenchResult]:
    """mTLS / plaintext for the rate and the CPU per round trip of one batch size."""
    plain_by_name = {r.name: r.value for r in plain}
    out = []
    for r in mtls:
        base = r.name.removesuffix("_mtls")
        if base.startswith(("stream_messages_per_s_", "cpu_us_per_round_trip_")):
            other = plain_by_name.get(base)
            if other:
                out.append(BenchResult(f"{base}_mtls_vs_plain", round(r.value / other, 3), "ratio"))
    return out


def _write_pki(root: Path) -> None:
    """A CA and the certificates of members 1 (sender) and 2 (receiver) under ``root``."""
    from exchange_node.security import generate_ca, issue_member_cert, write_pair

    ca = generate_ca("bench transport ca")
    (root / "ca.crt").write_bytes(ca.cert_pem)
    for node_id in (SENDER_ID, RECEIVER_ID):
        pair = issue_member_cert(ca, DEFAULT_CLUSTER_ID, node_id)
        write_pair(pair, root / f"member-{node_id}.crt", root / f"member-{node_id}.key")


def _member_files(root: Path, node_id: int) -> PeerTLS:
    return PeerTLS(root / f"member-{node_id}.crt", root / f"member-{node_id}.key", root / "ca.crt")


def _run(coro: Any, *, uvloop: bool) -> Any:
    if uvloop:
        import uvloop as _uvloop

        return _uvloop.run(coro)
    return asyncio.run(coro)


async def _sender(
    batch: int,
    total_entries: int,
    entry_bytes: int,
    window: int,
    envelope_bytes: int,
    uvloop: bool,
    tls_dir: Path | None = None,
) -> list[BenchResult]:
    messages_total = max(1, total_entries // batch)
    payload = bytes(range(256)) * (entry_bytes // 256 + 1)
    apps = [
        Message(
            MessageType.APP,
            RECEIVER_ID,
            SENDER_ID,
            term=1,
            log_term=1,
            index=k * batch,
            entries=[Entry(1, k * batch + i + 1, payload[:entry_bytes]) for i in range(batch)],
            commit=k * batch,
        )
        for k in range(messages_total)
    ]
    acked = asyncio.Event()
    acks = 0

    def on_message(msg: Message) -> None:
        nonlocal acks
        if msg.type == MessageType.APP_RESP:
            acks += 1
            acked.set()

    transport = PeerTransport(
        SENDER_ID,
        "127.0.0.1:0",
        on_message,
        queue_limit=window * 4,
        envelope_bytes=envelope_bytes,
        tls=_member_files(tls_dir, SENDER_ID) if tls_dir else None,
    )
    await transport.start()
    # Through the CLI, so the receiver picks gRPC's I/O path as a node does.
    command = [sys.executable, "-m", "exchange_node.cli", "bench", "transport"]
    command += ["--receiver", transport.address] + (["--uvloop"] if uvloop else [])
    command += ["--receiver-tls", str(tls_dir)] if tls_dir else []
    child = await asyncio.create_subprocess_exec(
        *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        line = (await child.stdout.readline()).decode().split()
        if not line or line[0] != "PORT":
            raise RuntimeError("the receiver process did not start")
        transport.set_peers({RECEIVER_ID: f"127.0.0.1:{line[1]}"})
        # Warm up: the stream is open and one round trip has happened.
        transport.send([Message(MessageType.HEARTBEAT, RECEIVER_ID, SENDER_ID)])
        while not transport.peer_connected(RECEIVER_ID):
            await asyncio.sleep(0.01)
        stats = transport.stats
        envelopes_before, bytes_before = stats.envelopes_sent, stats.bytes_sent
        child.stdin.write(b"mark\n")  # the receiver starts its CPU clock
        cpu_started = time.process_time()
        started = time.perf_counter()
        sent = 0
        while acks < messages_total:
            if sent < messages_total and sent - acks < window:
                burst = min(window - (sent - acks), messages_total - sent)
                transport.send(apps[sent : sent + burst])
                sent += burst
            acked.clear()
            try:
                await asyncio.wait_for(acked.wait(), ACK_TIMEOUT_S)
            except TimeoutError:
                # The transport drops what is queued when a stream breaks (Raft resends;
                # this bench does not): say so instead of waiting forever.
                raise RuntimeError(
                    f"no acknowledgement for {ACK_TIMEOUT_S:g} s after {acks} of "
                    f"{messages_total}: {stats}"
                ) from None
        elapsed = time.perf_counter() - started
        sender_cpu = time.process_time() - cpu_started
        child.stdin.write(b"report\n")
        receiver_cpu = float((await child.stdout.readline()).decode().split()[1])
        envelopes = stats.envelopes_sent - envelopes_before
        wire_bytes = stats.bytes_sent - bytes_before
        if stats.dropped_queue_full or stats.dropped_disconnected:
            raise RuntimeError(f"messages were dropped: {stats}")
    finally:
        child.stdin.close()  # type: ignore[union-attr]
        await child.wait()
        await transport.stop()
    entries = messages_total * batch
    tag = f"batch{batch}" + ("_mtls" if tls_dir else "")
    return [
        BenchResult(f"stream_entries_per_s_{tag}", round(entries / elapsed), "entries/s"),
        BenchResult(f"stream_messages_per_s_{tag}", round(messages_total / elapsed), "messages/s"),
        BenchResult(f"stream_envelopes_per_s_{tag}", round(envelopes / elapsed), "envelopes/s"),
        BenchResult(f"stream_mb_per_s_{tag}", round(wire_bytes / elapsed / 1e6, 1), "MB/s"),
        BenchResult(f"sender_cpu_percent_{tag}", round(100 * sender_cpu / elapsed), "%"),
        BenchResult(f"receiver_cpu_percent_{tag}", round(100 * receiver_cpu / elapsed), "%"),
        # Both processes' CPU per APP and its APP_RESP: robust where rates are not.
        BenchResult(
            f"cpu_us_per_round_trip_{tag}",
            round((sender_cpu + receiver_cpu) / messages_total * 1e6, 1),
            "us",
        ),
    ]


async def _receiver(sender_address: str, tls: PeerTLS | None = None) -> None:
    loop = asyncio.get_running_loop()
    transport: PeerTransport

    def on_message(msg: Message) -> None:
        if msg.type == MessageType.APP:
            last = msg.entries[-1].index if msg.entries else msg.index
            transport.send(
                [Message(MessageType.APP_RESP, msg.frm, msg.to, term=msg.term, index=last)]
            )

    transport = PeerTransport(RECEIVER_ID, "127.0.0.1:0", on_message, queue_limit=1 << 16, tls=tls)
    await transport.start()
    transport.set_peers({SENDER_ID: sender_address})
    print(f"PORT {transport.port}", flush=True)
    stdin_closed: asyncio.Future[None] = loop.create_future()
    cpu_mark = time.process_time()

    def on_stdin() -> None:
        # Commands from the sender, one per line: "mark" starts the CPU clock,
        # "report" prints the CPU seconds since; end of input stops.
        nonlocal cpu_mark
        chunk = os.read(sys.stdin.fileno(), 4096)
        if not chunk:
            if not stdin_closed.done():
                stdin_closed.set_result(None)
            return
        for command in chunk.split():
            if command == b"mark":
                cpu_mark = time.process_time()
            elif command == b"report":
                print(f"CPU {time.process_time() - cpu_mark:.6f}", flush=True)

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    await stdin_closed
    loop.remove_reader(sys.stdin.fileno())
    await transport.stop()


# ---- codec, in-process ----------------------------------------------------------


def _codec_results(entry_bytes: int, batch: int = 1024, rounds: int = 200) -> list[BenchResult]:
    from exchange_node.transport import peer_pb2 as pb
    from exchange_node.transport.codec import message_from_pb, message_to_pb

    payload = b"x" * entry_bytes
    msg = Message(
        MessageType.APP,
        2,
        1,
        entries=[Entry(5, 1000 + i, payload) for i in range(batch)],
    )
    wire = message_to_pb(msg).SerializeToString()

    def columnar_encode() -> None:
        message_to_pb(msg).SerializeToString()

    def columnar_decode() -> None:
        message_from_pb(pb.RaftMessage.FromString(wire))

    batch_cls = _submessage_batch_class()
    sub_wire = _submessage_encode(batch_cls, msg)

    def sub_encode() -> None:
        _submessage_encode(batch_cls, msg)

    def sub_decode() -> None:
        parsed = batch_cls.FromString(sub_wire)
        [Entry(e.term, e.index, e.data, e.type) for e in parsed.entries]

    def per_entry_ns(fn: Any) -> float:
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(rounds):
                fn()
            best = min(best, (time.perf_counter() - started) / rounds / batch * 1e9)
        return round(best, 1)

    return [
        BenchResult("codec_encode_ns_per_entry", per_entry_ns(columnar_encode), "ns"),
        BenchResult("codec_decode_ns_per_entry", per_entry_ns(columnar_decode), "ns"),
        BenchResult("codec_submessage_encode_ns_per_entry", per_entry_ns(sub_encode), "ns"),
        BenchResult("codec_submessage_decode_ns_per_entry", per_entry_ns(sub_decode), "ns"),
    ]


def _submessage_batch_class() -> Any:
    """``message Batch { repeated Entry entries = 1; }``, built at run time for the comparison."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fdp = descriptor_pb2.FileDescriptorProto(
        name="transport_bench_submessage.proto", package="transport_bench", syntax="proto3"
    )
    field = descriptor_pb2.FieldDescriptorProto
    entry = fdp.message_type.add(name="Entry")
    for number, (name, kind) in enumerate(
        [
            ("term", field.TYPE_UINT64),
            ("index", field.TYPE_UINT64),
            ("type", field.TYPE_UINT32),
            ("data", field.TYPE_BYTES),
        ],
        start=1,
    ):
        entry.field.add(name=name, number=number, type=kind, label=field.LABEL_OPTIONAL)
    batch = fdp.message_type.add(name="Batch")
    batch.field.add(
        name="entries",
        number=1,
        type=field.TYPE_MESSAGE,
        type_name=".transport_bench.Entry",
        label=field.LABEL_REPEATED,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("transport_bench.Batch"))


def _submessage_encode(batch_cls: Any, msg: Message) -> bytes:
    out = batch_cls()
    add = out.entries.add
    for e in msg.entries:
        add(term=e.term, index=e.index, type=e.type, data=e.data)
    return bytes(out.SerializeToString())
