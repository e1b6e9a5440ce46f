"""The quick modes of the small benchmarks run and write their JSON (their full runs are what
``benchmarks/results/`` holds; the ratios are not asserted here)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("script", "key"), [("weight_grad.py", "rows"), ("inference.py", "widths")]
)
def test_quick_benchmark_writes_its_json(script, key, tmp_path):
    out = tmp_path / "result.json"
    cmd = [sys.executable, f"benchmarks/{script}", "--quick", "--out", str(out)]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=300)
    result = json.loads(out.read_text())
    assert result[key] and all(
        isinstance(v, float) and v > 0
        for row in result[key].values()
        for k, v in row.items()
        if k.endswith("_s")
    )


def test_emit_prints_and_replaces_the_file_whole(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from report_json import emit

    out = tmp_path / "sub" / "r.json"
    emit({"a": 1}, out)
    emit({"a": 2}, out)
    assert json.loads(out.read_text()) == {"a": 2}
    assert [p.name for p in out.parent.iterdir()] == ["r.json"]  # no temporary file left
    assert capsys.readouterr().out.count('"a"') == 2
    emit({"b": 3}, None)  # stdout only
    assert '"b": 3' in capsys.readouterr().out
