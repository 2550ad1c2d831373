"""Fixtures shared by the whole suite.

``exchange_image``: the node's container image for the tests that run it (tests/docker,
tests/compose), built by ``scripts/build-image.sh`` at most once per source tree and
machine. The tag names a hash of everything the image is built from, so a changed tree
gets a new image and an unchanged one reuses the image already there (another session's,
or the previous run's) instead of building it again. ``RAFT_EXCHANGE_IMAGE`` names an
image to use as it is, with no build.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IMAGE_REPOSITORY = "raft-exchange"
# What the image is made of: the wheel (the packages, their metadata and the readme it
# names) and the build itself. Tests, docs and charts do not reach the image's venv.
IMAGE_INPUTS = (
    "node",
    "client",
    "operator",
    "pyproject.toml",
    "constraints.txt",
    "README.md",
    "Dockerfile",
    ".dockerignore",
    "scripts/build-image.sh",
)
IMAGE_LOCK = Path("/tmp/raft-exchange-image.lock")
KEEP_TAGS = 3


def _input_files(repo: Path) -> list[Path]:
    """The image's input files: tracked and untracked-but-not-ignored, as git sees them."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "-co", "--exclude-standard", "--", *IMAGE_INPUTS],
            cwd=repo,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        names = sorted({n for n in listed.decode().split("\0") if n})
    except (OSError, subprocess.SubprocessError):
        names = sorted(
            str(p.relative_to(repo))
            for top in IMAGE_INPUTS
            for p in ([repo / top] if (repo / top).is_file() else (repo / top).rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts
        )
    return [repo / n for n in names if (repo / n).is_file()]


def source_hash(repo: Path = REPO) -> str:
    """A hash of the image's inputs: their paths and contents (mode bits included)."""
    digest = hashlib.sha256()
    for path in _input_files(repo):
        rel = path.relative_to(repo).as_posix()
        digest.update(f"{rel}\0{path.stat().st_mode & 0o111:o}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def _docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def _exists(image: str) -> bool:
    return _docker("image", "inspect", image).returncode == 0


def _prune_old_tags(keep: str) -> None:
    """Untag all but the newest KEEP_TAGS source-hash images (never ``keep``)."""
    listed = _docker(
        "image", "ls", IMAGE_REPOSITORY, "--format", "{{.Tag}} {{.CreatedAt}}"
    ).stdout.splitlines()
    tags = [line.split(" ", 1) for line in listed if line.startswith("src-")]
    tags.sort(key=lambda t: t[1], reverse=True)
    for tag, _ in tags[KEEP_TAGS:]:
        name = f"{IMAGE_REPOSITORY}:{tag}"
        if name != keep:
            _docker("rmi", name)  # an image a container still uses stays; that is fine


@contextlib.contextmanager
def _machine_lock() -> Iterator[None]:
    """One build at a time on this machine (the wheelhouse in build/ is shared)."""
    with IMAGE_LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_image(repo: Path = REPO) -> tuple[str, bool]:
    """(the image for this source tree, whether this call built it)."""
    image = f"{IMAGE_REPOSITORY}:src-{source_hash(repo)}"
    if _exists(image):
        return image, False
    with _machine_lock():
        if _exists(image):  # built by another session while this one waited
            return image, False
        build = subprocess.run(
            [str(repo / "scripts" / "build-image.sh")],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=900,
            env={**os.environ, "IMAGE": image},
        )
        assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-4000:]
        _prune_old_tags(keep=image)
    return image, True


@pytest.fixture(scope="session")
def exchange_image() -> str:
    """The node image of this source tree (see the module docstring)."""
    given = os.environ.get("RAFT_EXCHANGE_IMAGE")
    if given:
        return given
    image, built = ensure_image()
    print(f"exchange_image: {image} ({'built' if built else 'reused'})")
    return image


# --- where the suite's time goes -------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--dir-durations",
        action="store_true",
        help="print the suite's wall time per test directory (setup, call and teardown)",
    )


_DIR_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    parts = report.nodeid.split("::", 1)[0].split("/")
    folder = "/".join(parts[:2]) if len(parts) > 2 else parts[0]
    _DIR_SECONDS[folder] = _DIR_SECONDS.get(folder, 0.0) + report.duration


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    if not config.getoption("--dir-durations") or not _DIR_SECONDS:
        return
    terminalreporter.section("seconds per test directory")
    for folder, seconds in sorted(_DIR_SECONDS.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f"{seconds:9.1f}  {folder}")
    terminalreporter.write_line(f"{sum(_DIR_SECONDS.values()):9.1f}  in all")
