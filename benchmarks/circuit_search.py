"""Benchmark: circuit size of the 4-run grid versus the Optuna search, at equal wall clock.

For every task the model solves at the paper's target 0.15 (``choose_tasks`` on the validation
table; the test table reports), it prunes at the same target, with the same clean-up (nodes, then
edges) and the same ablation windows (the model's training mix, ``ablation_windows``):

* ``search``: the Optuna search (``--trials`` / ``--budget-minutes`` per task) and the clean-up:
  what ``sparse-lens prune`` does by default; its wall time ``T`` is the budget;
* ``grid_pilot``: the 4-run grid of ``circuits.masks.search_grid`` at ``--grid-steps`` mask
  steps per run, and the clean-up: what ``sparse-lens prune --search grid`` does, at its default
  steps (usually far cheaper than ``T``);
* ``grid``: the same grid with its steps per run scaled by ``T`` over the pilot's time (never
  below ``--grid-steps``), so that both arms spend the same wall clock (the times are reported;
  the match is as close as the pilot's step time predicts).

One JSON: per task nodes, edges, validation and test loss and wall time of each arm, and over
tasks the geometric means and the ratios grid / search (equal time) and grid_pilot / search.
One run, in one process; run it on a quiet machine.

    python benchmarks/circuit_search.py --model runs/demo/run/final \\
        --out benchmarks/results/circuit_search.json
    python benchmarks/circuit_search.py --model RUN/final --quick   # tiny model: smoke test
"""

import argparse
import math
import platform
import time
from pathlib import Path
from typing import Any

import optuna
import torch
from report_json import benchmark_parser, emit  # benchmarks/report_json.py

from sparse_lens.circuits.hparam_search import SearchConfig
from sparse_lens.circuits.masks import PruneConfig
from sparse_lens.circuits.prune_task import PruneRequest, ablation_windows, prune_task
from sparse_lens.model.transformer import HookedSparseTransformer
from sparse_lens.tasks.selection import choose_tasks, task_tables
from sparse_lens.tasks.task import TASK_NAMES, get_task


def geomean(values: list[float]) -> float | None:
    return math.exp(sum(math.log(max(v, 1)) for v in values) / len(values)) if values else None


def one(
    model: HookedSparseTransformer,
    name: str,
    target: float,
    windows: torch.Tensor,
    how: str,
    steps: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One arm on one task: ``how`` is ``"grid"`` (``steps`` mask steps per run) or
    ``"search"``; both cleaned up alike."""
    pcfg = PruneConfig(target_loss=target, steps=steps, calibrate=False)
    scfg = SearchConfig(trials=args.trials, budget_minutes=args.budget_minutes)
    t0 = time.perf_counter()
    request = PruneRequest(
        prune=pcfg,
        search="grid" if how == "grid" else "optuna",
        search_cfg=scfg,
        cleanup=("nodes", "edges"),
    )
    circuit = prune_task(model, get_task(name), windows, request, cache_dir=args.cache_dir)
    return {
        "nodes": circuit.n_nodes,
        "edges": circuit.n_edges,
        "val_loss": circuit.loss,
        "test_loss": circuit.test_loss,
        "seconds": time.perf_counter() - t0,
        "steps_per_grid_run": steps if how == "grid" else None,
        "stages": circuit.extra.get("stages"),
        "search": circuit.hparams.get("search"),
    }


def task_rows(
    model: HookedSparseTransformer, name: str, target: float, windows: torch.Tensor, args: Any
) -> dict[str, Any]:
    """The three arms on one task: the search sets the wall-clock budget the grid then gets."""
    row: dict[str, Any] = {"target_loss": target}
    row["search"] = one(model, name, target, windows, "search", args.grid_steps, args)
    row["grid_pilot"] = one(model, name, target, windows, "grid", args.grid_steps, args)
    scale = row["search"]["seconds"] / max(row["grid_pilot"]["seconds"], 1e-9)
    steps = max(args.grid_steps, round(args.grid_steps * scale))
    row["grid"] = one(model, name, target, windows, "grid", steps, args)
    return row


ARMS = ("search", "grid_pilot", "grid")


def summarise(rows: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for how in ARMS:
        summary[f"{how}_geomean_nodes"] = geomean([r[how]["nodes"] for r in rows.values()])
        summary[f"{how}_geomean_edges"] = geomean([r[how]["edges"] for r in rows.values()])
        summary[f"{how}_seconds"] = sum(r[how]["seconds"] for r in rows.values())
    if rows:
        for how in ("grid", "grid_pilot"):
            for what in ("nodes", "edges"):
                summary[f"{how}_over_search_{what}"] = (
                    summary[f"{how}_geomean_{what}"] / summary[f"search_geomean_{what}"]
                )
        summary["grid_seconds_over_search_seconds"] = (
            summary["grid_seconds"] / summary["search_seconds"]
        )
        summary["search_test_loss_minus_target_max"] = max(
            (r["search"]["test_loss"] or math.nan) - r["target_loss"] for r in rows.values()
        )
    return summary


def run(args: argparse.Namespace) -> dict[str, Any]:
    model = HookedSparseTransformer.from_pretrained(args.model).eval()
    tasks = [get_task(name) for name in TASK_NAMES]
    _, val = task_tables(model, tasks, 20 if args.quick else 200)  # chosen on validation only
    val_loss = {name: row["loss"] for name, row in val.items()}
    if args.quick:  # an untrained tiny model: a target its full model reaches
        name = "single_double_quote"
        chosen = {name: round(val_loss[name] + 0.002, 4)}
    else:
        chosen = choose_tasks(val, val_loss, relaxed=())
    windows, _ = ablation_windows(model, args.model, args.corpus, args.cache_dir, seed=0)
    rows = {name: task_rows(model, name, target, windows, args) for name, target in chosen.items()}
    summary = summarise(rows)
    return {
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads()},
        "model": str(args.model),
        "settings": {
            "grid_steps": args.grid_steps,
            "trials": args.trials,
            "budget_minutes": args.budget_minutes,
            "quick": args.quick,
        },
        "tasks": rows,
        "summary": summary,
    }


def main() -> None:
    parser = benchmark_parser(__doc__, quick="tiny budgets, one loose task")
    parser.add_argument("--model", type=Path, default=Path("runs/demo/run/final"))
    parser.add_argument("--corpus", default=None, help="pretraining corpus (default: stdlib)")
    parser.add_argument("--cache-dir", type=Path, default=Path("~/.cache/sparse_lens"))
    parser.add_argument("--grid-steps", type=int, default=None, help="steps per grid run (80)")
    parser.add_argument("--trials", type=int, default=None, help="search trials per task (24)")
    parser.add_argument("--budget-minutes", type=float, default=None, help="per task (5)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    args.cache_dir = args.cache_dir.expanduser()
    args.grid_steps = args.grid_steps or (3 if args.quick else 80)
    args.trials = args.trials or (2 if args.quick else 24)
    args.budget_minutes = args.budget_minutes or (1.0 if args.quick else 5.0)
    result = run(args)
    emit(result, args.out)


if __name__ == "__main__":
    main()
