"""A benchmark stopped with SIGTERM runs its cleanup, so the cluster it started stops.

Benches that start clusters (`bench cluster`, `fairness`, `snapshot --soak-minutes`)
stop them in finally blocks and in LocalCluster's atexit hook. A plain SIGTERM (a CI
timeout, `kill`, a supervisor) ran neither: a killed 30-minute soak left its three
nodes serving. Checked by hand on the real soak: with this handler its nodes are gone
within seconds of the SIGTERM; without it they stayed (tests/tools/ keeps the cheap
check: the same entry point, a bench that only records what ran).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

BENCH = textwrap.dedent(
    """
    import atexit, sys, time
    from pathlib import Path
    import exchange_node.tools.bench.raft as bench

    marks = Path(sys.argv[1])

    def main(args):
        atexit.register(lambda: (marks / "atexit").touch())
        try:
            (marks / "running").touch()
            time.sleep(60)
        finally:
            (marks / "finally").touch()

    bench.main = main
    from exchange_node.cli import main as cli
    sys.exit(cli(["bench", "raft"]))
    """
)


def test_sigterm_runs_a_bench_s_finally_and_atexit(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", BENCH, str(tmp_path)], env=dict(os.environ))
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "running").exists():
            assert proc.poll() is None, "the bench ended early"
            assert time.monotonic() < deadline, "the bench never ran"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (tmp_path / "finally").exists() and (tmp_path / "atexit").exists()
