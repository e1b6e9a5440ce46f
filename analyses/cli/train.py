"""``sparse-lens train --preset NAME --out DIR [--corpus PATH] [--steps N] [--resume] [--dense]``.

Trains a weight-sparse model (or ``--dense-hf``: a standard GPT-2 of the preset's shape); run it
under ``torchrun --nproc_per_node N -m analyses.cli train ...`` for DDP. Errors in the input (a
corpus path that does not exist, an empty corpus, an unknown preset, an unwritable output folder)
are reported before any training starts, with exit status 2. :func:`train_run` is the command
without its parser (the demo calls it).
"""

import argparse
import contextlib
import dataclasses
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analyses.cli.options import (
    DEFAULT_CACHE,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    SEED,
    CLIError,
    check_device,
    claim,
    device_name,
    number,
    out_path,
)
from sparse_lens.vocab import PRESET_NAMES

if TYPE_CHECKING:  # annotations only: the library imports torch
    from sparse_lens.data.idioms import IdiomKind
    from sparse_lens.training.loop import DistInfo
    from sparse_lens.training.presets import Preset

# The library (and torch) is imported inside the handlers, when a command runs: `sparse-lens
# --help` imports this module and stays torch-free (tests/analyses/cli/test_parser.py).

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


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainSettings:
    """The options of ``sparse-lens train`` (same names, same defaults)."""

    preset: str
    out: Path
    corpus: str | None = None
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    idiom_frac: float | None = None
    idiom_kinds: str | None = None
    resume: bool = False
    dense: bool = False
    no_abstopk: bool = False
    dense_kernels: bool = False
    dense_hf: bool = False
    seed: int = 0
    device: str = "cpu"
    cache_dir: Path = DEFAULT_CACHE
    quiet: bool = False
    # Library use only (no flag): a Preset object trained in place of the named one (a
    # benchmark's recipe variant), and further TrainConfig fields (e.g. anneal_end).
    custom_preset: "Preset | None" = None
    train_overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "TrainSettings":
        given = vars(args)
        return cls(**{f.name: given[f.name] for f in dataclasses.fields(cls) if f.name in given})


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a weight-sparse (or dense) model")
    p.set_defaults(handler=cmd_train)
    p.add_argument("--preset", required=True, help=f"one of {list(PRESET_NAMES)}")
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
    p.add_argument(
        "--idiom-kinds",
        default=None,
        help="comma-separated idiom kinds: literals, statements (default: the preset's)",
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
    p.add_argument("--device", type=device_name, default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument(
        "--cache-dir", type=out_path, default=DEFAULT_CACHE, help="tokenizer/token cache"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_train(args: argparse.Namespace) -> int:
    """Take ``--out`` (checked, locked, not foreign; rank 0 only) before any work, then train.

    Raises:
        CLIError: ``--out`` is refused, ``--resume`` names a folder with no run, or training
            refuses its input (``train_run``).
    """
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
            if args.resume and not any((args.out / name).exists() for name in legacy):
                raise CLIError(
                    f"--resume: {str(args.out)!r} holds no run to resume (no "
                    f"{' or '.join(legacy)}); leave out --resume to start one there"
                )
        train_run(TrainSettings.from_args(args))
        return 0


def train_run(s: TrainSettings) -> None:
    """Train (or with ``s.resume`` continue) the run in ``s.out``; the caller holds ``s.out``.
    Under ``torchrun`` (``WORLD_SIZE`` > 1) this process is one DDP rank.

    Raises:
        CLIError: bad input (preset, corpus, settings), found before training starts, or a
            training run that cannot go on (a different run in ``s.out``, a NaN loss).
    """
    import torch.distributed as dist

    from sparse_lens.model.transformer import HookedSparseTransformer
    from sparse_lens.training.sparse import train

    preset, kinds = _preset_and_kinds(s)
    check_device(s.device)
    dist_info, device = _start_rank(s.device)
    world = dist_info.world_size
    out = s.out.expanduser()
    corpus, tokenizer, data, mcfg, tcfg = _prepare(s, preset, kinds, dist_info)
    metadata = {"preset": preset.name, "corpus": corpus.metadata()}
    if s.dense_hf:
        _train_dense_hf(s, mcfg, tcfg, data, tokenizer, out, metadata, world)
        return
    model = HookedSparseTransformer(mcfg, tokenizer=tokenizer).to(device)
    metadata["tokenizer"] = {
        "vocab_size": tokenizer.vocab_size,
        "eot_id": tokenizer.eot_id,
        "sha256": tokenizer.sha256(),
    }
    try:
        train(
            model,
            data,
            tcfg,
            out,
            metadata=metadata,
            resume=s.resume,
            dist_info=dist_info,
            progress=not s.quiet,
        )
    except (ValueError, FloatingPointError) as e:
        raise CLIError(str(e)) from e
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    if dist_info.is_main:
        sys.stdout.write(f"model written to {out / 'final'}\n")


def _preset_and_kinds(s: TrainSettings) -> tuple[Any, tuple["IdiomKind", ...]]:
    """The preset named by ``s.preset`` and the idiom kinds to mix in (``--idiom-kinds``, else
    the preset's).

    Raises:
        CLIError: an unknown preset or idiom kind, or ``--idiom-kinds`` for a preset that mixes
            in no idioms (without ``--idiom-frac``).
    """
    from sparse_lens.data.idioms import check_kinds
    from sparse_lens.training.presets import get_preset

    try:
        preset = s.custom_preset or get_preset(s.preset)
        kinds = preset.idiom_kinds
        if s.idiom_kinds is not None:
            kinds = check_kinds(tuple(k.strip() for k in s.idiom_kinds.split(",")))
            if preset.idioms(s.idiom_frac) == 0:
                raise ValueError(
                    f"--idiom-kinds {s.idiom_kinds} has no effect: preset {preset.name!r} mixes "
                    "in no idioms; add --idiom-frac (e.g. 0.35)"
                )
    except ValueError as e:
        raise CLIError(str(e)) from e
    return preset, kinds


def _start_rank(device: str) -> tuple["DistInfo", str]:
    """This process's rank (from ``torchrun``'s ``RANK`` and ``WORLD_SIZE``; the process group
    started when there are several) and its device (``cuda:LOCAL_RANK`` for a CUDA rank)."""
    import torch.distributed as dist

    from sparse_lens.training.loop import DistInfo

    world = int(os.environ.get("WORLD_SIZE", "1"))
    dist_info = DistInfo(rank=int(os.environ.get("RANK", "0")), world_size=world)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    if device.startswith("cuda") and world > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return dist_info, device


def _prepare(
    s: TrainSettings, preset: Any, kinds: tuple["IdiomKind", ...], dist_info: "DistInfo"
) -> tuple[Any, Any, Any, Any, Any]:
    """``(corpus, tokenizer, data, model config, train config)`` of the run: the corpus
    tokenised (the main rank builds the cache, the others then read it), the preset built for
    its vocabulary with ``s``'s overrides, and the preset's share of idioms mixed in.

    Raises:
        CLIError: the corpus is missing or empty, a setting is out of range, or the cache
            folder cannot be written.
    """
    from sparse_lens.data.token_data import prepare_data, with_idioms

    cache_dir = s.cache_dir.expanduser()
    try:
        prepared = prepare_data(s.corpus, cache_dir) if dist_info.is_main else None
        dist_info.barrier()
        if prepared is None:  # the other ranks, once the main one has built the cache
            prepared = prepare_data(s.corpus, cache_dir)
        corpus, tokenizer, data = prepared
        mcfg, tcfg = preset.build(
            tokenizer.vocab_size,
            dense=s.dense,
            no_abstopk=s.no_abstopk,
            seed=s.seed,
            steps=s.steps,
            batch_size=s.batch_size,
            lr=s.lr,
            sparse_matmul_max_density=0.0 if s.dense_kernels else None,
            **s.train_overrides,
        )
        data = with_idioms(data, tokenizer, preset.idioms(s.idiom_frac), cache_dir, kinds=kinds)
    except (FileNotFoundError, ValueError, PermissionError) as e:
        raise CLIError(str(e)) from e
    return corpus, tokenizer, data, mcfg, tcfg


def _train_dense_hf(
    s: TrainSettings,
    mcfg: Any,
    tcfg: Any,
    data: Any,
    tokenizer: Any,
    out: Path,
    metadata: dict,
    world: int,
) -> None:
    """``train --dense-hf``: the dense GPT-2 with the preset's depth, width, heads and context."""
    from sparse_lens.training.dense_baseline import DenseConfig, train_dense_hf

    if world > 1:
        raise CLIError("--dense-hf trains on one process; run it without torchrun")
    if s.dense or s.no_abstopk:
        raise CLIError("--dense-hf does not combine with --dense or --no-abstopk")
    try:
        dcfg = DenseConfig(
            n_layers=mcfg.n_layers,
            d_model=mcfg.d_model,
            n_heads=mcfg.n_heads,
            n_ctx=mcfg.n_ctx,
            steps=tcfg.steps,
            batch_size=tcfg.batch_size,
            lr=s.lr or 3e-3,
            seed=s.seed,
        )
        train_dense_hf(
            dcfg,
            data,
            tokenizer,
            out,
            metadata=metadata,
            progress=not s.quiet,
            resume=s.resume,
        )
    except (ValueError, FloatingPointError) as e:
        raise CLIError(str(e)) from e
    sys.stdout.write(f"dense GPT-2 written to {out} (load with sparse_lens.load_dense)\n")
