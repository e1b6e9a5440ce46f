"""``sparse-lens explain CIRCUIT [--model M] [--out DIR]``: the circuit card of one circuit,
what every kept node does by stated rules (``sparse_lens.circuits.explain``), written as
``DIR/{circuit stem}.card.json`` and ``.card.md`` (``analyses.card``)."""

import argparse
import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from analyses.cli.options import (
    DEFAULT_CACHE,
    POSITIVE_INT,
    SEED,
    CLIError,
    check_device,
    claim,
    device_name,
    number,
    out_path,
    pair_count,
)
from sparse_lens.vocab import SAMPLE_WINDOWS

if TYPE_CHECKING:  # for annotations only: importing them imports torch
    from sparse_lens.circuits.explain.sample import PretrainingSample
    from sparse_lens.model.transformer import HookedSparseTransformer

CARD_FILES = ("*.card.json", "*.card.md")
DEFAULT_WINDOWS = SAMPLE_WINDOWS  # the one default of explain, report and the demo
DEFAULT_SPLIT = "val"
SAMPLE_SPLITS = ("val", "train")


def add_explain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="circuit card: each kept node's role, by stated rules")
    p.set_defaults(handler=cmd_explain)
    p.add_argument(
        "circuit",
        type=Path,
        help="a circuit JSON written by `sparse-lens prune`",
    )
    p.add_argument(
        "--model", type=Path, default=None, help="model folder (default: the circuit's record)"
    )
    p.add_argument(
        "--out", type=out_path, default=None, help="folder for the card (default: cards/ beside it)"
    )
    p.add_argument(
        "--corpus", default=None, help="pretraining corpus for top contexts (default: the run's)"
    )
    p.add_argument(
        "--cache-dir",
        type=out_path,
        default=DEFAULT_CACHE,
        help="tokenizer/token cache (default: %(default)s)",
    )
    p.add_argument(
        "--split",
        default="test",
        choices=["train", "val", "test"],
        help="task split measured (default: %(default)s)",
    )
    p.add_argument(
        "--examples",
        type=pair_count,
        default=None,
        help="task examples measured (default: the circuit file's test pairs, n_test; else 64)",
    )
    p.add_argument(
        "--windows",
        type=number(int, 0),
        default=DEFAULT_WINDOWS,
        help="pretraining windows for top contexts and the sd unit, as the report's "
        "(0: none; default: %(default)s)",
    )
    p.add_argument(
        "--windows-split",
        default=DEFAULT_SPLIT,
        choices=SAMPLE_SPLITS,
        help="val: the validation split's evenly spaced windows, as the report's; train: "
        "random training windows of --seed (default: %(default)s)",
    )
    p.add_argument(
        "--permutations",
        type=POSITIVE_INT,
        default=999,
        help="permutations per significance test (default: %(default)s)",
    )
    p.add_argument(
        "--seed",
        type=SEED,
        default=0,
        help="seed of the examples, the tests and train windows (default: %(default)s)",
    )
    p.add_argument(
        "--device",
        type=device_name,
        default="cpu",
        help="cpu, cuda or cuda:N (default: %(default)s)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_explain(args: argparse.Namespace) -> int:
    """``sparse-lens explain``: write the card of ``args.circuit``; returns the exit code.

    Raises:
        CLIError: ``--out`` is refused, or the circuit, model or corpus cannot be read or do
            not fit together (the message is the cause's).
    """
    check_device(args.device)
    try:
        model_dir = _model_dir(args)  # before --out is claimed: a wrong CIRCUIT creates nothing
    except (FileNotFoundError, ValueError) as e:
        raise CLIError(str(e)) from e
    out = args.out if args.out is not None else args.circuit.parent / "cards"
    with contextlib.ExitStack() as stack:
        out = claim(stack, out, "explain", owned=CARD_FILES, within=("demo",))
        try:
            path = write_card(args, out, model_dir)
        except (FileNotFoundError, ValueError, PermissionError, KeyError) as e:
            raise CLIError(str(e)) from e
    sys.stdout.write(f"card written to {path} and {path.with_suffix('.json')}\n")
    return 0


def _model_dir(args: argparse.Namespace) -> Path:
    """``--model``, else the model folder the circuit file records.

    Raises:
        FileNotFoundError: nothing is at ``args.circuit``.
        ValueError: ``args.circuit`` is not a circuit file (``read_circuit_dict`` says what it
            is), or no model folder is given or recorded.
    """
    from sparse_lens.circuits.circuit_format import read_circuit_dict

    data = read_circuit_dict(args.circuit)  # a folder or a config.json is named as such
    if args.model is not None:
        return args.model
    extra = data.get("extra")
    recorded = extra.get("model_dir") if isinstance(extra, dict) else None
    if not recorded:
        raise ValueError(f"{args.circuit}: no model folder recorded in the circuit; pass --model")
    return Path(recorded)


def _sample(
    args: argparse.Namespace, model: "HookedSparseTransformer", model_dir: Path
) -> "PretrainingSample | None":
    """``--windows`` pretraining windows of ``--windows-split`` (``load_sample``, as the report
    draws them: the same defaults give the report page's card) with their description; None
    for ``--windows 0``."""
    from sparse_lens.circuits.explain.sample import load_sample
    from sparse_lens.data.token_data import run_info_beside

    if args.windows == 0:
        return None
    return load_sample(
        model,
        corpus=args.corpus,
        run_info=run_info_beside(model_dir),
        cache_dir=args.cache_dir.expanduser(),
        split=args.windows_split,
        n_windows=args.windows,
        seed=args.seed,
    )


def write_card(args: argparse.Namespace, out: Path, model_dir: Path) -> Path:
    """Explain the circuit and write its card into ``out``; returns the Markdown file's path.

    Raises:
        FileNotFoundError, ValueError: as ``Circuit.load``, ``from_pretrained`` or ``explain``.
    """
    from analyses.card import card_markdown
    from analyses.report import examples_for
    from sparse_lens.circuits.circuit import Circuit
    from sparse_lens.circuits.explain import ExplainConfig, explain
    from sparse_lens.files.atomic import atomic_write_json, atomic_write_text
    from sparse_lens.model.transformer import HookedSparseTransformer

    model = HookedSparseTransformer.from_pretrained(model_dir, device=args.device).eval()
    circuit = Circuit.load(args.circuit, model=model)
    sample = _sample(args, model, model_dir)
    cfg = ExplainConfig(
        split=args.split,
        n_examples=examples_for(circuit, args.examples),
        seed=args.seed,
        n_permutations=args.permutations,
    )
    card = explain(
        model,
        circuit,
        windows=sample.windows if sample is not None else None,
        windows_source=sample.description if sample is not None else None,
        config=cfg,
        progress=not args.quiet,
    )
    stem = args.circuit.stem
    atomic_write_json(out / f"{stem}.card.json", card.to_json())
    atomic_write_text(out / f"{stem}.card.md", card_markdown(card))
    return out / f"{stem}.card.md"
