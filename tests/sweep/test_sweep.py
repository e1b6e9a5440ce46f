"""``sparse-lens sweep`` end to end on the tiny preset (2 widths x 2 budgets + 2 dense baselines,
300 steps on a corpus that teaches a custom bracket task, tiny pruning) through submitit's local
executor, then a killed point resumed, settings changed, bad input refused."""

import csv
import dataclasses
import json
import math
import random
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from analyses.cli import main
from sparse_lens.data.corpus import stdlib_root
from sparse_lens.sweep.grid import (
    PointSpec,
    SweepConfig,
    deal,
    densities_for_l0,
    grid,
    l0_at,
    point_configs,
)
from sparse_lens.sweep.table import match_dense, overall_ratio

ARGS = [
    "sweep", "--preset", "tiny", "--widths", "32,64", "--l0", "40000,80000", "--steps", "300",
    "--checkpoint-every", "150", "--target-loss", "0.6", "--task", "single_double_quote",
    "--task-n", "16", "--prune-steps", "2", "--prune-examples", "16", "--no-search",
    "--threads", "1",
]  # fmt: skip
NAMES = {
    "w32-dense", "w64-dense", "w32-l0_40000-af0.25", "w32-l0_80000-af0.25",
    "w64-l0_40000-af0.25", "w64-l0_80000-af0.25",
}  # fmt: skip


TARGET = 0.6  # below ln 2: a coin flip between the candidates does not solve a task
CUSTOM = "close"  # a custom task 300 steps teach most points: which bracket closes a word
WORDS = ("alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta", "zeta", "rho")


def bracket_corpus(folder: Path) -> Path:
    """Five standard-library files and 20,000 lines of ``v = (word)`` / ``v = [word]``: a corpus
    on which the tiny models learn, within 300 steps, to close the bracket they opened (an
    attention task: the bigram table alone cannot, so its circuits have edges)."""
    folder.mkdir()
    for path in sorted(stdlib_root().glob("*.py"))[:5]:
        shutil.copy(path, folder / path.name)
    rng = random.Random(0)
    pairs = [rng.choice([("(", ")"), ("[", "]")]) for _ in range(20_000)]
    lines = [f"v = {o}{rng.choice(WORDS)}{c}\n" for o, c in pairs]
    (folder / "brackets.py").write_text("".join(lines))
    return folder


def write_close_task(path: Path) -> Path:
    """``close``: after ``v = (word`` the next token is ``)``, after ``v = [word`` it is ``]``
    (a counter line first makes every context distinct, for the task's splits)."""
    rows = []
    for i, word in enumerate(WORDS * 40):
        for o, c, bad in (("(", ")", "]"), ("[", "]", ")")):
            context = f"n{i}{o == '('} = 0\nv = {o}{word}"
            rows.append({"context": context, "correct": c, "incorrect": bad})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    corpus = bracket_corpus(tmp / "corpus")
    task = write_close_task(tmp / f"{CUSTOM}.jsonl")
    common = [
        "--corpus",
        str(corpus),
        "--cache-dir",
        str(tmp / "cache"),
        "--custom-task",
        str(task),
    ]
    common += ["--out", str(tmp / "sw")]
    assert main([*ARGS, *common, "--executor", "local", "--jobs", "2"]) == 0
    return tmp / "sw", common


def test_sweep_writes_table_csv_and_figures(sweep):
    out, _ = sweep
    table = json.loads((out / "table.json").read_text())
    rows = {r["name"]: r for r in table["rows"]}
    assert set(rows) == NAMES
    for r in rows.values():
        assert math.isfinite(r["val_loss"]) and r["steps"] == 300
        if r["kind"] == "sparse":
            assert r["l0"] <= r["l0_total"] <= 1.01 * r["l0"]  # the budget, plus per-neuron minima
            assert r["matched_dense"] in {"w32-dense", "w64-dense"}
        else:
            assert r["weight_density"] == 1.0 and r["afrac"] == 1.0
        assert set(r["tasks"]) == {"single_double_quote", CUSTOM}
        solved = [t for t, v in r["tasks"].items() if v["loss"] <= TARGET]
        assert r["solved"] == solved and "single_double_quote" not in solved
        assert set(r["circuits"]) == set(solved)
    edges = [r["circuits"][CUSTOM]["edges"] for r in rows.values() if r["solved"]]
    assert len(edges) >= 3 and sum(e > 0 for e in edges) >= 2, edges  # circuits to draw
    assert len(list((out / "submitit").glob("*_result.pkl"))) == 2  # two local jobs ran
    with (out / "table.csv").open() as f:
        assert {r["name"] for r in csv.DictReader(f)} == NAMES
    with (out / "circuits.csv").open() as f:
        circuits = list(csv.DictReader(f))
    assert {c["point"] for c in circuits} == {n for n, r in rows.items() if r["solved"]}
    page = (out / "frontier.html").read_text()
    assert page.count('<svg class="figure"') == 3 and "no data" not in page
    assert {p.name for p in (out / "figures").glob("*.png")} == {
        "frontier.png", "sparse_vs_dense.png", "edge_ratio.png",
    }  # fmt: skip


def test_killed_sweep_resumes(sweep, capsys):
    """A point killed after its step-150 checkpoint resumes there and ends with the same weights;
    finished points are not touched."""
    out, common = sweep
    point = out / "points" / "w32-l0_40000-af0.25"
    final = load_file(point / "run" / "final" / "model.safetensors")
    others = {
        p: p.stat().st_mtime_ns for p in (out / "points").glob("*/point.json") if p.parent != point
    }
    for name in ("point.json", "tasks.json", "timings.json"):
        (point / name).unlink()
    shutil.rmtree(point / "circuits", ignore_errors=True)  # none if it solved nothing
    shutil.rmtree(point / "run" / "final")
    shutil.rmtree(point / "run" / "checkpoints" / "step-0000300")
    latest = {"step": 150, "dir": "step-0000150"}
    (point / "run" / "checkpoints" / "latest.json").write_text(json.dumps(latest))
    assert main([*ARGS, *common, "--executor", "debug"]) == 0
    assert "w32-l0_40000-af0.25: done\n" in capsys.readouterr().out
    again = load_file(point / "run" / "final" / "model.safetensors")
    assert all(torch.equal(v, again[k]) for k, v in final.items())
    assert json.loads((point / "timings.json").read_text())["resumed"] == 1.0
    lines = (point / "run" / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in lines]
    assert steps == sorted(set(steps)) and steps[-1] == 300
    assert {p: p.stat().st_mtime_ns for p in others} == others


def test_sweep_refuses_other_settings(sweep, capsys):
    out, common = sweep
    args = [*ARGS, *common, "--executor", "debug"]
    args[args.index("--steps") + 1] = "5"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "other settings (steps: 300 there, 5 now)" in err and "may change" in err


def test_densities_meet_the_budget_and_infeasible_points_are_skipped():
    numels = [("matrix", 10_000), ("matrix", 4_000), ("embed", 2_000), ("bias", 100)]
    w, e = densities_for_l0(numels, 3_000, embed_ratio=2.0)
    assert e == pytest.approx(2 * w) and 3_000 <= l0_at(numels, w, e) <= 3_000 + len(numels)
    with pytest.raises(ValueError, match="exceeds"):
        densities_for_l0(numels, 20_000, embed_ratio=2.0)
    scfg = SweepConfig(preset="tiny", widths=(32,), l0s=(5_000, 20_000, 10**7))
    points, skipped = grid(scfg, d_vocab=300)
    assert [p.name for p in points] == ["w32-dense", "w32-l0_20000-af0.25"]
    assert "min_nonzero_per_neuron" in skipped["w32-l0_5000-af0.25"]
    assert "exceeds" in skipped["w32-l0_10000000-af0.25"]
    with pytest.raises(ValueError, match="not a multiple of d_head"):  # before any work
        SweepConfig(preset="tiny", widths=(40,), l0s=(1,))


def test_deal_balances_points_over_jobs():
    pts = [PointSpec(name=str(i), kind="dense", d_model=8, afrac=1.0, weight_density=1.0,
                     embed_density=1.0) for i in range(5)]  # fmt: skip
    assert [[p.name for p in g] for g in deal(pts, 2)] == [["0", "2", "4"], ["1", "3"]]
    assert len(deal(pts, 9)) == 5
    with pytest.raises(ValueError, match="jobs"):
        deal(pts, 0)


def test_dense_match_and_edge_ratio():
    def row(name, kind, loss, edges):
        circuits = {t: {"edges": e} for t, e in edges.items()}
        return {"name": name, "kind": kind, "val_loss": loss, "circuits": circuits}

    rows = match_dense([
        row("s", "sparse", 3.0, {"a": 10, "b": 100, "c": 5}),
        row("d1", "dense", 3.1, {"a": 160, "b": 400}),
        row("d2", "dense", 3.5, {"a": 1, "b": 1, "c": 1}),
    ])  # fmt: skip
    s = rows[0]
    assert s["matched_dense"] == "d1" and s["loss_gap"] == pytest.approx(0.1)
    assert s["n_common_tasks"] == 2 and s["edge_ratio"] == pytest.approx(math.sqrt(16 * 4))
    assert rows[1]["edge_ratio"] is None and overall_ratio(rows) == pytest.approx(8.0)


def test_sweep_config_rejects_bad_values():
    with pytest.raises(ValueError, match="unknown preset"):
        SweepConfig(preset="nope", widths=(32,), l0s=(1,))
    with pytest.raises(ValueError, match="afracs"):
        SweepConfig(preset="tiny", widths=(32,), l0s=(1,), afracs=(0.0,))
    with pytest.raises(ValueError, match="widths"):
        SweepConfig(preset="tiny", widths=(0,), l0s=(1,))
    # (under the test-time type checker a bad Literal is a TypeError before the ValueError)
    with pytest.raises((ValueError, TypeError), match="exhaustive"):
        SweepConfig(preset="tiny", widths=(32,), l0s=(1,), prune_search="exhaustive")
    with pytest.raises((ValueError, TypeError), match="weights"):
        SweepConfig(preset="tiny", widths=(32,), l0s=(1,), prune_cleanup=("weights",))
    with pytest.raises(ValueError, match="prune_trials must be >= 1, got 0"):
        SweepConfig(preset="tiny", widths=(32,), l0s=(1,), prune_trials=0)
    cfg = SweepConfig(preset="tiny", widths=(32,), l0s=(1,))
    assert cfg.prune_search == "optuna" and SweepConfig.from_dict(cfg.to_dict()) == cfg
    # a sweep folder written before the Optuna search (prune_search was a bool) still reads back
    old = cfg.to_dict() | {"prune_search": True}
    del old["prune_cleanup"], old["prune_trials"], old["prune_cleanup_evals"]
    back = SweepConfig.from_dict(old)
    assert back.prune_search == "grid" and back.prune_cleanup == ()
    with pytest.raises(ValueError, match="dense_lr must be finite and > 0, got -0.1"):
        SweepConfig(preset="tiny", widths=(32,), l0s=(1,), dense_lr=-0.1)
    old = cfg.to_dict()
    del old["dense_lr"]  # a sweep folder written before dense_lr reads back with the default
    assert SweepConfig.from_dict(old) == cfg


def test_dense_lr_sets_the_dense_baselines_rate_only():
    cfg = SweepConfig(preset="tiny", widths=(32,), l0s=(40000,), lr=0.01, dense_lr=0.003)
    points, _ = grid(cfg, 300)
    rates = {p.kind: point_configs(p, cfg, 300)[1].lr for p in points}
    assert rates == {"sparse": 0.01, "dense": 0.003}
    plain = dataclasses.replace(cfg, dense_lr=None)
    assert {point_configs(p, plain, 300)[1].lr for p in points} == {0.01}


@pytest.mark.slow
def test_point_as_a_two_process_ddp_job(sweep, tmp_path):
    """``--tasks-per-point 2``: one local submitit job of two processes trains the point
    data-parallel (``world_size`` 2 in its run.json) and rank 0 prunes."""
    _, common = sweep
    common = [*common[:-1], str(tmp_path / "ddp")]
    args = [*ARGS, *common, "--executor", "local", "--tasks-per-point", "2", "--no-dense"]
    args[args.index("--widths") + 1] = "32"
    args[args.index("--l0") + 1] = "40000"
    assert main(args) == 0
    point = tmp_path / "ddp" / "points" / "w32-l0_40000-af0.25"
    assert json.loads((point / "run" / "run.json").read_text())["world_size"] == 2
    row = json.loads((point / "point.json").read_text())
    assert row["solved"] == [t for t, v in row["tasks"].items() if v["loss"] <= TARGET]


def test_sweep_cli_reports_bad_input(tmp_path, capsys):
    base = ["sweep", "--widths", "32", "--l0", "1000", "--out", str(tmp_path / "s")]
    assert main([*base, "--preset", "nope"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # range-checked by the parser
        main([*base, "--preset", "tiny", "--jobs", "0"])
    assert exc.value.code == 2
    assert "--jobs" in capsys.readouterr().err


def test_point_circuit_search_is_optuna_with_a_resumable_study(sweep, tmp_path):
    """A sweep point prunes with the Optuna search bounded by trials, its study in SQLite
    beside the circuit, and cleans up; a second call reuses the finished study."""
    import optuna

    from sparse_lens.circuits.circuit import Circuit
    from sparse_lens.model.transformer import HookedSparseTransformer
    from sparse_lens.sweep.point import prune_point_task, prune_request
    from sparse_lens.tasks.task import load_custom_task

    out, common = sweep
    cache = Path(common[common.index("--cache-dir") + 1])
    pdir = tmp_path / "point"
    shutil.copytree(out / "points" / "w64-dense" / "run", pdir / "run")  # solves the task
    model = HookedSparseTransformer.from_pretrained(pdir / "run" / "final").eval()
    scfg = SweepConfig(
        preset="tiny", widths=(32,), l0s=(1,), target_loss=TARGET, prune_trials=2,
        prune_examples=16, prune_cleanup_evals=20,
    )  # fmt: skip
    windows = torch.randint(
        0, model.cfg.d_vocab, (8, model.cfg.n_ctx), generator=torch.Generator().manual_seed(0)
    )
    storage = tmp_path / "quote.optuna.db"
    task = load_custom_task(common[common.index("--custom-task") + 1], model.tokenizer)
    request = prune_request(scfg, storage)
    path = prune_point_task(model, pdir, task, (windows, {}), request, cache)
    circuit = Circuit.load(path)
    assert circuit.loss <= TARGET and circuit.hparams["search"]["method"] == "optuna"
    assert [st["stage"] for st in circuit.extra["stages"]][-2:] == ["nodes", "edges"]
    studies = optuna.get_all_study_summaries(f"sqlite:///{storage}")
    assert len(studies) == 1 and studies[0].n_trials == 2
    again = Circuit.load(prune_point_task(model, pdir, task, (windows, {}), request, cache))
    assert optuna.get_all_study_summaries(f"sqlite:///{storage}")[0].n_trials == 2
    assert again.nodes == circuit.nodes


@pytest.mark.slow  # 160 s on 2 cores: a whole sweep re-run
def test_other_pruning_settings_reprune_without_retraining(sweep, tmp_path, capsys):
    """A new target loss keeps the trained runs and task tables, sets the old circuits aside
    (nothing deleted) and prunes again; training settings are still refused."""
    out, common = sweep
    copy = tmp_path / "sw"
    shutil.copytree(out, copy)
    common = [*common[:-1], str(copy)]
    weights = {p: p.stat().st_mtime_ns for p in copy.glob("points/*/run/final/model.safetensors")}
    tables = {p: p.read_text() for p in copy.glob("points/*/tasks.json")}
    losses = {p.parent.name: json.loads(p.read_text())[CUSTOM]["loss"] for p in tables}
    losses = {k: v for k, v in losses.items() if v <= TARGET}  # the points that prune it
    new_target = sorted(losses.values())[len(losses) // 2]  # solved by about half of them
    args = [*ARGS, *common, "--executor", "debug"]
    args[args.index("--target-loss") + 1] = str(new_target)
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in weights} == weights  # not retrained
    assert {p: p.read_text() for p in tables} == tables
    settings = json.loads((copy / "sweep.json").read_text())
    assert settings["config"]["target_loss"] == new_target
    (earlier,) = settings["earlier"]
    assert earlier["config"]["target_loss"] == TARGET and earlier["tag"].startswith("t0.6-")
    for name, loss in losses.items():
        pdir = copy / "points" / name
        old = json.loads((pdir / f"point.{earlier['tag']}.json").read_text())
        assert old["solved"] == [CUSTOM] and old["target_loss"] == TARGET
        assert old["circuits"][CUSTOM]["file"] == f"circuits.{earlier['tag']}/{CUSTOM}.json"
        assert (pdir / old["circuits"][CUSTOM]["file"]).is_file()
        row = json.loads((pdir / "point.json").read_text())
        assert row["target_loss"] == new_target
        assert row["solved"] == ([CUSTOM] if loss <= new_target else [])
        pruned = [f.name for f in (pdir / "circuits").glob(f"{CUSTOM}.*json")]
        assert bool(pruned) == (loss <= new_target), pruned  # a circuit, or why it has none
    args[args.index("--steps") + 1] = "5"
    assert main(args) == 2
    assert "other settings (steps: 300 there, 5 now)" in capsys.readouterr().err


@pytest.mark.slow  # 150 s on 2 cores: a whole sweep re-run
def test_another_dense_lr_retrains_only_the_dense_points(sweep, tmp_path):
    out, common = sweep
    copy = tmp_path / "sw"
    shutil.copytree(out, copy)
    common = [*common[:-1], str(copy)]
    sparse = {
        p: p.stat().st_mtime_ns for p in copy.glob("points/*-af*/run/final/model.safetensors")
    }
    assert main([*ARGS, *common, "--executor", "debug", "--dense-lr", "0.002"]) == 0
    assert {p: p.stat().st_mtime_ns for p in sparse} == sparse  # sparse points not retrained
    for width in (32, 64):
        run = json.loads((copy / "points" / f"w{width}-dense" / "run" / "run.json").read_text())
        assert run["train_config"]["lr"] == 0.002
        kept = copy / "points" / f"w{width}-dense.lr0.01" / "run" / "run.json"  # the old rate
        assert json.loads(kept.read_text())["train_config"]["lr"] != 0.002  # the old one, kept
    rows = {r["name"]: r for r in json.loads((copy / "table.json").read_text())["rows"]}
    assert set(rows) == NAMES
    assert not list(copy.glob("points/*/circuits.*"))  # the sparse circuits were kept in place
    earlier = json.loads((copy / "sweep.json").read_text())["earlier"]
    assert earlier[-1]["dense_points"] == "*-dense.lr0.01" and "tag" not in earlier[-1]


def _fake_point(out: Path, name: str = "w32-l0_1-af0.25") -> Path:
    """A finished point as the pruning step leaves it: a circuit and its ``point.json``."""
    pdir = out / "points" / name
    (pdir / "circuits").mkdir(parents=True, exist_ok=True)
    (pdir / "circuits" / "a.json").write_text("{}")
    row = {"solved": ["a"], "circuits": {"a": {"edges": 3, "file": "circuits/a.json"}}}
    (pdir / "point.json").write_text(json.dumps(row))
    (pdir / "tasks.json").write_text(json.dumps({"a": {"loss": 0.1}}))
    return pdir


def test_going_back_to_earlier_pruning_settings_never_reuses_a_tag(tmp_path):
    """Target A, then B, then A, then B: every change moves the circuits of the settings it
    leaves to a new tag, so no stale circuit is ever read as the new settings'."""
    from sparse_lens.sweep.jobs import check_settings

    cfg = {t: SweepConfig(preset="tiny", widths=(32,), l0s=(1,), target_loss=t) for t in (0.3, 0.2)}
    check_settings(tmp_path, cfg[0.3])
    tags = []
    for target in (0.2, 0.3, 0.2):
        pdir = _fake_point(tmp_path)  # the points pruned again at the settings in force
        check_settings(tmp_path, cfg[target])
        tag = json.loads((tmp_path / "sweep.json").read_text())["earlier"][-1]["tag"]
        tags.append(tag)
        assert not (pdir / "circuits").exists() and not (pdir / "point.json").exists()
        assert (pdir / f"circuits.{tag}" / "a.json").is_file()
        moved = json.loads((pdir / f"point.{tag}.json").read_text())
        assert moved["circuits"]["a"]["file"] == f"circuits.{tag}/a.json"
        assert (pdir / "tasks.json").is_file()  # task tables do not depend on pruning
    assert len(set(tags)) == 3 and tags[2] == f"{tags[0]}.2", tags


def test_other_tasks_retable_and_keep_the_circuits(tmp_path):
    from sparse_lens.sweep.jobs import check_settings

    check_settings(tmp_path, SweepConfig(preset="tiny", widths=(32,), l0s=(1,)))
    pdir = _fake_point(tmp_path)
    fewer = SweepConfig(preset="tiny", widths=(32,), l0s=(1,), tasks=("single_double_quote",))
    check_settings(tmp_path, fewer)
    (earlier,) = json.loads((tmp_path / "sweep.json").read_text())["earlier"]
    assert earlier["set_aside"] == "point.json" and earlier["config"]["tasks"] == []
    assert (pdir / f"point.{earlier['tag']}.json").is_file() and not (pdir / "point.json").exists()
    assert (pdir / "circuits" / "a.json").is_file()  # same pruning settings: kept for reuse


def test_a_custom_task_edited_in_place_is_tabled_and_pruned_again(tmp_path):
    """The content a sweep tabled is recorded, so editing the file in place (same path) drops
    the task's rows and sets its circuit aside instead of reporting the old content's loss."""
    from sparse_lens.sweep.jobs import check_settings

    task = tmp_path / "a.jsonl"
    task.write_text('{"prompt": "x = (", "correct": ")", "incorrect": "]"}\n')
    cfg = SweepConfig(preset="tiny", widths=(32,), l0s=(1,), tasks=("if_equals",))
    cfg = dataclasses.replace(cfg, custom_tasks=(str(task),))
    out = tmp_path / "sweep"
    check_settings(out, cfg)
    pdir = _fake_point(out)
    check_settings(out, cfg)  # unchanged: nothing moves
    assert (pdir / "point.json").is_file() and (pdir / "circuits" / "a.json").is_file()
    task.write_text('{"prompt": "x = (", "correct": "]", "incorrect": ")"}\n')  # same path
    check_settings(out, cfg)
    assert "a" not in json.loads((pdir / "tasks.json").read_text())
    assert not (pdir / "point.json").exists() and not (pdir / "circuits" / "a.json").exists()
    (moved,) = (pdir / "circuits").glob("a.*.json")  # set aside, not deleted
    (kept,) = pdir.glob("point.*.json")  # the set-aside row points at the moved circuit
    assert json.loads(kept.read_text())["circuits"]["a"]["file"] == f"circuits/{moved.name}"


def test_settings_compare_as_they_take_effect(tmp_path, capsys):
    """An override equal to the preset's value, or trials of a search that runs none, is not a
    change; a real one is refused naming both values and what may change."""
    from sparse_lens.sweep.jobs import check_settings
    from sparse_lens.training.presets import get_preset

    base = SweepConfig(preset="tiny", widths=(32,), l0s=(1,), prune_search="none")
    check_settings(tmp_path, base)
    pdir = _fake_point(tmp_path)
    same = dataclasses.replace(base, lr=get_preset("tiny").train.lr, prune_trials=5)
    check_settings(tmp_path, same)
    assert "earlier" not in json.loads((tmp_path / "sweep.json").read_text())
    assert (pdir / "point.json").is_file()
    with pytest.raises(ValueError, match=r"\(seed: 0 there, 3 now\); only the grid"):
        check_settings(tmp_path, dataclasses.replace(base, seed=3))


def test_grid_values_must_be_distinct_and_targets_below_chance(capsys, tmp_path):
    for kw, bad in (
        ({"widths": (32, 32)}, "32"),
        ({"l0s": (5, 5)}, "5"),
        ({"afracs": (0.1234561, 0.1234562)}, "0.1234561"),  # one name, af0.123456
    ):
        args = {"preset": "tiny", "widths": (32,), "l0s": (1,)} | kw
        with pytest.raises(ValueError, match=f"lists a value twice.*{bad}"):
            SweepConfig(**args)
    for target in (math.log(2), 0.7, 2.0):
        with pytest.raises(ValueError, match="below ln 2"):
            SweepConfig(preset="tiny", widths=(32,), l0s=(1,), target_loss=target)
    with pytest.raises(SystemExit):
        main(["sweep", "--preset", "tiny", "--widths", "32", "--l0", "1", "--out",
              str(tmp_path / "s"), "--target-loss", "0.7"])  # fmt: skip
    assert "below ln 2" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        (lambda d: (d / "table.csv").write_text("mine"), "no sweep.json"),  # a user's folder
        (lambda d: (d / ".sparse_lens-owner.json").write_text('{"command": "train"}'), "'train'"),
        (lambda d: (d.rmdir(), d.write_text("x")), "is an existing file"),
    ],
)
def test_sweep_out_must_be_a_sweep_folder(tmp_path, capsys, setup, match):
    out = tmp_path / "s"
    out.mkdir()
    setup(out)

    def names():  # the lock of the refused claim aside
        return sorted(p.name for p in tmp_path.rglob("*") if p.name != ".sparse_lens.lock")

    before = names()
    argv = ["sweep", "--preset", "tiny", "--widths", "32", "--l0", "40000", "--out", str(out)]
    assert main(argv) == 2
    assert match in capsys.readouterr().err
    assert names() == before  # nothing written


def test_custom_task_files_are_checked_before_any_work(tmp_path, capsys):
    out = tmp_path / "s"
    argv = ["sweep", "--preset", "tiny", "--widths", "32", "--l0", "40000", "--out", str(out)]
    assert main([*argv, "--custom-task", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
    clash = write_close_task(tmp_path / "single_double_quote.jsonl")
    assert main([*argv, "--custom-task", str(clash)]) == 2
    assert "taken by a built-in task" in capsys.readouterr().err
    assert not out.exists()


def test_zero_edge_circuits_are_left_out_of_means_and_ratios():
    def row(name, kind, loss, edges):
        return {"name": name, "kind": kind, "val_loss": loss,
                "circuits": {t: {"edges": e} for t, e in edges.items()}}  # fmt: skip

    (s, _) = match_dense([
        row("s", "sparse", 3.0, {"a": 10, "b": 0, "c": 4}),
        row("d", "dense", 3.0, {"a": 40, "b": 30, "c": 0}),
    ])  # fmt: skip
    assert s["edge_ratio"] == pytest.approx(4.0)  # task a only: b and c have an empty side
    assert s["n_common_tasks"] == 1 and s["n_empty_tasks"] == 2
    from sparse_lens.circuits.summary import geometric_mean

    with pytest.raises(ValueError, match="positive values, got 0"):
        geometric_mean([3, 0])


def test_a_point_held_by_another_process_names_it(tmp_path):
    """A point whose lock another process holds (a job of a killed sweep goes on) is reported
    as busy with that process's pid, not run twice and not counted as done."""
    import os
    import subprocess
    import sys

    from sparse_lens.sweep.jobs import HOLDER, run_point
    from sparse_lens.sweep.point import Prepared
    from sparse_lens.training.loop import DistInfo

    scfg = SweepConfig(preset="tiny", widths=(32,), l0s=(40000,))
    spec = grid(scfg, 300)[0][0]
    pdir = tmp_path / "points" / spec.name
    pdir.mkdir(parents=True)
    hold = (
        "import json, os, sys, time; from filelock import FileLock; "
        f"lock = FileLock({str(pdir / '.lock')!r}); lock.acquire(); "
        f"open({str(pdir / HOLDER)!r}, 'w').write(json.dumps({{'pid': os.getpid(), "
        "'host': 'h'})); print('held', flush=True); time.sleep(60)"
    )
    child = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        unused = Prepared.__new__(Prepared)  # a busy point loads no data
        status = run_point(spec, scfg, tmp_path, unused, DistInfo())
        assert status == f"busy: process {child.pid} on h holds it", status
        assert not (pdir / "point.json").exists() and child.pid != os.getpid()
    finally:
        child.kill()
        child.communicate()


def _recorded_point(out: Path, scfg: SweepConfig, spec: PointSpec) -> Path:
    """A finished point as a sweep of ``scfg`` leaves it, without training: its ``spec.json``
    (the settings it was trained with) and a ``point.json`` row (target and tasks)."""
    from sparse_lens.sweep.point import spec_record

    pdir = out / "points" / spec.name
    (pdir / "circuits").mkdir(parents=True, exist_ok=True)
    mcfg, tcfg = point_configs(spec, scfg, 300)
    (pdir / "spec.json").write_text(json.dumps(spec_record(spec, mcfg, tcfg, scfg.idiom_share())))
    row = dataclasses.asdict(spec) | {
        "steps": tcfg.steps, "val_loss": 3.0, "target_loss": scfg.target_loss,
        "tasks": {name: {"loss": 0.1} for name in scfg.task_names()}, "solved": [],
        "circuits": {}, "n_circuits": 0, "n_empty_circuits": 0,
    }  # fmt: skip
    (pdir / "point.json").write_text(json.dumps(row))
    return pdir


@pytest.mark.parametrize(
    "change",
    [
        {"steps": 5},  # training settings: the point's spec.json
        {"seed": 3},
        {"lr": 0.5},
        {"target_loss": 0.3},  # pruning settings: the point's point.json
        {"tasks": ("if_equals",)},
    ],
)
def test_a_sweep_folder_without_sweep_json_is_judged_by_its_points(tmp_path, change):
    """``sweep.json`` deleted, then a rerun with other settings: each point's own records
    (``spec.json``, ``point.json``) refuse it, naming the point and the setting, before
    anything is written; the folder's true settings are still accepted afterwards."""
    from sparse_lens.sweep.jobs import check_settings

    base = SweepConfig(preset="tiny", widths=(32,), l0s=(40000,), tasks=("single_double_quote",))
    points = grid(base, 300)[0]
    for spec in points:
        _recorded_point(tmp_path, base, spec)
    check_settings(tmp_path, base, points, 300)
    (tmp_path / "sweep.json").unlink()
    other = dataclasses.replace(base, **change)
    with pytest.raises(ValueError, match=f"({next(iter(change))}).*(there|not)") as info:
        check_settings(tmp_path, other, grid(other, 300)[0], 300)
    assert "point" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "sweep.json").exists()
    check_settings(tmp_path, base, points, 300)  # the settings the points recorded
    assert json.loads((tmp_path / "sweep.json").read_text())["config"]["seed"] == 0


def test_a_sweep_json_of_other_settings_does_not_override_the_points(tmp_path):
    """Another sweep's ``sweep.json`` copied in (steps 5): a rerun with steps 5 agrees with it,
    but the points were trained with 300 steps, and say so."""
    from sparse_lens.sweep.jobs import check_settings

    base = SweepConfig(preset="tiny", widths=(32,), l0s=(40000,), steps=300)
    points = grid(base, 300)[0]
    _recorded_point(tmp_path, base, points[0])
    fake = dataclasses.replace(base, steps=5)
    check_settings(tmp_path / "elsewhere", fake)
    shutil.copy(tmp_path / "elsewhere" / "sweep.json", tmp_path / "sweep.json")
    with pytest.raises(ValueError, match=r"train_config.steps: 300 there, 5 now"):
        check_settings(tmp_path, fake, points, 300)


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],  # cut in half
        lambda text: "",
        lambda text: "[1, 2]",
        lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "solved"}),
        lambda text: json.dumps(json.loads(text) | {"circuits": {"a": 3}}),
        lambda text: json.dumps(json.loads(text) | {"val_loss": "low"}),
    ],
)
def test_a_damaged_point_json_is_one_line_naming_it(tmp_path, damage):
    """A ``point.json`` cut short (or of another shape): refused before anything is written,
    naming the file and what to do, not a traceback from the table."""
    from sparse_lens.sweep.jobs import check_settings
    from sparse_lens.sweep.table import collect

    base = SweepConfig(preset="tiny", widths=(32,), l0s=(40000,))
    points = grid(base, 300)[0]
    pdir = _recorded_point(tmp_path, base, points[0])
    check_settings(tmp_path, base, points, 300)
    before = (tmp_path / "sweep.json").read_text()
    (pdir / "point.json").write_text(damage((pdir / "point.json").read_text()))
    for attempt in (
        lambda: check_settings(tmp_path, base, points, 300),
        lambda: collect(tmp_path, points),
    ):
        with pytest.raises(ValueError, match=r"point.json.*delete it") as info:
            attempt()
        assert "\n" not in str(info.value)
    assert (tmp_path / "sweep.json").read_text() == before


def test_a_sweep_of_no_feasible_sparse_point_exits_non_zero(tmp_path, capsys, monkeypatch):
    """Every sparse point infeasible (a budget below the minimum, or above the model): exit 2
    with one line saying so and why, before anything is trained or written (it exited 0)."""
    from types import SimpleNamespace

    from sparse_lens.sweep.point import Prepared

    fake = SimpleNamespace(tokenizer=SimpleNamespace(vocab_size=300))  # no corpus to tokenise
    monkeypatch.setattr(Prepared, "load", classmethod(lambda cls, scfg, cache_dir: fake))
    out = tmp_path / "s"
    argv = ["sweep", "--preset", "tiny", "--widths", "32", "--out", str(out),
            "--cache-dir", str(tmp_path / "cache"), "--executor", "debug"]  # fmt: skip
    for l0s in ("1", "1,10000000"):
        for dense in ([], ["--no-dense"]):
            assert main([*argv, "--l0", l0s, *dense]) == 2
            err = capsys.readouterr().err
            assert "no sparse point of the grid is feasible" in err and "w32-l0_1-" in err
            assert len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_circuits_pruned_the_earlier_way_are_pruned_again(tmp_path):
    """A sweep folder from before ``PRUNE_METHOD`` 2 (means over the corpus only, the demo's
    first trials for every point) sets its circuits aside; the request has no first trials."""
    from sparse_lens.sweep.jobs import check_settings
    from sparse_lens.sweep.point import PRUNE_METHOD, prune_request

    cfg = SweepConfig(preset="tiny", widths=(32,), l0s=(1,))
    check_settings(tmp_path, cfg)
    record = json.loads((tmp_path / "sweep.json").read_text())
    assert record["prune_method"] == PRUNE_METHOD == 2
    check_settings(tmp_path, cfg)  # same method: nothing moves
    assert "earlier" not in json.loads((tmp_path / "sweep.json").read_text())
    del record["prune_method"]  # as an earlier version wrote it
    (tmp_path / "sweep.json").write_text(json.dumps(record))
    pdir = _fake_point(tmp_path)
    check_settings(tmp_path, cfg)
    (earlier,) = json.loads((tmp_path / "sweep.json").read_text())["earlier"]
    assert earlier["set_aside"] == "circuits, point.json"
    assert (pdir / f"circuits.{earlier['tag']}" / "a.json").is_file()
    assert not prune_request(cfg, tmp_path / "s.db").search_cfg.enqueue_first
