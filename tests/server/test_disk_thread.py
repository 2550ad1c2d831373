"""The node's disk thread (server/disk.py): order, results, errors, cancellation, close."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from exchange_node.server.disk import DiskThread


def test_jobs_run_in_submission_order_on_one_thread() -> None:
    async def main() -> None:
        disk = DiskThread("wal-test")
        seen: list[tuple[int, int]] = []

        def job(i: int) -> int:
            if i == 0:
                time.sleep(0.02)  # a slow first write must not be overtaken
            seen.append((i, threading.get_ident()))
            return i * 10

        futures = [disk.run(job, i) for i in range(50)]
        assert await asyncio.gather(*futures) == [i * 10 for i in range(50)]
        assert [i for i, _ in seen] == list(range(50))
        threads = {t for _, t in seen}
        assert len(threads) == 1
        assert threads != {threading.get_ident()}
        disk.close()

    asyncio.run(main())


def test_an_error_reaches_the_awaiting_coroutine_and_the_thread_goes_on() -> None:
    async def main() -> None:
        disk = DiskThread()

        def fail() -> None:
            raise OSError("disk full")

        with pytest.raises(OSError, match="disk full"):
            await disk.run(fail)
        assert await disk.run(lambda: "still working") == "still working"
        disk.close()

    asyncio.run(main())


def test_a_job_cancelled_before_it_started_is_skipped() -> None:
    async def main() -> None:
        disk = DiskThread()
        gate = threading.Event()
        ran: list[str] = []
        blocker = disk.run(gate.wait, 5.0)
        cancelled = disk.run(ran.append, "cancelled")
        after = disk.run(ran.append, "after")
        cancelled.cancel()
        gate.set()
        await blocker
        await after
        assert ran == ["after"]
        disk.close()

    asyncio.run(main())


def test_close_finishes_queued_jobs_then_refuses_new_ones() -> None:
    async def main() -> None:
        disk = DiskThread()
        done: list[int] = []
        gate = threading.Event()
        futures = [disk.run(gate.wait, 5.0)] + [disk.run(done.append, i) for i in range(5)]
        threading.Timer(0.05, gate.set).start()
        disk.close()  # waits for the queued jobs
        assert done == list(range(5))
        disk.close()  # idempotent
        await asyncio.gather(*futures)
        with pytest.raises(RuntimeError):
            disk.run(done.append, 99)

    asyncio.run(main())


def test_close_without_any_job_does_not_start_a_thread() -> None:
    disk = DiskThread()
    disk.close()
    assert disk._thread is None


def test_a_result_after_the_loop_closed_is_dropped_quietly() -> None:
    disk = DiskThread()
    gate = threading.Event()

    async def main() -> None:
        disk.run(gate.wait, 5.0)  # still running when the loop goes away

    asyncio.run(main())
    gate.set()
    disk.close()  # the thread answered a closed loop and still stopped
