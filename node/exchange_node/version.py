"""What build this is: ``exchange --version`` and the ``exchange_build_info`` metric.

The git commit comes from ``EXCHANGE_GIT_SHA`` (an image build sets it), else
from the ``.git`` directory of a source checkout the package runs from (read
as files, no ``git`` process), else ``unknown``.
"""

from __future__ import annotations

import functools
import os
import platform
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "raft-exchange"


@functools.cache
def version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _read_git_sha(start: Path) -> str | None:
    for directory in (start, *start.parents):
        git = directory / ".git"
        if not git.is_dir():
            continue
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head[:40] or None
        ref = head[5:]
        loose = git / ref
        if loose.is_file():
            return loose.read_text().strip()[:40]
        packed = git / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                sha, _, name = line.partition(" ")
                if name == ref:
                    return sha[:40]
        return None
    return None


@functools.cache
def git_sha() -> str:
    from_env = os.environ.get("EXCHANGE_GIT_SHA", "").strip()
    if from_env:
        return from_env[:40]
    try:
        return _read_git_sha(Path(__file__).resolve().parent) or "unknown"
    except OSError:
        return "unknown"


def python_version() -> str:
    return platform.python_version()


def version_line() -> str:
    sha = git_sha()
    return f"exchange {version()} (git {sha[:12]}, Python {python_version()})"
