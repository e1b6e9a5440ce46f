"""``sparse-lens tasks MODEL_DIR [--task NAME ...] [--custom FILE] [--target-loss T] [--json]``:
the task suite's loss and accuracy of a model, as a table (a header naming the split, the
examples asked per task, the seed and the target; which tasks are solved; examples dropped at
token boundaries) or JSON (``sparse_lens.tasks.selection.table_record``). ``MODEL_DIR`` may
also be a training run or demo folder: its model folder is used, with a note on stderr."""

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from analyses.cli.options import (
    SEED,
    TARGET_LOSS,
    TASK_EXAMPLES,
    CLIError,
    device_name,
    load_model,
)
from sparse_lens.vocab import PAPER_TARGET, SPLITS

# The library (and torch) is imported inside the handlers, when a command runs: `sparse-lens
# --help` imports this module and stays torch-free (tests/analyses/cli/test_parser.py).

DROPPED_NOTE = (
    "dropped: a built-in example is scored only where its answer is one token right after the "
    "context under this model's tokenizer (tokenising context + answer does not merge across "
    "the boundary); other examples are left out with the other side of their minimal pair, so "
    "n is the examples scored"
)
SHORT_NOTE = (
    "all there are: the task has fewer distinct examples of this split than asked (a custom "
    "task's file, or a generator's distinct minimal pairs), so it is scored on all of them"
)


def add_tasks(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tasks", help="task loss and accuracy of a model on the task suite")
    p.set_defaults(handler=cmd_tasks)
    p.add_argument(
        "model_dir",
        type=Path,
        help="a model folder (e.g. RUN/final); a training run or demo folder means its model",
    )
    p.add_argument(
        "--task", action="append", default=None, help="task name (repeatable); default all"
    )
    p.add_argument("--custom", type=Path, default=None, help="a JSONL custom task to add")
    p.add_argument("--split", default="test", choices=SPLITS, help="which split")
    p.add_argument(
        "--n",
        type=TASK_EXAMPLES,
        default=200,
        help="examples per task (an odd N is rounded up to whole minimal pairs)",
    )
    p.add_argument("--seed", type=SEED, default=0, help="generator seed")
    p.add_argument(
        "--target-loss",
        type=TARGET_LOSS,
        default=PAPER_TARGET,
        metavar="NATS",
        help="a task is solved at a task loss at or below this (default: the paper's target "
        "%(default)s)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--device", type=device_name, default="cpu", help="cpu, cuda or cuda:N (CUDA untested)"
    )


def cmd_tasks(args: argparse.Namespace) -> int:
    """``sparse-lens tasks``: score the model on the built-in (and custom) tasks; returns the
    exit code.

    Raises:
        CLIError: ``MODEL_DIR`` holds no model, the model has no ``tokenizer.json``, or loading
            or scoring fails on a missing file or a bad value (the message is the cause's).
    """
    from sparse_lens.tasks.selection import table_record
    from sparse_lens.tasks.task import task_table

    model_dir = resolve_model_dir(args.model_dir)
    model = load_model(model_dir, "MODEL_DIR", device=args.device)
    target = args.target_loss
    try:
        tasks = _tasks(args, model.require_tokenizer())
        # a task with fewer examples of the split than asked is scored on all it has (marked)
        rows = task_table(model, tasks, args.split, args.n, args.seed, up_to=True)
    except ValueError as e:
        raise CLIError(str(e)) from e
    record = table_record(rows, split=args.split, n=args.n, seed=args.seed, target=target)
    if args.json:
        sys.stdout.write(json.dumps(record, indent=2) + "\n")
    else:
        sys.stdout.write("".join(line + "\n" for line in table_lines(record, model_dir)))
    return 0


def _tasks(args: argparse.Namespace, tok: Any) -> list[Any]:
    """The tasks ``--task`` names (default all built-in ones), ``--custom``'s added.

    Raises:
        CLIError: an unknown task name, or a missing or malformed custom task file.
    """
    from sparse_lens.tasks.task import TASK_NAMES, get_task, load_custom_task

    try:
        custom = None if args.custom is None else load_custom_task(args.custom, tok)
        own = custom.name if custom is not None else None  # --task OWN picks it too
        tasks = [get_task(n) for n in (args.task or TASK_NAMES) if n != own]
    except (FileNotFoundError, ValueError) as e:
        raise CLIError(str(e)) from e
    if custom is not None and (not args.task or own in args.task):
        tasks.append(custom)
    return tasks


def resolve_model_dir(path: Path) -> Path:
    """The model folder ``MODEL_DIR`` means: ``path`` itself when it holds ``config.json`` or is
    not a folder (``load_model`` then names the problem); else the model of the training run
    (``final/``) or demo folder (``run/final/``) ``path`` is, as ``sparse-lens report`` finds it
    (``analyses.report_sources.find_sources``), with a note on stderr naming both paths.

    Raises:
        CLIError: ``path`` is a folder that neither is nor holds a model (named).
    """
    folder = path.expanduser()
    if not folder.is_dir() or (folder / "config.json").is_file():
        return path
    from analyses.report_sources import find_sources

    try:
        model = find_sources(folder).model_dir
    except (FileNotFoundError, ValueError):
        raise CLIError(
            f"MODEL_DIR {str(path)!r} is not a model folder (no config.json) and holds none (no "
            "final/config.json as a training run has, no run/final/config.json as a demo "
            "folder has); name a model folder, e.g. RUN/final or runs/demo/run/final"
        ) from None
    kind = "a demo folder" if model == folder / "run" / "final" else "a training run folder"
    sys.stderr.write(f"note: MODEL_DIR {path} is {kind}; scoring its model folder {model}\n")
    return model


def table_lines(record: Mapping[str, Any], model_dir: Path) -> list[str]:
    """The table of a ``table_record``: a header (model, split and what it is for, examples
    asked per task, seed, target), one row per task (loss in nats, accuracy, examples scored
    with those dropped or missing, solved), the mean over tasks, the solved count and a
    footnote per mark used."""
    from sparse_lens.tasks.task import SPLIT_USES

    rows, asked, target = record["losses"], record["n"], record["target_loss"]
    whose = "the paper's target" if target == PAPER_TARGET else f"the paper's is {PAPER_TARGET:g}"
    lines = [
        f"{model_dir}: {record['split']} split, {asked} examples asked per task, seed "
        f"{record['seed']}; solved = task loss <= {target:g} nats ({whose})",
        f"{'task':30s} {'loss':>8s} {'acc':>6s}  {'n':18s} solved",
    ]
    for name, r in rows.items():
        n_cell = n_column(r, asked)
        solved = "yes" if r["solved"] else "no"
        lines.append(f"{name:30s} {r['loss']:8.3f} {r['accuracy']:6.2f}  {n_cell:18s} {solved}")
    if len(rows) > 1:
        mean_loss = sum(r["loss"] for r in rows.values()) / len(rows)
        mean_acc = sum(r["accuracy"] for r in rows.values()) / len(rows)
        lines.append(f"{'mean':30s} {mean_loss:8.3f} {mean_acc:6.2f}")
    n_solved = sum(bool(r["solved"]) for r in rows.values())
    lines.append(f"solved: {n_solved} of {len(rows)} tasks at task loss <= {target:g}")
    lines.append(f"{record['split']} split: {SPLIT_USES[record['split']]}")
    cells = [n_column(r, asked) for r in rows.values()]
    lines += [DROPPED_NOTE] if any("dropped" in c for c in cells) else []
    lines += [SHORT_NOTE] if any("all there are" in c for c in cells) else []
    return lines


def n_column(row: Mapping[str, Any], asked: int) -> str:
    """A row's ``n`` cell: the examples scored, ``146 (54 dropped)`` when examples were dropped
    at token boundaries, ``3 (all there are)`` when the task has fewer than ``asked`` (both
    marks when both hold)."""
    n, dropped = int(row["n"]), int(row.get("dropped", 0))
    marks = ["all there are"] if n + dropped < asked else []
    marks += [f"{dropped} dropped"] if dropped else []
    return f"{n} ({', '.join(marks)})" if marks else str(n)
