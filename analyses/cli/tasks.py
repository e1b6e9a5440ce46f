"""``sparse-lens tasks MODEL_DIR [--task NAME ...] [--custom FILE] [--json]``: the task suite's
loss and accuracy of a model, as a table (with the mean over tasks) or JSON."""

import argparse
import json
import sys
from pathlib import Path

from analyses.cli.options import SEED, TASK_EXAMPLES, CLIError, device_name, load_model
from sparse_lens.vocab import SPLITS

# The library (and torch) is imported inside the handlers, when a command runs: `sparse-lens
# --help` imports this module and stays torch-free (tests/analyses/cli/test_parser.py).


def add_tasks(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tasks", help="task loss and accuracy of a model on the task suite")
    p.set_defaults(handler=cmd_tasks)
    p.add_argument("model_dir", type=Path, help="a model folder (e.g. RUN/final)")
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
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--device", type=device_name, default="cpu", help="cpu, cuda or cuda:N (CUDA untested)"
    )


def cmd_tasks(args: argparse.Namespace) -> int:
    """``sparse-lens tasks``: score the model on the built-in (and custom) tasks; returns the
    exit code.

    Raises:
        CLIError: the model has no ``tokenizer.json``, or loading or scoring fails on a missing
            file or a bad value (the message is the cause's).
    """
    from sparse_lens.tasks.task import TASK_NAMES, get_task, load_custom_task, task_table

    model = load_model(args.model_dir, "MODEL_DIR", device=args.device)
    try:
        tok = model.require_tokenizer()
        custom = None if args.custom is None else load_custom_task(args.custom, tok)
        own = custom.name if custom is not None else None  # --task OWN picks it too
        tasks = [get_task(n) for n in (args.task or TASK_NAMES) if n != own]
        if custom is not None and (not args.task or own in args.task):
            tasks.append(custom)
    except (FileNotFoundError, ValueError) as e:
        raise CLIError(str(e)) from e
    try:
        rows = task_table(model, tasks, args.split, args.n, args.seed)
    except ValueError as e:
        raise CLIError(str(e)) from e
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return 0
    sys.stdout.write(f"{'task':30s} {'loss':>8s} {'acc':>6s} {'n':>5s}\n")
    for name, r in rows.items():
        sys.stdout.write(f"{name:30s} {r['loss']:8.3f} {r['accuracy']:6.2f} {r['n']:5d}\n")
    if len(rows) > 1:
        mean_loss = sum(r["loss"] for r in rows.values()) / len(rows)
        mean_acc = sum(r["accuracy"] for r in rows.values()) / len(rows)
        sys.stdout.write(f"{'mean':30s} {mean_loss:8.3f} {mean_acc:6.2f}\n")
    return 0
