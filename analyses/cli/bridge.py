"""``sparse-lens fit-bridges``, ``sparse-lens train-bridged`` and ``sparse-lens bridge-report``.

``fit-bridges --sparse MODEL --dense DIR --out DIR``: bridges for an already trained sparse model.
``train-bridged --dense DIR --preset NAME --out DIR``: the sparse model and its bridges trained
together, on the preset's data (its idiom share included). Both write ``bridges/``
(``Bridges.save``), ``bridge_metrics.jsonl`` and ``bridge_eval.json`` (per-site NMSE and hybrid KL
on validation windows; written last, it marks the run finished); ``train-bridged`` also writes the
sparse model to ``final/``. While a run is unfinished its whole state sits in
``checkpoint/trainer.pt`` (every ``--checkpoint-every`` steps); ``--resume`` continues it.
``bridge-report --sparse MODEL --dense DIR --bridges DIR --task NAME --out DIR``: steering,
patching and attention sinks of both models side by side through the bridges
(``analyses.bridge_report``), as ``bridge_{task}.html`` and ``bridge_{task}.json``.
"""

import argparse
import contextlib
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from analyses.cli.options import (
    DEFAULT_CACHE,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    SEED,
    CLIError,
    claim,
    load_dense_model,
    load_model,
    number,
    out_path,
)
from sparse_lens.vocab import PRESET_NAMES

# The library (and torch) is imported inside the handlers, when a command runs: `sparse-lens
# --help` imports this module and stays torch-free (tests/analyses/cli/test_parser.py).

CHECKPOINT = Path("checkpoint") / "trainer.pt"  # the loop's state while a run is unfinished


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dense", type=Path, required=True, help="dense model folder (--dense-hf)")
    p.add_argument("--out", type=out_path, required=True, help="output folder")
    p.add_argument("--steps", type=POSITIVE_INT, default=None, help="training steps")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=None, help="sequences per step")
    p.add_argument(
        "--bridge-lr", type=POSITIVE_FLOAT, default=3e-3, help="Adam learning rate of bridges"
    )
    p.add_argument(
        "--afrac",
        type=number(float, 0, 1, open_low=True),
        default=0.25,
        help="encoder AbsTopK fraction",
    )
    p.add_argument("--no-hybrid", action="store_true", help="NMSE only (skip the KL passes)")
    p.add_argument("--corpus", default=None, help="corpus (default: the stdlib)")
    p.add_argument(
        "--cache-dir", type=out_path, default=DEFAULT_CACHE, help="tokenizer/token cache"
    )
    p.add_argument("--seed", type=SEED, default=0, help="seed")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument(
        "--checkpoint-every",
        type=POSITIVE_INT,
        default=50,
        help="steps between checkpoints of the run",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_fit_bridges(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit-bridges", help="fit bridges between a trained sparse and dense model")
    p.set_defaults(handler=cmd_fit_bridges)
    p.add_argument("--sparse", type=Path, required=True, help="sparse model folder (RUN/final)")
    _common(p)


def add_train_bridged(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-bridged", help="train a sparse model jointly with its bridges")
    p.set_defaults(handler=cmd_train_bridged)
    p.add_argument("--preset", required=True, help=f"one of {list(PRESET_NAMES)}")
    _common(p)


def _finished(args: argparse.Namespace) -> bool:
    """Whether ``--out`` holds a finished run: refused without ``--resume``, nothing to do
    with it."""
    done = (args.out / "bridge_eval.json").exists()
    if done and not args.resume:
        raise CLIError(f"{args.out} already holds a run; pass --resume or pick a new folder")
    if done:
        sys.stdout.write(f"{args.out} holds a finished run; nothing to resume\n")
    return done


def _checkpointing(args: argparse.Namespace):  # noqa: ANN202
    from sparse_lens.bridges.train import Checkpointing

    try:
        return Checkpointing(
            path=args.out / CHECKPOINT, every=args.checkpoint_every, resume=args.resume
        )
    except ValueError as e:
        raise CLIError(str(e)) from e


def _load(args: argparse.Namespace) -> tuple:
    from sparse_lens.data.token_data import prepare_data

    dense = load_dense_model(args.dense)
    try:
        _, tokenizer, data = prepare_data(args.corpus, args.cache_dir.expanduser())
        args.out.mkdir(parents=True, exist_ok=True)
    except (FileNotFoundError, ValueError, OSError) as e:
        raise CLIError(str(e)) from e
    return dense, tokenizer, data


def _finish(args: argparse.Namespace, dense, sparse, bridges, data, records: list) -> None:  # noqa: ANN001
    from sparse_lens.bridges.train import evaluate_bridges
    from sparse_lens.files.atomic import atomic_write_json, atomic_write_text

    bridges.save(args.out / "bridges")
    atomic_write_text(
        args.out / "bridge_metrics.jsonl", "".join(json.dumps(r) + "\n" for r in records)
    )
    windows = data.val_windows(16, sparse.cfg.n_ctx)
    result = evaluate_bridges(dense, sparse, bridges, windows)
    atomic_write_json(args.out / "bridge_eval.json", result)  # written last: "finished"
    shutil.rmtree((args.out / CHECKPOINT).parent, ignore_errors=True)
    sys.stdout.write(
        f"{'site':28s} {'nmse d2s':>9s} {'nmse s2d':>9s} {'KL d2s':>8s} {'KL s2d':>8s}\n"
    )
    for site, v in result["per_site"].items():
        sys.stdout.write(
            f"{site:28s} {v['nmse_d2s']:9.3f} {v['nmse_s2d']:9.3f} {v['kl_d2s']:8.3f} "
            f"{v['kl_s2d']:8.3f}\n"
        )
    sys.stdout.write(
        f"sparse CE {result['ce']:.3f}, dense CE {result['dense_ce']:.3f}; "
        f"bridges written to {args.out / 'bridges'}\n"
    )


BRIDGE_FILES = ("bridges", "bridge_metrics.jsonl", "bridge_eval.json", "checkpoint", "final")


def _claimed(run: Callable[[argparse.Namespace], int], command: str) -> Callable:
    """``run`` with ``--out`` checked, locked and taken first (``sparse_lens.files.outputs``)."""

    def cmd(args: argparse.Namespace) -> int:
        with contextlib.ExitStack() as stack:
            args.out = claim(
                stack,
                args.out,
                command,
                owned=BRIDGE_FILES,
                legacy=("bridge_eval.json", "checkpoint"),
            )
            return run(args)

    return cmd


def _fit_bridges(args: argparse.Namespace) -> int:
    from sparse_lens.bridges.maps import BridgeConfig, Bridges, check_pair
    from sparse_lens.bridges.train import fit_bridges

    if _finished(args):
        return 0
    dense, _, data = _load(args)
    sparse = load_model(args.sparse, "--sparse", need_tokenizer=False)
    try:
        check_pair(dense, sparse)
        bcfg = BridgeConfig(
            d_dense=dense.cfg.d_model,
            d_sparse=sparse.cfg.d_model,
            n_layers=sparse.cfg.n_layers,
            afrac=args.afrac,
        )
    except (FileNotFoundError, ValueError) as e:
        raise CLIError(str(e)) from e
    bridges = Bridges(bcfg)
    try:
        records = fit_bridges(
            dense,
            sparse,
            bridges,
            data,
            steps=args.steps or 200,
            batch_size=args.batch_size or 8,
            lr=args.bridge_lr,
            hybrid=not args.no_hybrid,
            seed=args.seed,
            progress=not args.quiet,
            checkpoint=_checkpointing(args),
        )
    except ValueError as e:
        raise CLIError(str(e)) from e
    _finish(args, dense, sparse, bridges, data, records)
    return 0


def _train_bridged(args: argparse.Namespace) -> int:
    from sparse_lens.bridges.maps import BridgeConfig, Bridges, check_pair
    from sparse_lens.bridges.train import train_bridged
    from sparse_lens.data.token_data import with_idioms
    from sparse_lens.model.transformer import HookedSparseTransformer
    from sparse_lens.training.presets import get_preset

    if _finished(args):
        return 0
    dense, tokenizer, data = _load(args)
    try:
        preset = get_preset(args.preset)
        mcfg, tcfg = preset.build(
            tokenizer.vocab_size, seed=args.seed, steps=args.steps, batch_size=args.batch_size
        )
        # the preset's training data: its share of generated idioms too (sparse_lens.data.idioms)
        data = with_idioms(
            data, tokenizer, preset.idioms(), args.cache_dir.expanduser(), kinds=preset.idiom_kinds
        )
        sparse = HookedSparseTransformer(mcfg, tokenizer=tokenizer)
        check_pair(dense, sparse)
        bridges = Bridges(
            BridgeConfig(
                d_dense=dense.cfg.d_model,
                d_sparse=mcfg.d_model,
                n_layers=mcfg.n_layers,
                afrac=args.afrac,
            )
        )
    except ValueError as e:
        raise CLIError(str(e)) from e
    try:
        records = train_bridged(
            dense,
            sparse,
            bridges,
            data,
            tcfg,
            bridge_lr=args.bridge_lr,
            hybrid=not args.no_hybrid,
            progress=not args.quiet,
            checkpoint=_checkpointing(args),
        )
    except ValueError as e:
        raise CLIError(str(e)) from e
    sparse.save_pretrained(args.out / "final")
    _finish(args, dense, sparse, bridges, data, records)
    return 0


cmd_fit_bridges = _claimed(_fit_bridges, "fit-bridges")
cmd_train_bridged = _claimed(_train_bridged, "train-bridged")


def add_bridge_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bridge-report", help="steering, patching and sinks side by side through bridges"
    )
    p.set_defaults(handler=cmd_bridge_report)
    p.add_argument("--sparse", type=Path, required=True, help="sparse model folder")
    p.add_argument("--dense", type=Path, required=True, help="dense model folder")
    p.add_argument("--bridges", type=Path, required=True, help="bridges folder")
    p.add_argument("--task", required=True, help="task name")
    p.add_argument("--circuit", type=Path, default=None, help="pick the steered node from it")
    p.add_argument("--out", type=out_path, required=True, help="output folder")
    p.add_argument("--n", type=POSITIVE_INT, default=64, help="task examples")
    p.add_argument("--corpus", default=None, help="corpus (default: the stdlib)")
    p.add_argument(
        "--cache-dir", type=out_path, default=DEFAULT_CACHE, help="tokenizer/token cache"
    )


def cmd_bridge_report(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        args.out = claim(stack, args.out, "bridge-report", owned=("bridge_*.html", "bridge_*.json"))
        return _bridge_report(args)


def _bridge_report(args: argparse.Namespace) -> int:
    from analyses.bridge_report import bridge_page_data
    from analyses.bridge_view import render_bridge_page
    from sparse_lens.bridges.maps import Bridges
    from sparse_lens.circuits.circuit import Circuit
    from sparse_lens.data.token_data import prepare_data
    from sparse_lens.files.atomic import atomic_write_text
    from sparse_lens.tasks.task import get_task

    try:
        task = get_task(args.task)
        sparse = load_model(args.sparse, "--sparse")
        dense = load_dense_model(args.dense)
        bridges = Bridges.load(args.bridges)
        circuit = Circuit.load(args.circuit, model=sparse) if args.circuit else None
        _, _, data = prepare_data(args.corpus, args.cache_dir.expanduser())
        windows = data.val_windows(16, sparse.cfg.n_ctx)
        result = bridge_page_data(dense, sparse, bridges, task, windows, circuit=circuit, n=args.n)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise CLIError(str(e).strip("'\"")) from e
    page = args.out / f"bridge_{task.name}.html"
    atomic_write_text(page, render_bridge_page(result))
    s = result.steering
    summary = {
        "bridges": result.bridges,
        "steering": {
            "node": s.node,
            "site": s.site,
            "strengths": list(s.strengths),
            "p_target": list(s.p_target),
            "p_target_random": list(s.p_target_random),
            "p_presented": list(s.p_presented),
            "n_pairs": s.n_pairs,
        },
    }
    atomic_write_text(args.out / f"bridge_{task.name}.json", json.dumps(summary, indent=2))
    sys.stdout.write(
        f"steering {s.node}: P(target) {s.p_target[0]:.3g} -> {s.p_target[-1]:.3g} "
        f"(random control {s.p_target_random[0]:.3g} -> {s.p_target_random[-1]:.3g}); "
        f"page written to {page}\n"
    )
    return 0
