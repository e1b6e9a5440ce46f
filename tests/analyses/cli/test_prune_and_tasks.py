"""End to end through the command line: train the tiny preset, evaluate tasks, prune."""

import json

import pytest

from analyses.cli import main
from sparse_lens.circuits.circuit import Circuit


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    cache = root / "cache"
    code = main(
        [
            "train",
            "--preset",
            "tiny",
            "--out",
            str(root / "run"),
            "--cache-dir",
            str(cache),
            "--quiet",
            "--dense-kernels",
        ]
    )
    assert code == 0
    return root, cache


def test_train_records_its_settings(tiny_run):
    root, _ = tiny_run
    run = json.loads((root / "run" / "run.json").read_text())
    assert run["train_config"]["sparse_matmul_max_density"] == 0.0  # --dense-kernels
    assert run["preset"] == "tiny"


def test_tasks_table_and_json(tiny_run, capsys):
    root, _ = tiny_run
    assert (
        main(
            [
                "tasks",
                str(root / "run" / "final"),
                "--task",
                "single_double_quote",
                "--n",
                "20",
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)["losses"]
    assert set(out) == {"single_double_quote"} and 0 <= out["single_double_quote"]["accuracy"] <= 1
    assert main(["tasks", str(root / "run" / "final"), "--n", "10"]) == 0
    table = capsys.readouterr().out
    assert "bracket_counting" in table and "mean" in table


def test_tasks_picks_a_custom_task_by_its_name(tiny_run, tmp_path, capsys):
    """``--custom F`` adds task ``F``'s stem to every table, and ``--task STEM`` picks it
    alone or beside built-in tasks."""
    final = str(tiny_run[0] / "run" / "final")
    recs = [{"context": f'print("x{i}', "correct": '")', "incorrect": "')"} for i in range(30)]
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in recs))
    for picks, want in [
        ([], None),
        (["--task", "mine"], {"mine"}),
        (["--task", "mine", "--task", "lambda_func"], {"mine", "lambda_func"}),
        (["--task", "lambda_func"], {"lambda_func"}),
    ]:
        assert main(["tasks", final, "--custom", str(path), *picks, "--n", "10", "--json"]) == 0
        got = set(json.loads(capsys.readouterr().out)["losses"])
        assert got == want if want else "mine" in got and "if_equals" in got, (picks, got)


def test_tasks_errors(tiny_run, capsys):
    root, _ = tiny_run
    assert main(["tasks", str(root / "run" / "final"), "--task", "nope"]) == 2
    assert "unknown task" in capsys.readouterr().err
    assert main(["tasks", str(root / "missing")]) == 2


def test_prune_cli_writes_a_loadable_circuit(tiny_run, capsys):
    root, cache = tiny_run
    out = root / "quote.json"
    args = [
        "prune",
        str(root / "run" / "final"),
        "--task",
        "single_double_quote",
        "--out",
        str(out),
        "--target-loss",
        "5.0",
        "--steps",
        "3",
        "--no-search",
        "--cache-dir",
        str(cache),
        "--quiet",
    ]
    assert main(args) == 0
    circuit = Circuit.load(out)
    assert circuit.task == "single_double_quote" and circuit.target_loss == 5.0
    assert "prune_seconds" in circuit.extra


def test_the_sweep_and_the_cli_write_identical_circuit_files(tiny_run, tmp_path):
    """One request, two writers: ``sparse-lens prune``'s and a sweep point's circuit files are
    the same file (the seconds it took aside), at a target the empty circuit misses."""
    from analyses.cli.prune import write_circuits
    from sparse_lens.circuits.masks import PruneConfig
    from sparse_lens.circuits.prune_task import PruneRequest, ablation_windows
    from sparse_lens.model.transformer import HookedSparseTransformer
    from sparse_lens.sweep.point import prune_point_task
    from sparse_lens.tasks.task import get_task, task_table

    root, cache = tiny_run
    final = root / "run" / "final"  # a sweep point's folder is the run's parent: ``root``
    model = HookedSparseTransformer.from_pretrained(final).eval()
    task = get_task("single_double_quote")
    full = task_table(model, [task], "val", 16)[task.name]["loss"]
    request = PruneRequest(
        prune=PruneConfig(target_loss=round(full + 2e-4, 6), steps=3),
        search="none", cleanup_evals=10, attribution=True, n_train=32, n_val=16, n_test=16,
    )  # fmt: skip
    windows = ablation_windows(model, final, None, cache, seed=0)
    cli = tmp_path / "cli.json"
    write_circuits(
        model, [task], windows, request, cli, all_tasks=False, model_dir=final,
        cache_dir=cache, progress=False,
    )  # fmt: skip
    point = prune_point_task(model, root, task, windows, request, cache)
    assert point == root / "circuits" / f"{task.name}.json"
    files = [json.loads(p.read_text()) for p in (cli, point)]
    for f in files:
        assert f["extra"].pop("prune_seconds") >= 0
    assert files[0] == files[1]
    assert files[0]["n_nodes"] > 0  # not the empty circuit: the masks were used


def test_the_top_level_prune_finds_the_clis_circuit(tiny_run, tmp_path):
    """``sparse_lens.prune(folder, name)`` (the notebook's noun) finds the circuit
    ``prune_to_file`` writes for the same request, with the training mix's means; a model object
    without its folder falls back to the corpus and says so."""
    import sparse_lens
    from analyses.cli.prune import write_circuits
    from sparse_lens.circuits.masks import PruneConfig
    from sparse_lens.circuits.prune_task import PruneRequest, ablation_windows
    from sparse_lens.model.transformer import HookedSparseTransformer
    from sparse_lens.tasks.task import get_task, task_table

    root, cache = tiny_run
    final = root / "run" / "final"
    model = HookedSparseTransformer.from_pretrained(final).eval()
    task = get_task("single_double_quote")
    target = round(task_table(model, [task], "val", 16)[task.name]["loss"] + 2e-4, 6)
    request = PruneRequest(
        prune=PruneConfig(target_loss=target, steps=3),
        search="none", cleanup_evals=10, n_train=32, n_val=16, n_test=16,
    )  # fmt: skip
    cli = tmp_path / "cli.json"
    windows = ablation_windows(model, final, None, cache, seed=0)
    write_circuits(
        model, [task], windows, request, cli, all_tasks=False, model_dir=final,
        cache_dir=cache, progress=False,
    )  # fmt: skip
    found = sparse_lens.prune(
        final, task.name, target_loss=target, request=request, cache_dir=cache
    )
    written = json.loads(cli.read_text())
    assert json.loads(json.dumps(found.to_dict()["nodes"])) == written["nodes"]
    assert found.n_edges == written["n_edges"] and found.loss == written["loss"]
    assert (
        found.extra["ablation_source"]["windows"] == written["extra"]["ablation_source"]["windows"]
    )
    loose = sparse_lens.prune(model, task, target_loss=target, request=request, cache_dir=cache)
    assert "corpus only" in loose.extra["ablation_source"]["windows"]["distribution"]
    with pytest.raises(ValueError, match="no_such_task"):
        sparse_lens.prune(model, "no_such_task", request=request, cache_dir=cache)


@pytest.mark.slow  # trains a second tiny model (~50 s)
def test_ablation_means_come_from_the_models_own_training_mix(tiny_run, tmp_path):
    """A model trained with idioms is mean-ablated over corpus + idioms (its run.json says so),
    and the circuit file records the distribution and the windows' hash; a lone model folder
    (no run.json) falls back to the corpus and says that."""
    import shutil

    root, cache = tiny_run
    run = tmp_path / "run"
    train = ["train", "--preset", "tiny", "--out", str(run), "--cache-dir", str(cache)]
    assert main([*train, "--idiom-frac", "0.5", "--quiet", "--dense-kernels"]) == 0
    lone = tmp_path / "lone"
    shutil.copytree(run / "final", lone)

    def prune(model_dir, out):
        args = ["prune", str(model_dir), "--task", "single_double_quote", "--out", str(out)]
        args += ["--target-loss", "5.0", "--steps", "2", "--no-search", "--cache-dir", str(cache)]
        assert main([*args, "--quiet"]) == 0
        return Circuit.load(out)

    mixed = prune(run / "final", tmp_path / "mixed.json")
    windows = mixed.extra["ablation_source"]["windows"]
    assert windows["distribution"] == "training mix: corpus and idiom stream"
    assert windows["idiom_frac"] == 0.5 and windows["split"] == "train"
    assert len(windows["sha256"]) == 16 and windows["n_windows"] == 64
    corpus_only = prune(lone, tmp_path / "lone.json")
    alone = corpus_only.extra["ablation_source"]["windows"]
    assert alone["distribution"].startswith("corpus only") and alone["sha256"] != windows["sha256"]
    assert mixed.baselines != corpus_only.baselines


def test_prune_cli_errors(tiny_run, capsys):
    root, cache = tiny_run
    base = [
        "prune",
        str(root / "run" / "final"),
        "--out",
        str(root / "x.json"),
        "--cache-dir",
        str(cache),
        "--quiet",
    ]
    assert main([*base, "--task", "no_such_task"]) == 2
    assert "unknown task" in capsys.readouterr().err
    assert (
        main(
            [
                *base,
                "--task",
                "bracket_counting",
                "--target-loss",
                "0.01",
                "--steps",
                "2",
                "--no-search",
            ]
        )
        == 2
    )
    assert "above the target" in capsys.readouterr().err
    for storage in ("journal:", f"journal:{root}", f"sqlite:///{root}/nope/s.db"):
        args = [*base, "--task", "single_double_quote", "--storage", storage]
        assert main(args) == 2, storage
        err = capsys.readouterr().err
        assert repr(storage) in err and "Traceback" not in err
    assert not (root / "nope").exists()


@pytest.mark.slow
def test_prune_cli_optuna_search_cleanup_and_seeds(tiny_run):
    root, cache = tiny_run
    out = root / "optuna" / "quote.json"
    args = [
        "prune",
        str(root / "run" / "final"),
        "--task",
        "single_double_quote",
        "--out",
        str(out),
        "--target-loss",
        "5.0",
        "--search",
        "optuna",
        "--trials",
        "3",
        "--budget-minutes",
        "2",
        "--epochs",
        "1,2",
        "--seeds",
        "2",
        "--cleanup",
        "nodes,edges",
        "--faithfulness",
        "--cache-dir",
        str(cache),
        "--quiet",
    ]
    assert main(args) == 0
    circuit = Circuit.load(out)
    faith = circuit.extra["faithfulness"]  # on the cleaned circuit, controls included
    assert {"random_control", "nonsense_control", "mib", "verdicts", "failed"} <= set(faith)
    assert {v["check"] for v in faith["verdicts"]} >= {"sufficiency", "random_control"}
    assert abs(faith["sufficiency"]["loss"] - circuit.test_loss) < 1e-4
    search = circuit.hparams["search"]
    assert search["method"] == "optuna" and search["complete"] + search["pruned"] == 3
    assert [s["stage"] for s in circuit.extra["stages"]] == ["bisection", "nodes", "edges"]
    last = circuit.extra["stages"][-1]
    assert last["nodes"] == circuit.n_nodes and last["edges"] == circuit.n_edges
    assert circuit.test_loss == last["test_loss"]
    seeds = circuit.extra["seeds"]
    assert seeds["seeds"] == [0, 1] and set(seeds["core"]) <= set(seeds["union"])
    assert seeds["sizes"]["0"] == circuit.n_nodes
    attribution = circuit.extra["attribution"]  # a bisected baseline: reaches the target
    assert attribution["loss"] <= circuit.target_loss
    assert 0 <= attribution["nodes"] <= circuit.extra["total_nodes"]
    bisected = circuit.extra["stages"][0]  # like against like: both arms before clean-up
    assert attribution["learned_nodes"] == bisected["nodes"] >= circuit.n_nodes
    assert attribution["learned_over_attribution_nodes"] == pytest.approx(
        bisected["nodes"] / max(attribution["nodes"], 1)
    )
    assert out.with_suffix(".optuna.db").is_file()
    assert main(args) == 0  # the study is complete: resumed, no new trials
    assert Circuit.load(out).hparams["search"]["trials"] == search["trials"]
    assert main([*args[:-6], "--cleanup", "wires", "--cache-dir", str(cache)]) == 2


@pytest.mark.slow
def test_circuit_search_benchmark_quick(tiny_run, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root, cache = tiny_run
    repo = Path(__file__).resolve().parents[3]
    out = tmp_path / "cs.json"
    cmd = [sys.executable, "benchmarks/circuit_search.py", "--quick", "--out", str(out)]
    cmd += ["--model", str(root / "run" / "final"), "--cache-dir", str(cache)]
    env = os.environ | {"PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True, timeout=600)
    result = json.loads(out.read_text())
    row = result["tasks"]["single_double_quote"]
    assert (
        row["search"]["search"]["method"] == "optuna" and row["grid"]["search"]["method"] == "grid"
    )
    assert [s["stage"] for s in row["search"]["stages"]] == ["bisection", "nodes", "edges"]
    summary = result["summary"]
    assert summary["grid_over_search_edges"] == pytest.approx(
        summary["grid_geomean_edges"] / summary["search_geomean_edges"]
    )


def test_train_run_takes_a_preset_object_and_train_config_fields(tiny_run, tmp_path):
    """A benchmark trains a recipe variant through train's own code: a Preset object in place
    of the named one, and TrainConfig fields the command has no flag for."""
    import dataclasses

    from analyses.cli.train import TrainSettings, train_run
    from sparse_lens.training.presets import get_preset

    _, cache = tiny_run
    tiny = get_preset("tiny")
    variant = dataclasses.replace(
        tiny,
        model=dataclasses.replace(tiny.model, d_mlp=64),
        train=dataclasses.replace(tiny.train, steps=4, eval_every=2, checkpoint_every=2),
    )
    out = tmp_path / "run"
    train_run(
        TrainSettings(
            preset="tiny",
            out=out,
            cache_dir=cache,
            quiet=True,
            custom_preset=variant,
            train_overrides={"anneal_end": 0.3},
        )
    )
    run = json.loads((out / "run.json").read_text())
    assert run["train_config"]["anneal_end"] == 0.3 and run["train_config"]["steps"] == 4
    assert json.loads((out / "final" / "config.json").read_text())["d_mlp"] == 64
