import io
import json
from argparse import Namespace
from contextlib import redirect_stdout

from exchange_node.tools.bench import raft as bench


def test_bench_commits_everything_and_reports_commit_throughput_in_the_shared_format():
    out = io.StringIO()
    args = Namespace(entries=5_000, batch=512, entry_size=100, rounds=1, seed=3, json=True)
    with redirect_stdout(out):
        assert bench.main(args) == 0
    doc = json.loads(out.getvalue())
    assert doc["bench"] == "raft"
    results = {r["name"]: r for r in doc["results"]}
    assert results["commit_throughput"]["unit"] == "entries/s"
    assert results["commit_throughput"]["value"] > 0
    assert results["entries"]["value"] == 5_000
