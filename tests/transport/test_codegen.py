"""The committed peer_pb2*.py files are exactly what `make proto` generates."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

NODE = Path(__file__).resolve().parents[2] / "node"
PACKAGE = "exchange_node/transport"
GENERATED = ("peer_pb2.py", "peer_pb2.pyi", "peer_pb2_grpc.py")


def _generate(into: Path) -> None:
    proto_dir = into / PACKAGE
    proto_dir.mkdir(parents=True)
    shutil.copy(NODE / PACKAGE / "peer.proto", proto_dir / "peer.proto")
    # The same command as the Makefile's `proto` target, run in a copy.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            ".",
            "--python_out=.",
            "--pyi_out=.",
            "--grpc_python_out=.",
            f"{PACKAGE}/peer.proto",
        ],
        cwd=into,
        check=True,
    )


def test_makefile_has_the_same_command() -> None:
    makefile = (NODE.parent / "Makefile").read_text()
    assert "--python_out=. --pyi_out=. --grpc_python_out=. exchange_node/transport/peer.proto" in (
        makefile
    )


def test_committed_code_is_reproducible(tmp_path: Path) -> None:
    _generate(tmp_path)
    exact = _tools_version() == _committed_generator_version()
    for name in GENERATED:
        fresh = (tmp_path / PACKAGE / name).read_text()
        committed = (NODE / PACKAGE / name).read_text()
        if not exact:
            # Another grpcio-tools than the one that generated the committed
            # files: everything but the generator's version stamps must agree.
            fresh, committed = _without_versions(fresh), _without_versions(committed)
        assert fresh == committed, (
            f"{name} differs from a fresh generation with grpcio-tools "
            f"{_tools_version()}: run `make proto` and commit the result"
        )


def _committed_generator_version() -> str:
    grpc_code = (NODE / PACKAGE / "peer_pb2_grpc.py").read_text()
    match = re.search(r"^GRPC_GENERATED_VERSION = '([^']+)'", grpc_code, re.M)
    assert match, "peer_pb2_grpc.py has no GRPC_GENERATED_VERSION"
    return match.group(1)


def _without_versions(code: str) -> str:
    code = re.sub(r"^GRPC_GENERATED_VERSION = .*$", "GRPC_GENERATED_VERSION = ?", code, flags=re.M)
    code = re.sub(
        r"^# Protobuf Python Version: .*$", "# Protobuf Python Version: ?", code, flags=re.M
    )
    return re.sub(
        r"(_runtime_version\.Domain\.PUBLIC,\n)\s*\d+,\n\s*\d+,\n\s*\d+,",
        r"\1?",
        code,
    )


def test_version_stamps_are_the_only_lines_masked() -> None:
    committed = (NODE / PACKAGE / "peer_pb2.py").read_text()
    masked = _without_versions(committed)
    assert masked != committed
    assert len(masked.splitlines()) == len(committed.splitlines()) - 2  # 3 number lines -> 1
    assert "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile(" in masked


def test_generated_imports_are_package_absolute() -> None:
    grpc_code = (NODE / PACKAGE / "peer_pb2_grpc.py").read_text()
    assert re.search(r"^from exchange_node\.transport import peer_pb2 ", grpc_code, re.M)
    from exchange_node.transport import peer_pb2, peer_pb2_grpc

    assert peer_pb2.DESCRIPTOR.package == "exchange.peer.v1"
    assert hasattr(peer_pb2_grpc, "PeerStub")


def _tools_version() -> str:
    return version("grpcio-tools")
