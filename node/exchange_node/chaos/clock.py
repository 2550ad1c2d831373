"""Clock faults with Debian's libfaketime: a node's wall clock skewed or running fast.

The node is restarted with ``LD_PRELOAD`` set to libfaketime and ``FAKETIME`` to
the offset (``"+120"``, ``"-3600"``) and, optionally, a rate (``"+120 x2"``).
``DONT_FAKE_MONOTONIC=1`` keeps ``CLOCK_MONOTONIC`` true: asyncio's timers, gRPC's
deadlines and Raft's ticks run on it, and faking it stalls gRPC's polling thread;
so the fault shows what safety may never depend on: the wall clock (what
``time.time()``, log timestamps, certificates' validity and HTTP ``Date`` see).
``FAKETIME_NO_CACHE=1`` makes libfaketime read ``FAKETIME`` on every call (no
stale cached value after a restart in the same environment).
"""

from __future__ import annotations

import glob
import os

from .target import CapabilityError

SEARCH = (
    "/usr/lib/*/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1",
    "/usr/local/lib/faketime/libfaketimeMT.so.1",
    "/usr/lib/*/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
)
"""The multithreaded build first: the node has gRPC's threads besides asyncio's."""


def libfaketime_path() -> str | None:
    for pattern in SEARCH:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


def require() -> str:
    path = libfaketime_path()
    if path is None:
        raise CapabilityError(
            "clock needs libfaketime (Debian package libfaketime; scripts/system-deps.sh)"
        )
    return path


def faketime_spec(offset_s: float, rate: float = 1.0) -> str:
    """libfaketime's ``FAKETIME`` value: an offset from now, and a rate when not 1."""
    if rate <= 0:
        raise ValueError(f"rate must be positive, not {rate}")
    spec = f"{offset_s:+.3f}"
    if rate != 1.0:
        spec += f" x{rate:g}"
    return spec


def faketime_env(offset_s: float, rate: float = 1.0) -> dict[str, str]:
    """The variables that put a process on a skewed wall clock."""
    library = require()
    preload = os.environ.get("LD_PRELOAD", "")
    return {
        "LD_PRELOAD": f"{library} {preload}".strip(),
        "FAKETIME": faketime_spec(offset_s, rate),
        "DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_NO_CACHE": "1",
    }
