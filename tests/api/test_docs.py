"""The curl examples in docs/api.md work, in the order they are written."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from api_fakes import KEYS
from live_server import serve_in_thread

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def shell_blocks() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", DOC.read_text(), flags=re.S)
    return [b for b in blocks if "API=" not in b]  # the first block only sets the variables


def test_docs_have_examples_for_every_route_family():
    text = "\n".join(shell_blocks())
    for route in [
        "/v1/orders ",
        "/v1/orders/batch",
        "/v1/orders/1 ",
        "/v1/orders/by-client-id/",
        "/replace",
        "/v1/orders/mass-cancel",
        "/v1/positions",
        "/v1/symbols",
        "/v1/book/",
        "/v1/trades/",
        "/v1/bbo/",
        "/v1/analytics/",
        "/v1/cluster",
    ]:
        assert route in text, route


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_examples_succeed_against_a_live_server():
    with serve_in_thread(api_keys=dict(KEYS)) as (base, _service):
        env = {
            "PATH": "/usr/bin:/bin",
            "API": base,
            "ALICE": "Authorization: Bearer tok-alice",
            "BOB": "Authorization: Bearer tok-bob",
        }
        for block in shell_blocks():
            # -f: any HTTP error status fails the example.
            script = "set -eu\n" + block.replace("curl -s ", "curl -sSf ")
            run = subprocess.run(
                ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60
            )
            assert run.returncode == 0, f"{block}\n{run.stdout}\n{run.stderr}"
