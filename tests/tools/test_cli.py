import io
import json

import pytest
from exchange_node import cli
from exchange_node.tools.bench.format import BenchResult, report


def test_bench_json_format_is_one_object_with_host_and_results():
    out = io.StringIO()
    report("demo", [BenchResult("x_per_s", 12.5, "ops/s")], as_json=True, out=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert doc["bench"] == "demo"
    assert set(doc["host"]) == {"cores", "python"}
    assert doc["host"]["cores"] >= 1
    assert doc["results"] == [{"name": "x_per_s", "value": 12.5, "unit": "ops/s"}]


def test_bench_table_format_names_every_result():
    out = io.StringIO()
    report("demo", [BenchResult("a", 1, "u"), BenchResult("bb", 2.5, "v")], as_json=False, out=out)
    text = out.getvalue()
    assert "bench demo" in text and " a " in text and "bb" in text and "2.500" in text


def test_cli_requires_a_command(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([])
    assert exc.value.code == 2
    assert "COMMAND" in capsys.readouterr().err
