"""Backup and restore of a cluster's state: one consistent snapshot, stored and restored.

Backup (`take_backup`): ask a member's admin API for a snapshot now
(`POST /v1/admin/snapshot`: the state machine as of its applied index, made
durable), fetch that file (`GET /v1/admin/snapshot`, the storage format with its
checksum), check it decodes, and store it with a manifest (`.json`: cluster,
index, term, SHA-256 of the file, the engine state's hash) in a store: a
directory (a PVC mounted into a Job, or any path) or an S3-compatible bucket
(`s3://bucket/prefix`, any endpoint: AWS, MinIO, moto).

Why this is consistent: a snapshot is the whole replicated state at one log
index, the state every replica reaches at that index (the engine is
deterministic); taking it on the leader makes it contain every acknowledged
order up to that moment.

Restore (`restore_data_dir`): write the snapshot into a new member's empty data
directory as its initial state, with the *new* cluster's membership (ids and
addresses), and its identity. Started with the same peers, the new members
elect a leader from that state: the same orders, positions and state hash.

    exchange-backup take --admin https://xc-0...:8081 --token-file T --ca ca.crt \
        --store s3://backups/prod --endpoint-url http://minio:9000 --cluster prod
    exchange-backup restore --store DIR --name prod/... --data-dir /data \
        --node-id 1 --member 1=xc-0,host:7070,host:8080 ...
    (python -m exchange_node.backup ...)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import ssl
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

MANIFEST_SUFFIX = ".json"
SNAPSHOT_SUFFIX = ".snap"


class BackupError(Exception):
    pass


@dataclass(frozen=True)
class Manifest:
    cluster: str
    name: str  # the snapshot's key in the store, without suffix
    index: int
    term: int
    sha256: str
    state_hash: str  # BLAKE2b-256 of the engine state (the nodes' status state_hash)
    created_unix: int
    members: dict[str, Any]  # the source cluster's members, for the record


# --- stores ---------------------------------------------------------------------------


class Store(Protocol):
    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

    def keys(self, prefix: str = "") -> list[str]: ...


class DirectoryStore:
    """Files under a directory; each written to a temp file, fsynced, renamed."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def put(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def get(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def keys(self, prefix: str = "") -> list[str]:
        if not self.root.exists():
            return []
        found = (str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file())
        return sorted(
            k for k in found if k.startswith(prefix) and not k.rsplit("/")[-1].startswith(".")
        )


class S3Store:
    """An S3-compatible bucket through boto3 (the optional `backup` extra)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
    ) -> None:
        try:
            import boto3
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise BackupError("S3 needs boto3: pip install 'raft-exchange[backup]'") from exc
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = boto3.client(
            "s3", endpoint_url=endpoint_url, region_name=region or "us-east-1"
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(
            Bucket=self.bucket,
            Key=self._key(key),
            Body=data,
            ChecksumAlgorithm="SHA256",
        )

    def get(self, key: str) -> bytes:
        body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        return bytes(body.read())

    def keys(self, prefix: str = "") -> list[str]:
        found: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            for item in page.get("Contents", ()):
                key = str(item["Key"])
                found.append(key[len(self.prefix) + 1 :] if self.prefix else key)
        return sorted(found)


def store_from_url(url: str, endpoint_url: str | None = None) -> Store:
    """`s3://bucket[/prefix]`, `file:///path` or a plain path."""
    if url.startswith("s3://"):
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise BackupError(f"--store: no bucket in {url!r}")
        return S3Store(bucket, prefix, endpoint_url)
    return DirectoryStore(url.removeprefix("file://"))


# --- backup -----------------------------------------------------------------------------


def _admin_call(
    url: str, token: str, method: str, context: ssl.SSLContext | None, timeout: float
) -> tuple[bytes, dict[str, str]]:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return response.read(), {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        raise BackupError(f"{method} {url}: HTTP {exc.code}: {detail}") from exc
    except OSError as exc:
        raise BackupError(f"{method} {url}: {exc}") from exc


def inspect_snapshot(raw: bytes) -> tuple[int, int, dict[str, Any], str]:
    """(index, term, members, engine state hash) of a snapshot file's bytes."""
    from exchange_node.server.divergence import state_digest
    from exchange_node.server.envelope import unwrap_snapshot
    from exchange_node.storage.format import decode_snapshot

    try:
        snapshot = decode_snapshot(raw)
        members, engine_state = unwrap_snapshot(snapshot.data)
    except ValueError as exc:
        raise BackupError(f"not a usable snapshot: {exc}") from exc
    doc = {str(k): asdict(v) if hasattr(v, "__dataclass_fields__") else v._asdict()
           for k, v in members.items()}  # fmt: skip
    return snapshot.meta.index, snapshot.meta.term, doc, state_digest(engine_state).hex()


def find_leader(
    admin_urls: list[str], token: str, ca_file: str | None = None, timeout: float = 5.0
) -> str:
    """The admin URL of the member that reports itself leader (a backup taken there holds
    every acknowledged order); else the first that answers."""
    answered = []
    for url in admin_urls:
        context = ssl.create_default_context(cafile=ca_file) if url.startswith("https") else None
        try:
            raw, _ = _admin_call(
                f"{url.rstrip('/')}/v1/admin/status", token, "GET", context, timeout
            )
        except BackupError:
            continue
        if json.loads(raw).get("role") == "leader":
            return url
        answered.append(url)
    if not answered:
        raise BackupError(f"no member answers: {', '.join(admin_urls)}")
    return answered[0]


def take_backup(
    admin_url: str,
    token: str,
    store: Store,
    cluster: str,
    *,
    ca_file: str | None = None,
    timeout: float = 60.0,
    now: float | None = None,
) -> Manifest:
    """Snapshot now on the member at `admin_url` (use the leader), store it, return its
    manifest. The snapshot is checked (checksum, envelope) before anything is stored."""
    # https: verified against the cluster's CA and the member's DNS name in the URL.
    context = ssl.create_default_context(cafile=ca_file) if admin_url.startswith("https") else None
    base = admin_url.rstrip("/")
    taken, _ = _admin_call(f"{base}/v1/admin/snapshot", token, "POST", context, timeout)
    wanted = json.loads(taken)
    raw, headers = _admin_call(f"{base}/v1/admin/snapshot", token, "GET", context, timeout)
    index, term, members, state_hash = inspect_snapshot(raw)
    if index < int(wanted["index"]):
        raise BackupError(f"fetched snapshot {index} is older than the one taken ({wanted})")
    if headers.get("x-snapshot-index") not in (None, str(index)):
        raise BackupError("X-Snapshot-Index does not match the file")
    created = int(now if now is not None else time.time())
    name = f"{cluster}/{index:016d}-{term}"
    manifest = Manifest(
        cluster=cluster,
        name=name,
        index=index,
        term=term,
        sha256=hashlib.sha256(raw).hexdigest(),
        state_hash=state_hash,
        created_unix=created,
        members=members,
    )
    store.put(name + SNAPSHOT_SUFFIX, raw)
    # The manifest last: a listed manifest always has its snapshot.
    store.put(name + MANIFEST_SUFFIX, json.dumps(asdict(manifest), indent=1).encode())
    return manifest


def list_backups(store: Store, cluster: str) -> list[Manifest]:
    """Every complete backup of `cluster`, oldest first."""
    manifests = []
    for key in store.keys(f"{cluster}/"):
        if key.endswith(MANIFEST_SUFFIX):
            manifests.append(Manifest(**json.loads(store.get(key))))
    return sorted(manifests, key=lambda m: (m.index, m.term))


def fetch_backup(store: Store, manifest: Manifest) -> bytes:
    """The snapshot's bytes, checked against the manifest's SHA-256."""
    raw = store.get(manifest.name + SNAPSHOT_SUFFIX)
    if hashlib.sha256(raw).hexdigest() != manifest.sha256:
        raise BackupError(f"{manifest.name}: the stored snapshot does not match its manifest")
    return raw


# --- restore ------------------------------------------------------------------------------


def restore_data_dir(
    raw: bytes, data_dir: str | os.PathLike[str], node_id: int, members: dict[int, Any]
) -> None:
    """Make `data_dir` (empty) the data of member `node_id` of a new cluster whose voters
    are `members` (id -> server.envelope.MemberInfo), starting from the snapshot."""
    from exchange_node.raft.types import ConfState, HardState, Snapshot, SnapshotMeta
    from exchange_node.server.envelope import unwrap_snapshot, wrap_snapshot
    from exchange_node.server.identity import IDENTITY_FILE
    from exchange_node.storage.format import decode_snapshot
    from exchange_node.storage.wal import open_storage

    path = Path(data_dir)
    if path.exists() and any(path.iterdir()):
        raise BackupError(f"{path} is not empty: restore only into a new member's volume")
    if node_id not in members:
        raise BackupError(f"node {node_id} is not one of the new members {sorted(members)}")
    snapshot = decode_snapshot(raw)
    _old_members, engine_state = unwrap_snapshot(snapshot.data)
    meta = SnapshotMeta(
        index=snapshot.meta.index,
        term=snapshot.meta.term,
        conf_state=ConfState(voters=tuple(sorted(members))),
    )
    restored = Snapshot(meta=meta, data=wrap_snapshot(members, engine_state))
    storage = open_storage(path)
    try:
        storage.save(
            snapshot=restored,
            hard_state=HardState(term=meta.term, vote=0, commit=meta.index),
        )
    finally:
        storage.close()
    identity = path / IDENTITY_FILE
    tmp = identity.with_name(identity.name + ".tmp")
    tmp.write_text(json.dumps({"node_id": node_id}))
    os.replace(tmp, identity)


# --- CLI ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    from exchange_node.server.envelope import MemberInfo

    parser = argparse.ArgumentParser(prog="python -m exchange_node.backup", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    take = sub.add_parser("take", help="snapshot a member now and store it")
    take.add_argument(
        "--admin",
        action="append",
        required=True,
        help="a member's admin URL (repeat for each: the leader is found and used)",
    )
    take.add_argument("--token-file", required=True)
    take.add_argument("--ca", help="CA bundle for an https admin URL")
    take.add_argument("--cluster", required=True)
    for cmd in (take, sub.add_parser("list"), sub.add_parser("restore")):
        cmd.add_argument("--store", required=True, help="DIR, file:///DIR or s3://bucket/prefix")
        cmd.add_argument("--endpoint-url", help="S3-compatible endpoint (MinIO, moto, ...)")
    lister = sub.choices["list"]
    lister.add_argument("--cluster", required=True)
    restore = sub.choices["restore"]
    restore.add_argument("--cluster", required=True)
    restore.add_argument("--index", type=int, help="default: the newest backup")
    restore.add_argument("--data-dir", required=True)
    who = restore.add_mutually_exclusive_group(required=True)
    who.add_argument("--node-id", type=int)
    who.add_argument(
        "--pod-name",
        help="node id = the name's trailing ordinal + 1 (an init container's $(POD_NAME)); "
        "a pod whose id is not among --member (added later) is left alone",
    )
    restore.add_argument(
        "--if-empty",
        action="store_true",
        help="do nothing when --data-dir already holds data (a restarted pod)",
    )
    restore.add_argument(
        "--member",
        action="append",
        required=True,
        metavar="ID=NAME,GRPC,HTTP",
        help="every member of the new cluster (repeat)",
    )
    args = parser.parse_args(argv)
    try:
        store = store_from_url(args.store, args.endpoint_url)
        if args.command == "take":
            token = Path(args.token_file).read_text().strip()
            admin = find_leader(args.admin, token, args.ca)
            manifest = take_backup(admin, token, store, args.cluster, ca_file=args.ca)
            print(json.dumps(asdict(manifest)))
        elif args.command == "list":
            for manifest in list_backups(store, args.cluster):
                print(json.dumps(asdict(manifest)))
        else:
            backups = list_backups(store, args.cluster)
            chosen = [m for m in backups if args.index in (None, m.index)]
            if not chosen:
                raise BackupError(f"no backup of {args.cluster} (index {args.index})")
            members = {}
            for spec in args.member:
                node_id, _, rest = spec.partition("=")
                name, grpc, http = rest.split(",")
                members[int(node_id)] = MemberInfo(name=name, grpc=grpc, http=http)
            node = args.node_id
            if args.pod_name is not None:
                node = int(args.pod_name.rsplit("-", 1)[1]) + 1
            data = Path(args.data_dir)
            skip = None
            if node not in members and args.pod_name is not None:
                skip = f"member {node} is not an initial member: it joins empty"
            elif args.if_empty and data.exists() and any(data.iterdir()):
                skip = f"{data} already holds data"
            if skip is not None:
                print(json.dumps({"restored": None, "reason": skip}))
                return 0
            restore_data_dir(fetch_backup(store, chosen[-1]), data, node, members)
            print(json.dumps({"restored": chosen[-1].name, "data_dir": args.data_dir}))
    except (BackupError, OSError, ValueError) as exc:
        print(f"backup: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
