"""The suite's image is keyed on its source tree (tests/conftest.py ``exchange_image``):
a change to what goes into the image names a new image, anything else reuses the one
there. No Docker needed: these check the key, on a throwaway git repository."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "suite_conftest", Path(__file__).resolve().parents[1] / "conftest.py"
)
assert _spec is not None and _spec.loader is not None
suite_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(suite_conftest)

if shutil.which("git") is None:
    pytest.skip("git is not installed", allow_module_level=True)


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for name, text in {
        "node/exchange_node/engine.py": "MATCH = 1\n",
        "client/exchange_client/sdk.py": "X = 1\n",
        "pyproject.toml": "[project]\nname = 'x'\n",
        "Dockerfile": "FROM base\n",
        "scripts/build-image.sh": "#!/bin/sh\n",
        "docs/guide.md": "# guide\n",
        "tests/test_x.py": "def test(): pass\n",
        ".gitignore": "data/\n__pycache__/\n",
    }.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(root, "init", "-q")
    git(root, "add", "-A")
    return root


def test_the_key_is_stable_for_an_unchanged_tree(repo: Path) -> None:
    assert suite_conftest.source_hash(repo) == suite_conftest.source_hash(repo)


def test_a_change_to_the_code_or_the_build_names_a_new_image(repo: Path) -> None:
    before = suite_conftest.source_hash(repo)
    for name in ("node/exchange_node/engine.py", "Dockerfile", "pyproject.toml"):
        path = repo / name
        original = path.read_text()
        path.write_text(original + "# changed\n")  # uncommitted, as while developing
        assert suite_conftest.source_hash(repo) != before, name
        path.write_text(original)
    assert suite_conftest.source_hash(repo) == before
    # A new, untracked module is part of the wheel too.
    (repo / "node/exchange_node/new.py").write_text("Y = 2\n")
    assert suite_conftest.source_hash(repo) != before
    # So is a script's executable bit.
    (repo / "node/exchange_node/new.py").unlink()
    (repo / "scripts/build-image.sh").chmod(0o755)
    assert suite_conftest.source_hash(repo) != before


def test_what_the_image_does_not_contain_reuses_it(repo: Path) -> None:
    before = suite_conftest.source_hash(repo)
    (repo / "docs/guide.md").write_text("# another guide\n")
    (repo / "tests/test_x.py").write_text("def test(): assert True\n")
    (repo / "data").mkdir()
    (repo / "data/node-1.wal").write_bytes(b"\0" * 64)  # ignored by git
    (repo / "node/exchange_node/__pycache__").mkdir()
    (repo / "node/exchange_node/__pycache__/engine.cpython-311.pyc").write_bytes(b"\0")
    assert suite_conftest.source_hash(repo) == before
