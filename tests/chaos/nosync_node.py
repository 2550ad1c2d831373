"""TEST-ONLY wrapper: the ``exchange`` command with fsync and fdatasync made no-ops.

A planted fault for ``test_faultfs_node``: the node then acknowledges orders that
are only in the page cache, and a power cut (faultfs ``drop_unsynced``) must lose
them where a SIGKILL would not. Never a product flag: the node's code is untouched,
``os`` is patched before any of it is imported (``storage.files`` binds
``os.fdatasync`` at import).

    python tests/chaos/nosync_node.py node --node-id 1 ...
"""

from __future__ import annotations

import os
import sys


def _no_sync(fd: int) -> None:
    del fd


os.fsync = _no_sync
os.fdatasync = _no_sync

from exchange_node.cli import main  # noqa: E402 - after the patch, on purpose

if __name__ == "__main__":
    sys.exit(main())
