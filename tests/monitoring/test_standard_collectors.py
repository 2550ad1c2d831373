"""/metrics serves the standard process and Python collectors and the sizes of the
WAL and the newest snapshot in bytes (read from the data directory at scrape time)."""

from __future__ import annotations

from pathlib import Path

from exchange_node.server.metrics import NodeMetrics
from exchange_node.storage.files import segment_name, snapshot_name


def samples(metrics: NodeMetrics) -> dict[str, float]:
    out = {}
    for line in metrics.render().decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_process_and_python_collectors_are_served() -> None:
    got = samples(NodeMetrics())
    assert got["process_resident_memory_bytes"] > 0
    assert got["process_open_fds"] > 0
    assert any(name.startswith("python_info{") for name in got)
    assert any(name.startswith("python_gc_collections_total{") for name in got)


def test_two_registries_do_not_collide() -> None:
    NodeMetrics()
    NodeMetrics()  # a duplicate registration would raise ValueError


def test_wal_and_snapshot_bytes_follow_the_files(tmp_path: Path) -> None:
    metrics = NodeMetrics()
    metrics.watch_storage(tmp_path)
    got = samples(metrics)
    assert (got["exchange_wal_bytes"], got["exchange_snapshot_bytes"]) == (0, 0)

    (tmp_path / segment_name(1, 1)).write_bytes(b"x" * 1000)
    (tmp_path / segment_name(2, 90)).write_bytes(b"x" * 234)
    (tmp_path / snapshot_name(50, 2)).write_bytes(b"s" * 300)
    (tmp_path / snapshot_name(80, 3)).write_bytes(b"s" * 777)  # the newest
    (tmp_path / "hard_state").write_bytes(b"h" * 50)  # not the WAL
    got = samples(metrics)
    assert got["exchange_wal_bytes"] == 1234
    assert got["exchange_wal_segments"] == 2
    assert got["exchange_snapshot_bytes"] == 777

    metrics.watch_storage(tmp_path / "missing")  # a directory that is gone reads as empty
    got = samples(metrics)
    assert (got["exchange_wal_bytes"], got["exchange_snapshot_bytes"]) == (0, 0)
