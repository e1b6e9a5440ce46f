"""The ``sparse-lens`` command line.

``sparse-lens train --preset NAME --out DIR [--corpus PATH] [--steps N] [--resume] [--dense]``
trains a model; run it under ``torchrun --nproc_per_node N -m analyses.cli train ...`` for DDP.
Errors in the input (a corpus path that does not exist, an empty corpus, an unknown preset, an
unwritable output folder) are reported before any training starts, with exit status 2.
"""

import argparse
import contextlib
import hashlib
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

DEFAULT_CACHE = Path("~/.cache/sparse_lens")
logger = logging.getLogger("analyses.cli.common")


class CLIError(Exception):
    """An input problem to report as ``error: ...`` with exit status 2."""


def number(
    kind: type,
    low: int | float | None = None,
    high: int | float | None = None,
    *,
    open_low: bool = False,
) -> Callable[[str], Any]:
    """An argparse ``type``: ``kind`` (int or float), finite, in ``[low, high]`` (``(low,
    high]`` with ``open_low``); out of range, the parser stops with a message naming the range."""
    lo = "" if low is None else (f"> {low:g}" if open_low else f">= {low:g}")
    hi = "" if high is None else f"<= {high:g}"
    want = " and ".join(x for x in (lo, hi) if x) or "finite"
    noun = "an integer" if kind is int else "a number"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number, {want}")
        if (low is not None and (value < low or (open_low and value == low))) or (
            high is not None and value > high
        ):
            raise argparse.ArgumentTypeError(f"{text!r} is out of range: must be {want}")
        return value

    parse.__name__ = noun  # argparse names the type in "invalid ... value" messages
    return parse


POSITIVE_INT = number(int, 1)
SEED = number(int, 0, 2**63 - 1)
POSITIVE_FLOAT = number(float, 0, open_low=True)
FRACTION = number(float, 0, 1)


RUN_FILES = ("run.json", "metrics.jsonl", "checkpoints", "final")
DENSE_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer*.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "metrics.jsonl",
    "dense.json",
    "checkpoint",
)


def claim(stack: contextlib.ExitStack, path: Path, command: str, **kw: Any) -> Path:
    """``outputs.claim_output`` held until ``stack`` closes; its refusals as ``CLIError``."""
    from sparse_lens.files.outputs import claim_output

    try:
        return stack.enter_context(claim_output(path, command, **kw))
    except ValueError as e:
        raise CLIError(str(e)) from e


def out_path(text: str) -> Path:
    """An argparse ``type`` for ``--out``: refuses the empty string (an unset variable), which
    ``Path`` would read as the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty (an unset shell variable?); name a path")
    return Path(text)


def _add_train(sub: argparse._SubParsersAction) -> None:
    from sparse_lens.training.presets import PRESETS

    p = sub.add_parser("train", help="train a weight-sparse (or dense) model")
    p.add_argument("--preset", required=True, help=f"one of {sorted(PRESETS)}")
    p.add_argument("--out", required=True, type=out_path, help="run folder")
    p.add_argument(
        "--corpus",
        default=None,
        help="folder of .py/.txt files, a .jsonl, or site-packages (default: the stdlib)",
    )
    p.add_argument(
        "--steps", type=POSITIVE_INT, default=None, help="override the preset's step count"
    )
    p.add_argument(
        "--batch-size", type=POSITIVE_INT, default=None, help="override the global batch size"
    )
    p.add_argument(
        "--lr", type=POSITIVE_FLOAT, default=None, help="override the peak learning rate"
    )
    p.add_argument(
        "--idiom-frac",
        type=number(float, 0, 0.99),
        default=None,
        help="share of each batch from the synthetic idiom stream (see sparse_lens.data.idioms)",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--dense", action="store_true", help="dense baseline: weight density 1")
    p.add_argument("--no-abstopk", action="store_true", help="turn off activation sparsity")
    p.add_argument(
        "--dense-kernels",
        action="store_true",
        help="multiply by projected weights densely too (default: CSR kernels on CPU for large, "
        "sparse matrices; see sparse_lens.model.sparse_matmul)",
    )
    p.add_argument(
        "--dense-hf",
        action="store_true",
        help="train a standard HF GPT-2 of the preset's shape instead (load with load_dense)",
    )
    p.add_argument("--seed", type=SEED, default=0, help="seed for init and data order")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--cache-dir", type=out_path, default=DEFAULT_CACHE, help="tokenizer/token cache"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_train(args: argparse.Namespace) -> int:
    """Take ``--out`` (checked, locked, not foreign; rank 0 only) before any work, then train."""
    with contextlib.ExitStack() as stack:
        if int(os.environ.get("RANK", "0")) == 0:
            if args.dense_hf:
                command, owned, legacy = (
                    "train --dense-hf",
                    DENSE_FILES,
                    ("dense.json", "checkpoint"),
                )
            else:
                command, owned, legacy = "train", RUN_FILES, ("run.json",)
            args.out = claim(stack, args.out, command, owned=owned, legacy=legacy)
        return _train(args)


def _train(args: argparse.Namespace) -> int:
    import torch
    import torch.distributed as dist

    from sparse_lens.data.token_data import prepare_data, with_idioms
    from sparse_lens.model.transformer import HookedSparseTransformer
    from sparse_lens.training.presets import get_preset
    from sparse_lens.training.sparse import DistInfo, train

    try:
        preset = get_preset(args.preset)
    except ValueError as e:
        raise CLIError(str(e)) from e
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dist_info = DistInfo(rank=int(os.environ.get("RANK", "0")), world_size=world)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if args.device.startswith("cuda") else "gloo")
    device = args.device
    if device.startswith("cuda") and world > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    cache_dir = args.cache_dir.expanduser()
    try:
        out = args.out.expanduser()
        prepared = prepare_data(args.corpus, cache_dir) if dist_info.is_main else None
        dist_info.barrier()
        if prepared is None:  # the other ranks, once the main one has built the cache
            prepared = prepare_data(args.corpus, cache_dir)
        corpus, tokenizer, data = prepared
        mcfg, tcfg = preset.build(
            tokenizer.vocab_size,
            dense=args.dense,
            no_abstopk=args.no_abstopk,
            seed=args.seed,
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            idiom_frac=args.idiom_frac,
            sparse_matmul_max_density=0.0 if args.dense_kernels else None,
        )
        data = with_idioms(data, tokenizer, tcfg.idiom_frac, cache_dir)
    except (FileNotFoundError, ValueError, PermissionError) as e:
        raise CLIError(str(e)) from e
    metadata = {"preset": preset.name, "corpus": corpus.metadata()}
    if args.dense_hf:
        return _train_dense_hf(args, mcfg, tcfg, data, tokenizer, out, metadata, world)
    model = HookedSparseTransformer(mcfg, tokenizer=tokenizer).to(device)
    metadata["tokenizer"] = {
        "vocab_size": tokenizer.vocab_size,
        "eot_id": tokenizer.eot_id,
        "sha256": hashlib.sha256(tokenizer.to_json().encode()).hexdigest(),
    }
    try:
        train(
            model,
            data,
            tcfg,
            out,
            metadata=metadata,
            resume=args.resume,
            dist_info=dist_info,
            progress=not args.quiet,
        )
    except (ValueError, FloatingPointError) as e:
        raise CLIError(str(e)) from e
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    if dist_info.is_main:
        sys.stdout.write(f"model written to {out / 'final'}\n")
    del torch
    return 0


def _train_dense_hf(
    args: argparse.Namespace,
    mcfg: Any,
    tcfg: Any,
    data: Any,
    tokenizer: Any,
    out: Path,
    metadata: dict,
    world: int,
) -> int:
    """``train --dense-hf``: the dense GPT-2 with the preset's depth, width, heads and context."""
    from sparse_lens.training.dense_baseline import DenseConfig, train_dense_hf

    if world > 1:
        raise CLIError("--dense-hf trains on one process; run it without torchrun")
    if args.dense or args.no_abstopk:
        raise CLIError("--dense-hf does not combine with --dense or --no-abstopk")
    try:
        dcfg = DenseConfig(
            n_layers=mcfg.n_layers,
            d_model=mcfg.d_model,
            n_heads=mcfg.n_heads,
            n_ctx=mcfg.n_ctx,
            steps=tcfg.steps,
            batch_size=tcfg.batch_size,
            lr=args.lr or 3e-3,
            seed=args.seed,
        )
        train_dense_hf(
            dcfg,
            data,
            tokenizer,
            out,
            metadata=metadata,
            progress=not args.quiet,
            resume=args.resume,
        )
    except (ValueError, FloatingPointError) as e:
        raise CLIError(str(e)) from e
    sys.stdout.write(f"dense GPT-2 written to {out} (load with sparse_lens.load_dense)\n")
    return 0


def _add_tasks(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tasks", help="task loss and accuracy of a model on the task suite")
    p.add_argument("model_dir", type=Path, help="a model folder (e.g. RUN/final)")
    p.add_argument(
        "--task", action="append", default=None, help="task name (repeatable); default all"
    )
    p.add_argument("--custom", type=Path, default=None, help="a JSONL custom task to add")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="which split")
    p.add_argument("--n", type=POSITIVE_INT, default=200, help="examples per task")
    p.add_argument("--seed", type=SEED, default=0, help="generator seed")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def cmd_tasks(args: argparse.Namespace) -> int:
    import json

    from sparse_lens.model.transformer import HookedSparseTransformer
    from sparse_lens.tasks.task import TASK_NAMES, get_task, load_custom_task, task_table

    try:
        model = HookedSparseTransformer.from_pretrained(args.model_dir).eval()
        if model.tokenizer is None:
            raise CLIError(f"{args.model_dir} has no tokenizer.json")
        tasks = [get_task(n) for n in (args.task or TASK_NAMES)]
        if args.custom is not None:
            tasks.append(load_custom_task(args.custom, model.tokenizer))
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


def _add_prune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="prune a model to the minimal circuit for a task")
    p.add_argument("model_dir", type=Path, help="a model folder (e.g. RUN/final)")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--task", help="task name")
    group.add_argument("--all-tasks", action="store_true", help="every task the model solves")
    p.add_argument(
        "--out", type=out_path, required=True, help="circuit JSON (a folder with --all-tasks)"
    )
    p.add_argument(
        "--target-loss", type=POSITIVE_FLOAT, default=0.15, help="task loss the circuit must reach"
    )
    p.add_argument(
        "--ablation",
        default="mean",
        choices=["mean", "zero", "resample"],
        help="ablation of removed nodes",
    )
    p.add_argument(
        "--freeze-norms", action="store_true", help="freeze RMSNorm scales at the full model's"
    )
    p.add_argument(
        "--search",
        default="optuna",
        choices=["optuna", "grid", "none"],
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
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_prune(args: argparse.Namespace) -> int:
    """Take ``--out`` (a circuit file, or a folder with ``--all-tasks``) before any work."""
    from sparse_lens.tasks.task import TASK_NAMES

    with contextlib.ExitStack() as stack:
        if args.all_tasks:
            owned = (*(f"{n}.json" for n in TASK_NAMES), "summary.json", "optuna.db")
            args.out = claim(stack, args.out, "prune --all-tasks", owned=owned)
        else:
            args.out = claim(stack, args.out, "prune", kind="file")
            _check_replaceable_circuit(args.out)
        return _prune(args)


def _check_replaceable_circuit(path: Path) -> None:
    """An existing ``--out`` file is replaced only if it is a circuit (not someone's file)."""
    import json

    if not path.exists():
        return
    try:
        is_circuit = "circuit_version" in json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, TypeError, OSError):
        is_circuit = False
    if not is_circuit:
        raise CLIError(f"--out {str(path)!r} exists and is not a circuit file; pick another name")


def _prune(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    import math
    import time

    import optuna
    import torch

    from sparse_lens.circuits.cleanup import parse_stages
    from sparse_lens.circuits.faithfulness import faithfulness_report
    from sparse_lens.circuits.masks import PruneConfig, make_ablation
    from sparse_lens.circuits.prune_task import prune_task
    from sparse_lens.data.token_data import model_token_data
    from sparse_lens.files.atomic import atomic_write_text
    from sparse_lens.model.transformer import HookedSparseTransformer
    from sparse_lens.tasks.task import TASK_NAMES, get_task

    if not args.verbose:  # one line per trial is noise next to the progress bar
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    cache_dir = args.cache_dir.expanduser()
    method = "none" if args.no_search else args.search
    try:
        pcfg = PruneConfig(
            target_loss=args.target_loss,
            ablation=args.ablation,
            freeze_norms=args.freeze_norms,
            steps=args.steps,
            tie_qk=args.tie_qk,
            seed=args.seed,
        )
        cleanup = parse_stages(args.cleanup)
        scfg = _search_config(args)
        if args.seeds < 1 or args.cleanup_evals < 1:
            raise CLIError(
                f"--seeds and --cleanup-evals must be >= 1, got {args.seeds}, {args.cleanup_evals}"
            )
        tasks = [get_task(args.task)] if args.task else [get_task(n) for n in TASK_NAMES]
        model = HookedSparseTransformer.from_pretrained(args.model_dir).eval()
        if model.tokenizer is None:
            raise CLIError(f"{args.model_dir} has no tokenizer.json")
        data = model_token_data(model, args.corpus, cache_dir)
    except (FileNotFoundError, ValueError, PermissionError) as e:
        raise CLIError(str(e)) from e
    windows = data.sample(64, model.cfg.n_ctx, torch.Generator().manual_seed(args.seed))
    summary = {}
    for task in tasks:
        start = time.perf_counter()
        try:
            circuit = prune_task(
                model,
                task,
                windows,
                pcfg,
                search=method,
                search_cfg=scfg,
                cleanup=cleanup,
                seeds=args.seeds,
                attribution=True,
                cleanup_evals=args.cleanup_evals,
                cache_dir=cache_dir,
                progress=not args.quiet,
            )
        except ValueError as e:
            if args.all_tasks:
                summary[task.name] = {"skipped": str(e)}
                continue
            raise CLIError(str(e)) from e
        circuit.extra["prune_seconds"] = time.perf_counter() - start
        circuit.extra["model_dir"] = str(args.model_dir.resolve())
        if args.faithfulness:
            abl = make_ablation(pcfg.ablation, model, windows, cache_dir=cache_dir)
            chosen = dataclasses.replace(pcfg, **circuit.hparams["chosen"])
            circuit.extra["faithfulness"] = faithfulness_report(
                model, circuit, task, abl, chosen, windows
            )
        path = args.out / f"{task.name}.json" if args.all_tasks else args.out
        circuit.save(path)
        for stage in circuit.extra.get("stages", []):
            logger.info(
                "%s: after %s %d nodes, %d edges, val loss %.3f, test loss %s",
                task.name,
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
                task.name,
                a["nodes"],
                a["edges"],
                a["learned_over_attribution_nodes"],
            )
        summary[task.name] = {
            "nodes": circuit.n_nodes,
            "edges": circuit.n_edges,
            "loss": circuit.loss,
            "test_loss": circuit.test_loss,
            "calibrated_loss": circuit.calibrated_loss,
            "seconds": circuit.extra["prune_seconds"],
            "file": str(path),
        }
        sys.stdout.write(circuit.summary() + f" -> {path}\n")
    if args.all_tasks:
        edges = [r["edges"] for r in summary.values() if "edges" in r]
        geo = math.exp(sum(math.log(max(e, 1)) for e in edges) / len(edges)) if edges else None
        table = {"tasks": summary, "geometric_mean_edges": geo, "n_circuits": len(edges)}
        atomic_write_text(args.out / "summary.json", json.dumps(table, indent=2) + "\n")
        sys.stdout.write(f"{'task':30s} {'nodes':>6s} {'edges':>7s} {'loss':>7s}\n")
        for name, r in summary.items():
            if "edges" in r:
                sys.stdout.write(f"{name:30s} {r['nodes']:6d} {r['edges']:7d} {r['loss']:7.3f}\n")
            else:
                sys.stdout.write(f"{name:30s} skipped: {r['skipped']}\n")
        if geo is not None:
            sys.stdout.write(f"geometric mean of edges over {len(edges)} circuits: {geo:.1f}\n")
    return 0


def _search_config(args: argparse.Namespace) -> Any:
    """The Optuna settings of ``prune``; the default storage is an SQLite file beside --out."""
    from sparse_lens.circuits.hparam_search import SearchConfig

    try:
        low, high = (int(x) for x in args.epochs.split(","))
    except ValueError as e:
        raise CLIError(f"--epochs must be LOW,HIGH integers, got {args.epochs!r}") from e
    storage = args.storage
    if storage is None:
        out = args.out.expanduser().resolve()
        db = out / "optuna.db" if args.all_tasks else out.with_suffix(".optuna.db")
        storage = f"sqlite:///{db}"
    return SearchConfig(
        trials=args.trials,
        budget_minutes=float(args.budget_minutes),
        epochs=(low, high),
        seed=args.seed,
        storage=storage,
    )


Adder = Callable[[argparse._SubParsersAction], None]
Command = Callable[[argparse.Namespace], int]
ADDERS: tuple[Adder, ...] = (_add_train, _add_tasks, _add_prune)
COMMANDS: dict[str, Command] = {"train": cmd_train, "tasks": cmd_tasks, "prune": cmd_prune}


def build_parser(adders: Sequence[Adder] = ADDERS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparse-lens", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in adders:
        add(sub)
    return parser


def main(
    argv: Sequence[str] | None = None,
    adders: Sequence[Adder] = ADDERS,
    commands: dict[str, Command] = COMMANDS,
) -> int:
    """Run one command. ``analyses.cli.main`` (the installed ``sparse-lens``) adds ``report``, ``demo``
    and the bridge commands on top of these, which cannot import ``analyses`` themselves."""
    parser = build_parser(adders)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        return commands[args.command](args)
    except CLIError as e:
        sys.stderr.write(f"sparse-lens {args.command}: error: {e}\n")
        return 2


def entry() -> None:
    sys.exit(main())
