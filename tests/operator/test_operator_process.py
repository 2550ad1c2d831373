"""The operator as users start it: its own process, credentials from a kubeconfig.

`python -m exchange_operator -n NS` (what `exchange operator` runs) logs in
through kopf's kubeconfig login, exactly as outside a cluster, and builds the
children of an ExchangeCluster in the emulated API server. No node answers
here, so the cluster stays Bootstrapping; the in-process tests cover the rest.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import kmock
import yaml
from exchange_operator import crd, names
from kmock_harness import ClusterEmulator

ROOT = Path(__file__).resolve().parents[2]
NS = "trading"
DEADLINE = 60.0


async def test_cli_process_logs_in_with_kubeconfig_and_reconciles(tmp_path: Path) -> None:
    emulator = ClusterEmulator()
    async with emulator, kmock.Server(emulator) as server, aiohttp.ClientSession() as http:
        emulator.add_namespace(NS)
        emulator.install_crd(crd.build_crd())
        url = str(server.url).rstrip("/")
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "kmock", "cluster": {"server": url}}],
                    "users": [{"name": "tester", "user": {"token": "t0ken"}}],
                    "contexts": [
                        {"name": "kmock", "context": {"cluster": "kmock", "user": "tester"}}
                    ],
                    "current-context": "kmock",
                }
            )
        )
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "PYTHONPATH": os.pathsep.join(
                [str(ROOT / "operator"), os.environ.get("PYTHONPATH", "")]
            ),
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "exchange_operator", "-n", NS, "--interval", "0.5", "--liveness", "",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            path = f"/apis/{names.GROUP}/{names.VERSION}/namespaces/{NS}/{names.PLURAL}"
            body = {
                "apiVersion": names.API_VERSION,
                "kind": names.KIND,
                "metadata": {"name": "xc"},
                "spec": {},
            }
            async with http.post(url + path, json=body) as response:
                assert response.status == 200

            loop = asyncio.get_running_loop()
            deadline = loop.time() + DEADLINE
            while emulator.get("apps/v1/statefulsets", NS, "xc") is None:
                assert process.returncode is None, "the operator exited"
                assert loop.time() < deadline, "no StatefulSet from the operator process"
                await asyncio.sleep(0.1)
            while (
                (emulator.get(f"{names.GROUP}/{names.VERSION}/{names.PLURAL}", NS, "xc") or {}).get(
                    "status"
                )
                or {}
            ).get("phase") != "Bootstrapping":
                assert loop.time() < deadline, "no status from the operator process"
                await asyncio.sleep(0.1)
            # The token from the kubeconfig reached the API server.
            assert any(r.headers.get("Authorization") == "Bearer t0ken" for r in emulator)
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGINT)
                try:
                    await asyncio.wait_for(process.wait(), DEADLINE)
                except TimeoutError:
                    process.kill()
                    await process.wait()
        output = (await process.stdout.read()).decode() if process.stdout else ""
        assert "Traceback" not in output, output[-3000:]
