"""`exchange bench storage --json` runs end to end and prints every named figure."""

from __future__ import annotations

import json

from exchange_node import cli


def test_bench_storage_prints_every_figure_as_json(tmp_path, capsys):
    code = cli.main(
        [
            "bench",
            "storage",
            "--json",
            "--dir",
            str(tmp_path),
            "--seconds",
            "0.02",
            "--recovery-entries",
            "3000",
        ]
    )
    assert code == 0
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert doc["bench"] == "storage"
    values = {r["name"]: r["value"] for r in doc["results"]}
    for name in (
        "append_throughput_batch_1",
        "append_throughput_batch_16",
        "append_throughput_batch_256",
        "append_throughput_batch_1024",
        "append_fsync_p50_ms",
        "append_fsync_p99_ms",
        "recovery_seconds_3000",
        "recovery_peak_mb_3000",
    ):
        assert values[name] > 0, name
    assert values["append_fsync_p99_ms"] >= values["append_fsync_p50_ms"]
    assert list(tmp_path.iterdir()) == []  # the bench cleans up after itself
