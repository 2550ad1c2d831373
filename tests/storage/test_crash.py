"""Crash tests with real processes and SIGKILL.

A child (``crash_child.py``) replays a seeded workload into a data directory
and prints ``ACK k`` only after op k's ``save()`` returned (its fsync done).
The parent kills it with SIGKILL at a random moment (after a random delay, or
just after it announced a snapshot, a hard-state change, an overwrite or an
append; in half the trials the writer issues each batch in small ``write``
calls so that kills can also tear batches, which one ``write`` call never is,
and in some of those it stops half-way through a batch for the kill), then
recovers the directory itself. The recovered state must be exactly the
workload's state after the last acknowledged op, or after the one in flight
(a batch is atomic): every acknowledged entry is there, in order, with its
content, and nothing that was never written. The next trial's child resumes
from the recovered state in the same directory, so recovery of one crash is
also the starting point of the next.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import select
import signal
import subprocess
import sys
import time

import pytest
from exchange_node.storage import open_storage
from storage_workload import Workload, state_key

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD = os.path.join(HERE, "crash_child.py")
SEGMENT_BYTES = 48 << 10


class TornTailCounter(logging.Handler):
    """Counts the torn tails recovery cuts off while it is installed."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "torn write" in record.getMessage()

    def __enter__(self) -> TornTailCounter:
        logging.getLogger("exchange_node.storage").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("exchange_node.storage").removeHandler(self)


class ForkServer:
    """The warm child interpreter; each ``trial`` forks a fresh writer from it."""

    def __init__(self, data_dir: str, seed: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, CHILD, data_dir, str(seed), str(SEGMENT_BYTES)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=HERE,
        )
        assert self.proc.stdout is not None
        self.fd = self.proc.stdout.fileno()
        self.pending = b""
        self.lines: list[str] = []
        self.writer: int | None = None

    def start_writer(self, start: int, *, pieces: bool, tear: int = 0) -> int:
        """Fork a writer that resumes after ``start`` ops; returns its pid once READY."""
        self.lines = []
        assert self.proc.stdin is not None
        command = f"RUN {start}{' pieces' if pieces else ''}{f' tear={tear}' if tear else ''}"
        self.proc.stdin.write(f"{command}\n".encode())
        self.proc.stdin.flush()
        ok = self.read_until(lambda _line: self._has("PID") and self._has("READY"), 60)
        assert ok, f"writer did not start: {self.lines}"
        self.writer = int(next(line for line in self.lines if line.startswith("PID")).split()[1])
        return self.writer

    def _has(self, prefix: str) -> bool:
        return any(line.startswith(prefix) for line in self.lines)

    def read_until(self, predicate, timeout: float) -> bool:
        """Read lines until ``predicate(line)`` holds or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self._drain():
                assert not line.startswith(("ERROR", "MISMATCH")), line
                if predicate(line):
                    return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                chunk = os.read(self.fd, 65536)
                assert chunk, f"fork server exited: {self.lines}"
                self.pending += chunk

    def _drain(self) -> list[str]:
        *complete, self.pending = self.pending.split(b"\n")
        lines = [line.decode() for line in complete]
        self.lines.extend(lines)
        return lines

    def kill_writer(self, pid: int) -> None:
        self.writer = None
        os.kill(pid, signal.SIGKILL)
        # DONE comes after the writer is reaped, so every line it wrote is in by then.
        assert self.read_until(lambda line: line == "DONE", 60)

    def last_ack(self, start: int) -> int:
        acks = [int(line.split()[1]) for line in self.lines if line.startswith("ACK ")]
        return acks[-1] if acks else start

    def close(self) -> None:
        """End the server, and a writer still running if a trial failed half-way."""
        if self.writer is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.writer, signal.SIGKILL)
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def run_trials(tmp_path, seed: int, trials: int) -> dict[str, int]:
    rng = random.Random(seed)
    data_dir = str(tmp_path / "data")
    workload = Workload(seed)  # the state after the ops recovered so far
    outcomes = dict.fromkeys(
        ("in_flight_lost", "in_flight_kept", "killed_during", "torn", "tear_trials"), 0
    )
    server = ForkServer(data_dir, seed)
    try:
        for trial in range(trials):
            start = workload.count
            pieces = rng.random() < 0.5
            tear = rng.randint(1, 8) if pieces and rng.random() < 0.4 else 0
            pid = server.start_writer(start, pieces=pieces, tear=tear)
            mode = rng.random()
            if tear:
                # Kill while a batch is half written.
                assert "TEARING" in server.lines or server.read_until(
                    lambda line: line == "TEARING", 60
                )
                outcomes["tear_trials"] += 1
            elif mode < 0.5:
                # Kill at a random instant.
                server.read_until(lambda _line: False, rng.uniform(0, 0.03))
            else:
                # Kill while a chosen kind of write is under way.
                kind = rng.choice(["snapshot", "install", "hard_state", "overwrite", "append"])
                hit = server.read_until(
                    lambda line, kind=kind: line.startswith("BEGIN") and line.endswith(kind), 5
                )
                outcomes["killed_during"] += hit
                if rng.random() < 0.7:
                    time.sleep(rng.uniform(0, 0.003))
            server.kill_writer(pid)
            acked = server.last_ack(start)
            while workload.count < acked:
                workload.next_op()
            in_flight = workload.clone()
            in_flight.next_op()
            with (
                TornTailCounter() as torn,
                open_storage(data_dir, segment_bytes=SEGMENT_BYTES, keep_snapshots=2) as storage,
            ):
                state = storage.recover()
                found = state_key(state.hard_state, state.snapshot, state.entries)
            outcomes["torn"] += torn.count
            if tear:
                assert torn.count == 1, f"trial {trial}: a half-written batch was not cut off"
            if found == workload.model.key():
                outcomes["in_flight_lost"] += 1
            elif found == in_flight.model.key():
                workload = in_flight
                outcomes["in_flight_kept"] += 1
            else:
                pytest.fail(
                    f"seed {seed} trial {trial}: after acknowledging op {acked} the recovered "
                    f"state is neither the state after op {acked} nor after op {acked + 1}"
                )
    finally:
        server.close()
    return outcomes


def test_sigkill_never_loses_an_acknowledged_write(tmp_path):
    outcomes = run_trials(tmp_path, seed=20261124, trials=110)
    assert sum(outcomes[k] for k in ("in_flight_lost", "in_flight_kept")) == 110
    # The kills did land inside writes, not only between them, and tore batches.
    assert outcomes["killed_during"] > 20
    assert outcomes["torn"] >= outcomes["tear_trials"] > 10


@pytest.mark.soak
@pytest.mark.parametrize("seed", range(8))
def test_sigkill_soak(tmp_path, seed):
    run_trials(tmp_path, seed=seed, trials=250)
