"""``sparse-lens sweep``: the frontier grid (``sparse_lens.sweep.grid``), its table and figures.

``sparse-lens sweep --preset demo --widths 128,192 --l0 120000,240000 --out runs/sweep``
trains every point (through submitit: ``--executor local`` on this machine, ``slurm`` on a
cluster, ``debug`` in this process), prunes every solved task, and writes ``table.json``,
``table.csv``, ``circuits.csv``, ``frontier.html`` and ``figures/*.png`` into ``--out``. Run it
again to resume a killed sweep. ``--dry-run`` lists the grid (densities, skipped points) and
stops.
"""

import argparse
import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from analyses.cli.options import (
    DEFAULT_CACHE,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    SEED,
    TARGET_LOSS,
    CLIError,
    cache_path,
    claim,
    number,
    out_path,
)
from sparse_lens.vocab import CLUSTERS, PAPER_TARGET, SEARCH_METHODS


def _list_of(item: Callable[[str], Any], what: str) -> Callable[[str], tuple[Any, ...]]:
    """An argparse ``type``: a comma-separated, non-empty list, each item parsed by ``item``
    (range-checked), so ``--widths 0`` stops at the parser, before torch is imported."""

    def parse(text: str) -> tuple[Any, ...]:
        parts = [v.strip() for v in text.split(",")]
        if not all(parts):  # "", "32,", "32,,64": an empty item is a typo, not a shorter grid
            raise argparse.ArgumentTypeError(f"must be comma-separated {what}, got {text!r}")
        return tuple(item(v) for v in parts)

    return parse


_ints = _list_of(POSITIVE_INT, "positive integers")
_floats = _list_of(number(float, 0, 1, open_low=True), "fractions in (0, 1]")


class _DefaultsShown(argparse.HelpFormatter):
    """Help that ends each option with its default, where it has one worth saying (not
    ``None``/``False``/empty, and not already in the help text)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        if "default" in text or d is None or d is False or d == () or d == argparse.SUPPRESS:
            return text
        return f"{text} (default: %(default)s)"


def add_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="grid of width x L0 x AbsTopK runs: the frontier figures",
        formatter_class=_DefaultsShown,
    )
    p.set_defaults(handler=cmd_sweep)
    p.add_argument("--preset", required=True, help="the preset every point starts from")
    p.add_argument("--out", type=out_path, required=True, help="sweep folder")
    p.add_argument("--widths", type=_ints, required=True, help="d_model values, e.g. 64,128")
    p.add_argument("--l0", type=_ints, required=True, help="nonzero budgets, e.g. 50000,100000")
    p.add_argument("--afrac", type=_floats, default=(), help="AbsTopK fractions (default: preset)")
    p.add_argument("--no-dense", action="store_true", help="no dense baseline per width")
    p.add_argument("--steps", type=POSITIVE_INT, default=None, help="override the preset's steps")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=None, help="override the batch size")
    p.add_argument(
        "--checkpoint-every", type=POSITIVE_INT, default=None, help="override checkpointing"
    )
    p.add_argument(
        "--idiom-frac", type=number(float, 0, 0.99), default=None, help="override the idiom share"
    )
    p.add_argument(
        "--lr", type=POSITIVE_FLOAT, default=None, help="override the peak learning rate"
    )
    p.add_argument(
        "--dense-lr",
        type=POSITIVE_FLOAT,
        default=None,
        help="peak learning rate of the dense baselines (default: the sparse points')",
    )
    p.add_argument("--corpus", default=None, help="corpus (default: the stdlib)")
    p.add_argument("--seed", type=SEED, default=0, help="seed of every point")
    p.add_argument(
        "--target-loss",
        type=TARGET_LOSS,
        default=PAPER_TARGET,
        help="solved/pruning target (default: the paper's %(default)s)",
    )
    p.add_argument("--task", action="append", default=None, help="task (repeatable; default all)")
    p.add_argument(
        "--custom-task",
        action="append",
        type=Path,
        default=None,
        help='a JSONL task of {"context", "correct", "incorrect"} records, named by its file '
        "(repeatable; added to the built-in tasks)",
    )
    p.add_argument("--task-n", type=POSITIVE_INT, default=200, help="test examples per task")
    p.add_argument("--prune-steps", type=POSITIVE_INT, default=80, help="mask steps per search run")
    p.add_argument(
        "--prune-search",
        choices=SEARCH_METHODS,
        default="optuna",
        help="circuit search per solved task (default optuna)",
    )
    p.add_argument(
        "--prune-trials", type=POSITIVE_INT, default=12, help="Optuna trials per circuit"
    )
    p.add_argument("--no-search", action="store_true", help="same as --prune-search none")
    p.add_argument(
        "--prune-examples", type=POSITIVE_INT, default=128, help="val/test pairs (2x to train)"
    )
    _add_launch(p)
    p.add_argument("--dry-run", action="store_true", help="list the grid and stop")
    p.add_argument(
        "--cache-dir", type=out_path, default=DEFAULT_CACHE, help="tokenizer/token cache"
    )


def _add_launch(p: argparse.ArgumentParser) -> None:
    """How the sweep's points are run: executor, jobs, threads, processes, time limit."""
    p.add_argument(
        "--executor",
        default="local",
        choices=CLUSTERS,
        help="submitit local processes, SLURM jobs, or this process (debug)",
    )
    p.add_argument(
        "--jobs", type=POSITIVE_INT, default=1, help="submitit jobs (points dealt among them)"
    )
    p.add_argument(
        "--threads",
        type=POSITIVE_INT,
        default=None,
        help="torch threads per process (default: torch's own, the number of cores)",
    )
    p.add_argument(
        "--tasks-per-point", type=POSITIVE_INT, default=1, help="DDP processes per point"
    )
    p.add_argument(
        "--timeout-min",
        type=number(int, 1, 60 * 24 * 365),
        default=24 * 60,
        help="time limit per job, minutes (at most a year)",
    )
    p.add_argument("--slurm-partition", default=None, help="SLURM partition")


def _config(args: argparse.Namespace):
    from sparse_lens.sweep.grid import SweepConfig
    from sparse_lens.sweep.jobs import Launch

    scfg = SweepConfig(
        preset=args.preset,
        widths=args.widths,
        l0s=args.l0,
        afracs=args.afrac,
        dense=not args.no_dense,
        steps=args.steps,
        batch_size=args.batch_size,
        checkpoint_every=args.checkpoint_every,
        idiom_frac=args.idiom_frac,
        lr=args.lr,
        dense_lr=args.dense_lr,
        corpus=args.corpus,
        seed=args.seed,
        target_loss=args.target_loss,
        tasks=tuple(args.task or ()),
        custom_tasks=tuple(str(p.expanduser().resolve()) for p in args.custom_task or ()),
        task_n=args.task_n,
        prune_steps=args.prune_steps,
        prune_search="none" if args.no_search else args.prune_search,
        prune_trials=args.prune_trials,
        prune_examples=args.prune_examples,
    )
    launch = Launch(
        cluster=args.executor,
        jobs=args.jobs,
        threads=args.threads,
        tasks_per_point=args.tasks_per_point,
        timeout_min=args.timeout_min,
        slurm_partition=args.slurm_partition,
    )
    return scfg, launch


def _dry_run(scfg: Any, cache_dir: Path) -> int:  # noqa: ANN401
    from sparse_lens.sweep.grid import grid, point_configs, sparse_numels
    from sparse_lens.sweep.point import Prepared

    prepared = Prepared.load(scfg, cache_dir)
    points, skipped = grid(scfg, prepared.tokenizer.vocab_size)
    out = sys.stdout
    out.write(
        f"{'point':28s} {'d_model':>7s} {'w density':>10s} {'e density':>10s} {'params':>9s}\n"
    )
    for p in points:
        mcfg, tcfg = point_configs(p, scfg, prepared.tokenizer.vocab_size)
        n = sum(k for _, k in sparse_numels(mcfg))
        out.write(
            f"{p.name:28s} {p.d_model:7d} {p.weight_density:10.4g} {p.embed_density:10.4g} {n:9d}\n"
        )
    for name, why in skipped.items():
        out.write(f"{name:28s} skipped: {why}\n")
    return 0


SWEEP_FILES = (
    "sweep.json", "points", "submitit", "table.json", "table.csv", "circuits.csv",
    "frontier.html", "figures",
)  # fmt: skip


def cmd_sweep(args: argparse.Namespace) -> int:
    """``sparse-lens sweep``: run (or with ``--dry-run`` list) the sweep grid; returns the
    exit code. The grid is checked first, then ``--out`` is taken (``claim``: a sweep folder,
    locked, so a second sweep into it is refused while this one runs), before any work.

    Raises:
        CLIError: a bad grid or setting, an ``--out`` that is not a sweep folder or is busy, or
            a missing file or permission during the sweep (the message is the cause's).
    """
    cache_dir = cache_path(args.cache_dir)
    try:
        scfg, launch = _config(args)
    except ValueError as e:
        raise CLIError(str(e)) from e
    if args.dry_run:
        return _dry_run(scfg, cache_dir)
    with contextlib.ExitStack() as stack:
        out = claim(stack, args.out, "sweep", owned=SWEEP_FILES, legacy=("sweep.json",))
        return _run(scfg, launch, out, cache_dir)


def _run(scfg: Any, launch: Any, out: Path, cache_dir: Path) -> int:  # noqa: ANN401
    from analyses.frontier import write_frontier
    from sparse_lens.sweep.jobs import run_sweep
    from sparse_lens.sweep.table import collect, match_dense, write_table

    try:
        points, status = run_sweep(scfg, out, cache_dir, launch)
        rows = match_dense(collect(out, points))  # a point.json that does not read: one line
    except (FileNotFoundError, ValueError, PermissionError) as e:
        raise CLIError(str(e)) from e
    paths = write_table(out, scfg, rows, status)
    page = write_frontier(out, scfg, rows, status)
    unfinished = {k: v for k, v in status.items() if v.startswith(("failed", "busy"))}
    for name, why in status.items():
        sys.stdout.write(f"{name}: {why}\n")
    sys.stdout.write(f"table: {paths['csv']}, figures: {page}\n")
    if any(v.startswith("busy") for v in unfinished.values()):
        sys.stderr.write(
            "sparse-lens sweep: some points are held by another process (a job of a sweep that "
            "was killed goes on: submitit's local jobs outlive their sweep); the table lacks "
            "them: run the sweep again once that process has ended, or stop it first\n"
        )
    return 1 if unfinished else 0
