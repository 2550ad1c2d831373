"""Message <-> protobuf conversion, framing checksums, splitting, snapshot chunks."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from exchange_node.raft.types import (
    MAX_TERM,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)
from exchange_node.transport import peer_pb2 as pb
from exchange_node.transport.codec import (
    ChecksumError,
    Digest,
    OversizedError,
    SnapshotAssembler,
    SnapshotTooLargeError,
    decode_digests,
    decode_messages,
    encode_envelope,
    estimated_size,
    message_from_pb,
    message_to_pb,
    open_chunk,
    open_envelope,
    snapshot_chunks,
    split_message,
)

BIG = 2**63 + 12345  # uint64 fields must survive values above int64


def _full_message(kind: MessageType) -> Message:
    """Every field set to a non-default value."""
    return Message(
        type=kind,
        to=7,
        frm=BIG,
        term=MAX_TERM,  # the highest a decoder accepts
        log_term=41,
        index=1000,
        entries=[
            Entry(41, 1001, b"order-1", EntryType.NORMAL),
            Entry(42, 1002, b"", EntryType.NORMAL),
            Entry(42, 1003, b"\x00\xffconf", EntryType.CONF_CHANGE),
        ],
        commit=999,
        reject=True,
        reject_hint=998,
        hint_term=40,
        snapshot=Snapshot(SnapshotMeta(900, 39, ConfState((1, 2, 3), (4,))), b"state" * 100),
        context=b"\x01ctx",
        nonce=2**64 - 1,  # the widest varint: estimated_size must still bound it
    )


def _canonical(msg: Message) -> Message:
    """Entries compare as a list whatever sequence type the sender used."""
    return Message(
        msg.type,
        msg.to,
        msg.frm,
        msg.term,
        msg.log_term,
        msg.index,
        list(msg.entries),
        msg.commit,
        msg.reject,
        msg.reject_hint,
        msg.hint_term,
        msg.snapshot,
        msg.context,
        msg.nonce,
    )


@pytest.mark.parametrize("kind", list(MessageType), ids=lambda k: k.name)
def test_round_trip_every_type_with_every_field(kind: MessageType) -> None:
    msg = _full_message(kind)
    wire = message_to_pb(msg).SerializeToString()
    back = message_from_pb(pb.RaftMessage.FromString(wire))
    assert _canonical(back) == _canonical(msg)
    assert type(back.type) is MessageType
    assert all(type(e.data) is bytes for e in back.entries)
    assert estimated_size(msg) >= len(wire)


@pytest.mark.parametrize("kind", list(MessageType), ids=lambda k: k.name)
def test_round_trip_defaults(kind: MessageType) -> None:
    msg = Message(kind, to=2, frm=1)
    back = message_from_pb(pb.RaftMessage.FromString(message_to_pb(msg).SerializeToString()))
    assert back == msg  # empty entries come back as (), no snapshot as None


def test_empty_snapshot_is_still_a_snapshot() -> None:
    msg = Message(MessageType.SNAP, 2, 1, snapshot=Snapshot(SnapshotMeta(0, 0, ConfState()), b""))
    back = message_from_pb(message_to_pb(msg))
    assert back.snapshot == msg.snapshot


def test_usual_app_omits_index_and_type_columns() -> None:
    msg = Message(
        MessageType.APP, 2, 1, index=41, entries=[Entry(3, 42 + i, b"x") for i in range(5)]
    )
    raw = message_to_pb(msg)
    assert len(raw.entry_indexes) == len(raw.entry_types) == 0
    assert list(raw.entry_terms) == [3] * 5
    assert message_from_pb(
        pb.RaftMessage.FromString(raw.SerializeToString())
    ) == dataclasses.replace(msg, entries=list(msg.entries))


@pytest.mark.parametrize(
    ("index", "entry_indexes"),
    [(41, [42, 43, 45]), (40, [42, 43, 44]), (41, [42, 42, 43]), (0, [7])],
    ids=["gap", "not-after-index", "repeat", "lone"],
)
def test_unusual_indexes_travel_explicitly(index: int, entry_indexes: list[int]) -> None:
    msg = Message(
        MessageType.APP, 2, 1, index=index, entries=[Entry(3, i, b"y") for i in entry_indexes]
    )
    raw = message_to_pb(msg)
    assert list(raw.entry_indexes) == entry_indexes
    back = message_from_pb(pb.RaftMessage.FromString(raw.SerializeToString()))
    assert [e.index for e in back.entries] == entry_indexes


def test_inconsistent_entry_columns_are_rejected() -> None:
    raw = message_to_pb(Message(MessageType.APP, 2, 1, entries=[Entry(1, 1, b"abc")]))
    raw.entry_sizes[0] = 5
    with pytest.raises(ValueError):
        message_from_pb(raw)
    raw = message_to_pb(Message(MessageType.APP, 2, 1, entries=[Entry(1, 1, b"abc")]))
    raw.entry_terms.append(3)
    with pytest.raises(ValueError):
        message_from_pb(raw)
    raw = message_to_pb(Message(MessageType.APP, 2, 1, entries=[Entry(1, 5, b"abc")]))
    raw.entry_types.extend([0, 1])
    with pytest.raises(ValueError):
        message_from_pb(raw)
    raw = message_to_pb(
        Message(MessageType.APP, 2, 1, entries=[Entry(1, 5, b"a"), Entry(1, 9, b"")])
    )
    raw.entry_indexes.append(10)
    with pytest.raises(ValueError):
        message_from_pb(raw)
    raw = pb.RaftMessage(type=200)
    with pytest.raises(ValueError):
        message_from_pb(raw)


def test_envelope_round_trip_and_checksum() -> None:
    messages = [_full_message(k) for k in MessageType]
    digests = [Digest(1000, b"\xaa" * 32), Digest(1001, b"\xbb" * 32)]
    envelope = encode_envelope(1, 2, 5, messages, digests)
    body = open_envelope(pb.Envelope.FromString(envelope.SerializeToString()))
    assert (body.from_node, body.to_node, body.sequence) == (1, 2, 5)
    assert [_canonical(m) for m in decode_messages(body)] == [_canonical(m) for m in messages]
    assert decode_digests(body) == digests

    corrupted = bytearray(envelope.body)
    corrupted[len(corrupted) // 2] ^= 0x01
    with pytest.raises(ChecksumError):
        open_envelope(pb.Envelope(body=bytes(corrupted), crc32=envelope.crc32))


def _app(first_index: int, count: int, size: int) -> Message:
    entries = [Entry(3, first_index + i, bytes([i % 251]) * size) for i in range(count)]
    return Message(
        MessageType.APP, 2, 1, term=3, log_term=2, index=first_index - 1, entries=entries, commit=9
    )


def test_split_keeps_entries_in_order_and_chains_indexes() -> None:
    msg = _app(10, 1000, 100)
    budget = 20_000
    pieces = split_message(msg, budget)
    assert len(pieces) > 1
    assert all(estimated_size(p) <= budget for p in pieces)
    assert [e for p in pieces for e in p.entries] == list(msg.entries)
    assert (pieces[0].index, pieces[0].log_term) == (msg.index, msg.log_term)
    for before, after in itertools.pairwise(pieces):
        assert after.index == before.entries[-1].index
        assert after.log_term == before.entries[-1].term
    assert all(p.commit == msg.commit and p.term == msg.term for p in pieces)
    assert all(len(message_to_pb(p).SerializeToString()) <= budget for p in pieces)


def test_split_leaves_small_messages_alone_and_refuses_impossible_ones() -> None:
    small = _app(1, 3, 10)
    assert split_message(small, 10_000) == [small]
    with pytest.raises(OversizedError):
        split_message(_app(1, 2, 50_000), 10_000)
    with pytest.raises(OversizedError):
        split_message(Message(MessageType.HEARTBEAT, 2, 1, context=b"x" * 20_000), 10_000)


def _snap_message(size: int) -> Message:
    data = bytes((i * 7 + i // 251) % 256 for i in range(size))
    meta = SnapshotMeta(5000, 7, ConfState((1, 2, 3), (9,)))
    return Message(MessageType.SNAP, 2, 1, term=8, snapshot=Snapshot(meta, data))


def test_snapshot_chunks_reassemble_exactly() -> None:
    msg = _snap_message(300_001)
    chunks = [
        pb.SnapshotChunk.FromString(c.SerializeToString()) for c in snapshot_chunks(msg, 77, 65_536)
    ]
    assert len(chunks) == 5
    bodies = [open_chunk(c) for c in chunks]
    assembler = SnapshotAssembler(bodies[0], max_bytes=1 << 20)
    for body in bodies[1:]:
        assembler.add(body)
    assert assembler.complete
    assert assembler.finish() == msg


def test_empty_snapshot_is_one_chunk() -> None:
    msg = _snap_message(0)
    chunks = list(snapshot_chunks(msg, 1, 1024))
    assert len(chunks) == 1
    assert SnapshotAssembler(open_chunk(chunks[0]), 1024).finish() == msg


def test_snapshot_chunk_corruption_and_disorder_are_detected() -> None:
    msg = _snap_message(10_000)
    chunks = list(snapshot_chunks(msg, 1, 4096))
    bad = bytearray(chunks[1].body)
    bad[-1] ^= 0x80
    with pytest.raises(ChecksumError):
        open_chunk(pb.SnapshotChunk(body=bytes(bad), crc32=chunks[1].crc32))

    bodies = [open_chunk(c) for c in chunks]
    assembler = SnapshotAssembler(bodies[0], 1 << 20)
    with pytest.raises(ValueError):
        assembler.add(bodies[2])  # skipped a chunk
    with pytest.raises(ValueError):
        SnapshotAssembler(bodies[1], 1 << 20)  # no header
    with pytest.raises(ValueError):
        SnapshotAssembler(bodies[0], 100)  # larger than allowed


def test_whole_snapshot_checksum_is_checked() -> None:
    msg = _snap_message(10_000)
    bodies = [open_chunk(c) for c in snapshot_chunks(msg, 1, 4096)]
    bodies[0].total_crc32 ^= 1
    assembler = SnapshotAssembler(bodies[0], 1 << 20)
    for body in bodies[1:]:
        assembler.add(body)
    with pytest.raises(ChecksumError):
        assembler.finish()


@pytest.mark.parametrize("where", ["term", "log_term", "hint_term", "entry", "snapshot"])
def test_terms_above_max_term_are_decode_failures(where: str) -> None:
    raw = message_to_pb(_full_message(MessageType.APP))
    message_from_pb(raw)  # MAX_TERM itself is fine
    if where == "entry":
        raw.entry_terms[1] = MAX_TERM + 1
    elif where == "snapshot":
        raw.snapshot.meta.term = MAX_TERM + 1
    else:
        setattr(raw, where, 2**64 - 1)
    with pytest.raises(ValueError, match="MAX_TERM"):
        message_from_pb(raw)


def test_snapshot_header_with_a_bad_term_is_refused_before_data() -> None:
    msg = _snap_message(100)
    body = open_chunk(next(snapshot_chunks(msg, 1, 4096)))
    body.header.term = MAX_TERM + 1
    with pytest.raises(ValueError, match="MAX_TERM"):
        SnapshotAssembler(body, 1 << 20)


def test_cluster_id_travels_in_envelopes_and_chunks() -> None:
    env = encode_envelope(1, 2, 1, [Message(MessageType.HEARTBEAT, 2, 1)], cluster_id="prod")
    assert open_envelope(env).cluster_id == "prod"
    chunks = [open_chunk(c) for c in snapshot_chunks(_snap_message(9000), 1, 4096, "prod")]
    assert [c.cluster_id for c in chunks] == ["prod"] * 3


def test_assembler_keeps_only_what_arrived() -> None:
    """A header announcing 4 GiB (under a higher limit) costs nothing until data comes."""
    msg = _snap_message(10)
    first = open_chunk(next(snapshot_chunks(msg, 1, 4096)))
    first.total_size = 4 << 30
    assembler = SnapshotAssembler(first, max_bytes=8 << 30)
    assert assembler.received == 10
    assert sum(len(c) for c in assembler._chunks) == 10
    with pytest.raises(SnapshotTooLargeError, match="exceeds the limit"):
        SnapshotAssembler(first, max_bytes=1 << 30)
