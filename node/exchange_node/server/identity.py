"""The node's Raft id, chosen by the rules of docs/node-contract.md.

1. ``--node-id`` wins.
2. Else the id stored in the data directory (``identity.json``).
3. Else, for a *new* cluster, a name ending in ``-<ordinal>`` with
   ``ordinal < initial size`` gives ``ordinal + 1``.
4. Else a fresh random id, so a pod that lost its volume comes back as a new
   member that the leader must add; it never reuses an old identity.

The chosen id is stored in ``identity.json`` (written atomically) so a
restart on the same data keeps it. A stored id that disagrees with an
explicit ``--node-id`` is refused: that data belongs to another member.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path

IDENTITY_FILE = "identity.json"
_ORDINAL = re.compile(r"-(\d+)$")


class IdentityError(Exception):
    pass


def stored_id(data_dir: Path) -> int | None:
    path = data_dir / IDENTITY_FILE
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
        node_id = int(doc["node_id"])
    except (ValueError, KeyError, TypeError) as exc:
        raise IdentityError(f"{path} is unreadable: {exc}") from exc
    if node_id < 1:
        raise IdentityError(f"{path} holds an invalid node id {node_id}")
    return node_id


def resolve_node_id(
    *,
    data_dir: Path,
    name: str,
    explicit: int | None,
    cluster_state: str,
    initial_size: int,
) -> int:
    """Pick the id by the contract's rules and make sure it is stored."""
    stored = stored_id(data_dir)
    if explicit is not None:
        if explicit < 1:
            raise IdentityError(f"--node-id must be >= 1, got {explicit}")
        if stored is not None and stored != explicit:
            raise IdentityError(
                f"--node-id {explicit} but {data_dir / IDENTITY_FILE} belongs to node {stored}"
            )
        node_id = explicit
    elif stored is not None:
        node_id = stored
    else:
        match = _ORDINAL.search(name)
        if cluster_state == "new" and match and int(match.group(1)) < initial_size:
            node_id = int(match.group(1)) + 1
        else:
            # Random ids live far above any ordinal-derived id.
            node_id = 1_000 + secrets.randbelow(2**31)
    if stored is None:
        write_identity(data_dir, node_id, name)
    return node_id


def write_identity(data_dir: Path, node_id: int, name: str) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / IDENTITY_FILE
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump({"node_id": node_id, "name": name}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
