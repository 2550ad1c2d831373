"""One name per replica in a local cluster: ``node-<id>`` for the flag, the data
directory, the log file, and the name the shell gives a bootstrap peer."""

from __future__ import annotations

from pathlib import Path

from exchange_node.server.envelope import MemberInfo
from exchange_node.tools.local import LocalCluster, member_name


def test_a_member_s_name_data_dir_and_log_are_one_name(tmp_path: Path) -> None:
    cluster = LocalCluster.create(tmp_path / "c", 3, peer_tls=False)
    added = cluster.add_member_spec()
    for m in [*cluster.spec.members, added]:
        name = member_name(m.node_id)
        assert name == f"node-{m.node_id}"
        assert f"--name={name}" in cluster.command(m)
        assert Path(m.data_dir).name == name
        assert cluster.log_path(m.node_id).name == f"{name}.log"


def test_the_name_is_the_one_other_members_give_it() -> None:
    # A member nobody has heard from yet (no context) is named like its own --name.
    assert MemberInfo.from_context(b"", 2).name == member_name(2)
