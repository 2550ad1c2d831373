"""`exchange --version` and the `exchange_build_info` metric say the same build."""

from __future__ import annotations

import platform
import re
import subprocess
from pathlib import Path

import pytest
from exchange_node import version
from exchange_node.server.metrics import NodeMetrics


def test_build_info_metric_names_version_commit_and_python() -> None:
    text = NodeMetrics().render().decode()
    (line,) = [ln for ln in text.splitlines() if ln.startswith("exchange_build_info{")]
    labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
    assert labels == {
        "version": version.version(),
        "git_sha": version.git_sha(),
        "python": platform.python_version(),
    }
    assert line.endswith(" 1.0")


def test_git_sha_is_this_checkout_s_head() -> None:
    repo = Path(__file__).resolve().parents[2]
    if not (repo / ".git").is_dir():
        pytest.skip("not a git checkout: no .git to read the commit from")
    head = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert version._read_git_sha(repo / "node" / "exchange_node") == head
    assert re.fullmatch(
        rf"exchange {re.escape(version.version())} \(git [0-9a-f]{{12}}, Python [\d.]+\)",
        version.version_line(),
    )
