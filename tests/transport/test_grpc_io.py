"""Nodes run gRPC's classic I/O path: one thread hop per message instead of two."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from exchange_node import grpc_io

PROBE = Path(__file__).with_name("grpc_io_probe.py")


def test_the_installed_grpcio_is_one_whose_switches_were_checked() -> None:
    version = grpc_io.grpcio_version()
    assert version is not None
    assert grpc_io.EVENT_ENGINE_DEFAULT_FROM <= version < grpc_io.VERIFIED_BELOW, (
        f"grpcio {version} is outside the checked range: run this module's tests and "
        "`exchange bench transport --batches 1 --window 1 --entries 4000` with and without "
        "GRPC_EXPERIMENTS='' and move VERIFIED_BELOW if the classic path still wins"
    )


def test_an_operator_choice_and_an_imported_grpc_are_left_alone() -> None:
    env = {"GRPC_EXPERIMENTS": ""}
    assert not grpc_io.prefer_classic_io(env)
    assert env == {"GRPC_EXPERIMENTS": ""}
    import grpc  # noqa: F401  (this process has gRPC already; too late to switch)

    env = {}
    assert not grpc_io.prefer_classic_io(env)
    assert env == {}


def run_probe(*args: str, experiments: str | None) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    if experiments is not None:
        env["GRPC_EXPERIMENTS"] = experiments
    out = subprocess.run(
        [sys.executable, str(PROBE), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env=env,
    )
    switches, _, chosen = out.stdout.strip().splitlines()[-1].partition(" ")
    return int(switches), chosen


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_the_classic_path_takes_event_engine_threads_off_every_message() -> None:
    classic, chosen = run_probe("--classic", experiments=None)
    assert chosen == grpc_io.CLASSIC_IO_EXPERIMENTS
    default, _ = run_probe(experiments="")
    # 200 round trips: with EventEngine its threads wake for every message (about
    # 3 switches per round trip); on the classic path they stay asleep.
    assert default > 200, default
    assert classic < 40, classic
