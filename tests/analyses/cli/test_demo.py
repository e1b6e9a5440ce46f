"""``sparse-lens demo`` without its slow steps (model, pruning and report stubbed out): what
``tasks.json`` and ``summary.json`` record, and its help (the demo run itself:
``test_commands.py``)."""

import json

import analyses.cli.demo as demo
import analyses.report_sources
from analyses.cli import main
from sparse_lens.tasks import selection
from sparse_lens.tasks.task import TASK_NAMES


def _row(n: int) -> dict[str, float]:
    return {"loss": 0.25, "accuracy": 0.9, "n": n, "dropped": 0}


def _fake_tables(model, tasks, n):  # noqa: ANN001, ANN202 - selection.task_tables' stand-in
    val = selection.val_examples(n)
    return {t.name: _row(n) for t in tasks}, {t.name: _row(val) for t in tasks}


def test_tasks_json_and_summary_say_each_tables_split_and_n(tmp_path, monkeypatch, capsys):
    """A reader could not tell which split or how many examples the listed losses were, and
    the validation table that chose the pruned tasks was not saved: both files now hold a
    table per split, each with its split and n."""
    chosen_on = []

    def prune_chosen(out, s, model_dir, tables, *rest):  # noqa: ANN001, ANN002, ANN202
        chosen_on.append(tables)
        return {"var_if": {"not_pruned": "the demo prunes 1 circuit"}}

    def build_report(source, out, **kw):  # noqa: ANN001, ANN003, ANN202
        return out / "index.html"

    out = tmp_path / "demo"
    (out / "run" / "final").mkdir(parents=True)
    (out / "run" / "final" / "config.json").write_text("{}")  # a trained run: no training
    monkeypatch.setattr(demo, "check_reused_run", lambda run, preset: None)
    monkeypatch.setattr(demo, "load_model", lambda path, what: None)
    monkeypatch.setattr(selection, "task_tables", _fake_tables)
    monkeypatch.setattr(demo, "_prune_chosen", prune_chosen)
    monkeypatch.setattr(analyses.report_sources, "build_report", build_report)
    args = ["demo", "--quick", "--out", str(out), "--cache-dir", str(tmp_path / "c"), "--quiet"]
    assert main(args) == 0, capsys.readouterr().err
    tables = json.loads((out / "tasks.json").read_text())
    n = demo.QUICK.task_examples
    assert {k: (v["split"], v["n"]) for k, v in tables.items()} == {
        "test": ("test", n),
        "selection": ("val", selection.val_examples(n)),
    }
    for table in tables.values():
        assert set(table["losses"]) == set(TASK_NAMES)
        assert {row["n"] for row in table["losses"].values()} == {table["n"]}
    assert json.loads((out / "summary.json").read_text())["tasks"] == tables
    assert chosen_on == [tables]  # the selection table that chose the tasks is the saved one
    assert tables["selection"]["use"] == selection.TABLE_USES["selection"]
    # the terminal says which table chose and what it counts solved (it said nothing of either)
    printed = capsys.readouterr().out
    val_n = selection.val_examples(n)
    assert (
        f"selection table (val split, n = {val_n} a task; chooses what is pruned): 0 of 20 "
        "solved at task loss <= 0.15: none" in printed
    )
    assert f"test table (test split, n = {n} a task; reports, chooses nothing)" in printed
    assert "also solved, not pruned: var_if (summary.json holds a prune command" in printed


def test_the_circuit_summary_line_names_the_examples_its_losses_are_on():
    """The prune line 'loss 0.150 (target 0.15, full model 0.020, mean ablation)' did not say
    these were the pruner's validation examples (the test loss is another number)."""
    from sparse_lens.circuits.circuit import Circuit

    circuit = Circuit(task="t", target_loss=0.15, ablation="mean", freeze_norms=True, nodes={},
                      sizes={}, baselines={}, edges=[], loss=0.15, full_loss=0.02,
                      model_fingerprint="f")  # fmt: skip
    assert "on the pruner's validation examples" not in circuit.summary()
    circuit.extra["n_val"] = 128
    assert circuit.summary().endswith(
        "mean ablation) on the pruner's validation examples (n = 128)"
    )


def test_the_quick_demo_says_how_long_it_takes():
    """``--quick`` was "a one-minute smoke version"; it takes about 20 s on 2 cores."""
    from analyses.cli.parser import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices["demo"]
    quick = next(a for a in sub._actions if "--quick" in a.option_strings)
    for text in (quick.help or "", " ".join((demo.__doc__ or "").split())):
        assert "about 20 s on 2 cores" in text and "minute" not in text


def test_demo_search_is_a_trial_count_not_a_clock():
    """The demo runs the search's enqueued first trials and no others, so a slow machine finds
    the same circuit as a fast one (a 15 s wall-clock budget ran 2 trials here, 1 elsewhere)."""
    from analyses.cli.demo import FULL
    from sparse_lens.circuits.hparam_search import FIRST_TRIALS

    assert FULL.search == "optuna" and FULL.trials == len(FIRST_TRIALS)
    assert FULL.budget_minutes >= 5  # a guard, far above the trials' ~30 s


def test_demo_suggests_the_prune_command_of_its_own_settings():
    """The command listed for a solved task that the demo does not prune runs the demo's
    search, clean-up and faithfulness report, not the 5-10 minute default search."""
    from pathlib import Path

    from analyses.cli.demo import FULL, _prune_command
    from analyses.cli.parser import build_parser

    cmd = _prune_command(FULL, Path("runs/demo/run/final"), "while_return_true", 0.15)
    args = build_parser().parse_args(cmd.split()[1:])
    assert (args.trials, args.budget_minutes, args.cleanup_evals) == (
        FULL.trials,
        FULL.budget_minutes,
        FULL.cleanup_evals,
    )
    assert args.faithfulness == FULL.faithfulness and args.search == FULL.search
    assert args.task == "while_return_true" and args.target_loss == 0.15
