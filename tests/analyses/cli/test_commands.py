"""The installed ``sparse-lens`` command's analysis commands: ``report`` and ``demo --quick``."""

import ast
import json
from pathlib import Path

import pytest

from analyses.cli import main
from sparse_lens.circuits.circuit import Circuit
from sparse_lens.tasks.selection import choose_tasks, relaxed_target

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    out = tmp / "demo"
    args = ["demo", "--quick", "--out", str(out), "--cache-dir", str(tmp / "cache"), "--quiet"]
    assert main(args) == 0
    return out, tmp / "cache"


def test_demo_quick_writes_everything(demo, capsys):
    out, _ = demo
    summary = json.loads((out / "summary.json").read_text())
    tables = json.loads((out / "tasks.json").read_text())
    assert summary["tasks"] == tables and set(tables) == {"test", "selection"}
    assert (tables["test"]["split"], tables["selection"]["split"]) == ("test", "val")
    assert set(tables["test"]["losses"]) >= {"single_double_quote", "bracket_counting"}
    assert set(tables["selection"]["losses"]) == set(tables["test"]["losses"])
    files = [c["file"] for c in summary["circuits"].values() if "file" in c]
    assert files
    for f in files:  # each circuit is a bisection's answer: it reaches its target, as recorded
        c = Circuit.load(f)
        k = c.extra["bisected_nodes"]  # clean-up may drop nodes after the bisection
        assert c.n_nodes <= k and c.loss <= c.target_loss
        assert dict(c.curve)[k] <= c.target_loss
        assert all(loss > c.target_loss for n, loss in c.curve if n < k)
    index = out / "report" / "index.html"
    assert summary["report"] == str(index) and index.is_file()
    html = index.read_text()
    assert 'href="circuits/single_double_quote.html"' in html
    assert html.count('<svg class="figure"') == 5  # loss, L0, lr, task loss, circuit sizes
    assert (out / "report" / "figures" / "training-loss.png").is_file()
    assert "20 steps x 8 windows" in html and "0% of each batch" in html  # the tiny preset
    page = out / "report" / "circuits" / "single_double_quote.html"
    assert page.is_file() and (page.with_suffix(".dot")).is_file()
    text = page.read_text()  # the clean-up stages of the search section
    assert "Search, clean-up, seeds" in text and "attribution-ranked baseline" in text
    for stage in ("bisection", "nodes", "edges"):
        assert f"<td>{stage}</td>" in text
    assert {"train_s", "tasks_s", "report_s", "total_s"} <= set(summary["timings"])
    # each circuit's readout: size, test loss against target, and the card's core
    numbers = json.loads(page.with_suffix(".report.json").read_text())
    for c in summary["circuits"].values():
        if "file" in c:
            circuit = Circuit.load(c["file"])
            assert (c["n_nodes"], c["n_edges"]) == (circuit.n_nodes, circuit.n_edges)
            assert c["test_loss"] == circuit.test_loss
            assert c["core_nodes"] is None or c["core_nodes"] == len(numbers["core"])
            assert c["core_nodes"] is not None  # the quick circuit gets a card and a core


def test_demo_resumes_without_retraining(demo):
    out, cache = demo
    weights = out / "run" / "final" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert main(["demo", "--quick", "--out", str(out), "--cache-dir", str(cache), "--quiet"]) == 0
    assert weights.stat().st_mtime_ns == before


def test_demo_refuses_a_run_of_another_preset(demo, tmp_path, capsys):
    out, cache = demo
    import shutil

    other = tmp_path / "other"
    shutil.copytree(out / "run", other / "run")
    config = other / "run" / "final" / "config.json"
    data = json.loads(config.read_text())
    data["d_model"] = 48
    config.write_text(json.dumps(data))
    args = ["demo", "--quick", "--out", str(other), "--cache-dir", str(cache), "--quiet"]
    assert main(args) == 2
    assert "trained with d_model=48" in capsys.readouterr().err
    # the training settings count too (e.g. a run from before the idiom mix)
    shutil.rmtree(other)
    shutil.copytree(out / "run", other / "run")
    info = other / "run" / "run.json"
    data = json.loads(info.read_text())
    data["train_config"]["steps"] = 7
    info.write_text(json.dumps(data))
    assert main(args) == 2
    assert "trained with steps=7" in capsys.readouterr().err


def test_report_from_a_circuit_file(demo, tmp_path, capsys):
    out, cache = demo
    circuit = out / "circuits" / "single_double_quote.json"
    args = ["report", str(circuit), "--out", str(tmp_path / "r"), "--cache-dir", str(cache)]
    assert main([*args, "--quiet", "--node-panels", "2", "--windows", "2", "--examples", "16"]) == 0
    assert (tmp_path / "r" / "circuits" / "single_double_quote.html").is_file()
    assert "report written to" in capsys.readouterr().out


def test_one_circuit_report_needs_only_its_own_task(demo, tmp_path, monkeypatch, capsys):
    import analyses.report_sources

    out, cache = demo
    real = analyses.report_sources.get_task

    def only_own(name):  # every other task fails to tokenise under this tokenizer
        if name != "single_double_quote":
            raise ValueError(f"task {name!r}: no example survives tokenisation")
        return real(name)

    monkeypatch.setattr(analyses.report_sources, "get_task", only_own)
    circuit = out / "circuits" / "single_double_quote.json"
    args = ["report", str(circuit), "--out", str(tmp_path / "r"), "--cache-dir", str(cache)]
    assert (
        main([*args, "--quiet", "--node-panels", "1", "--windows", "2", "--examples", "16"]) == 0
    ), capsys.readouterr().err
    assert "single_double_quote" in (tmp_path / "r" / "index.html").read_text()


def test_report_errors(demo, tmp_path, capsys):
    out, cache = demo
    base = ["--out", str(tmp_path / "r"), "--cache-dir", str(cache), "--quiet"]
    assert main(["report", str(tmp_path / "missing"), *base]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["report", str(tmp_path), *base]) == 2
    assert "no model in" in capsys.readouterr().err
    data = json.loads((out / "circuits" / "single_double_quote.json").read_text())
    del data["extra"]["model_dir"]
    orphan = tmp_path / "orphan.json"
    orphan.write_text(json.dumps(data))
    assert main(["report", str(orphan), *base]) == 2
    assert "pass --model" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # the parser range-checks numbers
        main(["report", str(orphan), *base, "--node-panels", "-1"])
    assert e.value.code == 2
    assert "--node-panels" in capsys.readouterr().err


def test_choose_tasks():
    table = {
        "single_double_quote": {"loss": 0.5, "accuracy": 0.7},
        "bracket_counting": {"loss": 0.69, "accuracy": 0.5},
        "else_elif": {"loss": 0.1, "accuracy": 0.97},
    }
    worst = {"single_double_quote": 0.52, "bracket_counting": 0.7, "else_elif": 0.12}
    assert choose_tasks(table, worst) == {
        "else_elif": 0.15,
        "single_double_quote": relaxed_target(0.52),
    }
    assert relaxed_target(0.52) == pytest.approx((0.52 + 0.6931) / 2, abs=1e-3)
    assert relaxed_target(0.2) == 0.25
    table["else_elif"] = {"loss": 0.3, "accuracy": 0.6}
    table["single_double_quote"]["accuracy"] = 0.6
    assert choose_tasks(table, worst | {"else_elif": 0.3}) == {"else_elif": relaxed_target(0.3)}


def _imports(package: str) -> set[tuple[str, str]]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {(str(path.relative_to(ROOT)), a.name.split(".")[0]) for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add((str(path.relative_to(ROOT)), node.module.split(".")[0]))
    return found


def test_layers_point_one_way():
    """analyses -> sparse_lens -> hooks: no module imports a layer above its own."""
    assert {f for f, m in _imports("sparse_lens") if m == "analyses"} == set()
    assert {f for f, m in _imports("hooks") if m in ("analyses", "sparse_lens")} == set()


def test_dense_bridges_and_bridge_report_commands(demo, tmp_path, capsys):
    out, cache = demo
    c = ["--cache-dir", str(cache)]
    dense = tmp_path / "dense"
    assert (
        main(["train", "--preset", "tiny", "--dense-hf", "--out", str(dense), *c, "--quiet"]) == 0
    )
    assert (dense / "model.safetensors").is_file() and (dense / "tokenizer.json").is_file()
    sparse = out / "run" / "final"
    fit = [
        "fit-bridges",
        "--sparse",
        str(sparse),
        "--dense",
        str(dense),
        "--out",
        str(tmp_path / "b"),
    ]
    assert main([*fit, "--steps", "2", "--batch-size", "2", *c, "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "blocks.1.hook_resid_mid" in printed and "bridges written to" in printed
    result = json.loads((tmp_path / "b" / "bridge_eval.json").read_text())
    assert not (tmp_path / "b" / "checkpoint").exists()
    assert main([*fit, "--steps", "2", *c, "--quiet"]) == 2  # a finished run is kept
    assert "already holds a run" in capsys.readouterr().err
    assert main([*fit, "--steps", "2", *c, "--quiet", "--resume"]) == 0
    assert "nothing to resume" in capsys.readouterr().out
    bad_every = [*fit[:-1], str(tmp_path / "b2"), "--checkpoint-every", "0", *c, "--quiet"]
    with pytest.raises(SystemExit) as e:  # the parser range-checks numbers
        main(bad_every)
    assert e.value.code == 2
    assert "--checkpoint-every" in capsys.readouterr().err
    assert set(result["per_site"]) == {
        f"blocks.{i}.hook_resid_{k}" for i in range(2) for k in ("pre", "mid")
    }
    report = [
        "bridge-report",
        "--sparse",
        str(sparse),
        "--dense",
        str(dense),
        "--bridges",
        str(tmp_path / "b" / "bridges"),
        "--task",
        "single_double_quote",
        "--out",
        str(tmp_path / "page"),
        "--n",
        "16",
        *c,
    ]
    assert main(report) == 0
    page = (tmp_path / "page" / "bridge_single_double_quote.html").read_text()
    assert page.count("CircuitsVis.render(") == 4 and "Steering the dense model" in page
    assert page.count("↔ dense L") == 4
    summary = json.loads((tmp_path / "page" / "bridge_single_double_quote.json").read_text())
    assert len(summary["steering"]["p_target"]) == 11
    # errors: unknown task, missing bridges, a dense model of another depth
    assert main([*report[:-4], "--task", "nope", "--out", str(tmp_path / "p2"), *c]) == 2
    assert "unknown task" in capsys.readouterr().err
    bad = [x if x != str(tmp_path / "b" / "bridges") else str(tmp_path / "nothing") for x in report]
    assert main(bad) == 2
    assert "missing" in capsys.readouterr().err
    joint = [
        "train-bridged",
        "--dense",
        str(dense),
        "--preset",
        "tiny",
        "--out",
        str(tmp_path / "j"),
    ]
    assert main([*joint, "--steps", "2", "--batch-size", "2", *c, "--quiet"]) == 0
    from sparse_lens import HookedSparseTransformer

    trained = HookedSparseTransformer.from_pretrained(tmp_path / "j" / "final")
    assert trained.cfg.n_layers == 2 and (tmp_path / "j" / "bridges" / "bridges.json").is_file()
    records = (tmp_path / "j" / "bridge_metrics.jsonl").read_text().splitlines()
    assert len(records) == 2 and "kl_s2d" in json.loads(records[0])
    capsys.readouterr()
    deep = tmp_path / "deep"
    args = ["train", "--preset", "tiny", "--dense-hf", "--out", str(deep), *c, "--quiet"]
    assert main(args) == 0
    import shutil

    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(deep)
    hf.transformer.h = hf.transformer.h[:1]
    hf.config.n_layer = 1
    shutil.rmtree(deep / "model.safetensors", ignore_errors=True)
    hf.save_pretrained(deep)
    fit[fit.index(str(dense))] = str(deep)
    fit[fit.index(str(tmp_path / "b"))] = str(tmp_path / "b-deep")
    assert main([*fit, "--steps", "1", *c, "--quiet"]) == 2
    assert "depths differ" in capsys.readouterr().err


def test_demo_reads_a_missing_training_setting_as_its_default(tmp_path):
    """A run.json from before idiom_frac existed trained with its default (0): refused."""
    from analyses.cli.demo import check_reused_run
    from analyses.cli.options import CLIError
    from sparse_lens.training.presets import get_preset

    preset = get_preset("demo")
    model = dict(preset.model) | {"act_sparse_sites": list(preset.model["act_sparse_sites"])}
    train = {k: v for k, v in preset.train.items() if k != "idiom_frac"}
    (tmp_path / "run.json").write_text(json.dumps({"model_config": model, "train_config": train}))
    with pytest.raises(CLIError, match="trained with idiom_frac=0.0"):
        check_reused_run(tmp_path, "demo")
    train["idiom_frac"] = preset.idiom_frac  # where older run.json files hold the share
    (tmp_path / "run.json").write_text(json.dumps({"model_config": model, "train_config": train}))
    check_reused_run(tmp_path, "demo")
    del train["idiom_frac"]  # where it is now: the data's own
    run = {"model_config": model, "train_config": train, "data": {"idiom_frac": 0.1}}
    (tmp_path / "run.json").write_text(json.dumps(run))
    with pytest.raises(CLIError, match="trained with idiom_frac=0.1"):
        check_reused_run(tmp_path, "demo")
    run["data"]["idiom_frac"] = preset.idiom_frac
    (tmp_path / "run.json").write_text(json.dumps(run))
    check_reused_run(tmp_path, "demo")


def test_demo_readout_line_says_size_test_loss_target_and_core():
    from analyses.cli.demo import _readout_line

    d = {"n_nodes": 178, "n_edges": 390, "test_loss": 0.149, "target_loss": 0.15}
    line = _readout_line("else_elif", d | {"core_nodes": 7, "card_warnings": []})
    assert line == "else_elif: 178 nodes / 390 edges, test loss 0.149 (target 0.15), core 7 nodes\n"
    line = _readout_line("t", d | {"core_nodes": None, "card_warnings": ["x"], "test_loss": None})
    assert "test loss none" in line and "no core (no card)" in line
    assert line.endswith("\n  warning: x\n")  # each warning said, not counted
