"""``sparse-lens prune MODEL_DIR --task NAME --out FILE`` (or ``--all-tasks --out DIR``): the
minimal circuit of a task at a target loss (the paper's pruning, App. A.5), found by an Optuna
search over the pruning hyperparameters and cleaned up node by node and edge by edge.
:func:`prune_run` is the command without its parser (the demo calls it)."""

import argparse
import contextlib
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any, cast

from analyses.cli.options import (
    DEFAULT_CACHE,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    SEED,
    CLIError,
    check_device,
    check_replaceable_circuit,
    claim,
    device_name,
    int_range,
    load_model,
    out_path,
)
from sparse_lens.vocab import ABLATIONS, PAPER_TARGET, SEARCH_METHODS, AblationKind, SearchMethod

logger = logging.getLogger("analyses.cli.prune")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PruneSettings:
    """The options of ``sparse-lens prune`` (same names, same defaults)."""

    model_dir: Path
    out: Path
    task: str | None = None
    all_tasks: bool = False
    target_loss: float = PAPER_TARGET
    ablation: str = "mean"
    freeze_norms: bool = True
    search: str = "optuna"
    trials: int = 24
    budget_minutes: float = 5.0
    storage: str | None = None
    epochs: str = "8,64"
    cleanup: str = "nodes,edges"
    cleanup_evals: int = 2000
    seeds: int = 1
    tie_qk: bool = False
    steps: int = 80
    no_search: bool = False
    faithfulness: bool = False
    corpus: str | None = None
    cache_dir: Path = DEFAULT_CACHE
    seed: int = 0
    device: str = "cpu"
    quiet: bool = False
    verbose: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "PruneSettings":
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def add_prune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="prune a model to the minimal circuit for a task")
    p.set_defaults(handler=cmd_prune)
    p.add_argument("model_dir", type=Path, help="a model folder (e.g. RUN/final)")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--task", help="task name")
    group.add_argument("--all-tasks", action="store_true", help="every task the model solves")
    p.add_argument(
        "--out", type=out_path, required=True, help="circuit JSON (a folder with --all-tasks)"
    )
    p.add_argument(
        "--target-loss",
        type=POSITIVE_FLOAT,
        default=PAPER_TARGET,
        help="task loss the circuit must reach (default: the paper's %(default)s)",
    )
    p.add_argument(
        "--ablation",
        default="mean",
        choices=ABLATIONS,
        help="ablation of removed nodes",
    )
    norms = p.add_mutually_exclusive_group()
    norms.add_argument(
        "--freeze-norms",
        dest="freeze_norms",
        action="store_true",
        default=True,
        help="freeze RMSNorm scales at the full model's (the default: see README, Faithfulness)",
    )
    norms.add_argument(
        "--live-norms",
        dest="freeze_norms",
        action="store_false",
        help="recompute RMSNorm scales in the pruned model (lets the final norm amplify a few "
        "surviving writes: smaller circuits that fail the frozen-norm check)",
    )
    _add_search(p)
    p.add_argument(
        "--seeds", type=POSITIVE_INT, default=1, help="prune with N seeds: core, union, Jaccard"
    )
    p.add_argument("--tie-qk", action="store_true", help="one mask per query/key channel pair")
    p.add_argument(
        "--steps", type=POSITIVE_INT, default=80, help="mask-training steps per run (grid, none)"
    )
    p.add_argument("--no-search", action="store_true", help="same as --search none")
    p.add_argument("--faithfulness", action="store_true", help="add the faithfulness report")
    p.add_argument(
        "--corpus", default=None, help="pretraining corpus for ablation means (default: stdlib)"
    )
    p.add_argument(
        "--cache-dir", type=out_path, default=DEFAULT_CACHE, help="tokenizer/token/means cache"
    )
    p.add_argument("--seed", type=SEED, default=0, help="seed")
    p.add_argument(
        "--device", type=device_name, default="cpu", help="cpu, cuda or cuda:N (CUDA untested)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_search(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--search",
        default="optuna",
        choices=SEARCH_METHODS,
        help="optuna: TPE over the paper's 8 pruning hyperparameters and epochs (default); "
        "grid: 4 runs of --steps; none: one run of --steps",
    )
    p.add_argument(
        "--trials", type=POSITIVE_INT, default=24, help="optuna: finished trials per task"
    )
    p.add_argument(
        "--budget-minutes",
        type=POSITIVE_FLOAT,
        default=5.0,
        help="optuna: wall-clock limit per task",
    )
    p.add_argument(
        "--storage",
        default=None,
        help="optuna storage: sqlite:///FILE, postgresql://..., or journal:PATH (several "
        "processes may share one study); default: an SQLite file beside --out, so a killed "
        "search resumes",
    )
    p.add_argument(
        "--epochs",
        type=int_range,
        default="8,64",
        help="optuna: LOW,HIGH epochs over the task's training pairs (log-uniform)",
    )
    p.add_argument(
        "--cleanup",
        default="nodes,edges",
        help="clean-up after bisection: nodes, edges, nodes,edges (default) or none",
    )
    p.add_argument(
        "--cleanup-evals",
        type=POSITIVE_INT,
        default=2000,
        help="validation evaluations per clean-up stage",
    )


def cmd_prune(args: argparse.Namespace) -> int:
    """Take ``--out`` (a circuit file, or a folder with ``--all-tasks``) before any work."""
    from sparse_lens.tasks.task import TASK_NAMES

    check_device(args.device)  # before --out is taken
    with contextlib.ExitStack() as stack:
        if args.all_tasks:
            owned = (*(f"{n}.json" for n in TASK_NAMES), "summary.json", "optuna.db")
            args.out = claim(stack, args.out, "prune --all-tasks", owned=owned)
        else:
            args.out = claim(
                stack, args.out, "prune", kind="file", check_existing=check_replaceable_circuit
            )
        prune_run(PruneSettings.from_args(args))
        return 0


def prune_run(s: PruneSettings) -> dict[str, dict[str, Any]]:
    """Prune ``s.task`` (or every task, ``s.all_tasks``) of the model in ``s.model_dir`` and
    write the circuit to ``s.out`` (with ``s.all_tasks``: ``s.out/{task}.json`` and
    ``summary.json``); the caller holds ``s.out``. Returns task name -> its summary row.

    Raises:
        CLIError: bad input (settings, model folder, corpus), or with one task, no circuit.
    """
    import optuna

    if not s.verbose:  # one line per trial is noise next to the progress bar
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    request, tasks, model, windows = _prepare(s)
    return write_circuits(
        model, tasks, windows, request, s.out, all_tasks=s.all_tasks, model_dir=s.model_dir,
        cache_dir=s.cache_dir.expanduser(), progress=not s.quiet,
    )  # fmt: skip


def write_circuits(
    model: Any,
    tasks: list[Any],
    windows: tuple[Any, dict[str, Any]],
    request: Any,
    out: Path,
    *,
    all_tasks: bool,
    model_dir: Path,
    cache_dir: Path,
    progress: bool,
) -> dict[str, dict[str, Any]]:
    """The circuit of every task in ``out`` (``out/{task}.json`` and ``summary.json`` with
    ``all_tasks``), each through ``circuits.prune_task.prune_to_file``; task name -> its row.

    Raises:
        CLIError: one task (not ``all_tasks``) and no circuit reaches its target.
    """
    from sparse_lens.circuits.prune_task import prune_to_file

    summary = {}
    for task in tasks:
        path = out / f"{task.name}.json" if all_tasks else out
        try:
            circuit, row = prune_to_file(
                model, task, windows, request, path, model_dir=model_dir, cache_dir=cache_dir,
                progress=progress,
            )  # fmt: skip
        except ValueError as e:
            if all_tasks:
                summary[task.name] = {"skipped": str(e)}
                continue
            raise CLIError(str(e)) from e
        _log_circuit(task.name, circuit)
        summary[task.name] = row
        sys.stdout.write(circuit.summary() + f" -> {path}\n")
        if "faithfulness" in circuit.extra:
            from sparse_lens.circuits.faithfulness import verdict_lines

            lines = verdict_lines(circuit.extra["faithfulness"])
            sys.stdout.write("".join(f"  {line}\n" for line in lines))
    if all_tasks:
        _write_all_tasks(out, summary)
    return summary


def prune_request(s: PruneSettings) -> Any:  # noqa: ANN401
    """The ``PruneRequest`` of the command's settings (``circuits.prune_task``).

    Raises:
        CLIError: a bad setting (clean-up stages, epochs range, storage, ...), named.
    """
    from sparse_lens.circuits.cleanup import parse_stages
    from sparse_lens.circuits.masks import PruneConfig
    from sparse_lens.circuits.prune_task import PruneRequest

    try:
        pcfg = PruneConfig(
            target_loss=s.target_loss,
            ablation=cast(AblationKind, s.ablation),  # one of argparse's choices
            freeze_norms=s.freeze_norms,
            steps=s.steps,
            tie_qk=s.tie_qk,
            seed=s.seed,
        )
        return PruneRequest(
            prune=pcfg,
            search=cast(SearchMethod, "none" if s.no_search else s.search),  # argparse's choices
            search_cfg=_search_config(s),
            cleanup=parse_stages(s.cleanup),
            cleanup_evals=s.cleanup_evals,
            seeds=s.seeds,
            attribution=True,
            faithfulness=s.faithfulness,
        )
    except ValueError as e:
        raise CLIError(str(e)) from e


def _prepare(s: PruneSettings) -> tuple:
    """The pruning request, the tasks, the model and its ablation windows with their record."""
    from sparse_lens.circuits.prune_task import ablation_windows
    from sparse_lens.tasks.task import TASK_NAMES, get_task

    request = prune_request(s)
    model = load_model(s.model_dir, "MODEL_DIR", device=s.device)
    try:
        tasks = [get_task(s.task)] if s.task else [get_task(n) for n in TASK_NAMES]
        windows = ablation_windows(model, s.model_dir, s.corpus, s.cache_dir.expanduser(), s.seed)
    except (FileNotFoundError, ValueError, PermissionError) as e:
        raise CLIError(str(e)) from e
    return request, tasks, model, windows


def _log_circuit(name: str, circuit: Any) -> None:
    for stage in circuit.extra.get("stages", []):
        logger.info(
            "%s: after %s %d nodes, %d edges, val loss %.3f, test loss %s",
            name,
            stage["stage"],
            stage["nodes"],
            stage["edges"],
            stage["val_loss"],
            "-" if stage["test_loss"] is None else f"{stage['test_loss']:.3f}",
        )
    if "attribution" in circuit.extra:
        a = circuit.extra["attribution"]
        logger.info(
            "%s: attribution baseline %d nodes / %d edges; learned / attribution nodes %.3f",
            name,
            a["nodes"],
            a["edges"],
            a["learned_over_attribution_nodes"],
        )


def _write_all_tasks(out: Path, summary: dict[str, dict[str, Any]]) -> None:
    """``summary.json`` of ``prune --all-tasks`` and its table on stdout."""
    import json

    from sparse_lens.circuits.summary import all_tasks_summary
    from sparse_lens.files.atomic import atomic_write_text

    table = all_tasks_summary(summary)
    atomic_write_text(out / "summary.json", json.dumps(table, indent=2) + "\n")
    sys.stdout.write(f"{'task':30s} {'nodes':>6s} {'edges':>7s} {'loss':>7s}\n")
    for name, r in summary.items():
        if "edges" in r:
            sys.stdout.write(f"{name:30s} {r['nodes']:6d} {r['edges']:7d} {r['loss']:7.3f}\n")
        else:
            sys.stdout.write(f"{name:30s} skipped: {r['skipped']}\n")
    geo, n_empty = table["geometric_mean_edges"], table["n_empty_circuits"]
    if geo is not None:
        n = table["n_circuits"] - n_empty
        sys.stdout.write(f"geometric mean of edges over {n} circuits: {geo:.1f}\n")
    if n_empty:
        sys.stdout.write(f"{n_empty} circuit(s) of 0 edges (left out of the mean)\n")


def _search_config(s: PruneSettings) -> Any:  # noqa: ANN401
    """The Optuna settings of ``prune``; the default storage is an SQLite file beside --out.

    Raises:
        CLIError: ``--epochs`` is not LOW,HIGH integers.
    """
    from sparse_lens.circuits.hparam_search import SearchConfig

    try:
        low, high = (int(x) for x in s.epochs.split(","))
    except ValueError as e:
        raise CLIError(f"--epochs must be LOW,HIGH integers, got {s.epochs!r}") from e
    storage = s.storage
    if storage is None:
        out = s.out.expanduser().resolve()
        db = out / "optuna.db" if s.all_tasks else out.with_suffix(".optuna.db")
        storage = f"sqlite:///{db}"
    return SearchConfig(
        trials=s.trials,
        budget_minutes=float(s.budget_minutes),
        epochs=(low, high),
        seed=s.seed,
        storage=storage,
    )
