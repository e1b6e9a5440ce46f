"""``sparse-lens demo [--out DIR] [--quick]``: the project's main job. It trains (or resumes) the
demo model, tables its task losses on the test split and on the selection table of the ``val``
split (``tasks.json``: each table with its split, n and use), prunes the tasks it solves on the
selection table
(``sparse_lens.tasks.selection.choose_tasks``) into ``circuits/``, writes the HTML report
(``report/``) and ``summary.json`` with the task tables and the timings. ``--quick`` is a smoke
run of about 20 s on 2 cores: the tiny preset's untrained model, one 3-step pruning run and a
small report, to check the pipeline end to end, not to find a circuit.

Every size and time setting of the demo is in :data:`FULL` and :data:`QUICK` below.
"""

import argparse
import contextlib
import dataclasses
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from analyses.cli.options import DEFAULT_CACHE, CLIError, claim, load_model, out_path
from analyses.cli.prune import PruneSettings, prune_run
from analyses.cli.report import REPORT_FILES
from analyses.cli.train import RUN_FILES, TrainSettings, train_run
from sparse_lens.vocab import SAMPLE_WINDOWS

DEMO_FILES = ("run", "tasks.json", "circuits", "report", "summary.json")
SMOKE_TASK = "single_double_quote"  # the smoke run's task (an untrained model solves none)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DemoSettings:
    """What the demo trains, how long it searches each circuit, and how big its report is."""

    preset: str  # training preset (sparse_lens.training.presets)
    task_examples: int  # test examples per task in tasks.json (validation: half, at least 16)
    search: str  # circuit search of `sparse-lens prune`: "optuna" or "none"
    trials: int  # optuna: finished trials per circuit
    budget_minutes: float  # optuna: wall-clock limit per circuit
    cleanup_evals: int  # validation evaluations per clean-up stage
    prune_steps: int  # mask-training steps per run (search "none")
    faithfulness: bool  # add the faithfulness report to each circuit
    node_panels: int  # report: node panels per circuit
    windows: int  # report: corpus windows for top contexts
    examples: int | None  # report: test pairs per circuit (None: the circuit file's n_test)
    max_circuits: int = 1  # circuits pruned, the best-solved (least validation loss) first
    smoke: bool = False  # an untrained model: prune SMOKE_TASK to its own loss + 0.01


# The demo's budget on 2 cores (measured in README.md, Quickstart): training 135-175 s, the task
# table 5 s, one circuit (the Optuna search's two enqueued first trials, FIRST_TRIALS: a count,
# not a wall-clock budget, so every machine finds the same circuit; then at most 150 clean-up
# evaluations a stage and the faithfulness report: 105-125 s together) and the report (about
# 25 s). Each further circuit costs about 2 minutes more, so the demo prunes one and lists the
# other solved tasks with the `sparse-lens prune` command for each. The default `prune` search
# takes 5 minutes a task.
FULL = DemoSettings(
    preset="demo",
    task_examples=200,
    search="optuna",
    trials=2,
    budget_minutes=10.0,  # a guard only: the two trials take about 30 s
    cleanup_evals=150,
    prune_steps=80,
    faithfulness=True,
    node_panels=12,
    windows=SAMPLE_WINDOWS,  # as explain and report: the page's card is explain's
    examples=None,  # the circuit file's own test pairs (its n_test): one loss, one n
    max_circuits=1,
)
# The smoke run (about 20 s on 2 cores): the tiny preset's model (20 steps: in effect untrained,
# it solves no task), one 3-step pruning run, a small report.
QUICK = DemoSettings(
    preset="tiny",
    task_examples=20,
    search="none",
    trials=24,
    budget_minutes=5.0,
    cleanup_evals=2000,
    prune_steps=3,
    faithfulness=False,
    node_panels=4,
    windows=4,
    examples=16,
    smoke=True,
)


def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job: train, evaluate tasks, prune, write the report")
    p.set_defaults(handler=cmd_demo)
    p.add_argument("--out", type=out_path, default=Path("runs/demo"), help="output folder")
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run of about 20 s on 2 cores (tiny preset, untrained): checks the pipeline",
    )
    p.add_argument(
        "--cache-dir", type=out_path, default=DEFAULT_CACHE, help="tokenizer/token cache"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_demo(args: argparse.Namespace) -> int:
    """Train (or resume) the demo model, table its task losses, prune, write the report."""
    with contextlib.ExitStack() as stack:
        out = claim(stack, args.out, "demo", owned=DEMO_FILES, legacy=("run",))
        run_demo(
            out,
            QUICK if args.quick else FULL,
            cache_dir=args.cache_dir,
            quiet=args.quiet,
            verbose=args.verbose,
        )
        return 0


def run_demo(
    out: Path, s: DemoSettings, *, cache_dir: Path, quiet: bool = False, verbose: bool = False
) -> None:
    """The demo into ``out`` (held by the caller): ``run/``, ``tasks.json``, ``circuits/``,
    ``report/`` and ``summary.json``.

    Raises:
        CLIError: a reused run of other settings, or a step with bad input.
    """
    from analyses.report import ReportConfig
    from analyses.report_sources import build_report
    from sparse_lens.files.atomic import atomic_write_text

    timings = {}
    start = time.perf_counter()
    run = out / "run"
    check_reused_run(run, s.preset)
    if not (run / "final" / "config.json").exists():
        resume = (run / "run.json").exists()
        with contextlib.ExitStack() as stack:
            held = claim(
                stack, run, "train", owned=RUN_FILES, legacy=("run.json",), within=("demo",)
            )
            train_run(
                TrainSettings(
                    preset=s.preset, out=held, cache_dir=cache_dir, resume=resume, quiet=quiet
                )
            )
    timings["train_s"] = time.perf_counter() - start
    model_dir = run / "final"
    t0 = time.perf_counter()
    tables = _task_tables(model_dir, s.task_examples)
    atomic_write_text(out / "tasks.json", json.dumps(tables, indent=2) + "\n")
    timings["tasks_s"] = time.perf_counter() - t0
    sys.stdout.writelines(task_choice_lines(tables))
    circuits = _prune_chosen(out, s, model_dir, tables, cache_dir, quiet, verbose)
    left = sorted(n for n, c in circuits.items() if "not_pruned" in c)
    if left:
        sys.stdout.write(
            f"also solved, not pruned: {', '.join(left)} (summary.json holds a prune command "
            "for each, with the demo's settings)\n"
        )
    t0 = time.perf_counter()
    rcfg = ReportConfig(max_node_panels=s.node_panels, n_windows=s.windows, n_examples=s.examples)
    with contextlib.ExitStack() as stack:
        report = claim(
            stack,
            out / "report",
            "report",
            owned=REPORT_FILES,
            legacy=("index.html",),
            within=("demo",),
        )
        try:
            index = build_report(
                out, report, cache_dir=cache_dir.expanduser(), rcfg=rcfg, progress=not quiet
            )
        except (FileNotFoundError, ValueError, PermissionError) as e:
            raise CLIError(str(e)) from e
    sys.stdout.write(f"report written to {index}\n")
    timings["report_s"] = time.perf_counter() - t0
    for name, done in circuits.items():
        if "file" in done:
            done |= circuit_readout(Path(done["file"]), report / "circuits" / f"{name}.report.json")
            sys.stdout.write(_readout_line(name, done))
    timings["total_s"] = time.perf_counter() - start
    summary = {
        "model": str(model_dir),
        "tasks": tables,
        "circuits": circuits,
        "report": str(out / "report" / "index.html"),
        "timings": timings,
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    sys.stdout.write(
        f"demo written to {out}: open {out / 'report' / 'index.html'} "
        f"({timings['total_s']:.0f} s)\n"
    )


def task_choice_lines(tables: Mapping[str, Any]) -> list[str]:
    """What the demo prints of its ``tasks.json`` (``task_tables_record``): per table its split,
    n and use, and the tasks it counts solved."""
    from sparse_lens.tasks.selection import SELECTION

    lines = []
    for name, use in (("test", "reports, chooses nothing"), (SELECTION, "chooses what is pruned")):
        record = tables[name]
        solved = sorted(t for t, r in record["losses"].items() if r["solved"])
        lines.append(
            f"{name} table ({record['split']} split, n = {record['n']} a task; {use}): "
            f"{len(solved)} of {len(record['losses'])} solved at task loss <= "
            f"{record['target_loss']:g}: {', '.join(solved) or 'none'}\n"
        )
    return lines


def circuit_readout(circuit_file: Path, page_numbers: Path) -> dict[str, Any]:
    """What a newcomer should know of one demo circuit: its size, its test-split loss against
    its target (from the circuit file) and its core (the report page's numbers, from the
    explain card: nodes whose knockout costs at least ``core_share`` of the empty-circuit gap,
    with the card's warnings). A missing page number is None.

    Raises:
        FileNotFoundError, ValueError: a file is missing or not JSON.
    """
    from sparse_lens.files.atomic import read_json

    c = read_json(circuit_file, "circuit")
    page = read_json(page_numbers, "report numbers")
    return {
        "n_nodes": c.get("n_nodes"),
        "n_edges": c.get("n_edges"),
        "test_loss": c.get("test_loss"),
        "core_nodes": len(page["core"]) if page.get("card_losses", {}).get("empty") else None,
        "core_share": page.get("core_share"),
        "card_warnings": page.get("card_warnings", []),
    }


def _readout_line(name: str, d: Mapping[str, Any]) -> str:
    test = "none" if d.get("test_loss") is None else f"{d['test_loss']:.3f}"
    core = "no core (no card)" if d["core_nodes"] is None else f"core {d['core_nodes']} nodes"
    warn = "".join(f"  warning: {w}\n" for w in d["card_warnings"])
    return (
        f"{name}: {d['n_nodes']} nodes / {d['n_edges']} edges, test loss {test} "
        f"(target {d['target_loss']}), {core}\n{warn}"
    )


def _first_circuits(
    chosen: dict[str, float], table: Mapping[str, Mapping[str, float]], n: int
) -> tuple[dict[str, float], dict[str, float]]:
    """The ``n`` tasks of ``chosen`` the demo prunes (the best-solved first: least validation
    task loss) and the rest."""
    order = sorted(chosen, key=lambda t: table[t]["loss"])
    return {t: chosen[t] for t in order[:n]}, {t: chosen[t] for t in order[n:]}


def _prune_chosen(
    out: Path,
    s: DemoSettings,
    model_dir: Path,
    tables: Mapping[str, Mapping[str, Any]],
    cache_dir: Path,
    quiet: bool,
    verbose: bool,
) -> dict[str, dict[str, Any]]:
    """One circuit per chosen task in ``out/circuits``; per demo task what became of it. Tasks
    and targets are chosen on the selection table (``tables``: ``tasks.json``'s record,
    ``sparse_lens.tasks.selection.task_tables_record``) only."""
    from sparse_lens.tasks.selection import choose_tasks, selection_table

    test_table, val_table = tables["test"]["losses"], selection_table(tables)
    val_loss = {name: row["loss"] for name, row in val_table.items()}
    if s.smoke:  # the smoke run's model is untrained: a target its loss reaches on any split
        name = SMOKE_TASK
        chosen = {name: round(max(val_loss[name], test_table[name]["loss"]) + 0.01, 4)}
    else:  # the tasks solved at the paper's target; none solved: the best, at a relaxed target
        chosen = choose_tasks(val_table, val_loss, relaxed=())
    circuits = _not_chosen(chosen, val_table)
    chosen, left = _first_circuits(chosen, val_table, s.max_circuits)
    for name, target in left.items():
        circuits[name] = {
            "not_pruned": f"the demo prunes {s.max_circuits} circuit"
            f"{'s' if s.max_circuits != 1 else ''}; `{_prune_command(s, model_dir, name, target)}` "
            "prunes it as the demo does (about 2 minutes; the default search, without "
            "--trials and --budget-minutes, takes 5-10)"
        }
    for name, target in chosen.items():
        t0 = time.perf_counter()
        path = out / "circuits" / f"{name}.json"
        settings = PruneSettings(
            model_dir=model_dir,
            out=path,
            task=name,
            target_loss=target,
            search=s.search,
            trials=s.trials,
            budget_minutes=s.budget_minutes,
            cleanup_evals=s.cleanup_evals,
            steps=s.prune_steps,
            faithfulness=s.faithfulness,
            cache_dir=cache_dir,
            quiet=quiet,
            verbose=verbose,
        )
        try:
            with contextlib.ExitStack() as stack:
                held = claim(stack, path, "prune", kind="file", within=("demo",))
                prune_run(dataclasses.replace(settings, out=held))
            done: dict[str, Any] = {"file": str(path)}
        except CLIError as e:
            sys.stderr.write(f"sparse-lens prune: error: {e}\n")
            done = {"failed": 2}
        circuits[name] = {"target_loss": target, "seconds": time.perf_counter() - t0} | done
    return circuits


def _prune_command(s: DemoSettings, model_dir: Path, task: str, target: float) -> str:
    """The ``sparse-lens prune`` command that prunes ``task`` with the demo's own settings."""
    faith = " --faithfulness" if s.faithfulness else ""
    return (
        f"sparse-lens prune {model_dir} --task {task} --target-loss {target} --out {task}.json "
        f"--search {s.search} --trials {s.trials} --budget-minutes {s.budget_minutes:g} "
        f"--cleanup-evals {s.cleanup_evals}{faith}"
    )


def _not_chosen(
    chosen: dict[str, float], val_table: dict[str, dict[str, float]]
) -> dict[str, dict[str, Any]]:
    """Why each task not in ``chosen`` is not pruned: the model does not solve it at the paper's
    target (its validation task loss and accuracy)."""
    from sparse_lens.tasks.selection import PAPER_TARGET

    return {
        n: {
            "skipped": f"not solved at the paper's target {PAPER_TARGET}: full model loss "
            f"{r['loss']:.3f}, accuracy {r['accuracy']:.2f} on the selection table (val split)"
        }
        for n, r in val_table.items()
        if n not in chosen
    }


def check_reused_run(run: Path, preset_name: str) -> None:
    """Refuse to reuse a run trained with other settings than the preset's (e.g. an older
    ``demo`` preset: model shape, densities, steps, idiom share ...), instead of silently
    reporting on a different model.

    Raises:
        CLIError: naming the first setting that differs, or an unreadable run file.
    """
    from sparse_lens.files.atomic import read_json
    from sparse_lens.training.presets import get_preset
    from sparse_lens.training.sparse import TrainConfig, recorded_idiom_frac

    preset = get_preset(preset_name)
    config = run / "final" / "config.json"
    info = run / "run.json"
    checks: list[tuple[dict[str, Any], Mapping[str, Any]]] = []
    try:
        if config.is_file():
            checks.append((read_json(config, "model config"), preset.model))
        if info.is_file():
            saved = read_json(info, "run")
            checks.append((saved.get("model_config", {}), preset.model))
            # a setting missing from an older run.json had its default (e.g. idiom_frac 0)
            checks.append((TrainConfig.with_defaults(saved.get("train_config", {})), preset.train))
            checks.append(
                ({"idiom_frac": recorded_idiom_frac(saved)}, {"idiom_frac": preset.idiom_frac})
            )
    except (FileNotFoundError, ValueError) as e:
        raise CLIError(str(e)) from e
    for saved, wanted in checks:
        for key, want in wanted.items():
            got = saved.get(key)
            if isinstance(want, tuple | list):
                want, got = list(want), list(got or [])
            if got != want:
                raise CLIError(
                    f"{run} was trained with {key}={got!r}, the {preset_name!r} preset has "
                    f"{want!r}; pass another --out (or delete {run}) to train anew"
                )


def _task_tables(model_dir: Path, n: int) -> dict[str, dict[str, Any]]:
    """The test table (``n`` examples a task) and the selection table (``val`` split) of the
    model in ``model_dir`` (``sparse_lens.tasks.selection.task_tables``), as
    ``tasks.json`` holds them (``sparse_lens.tasks.selection.task_tables_record``)."""
    from sparse_lens.tasks.selection import task_tables, task_tables_record
    from sparse_lens.tasks.task import TASK_NAMES, get_task

    model = load_model(model_dir, "the demo's model")
    test, val = task_tables(model, [get_task(name) for name in TASK_NAMES], n)
    return task_tables_record(test, val, n)
