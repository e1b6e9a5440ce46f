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


def test_quick_step_floor_writes_both_floors(tmp_path):
    out = tmp_path / "floor.json"
    cmd = [sys.executable, "benchmarks/step_floor.py", "--quick", "--out", str(out)]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=300)
    result = json.loads(out.read_text())
    train, infer = result["training"], result["inference"]
    parts = ("weight_grad_s", "adam_fused_s", "grad_rms_s", "projection_s")
    assert train["floor_s"] == sum(train[k] for k in parts) > 0
    assert (
        train["floor_over_dense_fused_adam"] == train["floor_s"] / train["dense_fused_adam_step_s"]
    )
    assert infer["non_product_s"] == infer["sparse_forward_s"] - infer["sparse_products_s"]
    assert infer["weight_matrices"] == 4 * 6 + 1  # Q, K, V, O, in, out a layer; W_U
    assert result["goals"] is None  # the goals are set at d_model 1024, not the quick shapes


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


def test_interleaved_medians_times_round_robin_after_warmup(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import timing

    order: list[str] = []
    clock = iter(range(1000))
    monkeypatch.setattr(timing.time, "perf_counter", lambda: float(next(clock)))
    calls = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    med = timing.interleaved_medians(calls, 3, warmup=2)
    assert order == ["a", "b"] * 5  # two untimed rounds, then three timed, interleaved
    assert med == {"a": 1.0, "b": 1.0}  # each call spans one tick of the fake clock
    with pytest.raises(ValueError, match="rounds must be >= 1, got 0"):
        timing.interleaved_medians(calls, 0)
    with pytest.raises(ValueError, match="warmup must be >= 0, got -1"):
        timing.interleaved_medians(calls, 1, warmup=-1)
    with pytest.raises(ValueError, match="at least one call"):
        timing.interleaved_medians({}, 1)


def test_interleaved_medians_takes_the_median(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import timing

    ticks = iter([0.0, 5.0, 0.0, 1.0, 0.0, 2.0])  # call durations 5, 1, 2 s
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(ticks))
    assert timing.interleaved_medians({"x": lambda: None}, 3, warmup=0) == {"x": 2.0}


def test_benchmark_parser_shares_out_and_quick(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from report_json import benchmark_parser

    parser = benchmark_parser("Benchmark: X.\n\nMore.", quick="tiny", default_out=tmp_path / "r")
    assert parser.description == "Benchmark: X."
    assert parser.parse_args([]).out == tmp_path / "r"
    args = parser.parse_args(["--quick", "--out", "o.json"])
    assert args.quick and args.out == Path("o.json")
    assert benchmark_parser(None, quick="tiny").parse_args([]).out is None
