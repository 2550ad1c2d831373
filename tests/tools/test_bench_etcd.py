"""The etcd comparison speaks etcd's real gRPC Put and finds etcd's real leader."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import urllib.request

import pytest
from exchange_node.tools.bench.etcd import PUT, EtcdCluster, put_request

ETCD = shutil.which("etcd")


def test_put_request_is_the_protobuf_wire_format():
    # field 1 (key, length-delimited), field 2 (value); lengths as varints
    assert put_request(b"k", b"vv") == b"\x0a\x01k\x12\x02vv"
    long = put_request(b"x" * 200, b"")
    assert long[:3] == b"\x0a\xc8\x01" and long.endswith(b"\x12\x00")


@pytest.mark.skipif(ETCD is None, reason="etcd is not installed (apt-get install etcd-server)")
def test_a_put_lands_in_a_real_etcd_cluster(tmp_path):
    import grpc

    assert ETCD is not None
    cluster = EtcdCluster(tmp_path, ETCD, n=1)
    cluster.start_all()
    try:
        leader = cluster.leader(60)

        async def put() -> None:
            async with grpc.aio.insecure_channel(leader.client_address) as channel:
                await channel.unary_unary(PUT)(
                    put_request(b"bench-key", b"bench-value"), timeout=10
                )

        asyncio.run(put())
        key = base64.b64encode(b"bench-key").decode()
        request = urllib.request.Request(
            f"http://{leader.client_address}/v3/kv/range",
            data=json.dumps({"key": key}).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as answer:
            kvs = json.loads(answer.read())["kvs"]
        assert [base64.b64decode(kv["value"]) for kv in kvs] == [b"bench-value"]
    finally:
        cluster.stop_all()


def test_a_missing_binary_names_the_flag(tmp_path):
    with pytest.raises(FileNotFoundError, match="--etcd-binary"):
        EtcdCluster(tmp_path, str(tmp_path / "no-etcd"))
