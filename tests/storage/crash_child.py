"""Crash-test child: a warm fork server whose forked writers get SIGKILLed.

    python crash_child.py DATA_DIR SEED SEGMENT_BYTES

Reads ``RUN START [pieces] [tear=N]`` lines on stdin. For each, it advances its seeded workload
to START ops, forks a writer process and prints ``PID <pid>``. The writer opens
the storage (recovering it), checks it holds the workload's state after START
ops, prints ``READY``, then for each further op k prints ``BEGIN k KIND``,
performs it (``save`` / ``save_snapshot``: fsync done when it returns) and only
then prints ``ACK k``, until it is killed. When the writer is gone the server
prints ``DONE``. With ``pieces`` the writer issues each batch in 64-byte
``write`` calls, so that kills can tear a batch; with ``tear=N`` as well, the
Nth batch that takes several calls stops after its first one and prints
``TEARING``, so the kill finds it half written. Every line is flushed at once (one ``write`` each, atomic on a
pipe), so the parent knows exactly which ops were acknowledged.

Forking from a warm interpreter keeps each trial to milliseconds; the writer
is still a real process with its own file descriptors and lock, killed by a
real SIGKILL.
"""

from __future__ import annotations

import os
import sys
import time

from exchange_node.storage import open_storage, wal
from storage_workload import Workload, state_key


def write(line: str) -> None:
    os.write(1, (line + "\n").encode())


def writer(data_dir: str, workload: Workload, segment_bytes: int) -> int:
    storage = open_storage(data_dir, segment_bytes=segment_bytes, keep_snapshots=2)
    state = storage.recover()
    if state_key(state.hard_state, state.snapshot, state.entries) != workload.model.key():
        write("MISMATCH at open")
        return 3
    if storage.recovery_verdict.must_recover:
        # A process crash loses nothing that was durable: never a lost tail.
        write(f"MISMATCH verdict {storage.recovery_verdict.message}")
        return 3
    write("READY")
    k = workload.count
    while True:
        op = workload.next_op()
        k += 1
        write(f"BEGIN {k} {op.kind}")
        op.apply(storage)
        write(f"ACK {k}")


whole_writes = wal._write_all


tear_countdown = 0
"""With a count N: the Nth batch written in several pieces stops after its first piece."""


def write_in_small_pieces(fd: int, buf: bytes | bytearray | memoryview) -> None:
    """Test instrumentation: one batch in many ``write`` calls, so that a SIGKILL can land
    between them and leave a torn batch on disk (one call is never split by a kill)."""
    global tear_countdown
    view = memoryview(buf)
    first = True
    while view:
        written = os.write(fd, view[:64])
        view = view[written:]
        if first and view and tear_countdown:
            tear_countdown -= 1
            if not tear_countdown:
                write("TEARING")  # half of this batch is on disk; wait for the kill
                time.sleep(120)  # bounded: should the parent be gone, do not linger
                os._exit(5)
        first = False


def main() -> int:
    data_dir, seed, segment_bytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    workload = Workload(seed)
    for line in sys.stdin:
        global tear_countdown
        command = line.split()
        start = int(command[1])
        wal._write_all = write_in_small_pieces if "pieces" in command else whole_writes
        tear_countdown = next((int(c[5:]) for c in command if c.startswith("tear=")), 0)
        while workload.count < start:
            workload.next_op()
        pid = os.fork()
        if pid == 0:
            code = 4
            try:
                code = writer(data_dir, workload, segment_bytes)
            except BaseException as exc:
                write(f"ERROR {exc!r}")
            finally:
                os._exit(code)
        write(f"PID {pid}")
        os.waitpid(pid, 0)
        write("DONE")
    return 0


if __name__ == "__main__":
    sys.exit(main())
