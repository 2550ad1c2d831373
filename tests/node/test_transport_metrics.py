"""The peer transport's counters reach /metrics, read at scrape time."""

from __future__ import annotations

from exchange_node.server.metrics import NodeMetrics
from exchange_node.transport import PeerStats, TransportStats


def samples(metrics: NodeMetrics) -> dict[str, float]:
    out = {}
    for line in metrics.render().decode().splitlines():
        # exchange_peer_messages_rejected_total is the shell's own counter, not the transport's.
        if line.startswith("exchange_peer_") and "_messages_rejected_" not in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_peer_counters_are_exported_per_peer_and_rejected_frames_by_reason() -> None:
    metrics = NodeMetrics()
    source: list[TransportStats | None] = [None]
    metrics.watch_transport(lambda: source[0])
    assert samples(metrics) == {}  # no transport yet: families without samples

    stats = TransportStats(messages_received=40, checksum_failures=3, misdirected=1)
    stats.peers[2] = PeerStats("a:1", connected=True, messages_sent=5, dropped=1, reconnects=2)
    stats.peers[3] = PeerStats("b:1", connected=False, messages_sent=7)
    source[0] = stats
    assert samples(metrics) == {
        'exchange_peer_messages_sent_total{peer="2"}': 5,
        'exchange_peer_messages_sent_total{peer="3"}': 7,
        "exchange_peer_messages_received_total": 40,
        'exchange_peer_messages_dropped_total{peer="2"}': 1,
        'exchange_peer_messages_dropped_total{peer="3"}': 0,
        'exchange_peer_reconnects_total{peer="2"}': 2,
        'exchange_peer_reconnects_total{peer="3"}': 0,
        'exchange_peer_connected{peer="2"}': 1,
        'exchange_peer_connected{peer="3"}': 0,
        'exchange_peer_frames_rejected_total{reason="checksum"}': 3,
        'exchange_peer_frames_rejected_total{reason="decode"}': 0,
        'exchange_peer_frames_rejected_total{reason="misdirected"}': 1,
        'exchange_peer_frames_rejected_total{reason="sender_mismatch"}': 0,
        'exchange_peer_frames_rejected_total{reason="wrong_cluster"}': 0,
        'exchange_peer_frames_rejected_total{reason="unauthenticated"}': 0,
        'exchange_peer_frames_rejected_total{reason="snapshot_busy"}': 0,
        'exchange_peer_frames_rejected_total{reason="snapshot_timeout"}': 0,
        'exchange_peer_frames_rejected_total{reason="snapshot_too_large"}': 0,
        "exchange_peer_tls_enabled": 0,
        "exchange_peer_gone_total": 0,
    }
    stats.sender_mismatch, stats.wrong_cluster, stats.tls_enabled = 4, 2, True
    stats.peers_gone = 3
    after = samples(metrics)
    assert after['exchange_peer_frames_rejected_total{reason="sender_mismatch"}'] == 4
    assert after['exchange_peer_frames_rejected_total{reason="wrong_cluster"}'] == 2
    assert after["exchange_peer_tls_enabled"] == 1
    assert after["exchange_peer_gone_total"] == 3
    # Live: a later scrape sees the counters move.
    stats.peers[2].messages_sent += 10
    assert samples(metrics)['exchange_peer_messages_sent_total{peer="2"}'] == 15
