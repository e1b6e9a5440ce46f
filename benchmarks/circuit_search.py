"""Benchmark: circuit size of the old 4-run grid versus the Optuna search plus clean-up.

For every task the model solves at the paper's target 0.15, plus the demo's relaxed-target
tasks (``sparse_lens.tasks.selection.choose_tasks``), it prunes twice at the same target:

* ``grid``: the 4-run grid of ``prune.search_grid`` (``--grid-steps`` mask steps per run, no
  clean-up): what ``sparse-lens prune --search grid`` does;
* ``search``: the Optuna search (``--trials`` / ``--budget-minutes`` per task) followed by the
  node and edge clean-up: what ``sparse-lens prune`` does by default;

and writes one JSON: per task nodes, edges, validation and test loss and wall time of each, and
over tasks the geometric means of nodes and edges and their ratios grid / search (goal: >= 10x
fewer edges; test loss within 0.02 of the target). One run, in one process.

    python benchmarks/circuit_search.py --model runs/demo/run/final \\
        --out benchmarks/results/circuit_search.json
    python benchmarks/circuit_search.py --model RUN/final --quick   # tiny model: smoke test
"""

import argparse
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import optuna
import torch

from sparse_lens.circuits.hparam_search import SearchConfig
from sparse_lens.circuits.masks import PruneConfig
from sparse_lens.circuits.prune_task import PruneRequest, prune_task
from sparse_lens.data.token_data import prepare_data
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
    args: argparse.Namespace,
) -> dict[str, Any]:
    pcfg = PruneConfig(target_loss=target, steps=args.grid_steps, calibrate=False)
    scfg = SearchConfig(trials=args.trials, budget_minutes=args.budget_minutes)
    t0 = time.perf_counter()
    request = PruneRequest(
        prune=pcfg,
        search="grid" if how == "grid" else "optuna",
        search_cfg=scfg,
        cleanup=() if how == "grid" else ("nodes", "edges"),
    )
    circuit = prune_task(model, get_task(name), windows, request, cache_dir=args.cache_dir)
    return {
        "nodes": circuit.n_nodes,
        "edges": circuit.n_edges,
        "val_loss": circuit.loss,
        "test_loss": circuit.test_loss,
        "seconds": time.perf_counter() - t0,
        "stages": circuit.extra.get("stages"),
        "search": circuit.hparams.get("search"),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    model = HookedSparseTransformer.from_pretrained(args.model).eval()
    tasks = [get_task(name) for name in TASK_NAMES]
    _, val = task_tables(model, tasks, 20 if args.quick else 200)  # chosen on validation only
    val_loss = {name: row["loss"] for name, row in val.items()}
    if args.quick:  # an untrained tiny model: a target its full model reaches
        name = "single_double_quote"
        chosen = {name: round(val_loss[name] + 0.002, 4)}
    else:
        chosen = choose_tasks(val, val_loss)
    _, _, data = prepare_data(args.corpus, args.cache_dir)
    windows = data.sample(64, model.cfg.n_ctx, torch.Generator().manual_seed(0))
    rows: dict[str, Any] = {}
    for name, target in chosen.items():
        rows[name] = {"target_loss": target}
        for how in ("grid", "search"):
            rows[name][how] = one(model, name, target, windows, how, args)
    summary: dict[str, Any] = {}
    for how in ("grid", "search"):
        summary[f"{how}_geomean_nodes"] = geomean([r[how]["nodes"] for r in rows.values()])
        summary[f"{how}_geomean_edges"] = geomean([r[how]["edges"] for r in rows.values()])
        summary[f"{how}_seconds"] = sum(r[how]["seconds"] for r in rows.values())
    if rows:
        summary["grid_over_search_nodes"] = (
            summary["grid_geomean_nodes"] / summary["search_geomean_nodes"]
        )
        summary["grid_over_search_edges"] = (
            summary["grid_geomean_edges"] / summary["search_geomean_edges"]
        )
        summary["search_test_loss_minus_target_max"] = max(
            (r["search"]["test_loss"] or math.nan) - r["target_loss"] for r in rows.values()
        )
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=Path("runs/demo/run/final"))
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default: stdout)")
    parser.add_argument("--corpus", default=None, help="pretraining corpus (default: stdlib)")
    parser.add_argument("--cache-dir", type=Path, default=Path("~/.cache/sparse_lens"))
    parser.add_argument("--quick", action="store_true", help="tiny budgets, one loose task")
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
    text = json.dumps(result, indent=2) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
