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


def test_no_promise_opens_the_append_stores_without_the_slot(tmp_path, monkeypatch, capsys):
    """`--no-promise` measures the WAL without protocol-aware recovery's slot (what
    3d038d2's WAL did), and only then."""
    from exchange_node.tools.bench import storage as bench_storage

    opened: list[str] = []
    real = bench_storage.open_storage

    def recording(data_dir, **kwargs):
        opened.append(kwargs.get("promise_sync", "on"))
        return real(data_dir, **kwargs)

    monkeypatch.setattr(bench_storage, "open_storage", recording)
    argv = ["bench", "storage", "--json", "--dir", str(tmp_path), "--seconds", "0.01"]
    argv += ["--recovery-entries", "100"]
    assert cli.main([*argv, "--no-promise"]) == 0
    assert opened[:4] == ["off"] * 4  # the four append figures
    opened.clear()
    assert cli.main(argv) == 0
    assert opened[:4] == ["on"] * 4
    capsys.readouterr()
