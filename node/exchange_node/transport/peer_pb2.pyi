from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Envelope(_message.Message):
    __slots__ = ("body", "crc32")
    BODY_FIELD_NUMBER: _ClassVar[int]
    CRC32_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    crc32: int
    def __init__(self, body: _Optional[bytes] = ..., crc32: _Optional[int] = ...) -> None: ...

class EnvelopeBody(_message.Message):
    __slots__ = ("from_node", "to_node", "sequence", "messages", "digests", "cluster_id")
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    DIGESTS_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    from_node: int
    to_node: int
    sequence: int
    messages: _containers.RepeatedCompositeFieldContainer[RaftMessage]
    digests: _containers.RepeatedCompositeFieldContainer[StateDigest]
    cluster_id: str
    def __init__(self, from_node: _Optional[int] = ..., to_node: _Optional[int] = ..., sequence: _Optional[int] = ..., messages: _Optional[_Iterable[_Union[RaftMessage, _Mapping]]] = ..., digests: _Optional[_Iterable[_Union[StateDigest, _Mapping]]] = ..., cluster_id: _Optional[str] = ...) -> None: ...

class RaftMessage(_message.Message):
    __slots__ = ("type", "to", "frm", "term", "log_term", "index", "commit", "reject", "reject_hint", "hint_term", "context", "snapshot", "nonce", "entry_terms", "entry_indexes", "entry_types", "entry_sizes", "entry_data")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    FRM_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    LOG_TERM_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    REJECT_FIELD_NUMBER: _ClassVar[int]
    REJECT_HINT_FIELD_NUMBER: _ClassVar[int]
    HINT_TERM_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    ENTRY_TERMS_FIELD_NUMBER: _ClassVar[int]
    ENTRY_INDEXES_FIELD_NUMBER: _ClassVar[int]
    ENTRY_TYPES_FIELD_NUMBER: _ClassVar[int]
    ENTRY_SIZES_FIELD_NUMBER: _ClassVar[int]
    ENTRY_DATA_FIELD_NUMBER: _ClassVar[int]
    type: int
    to: int
    frm: int
    term: int
    log_term: int
    index: int
    commit: int
    reject: bool
    reject_hint: int
    hint_term: int
    context: bytes
    snapshot: Snapshot
    nonce: int
    entry_terms: _containers.RepeatedScalarFieldContainer[int]
    entry_indexes: _containers.RepeatedScalarFieldContainer[int]
    entry_types: _containers.RepeatedScalarFieldContainer[int]
    entry_sizes: _containers.RepeatedScalarFieldContainer[int]
    entry_data: bytes
    def __init__(self, type: _Optional[int] = ..., to: _Optional[int] = ..., frm: _Optional[int] = ..., term: _Optional[int] = ..., log_term: _Optional[int] = ..., index: _Optional[int] = ..., commit: _Optional[int] = ..., reject: _Optional[bool] = ..., reject_hint: _Optional[int] = ..., hint_term: _Optional[int] = ..., context: _Optional[bytes] = ..., snapshot: _Optional[_Union[Snapshot, _Mapping]] = ..., nonce: _Optional[int] = ..., entry_terms: _Optional[_Iterable[int]] = ..., entry_indexes: _Optional[_Iterable[int]] = ..., entry_types: _Optional[_Iterable[int]] = ..., entry_sizes: _Optional[_Iterable[int]] = ..., entry_data: _Optional[bytes] = ...) -> None: ...

class ConfState(_message.Message):
    __slots__ = ("voters", "learners")
    VOTERS_FIELD_NUMBER: _ClassVar[int]
    LEARNERS_FIELD_NUMBER: _ClassVar[int]
    voters: _containers.RepeatedScalarFieldContainer[int]
    learners: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, voters: _Optional[_Iterable[int]] = ..., learners: _Optional[_Iterable[int]] = ...) -> None: ...

class SnapshotMeta(_message.Message):
    __slots__ = ("index", "term", "conf_state")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    CONF_STATE_FIELD_NUMBER: _ClassVar[int]
    index: int
    term: int
    conf_state: ConfState
    def __init__(self, index: _Optional[int] = ..., term: _Optional[int] = ..., conf_state: _Optional[_Union[ConfState, _Mapping]] = ...) -> None: ...

class Snapshot(_message.Message):
    __slots__ = ("meta", "data")
    META_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    meta: SnapshotMeta
    data: bytes
    def __init__(self, meta: _Optional[_Union[SnapshotMeta, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class StateDigest(_message.Message):
    __slots__ = ("applied_index", "state_hash")
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    STATE_HASH_FIELD_NUMBER: _ClassVar[int]
    applied_index: int
    state_hash: bytes
    def __init__(self, applied_index: _Optional[int] = ..., state_hash: _Optional[bytes] = ...) -> None: ...

class ReplicateSummary(_message.Message):
    __slots__ = ("envelopes", "dropped")
    ENVELOPES_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    envelopes: int
    dropped: int
    def __init__(self, envelopes: _Optional[int] = ..., dropped: _Optional[int] = ...) -> None: ...

class SnapshotChunk(_message.Message):
    __slots__ = ("body", "crc32")
    BODY_FIELD_NUMBER: _ClassVar[int]
    CRC32_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    crc32: int
    def __init__(self, body: _Optional[bytes] = ..., crc32: _Optional[int] = ...) -> None: ...

class SnapshotChunkBody(_message.Message):
    __slots__ = ("from_node", "to_node", "transfer_id", "offset", "data", "header", "total_size", "total_crc32", "cluster_id")
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CRC32_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    from_node: int
    to_node: int
    transfer_id: int
    offset: int
    data: bytes
    header: RaftMessage
    total_size: int
    total_crc32: int
    cluster_id: str
    def __init__(self, from_node: _Optional[int] = ..., to_node: _Optional[int] = ..., transfer_id: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., header: _Optional[_Union[RaftMessage, _Mapping]] = ..., total_size: _Optional[int] = ..., total_crc32: _Optional[int] = ..., cluster_id: _Optional[str] = ...) -> None: ...

class SnapshotResult(_message.Message):
    __slots__ = ("ok", "reason")
    OK_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    reason: str
    def __init__(self, ok: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...
