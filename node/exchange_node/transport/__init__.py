"""The gRPC peer transport: Raft messages between the members of a cluster.

``PeerTransport`` is the only class the server needs; ``codec`` holds the
conversions between ``raft.types.Message`` and the protobuf messages defined
in ``peer.proto`` (generated code: ``peer_pb2``, ``peer_pb2_grpc``; run
``make proto`` after editing the .proto).
"""

from exchange_node.transport.codec import ChecksumError, Digest, OversizedError
from exchange_node.transport.transport import PeerStats, PeerTransport, TransportStats

__all__ = [
    "ChecksumError",
    "Digest",
    "OversizedError",
    "PeerStats",
    "PeerTransport",
    "TransportStats",
]
