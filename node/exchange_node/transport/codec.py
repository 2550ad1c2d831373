"""Raft ``Message`` <-> protobuf, framing with checksums, and batch splitting.

Entries travel column-wise inside a ``RaftMessage`` (packed ``entry_terms``,
``entry_indexes``, ``entry_types``, ``entry_sizes`` plus one concatenated
``entry_data`` blob). Measured on the build machine with 100-byte entries in
batches of 1024 (``python -m exchange_node.tools.bench.transport --codec`` repeats
the comparison): on a quiet host about 170 ns to encode and 380 ns to
decode one entry, against 630 ns and 550 ns with a ``repeated Entry``
sub-message, and about the same as a hand-packed ``struct`` blob (120 ns /
390 ns) while staying plain, schema-described protobuf. Python pays per
protobuf object, so fewer objects win. Most of the decoding cost is building
the ``Entry`` objects themselves.

Framing: an ``Envelope`` (and a ``SnapshotChunk``) carries its body as
serialized bytes plus ``zlib.crc32`` of exactly those bytes. The receiver
checks the CRC before parsing. zlib's CRC-32 is in the standard library and
runs at several GB/s, so it costs nothing next to protobuf parsing.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate, repeat

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

_MESSAGE_TYPES: tuple[MessageType, ...] = tuple(MessageType)

MESSAGE_OVERHEAD_BYTES = 107
"""Upper bound of a ``RaftMessage``'s encoded size without entries, context or snapshot."""

ENTRY_OVERHEAD_BYTES = 32
"""Upper bound of one entry's column bytes besides its data (4 varints)."""

ENVELOPE_OVERHEAD_BYTES = 64
"""Envelope framing, envelope body header and digest slack."""


class ChecksumError(ValueError):
    """A frame whose CRC does not match its body."""


class OversizedError(ValueError):
    """A single entry (or snapshot header) larger than the message size limit."""


class SnapshotTooLargeError(ValueError):
    """An incoming snapshot announced as larger than the configured maximum."""


# ---- Message <-> RaftMessage ---------------------------------------------


def message_to_pb(msg: Message) -> pb.RaftMessage:
    """Convert one Raft message. The snapshot, if any, is carried whole."""
    out = pb.RaftMessage(
        type=msg.type,
        to=msg.to,
        frm=msg.frm,
        term=msg.term,
        log_term=msg.log_term,
        index=msg.index,
        commit=msg.commit,
        reject=msg.reject,
        reject_hint=msg.reject_hint,
        hint_term=msg.hint_term,
        context=msg.context,
        nonce=msg.nonce,
    )
    entries = msg.entries
    if entries:
        datas = [e.data for e in entries]
        out.entry_terms.extend([e.term for e in entries])
        indexes = [e.index for e in entries]
        first = indexes[0]
        # The usual case travels without these two columns (see peer.proto).
        if first != msg.index + 1 or indexes != list(range(first, first + len(indexes))):
            out.entry_indexes.extend(indexes)
        types = [e.type for e in entries]
        if any(types):
            out.entry_types.extend(types)
        out.entry_sizes.extend(map(len, datas))
        out.entry_data = b"".join(datas)
    if msg.snapshot is not None:
        _snapshot_to_pb(msg.snapshot, out.snapshot)
    return out


def message_from_pb(raw: pb.RaftMessage) -> Message:
    """Inverse of ``message_to_pb``. Raises ``ValueError`` on inconsistent columns
    and on any term above ``MAX_TERM`` (forged or corrupt: no honest cluster gets there)."""
    if raw.term > MAX_TERM or raw.log_term > MAX_TERM or raw.hint_term > MAX_TERM:
        raise ValueError(f"a term above MAX_TERM in a message of type {raw.type}")
    entries: list[Entry] | tuple[Entry, ...] = ()
    sizes = raw.entry_sizes
    if sizes:
        entries = _entries_from_columns(raw)
    snapshot = _snapshot_from_pb(raw.snapshot) if raw.HasField("snapshot") else None
    try:
        kind = _MESSAGE_TYPES[raw.type]
    except IndexError:
        raise ValueError(f"unknown message type {raw.type}") from None
    return Message(
        kind,
        raw.to,
        raw.frm,
        raw.term,
        raw.log_term,
        raw.index,
        entries,
        raw.commit,
        raw.reject,
        raw.reject_hint,
        raw.hint_term,
        snapshot,
        raw.context,
        raw.nonce,
    )


def _entries_from_columns(raw: pb.RaftMessage) -> list[Entry]:
    sizes = raw.entry_sizes
    count = len(sizes)
    terms = raw.entry_terms
    indexes: Iterable[int] = raw.entry_indexes or range(raw.index + 1, raw.index + 1 + count)
    types: Iterable[int] = raw.entry_types or repeat(EntryType.NORMAL, count)
    if len(terms) != count or len(raw.entry_indexes) not in (0, count):
        raise ValueError("entry columns of different lengths")
    if len(raw.entry_types) not in (0, count):
        raise ValueError("entry columns of different lengths")
    if max(terms) > MAX_TERM:
        raise ValueError("an entry term above MAX_TERM")
    data = raw.entry_data
    ends = list(accumulate(sizes))
    if ends[-1] != len(data):
        raise ValueError("entry sizes do not add up to the data blob")
    starts = [0, *ends[:-1]]
    return list(map(Entry, terms, indexes, map(data.__getitem__, map(slice, starts, ends)), types))


def _snapshot_to_pb(snapshot: Snapshot, out: pb.Snapshot, *, with_data: bool = True) -> None:
    out.SetInParent()  # present even when every field holds its default
    meta = snapshot.meta
    out.meta.index = meta.index
    out.meta.term = meta.term
    out.meta.conf_state.voters.extend(meta.conf_state.voters)
    out.meta.conf_state.learners.extend(meta.conf_state.learners)
    if with_data:
        out.data = snapshot.data


def _snapshot_from_pb(raw: pb.Snapshot) -> Snapshot:
    if raw.meta.term > MAX_TERM:
        raise ValueError("a snapshot term above MAX_TERM")
    cs = raw.meta.conf_state
    meta = SnapshotMeta(
        raw.meta.index, raw.meta.term, ConfState(tuple(cs.voters), tuple(cs.learners))
    )
    return Snapshot(meta, raw.data)


def snapshot_header_to_pb(msg: Message) -> pb.RaftMessage:
    """A SNAP message without its snapshot data (which travels in chunks)."""
    assert msg.snapshot is not None, "a SNAP message carries a snapshot"
    header = message_to_pb(
        Message(
            msg.type,
            msg.to,
            msg.frm,
            msg.term,
            msg.log_term,
            msg.index,
            msg.entries,
            msg.commit,
            msg.reject,
            msg.reject_hint,
            msg.hint_term,
            None,
            msg.context,
            msg.nonce,
        )
    )
    _snapshot_to_pb(msg.snapshot, header.snapshot, with_data=False)
    return header


# ---- sizes and splitting ---------------------------------------------------


def estimated_size(msg: Message) -> int:
    """An upper bound of ``message_to_pb(msg).ByteSize()``, without encoding.

    Cheap enough to call on every queued message: one pass over entry sizes.
    """
    size = MESSAGE_OVERHEAD_BYTES + len(msg.context)
    entries = msg.entries
    if entries:
        size += ENTRY_OVERHEAD_BYTES * len(entries) + sum([len(e.data) for e in entries])
    snapshot = msg.snapshot
    if snapshot is not None:
        conf = snapshot.meta.conf_state
        size += 64 + 11 * (len(conf.voters) + len(conf.learners)) + len(snapshot.data)
    return size


def split_message(msg: Message, budget: int) -> list[Message]:
    """Split an APP message whose entries exceed ``budget`` bytes into several
    consecutive APP messages, each within the budget.

    Raft accepts the pieces exactly as it would accept the original: piece k
    appends after the last entry of piece k-1 (``index``/``log_term`` of that
    entry), and every piece carries the original commit index (the follower
    caps commit at its last new entry anyway). Raises ``OversizedError`` if a
    single entry cannot fit, or if a non-APP message is too large.
    """
    if estimated_size(msg) <= budget:
        return [msg]
    if msg.type != MessageType.APP or not msg.entries:
        raise OversizedError(f"{msg.type.name} message of ~{estimated_size(msg)} bytes")
    base = MESSAGE_OVERHEAD_BYTES + len(msg.context)
    pieces: list[Message] = []
    prev_index, prev_term = msg.index, msg.log_term
    current: list[Entry] = []
    current_size = base
    for entry in msg.entries:
        entry_size = ENTRY_OVERHEAD_BYTES + len(entry.data)
        if base + entry_size > budget:
            raise OversizedError(f"entry {entry.index} of {len(entry.data)} bytes")
        if current and current_size + entry_size > budget:
            pieces.append(_app_piece(msg, prev_index, prev_term, current))
            prev_index, prev_term = current[-1].index, current[-1].term
            current = []
            current_size = base
        current.append(entry)
        current_size += entry_size
    pieces.append(_app_piece(msg, prev_index, prev_term, current))
    return pieces


def _app_piece(msg: Message, index: int, log_term: int, entries: list[Entry]) -> Message:
    return Message(
        msg.type,
        msg.to,
        msg.frm,
        msg.term,
        log_term,
        index,
        entries,
        msg.commit,
        msg.reject,
        msg.reject_hint,
        msg.hint_term,
        None,
        msg.context,
        msg.nonce,
    )


# ---- framing -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Digest:
    """A state hash at one applied index (divergence detection)."""

    applied_index: int
    state_hash: bytes


def encode_envelope(
    from_node: int,
    to_node: int,
    sequence: int,
    messages: Iterable[Message],
    digests: Sequence[Digest] = (),
    cluster_id: str = "",
) -> pb.Envelope:
    body = pb.EnvelopeBody(
        from_node=from_node, to_node=to_node, sequence=sequence, cluster_id=cluster_id
    )
    body.messages.extend([message_to_pb(m) for m in messages])
    if digests:
        body.digests.extend(
            [
                pb.StateDigest(applied_index=d.applied_index, state_hash=d.state_hash)
                for d in digests
            ]
        )
    raw = body.SerializeToString()
    return pb.Envelope(body=raw, crc32=zlib.crc32(raw))


def open_envelope(envelope: pb.Envelope) -> pb.EnvelopeBody:
    """Check the CRC and parse the body; ``ChecksumError`` if it does not match."""
    raw = envelope.body
    if zlib.crc32(raw) != envelope.crc32:
        raise ChecksumError("envelope checksum mismatch")
    body: pb.EnvelopeBody = pb.EnvelopeBody.FromString(raw)
    return body


def decode_messages(body: pb.EnvelopeBody) -> list[Message]:
    return [message_from_pb(m) for m in body.messages]


def decode_digests(body: pb.EnvelopeBody) -> list[Digest]:
    return [Digest(d.applied_index, d.state_hash) for d in body.digests]


def snapshot_chunks(
    msg: Message, transfer_id: int, chunk_bytes: int, cluster_id: str = ""
) -> Iterator[pb.SnapshotChunk]:
    """The frames of one snapshot transfer; the first carries the header."""
    assert msg.snapshot is not None, "a SNAP message carries a snapshot"
    data = memoryview(msg.snapshot.data)
    total = len(data)
    offset = 0
    while True:
        body = pb.SnapshotChunkBody(
            from_node=msg.frm,
            to_node=msg.to,
            transfer_id=transfer_id,
            offset=offset,
            data=bytes(data[offset : offset + chunk_bytes]),
            cluster_id=cluster_id,
        )
        if offset == 0:
            body.header.CopyFrom(snapshot_header_to_pb(msg))
            body.total_size = total
            body.total_crc32 = zlib.crc32(data)
        raw = body.SerializeToString()
        yield pb.SnapshotChunk(body=raw, crc32=zlib.crc32(raw))
        offset += chunk_bytes
        if offset >= total:
            return


def open_chunk(chunk: pb.SnapshotChunk) -> pb.SnapshotChunkBody:
    raw = chunk.body
    if zlib.crc32(raw) != chunk.crc32:
        raise ChecksumError("snapshot chunk checksum mismatch")
    body: pb.SnapshotChunkBody = pb.SnapshotChunkBody.FromString(raw)
    return body


class SnapshotAssembler:
    """Reassembles one transfer's chunks; ``finish()`` verifies and returns the SNAP message.

    Memory grows with the bytes that actually arrived, never with the size the header
    announces (a forged header could announce gigabytes and send nothing); the
    announced size is only checked against ``max_bytes`` and against the chunks.
    """

    def __init__(self, first: pb.SnapshotChunkBody, max_bytes: int) -> None:
        if first.offset != 0 or not first.HasField("header"):
            raise ValueError("a snapshot transfer starts with its header chunk")
        if not first.header.HasField("snapshot"):
            raise ValueError("snapshot header without snapshot metadata")
        if first.total_size > max_bytes:
            raise SnapshotTooLargeError(
                f"snapshot of {first.total_size} bytes exceeds the limit of {max_bytes}"
            )
        message_from_pb(first.header)  # refuse a bad header before any data is kept
        self.transfer_id = first.transfer_id
        self.header = first.header
        self.total_size = first.total_size
        self.total_crc32 = first.total_crc32
        self._chunks: list[bytes] = []
        self._crc = 0
        self._received = 0
        self.add(first)

    def add(self, chunk: pb.SnapshotChunkBody) -> None:
        if chunk.transfer_id != self.transfer_id:
            raise ValueError("chunk of another transfer")
        if chunk.offset != self._received:
            raise ValueError(f"chunk at offset {chunk.offset}, expected {self._received}")
        data = chunk.data
        end = self._received + len(data)
        if end > self.total_size:
            raise ValueError("chunks exceed the announced snapshot size")
        if data:
            self._chunks.append(data)
            self._crc = zlib.crc32(data, self._crc)
        self._received = end

    @property
    def received(self) -> int:
        return self._received

    @property
    def complete(self) -> bool:
        return self._received == self.total_size

    def finish(self) -> Message:
        if not self.complete:
            raise ValueError(f"snapshot incomplete: {self._received} of {self.total_size} bytes")
        if self._crc != self.total_crc32:
            raise ChecksumError("snapshot data checksum mismatch")
        data = b"".join(self._chunks)
        self._chunks.clear()
        msg = message_from_pb(self.header)
        assert msg.snapshot is not None
        msg.snapshot = Snapshot(msg.snapshot.meta, data)
        return msg
