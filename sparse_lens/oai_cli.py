"""``sparse-lens import-oai SRC --out DIR [--tokenizer DIR]`` (registered by ``analyses.cli``).

Reads a model folder as OpenAI publishes it (``beeg_config.json`` + ``final_model.pt``) and the
tinypython tokenizer files (``vocab.bpe`` + ``encoder.json``; default: in ``SRC``), and writes an
ordinary sparse_lens model folder (``model.safetensors`` + ``config.json`` + ``tokenizer.json``).
It then lists the task-suite candidates that are not single tokens of that vocabulary (those
tasks drop such examples). ``--out`` must be new or empty: nothing is overwritten.
"""

import argparse
import sys
from pathlib import Path

from sparse_lens.cli import CLIError


def add_import_oai(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-oai", help="import an OpenAI circuit_sparsity model folder (beeg_config.json)"
    )
    p.add_argument("src", type=Path, help="folder with beeg_config.json and final_model.pt")
    p.add_argument("--out", type=Path, required=True, help="new model folder to write")
    p.add_argument(
        "--tokenizer",
        type=Path,
        default=None,
        help="folder with the tinypython vocab.bpe and encoder.json (default: SRC)",
    )


def cmd_import_oai(args: argparse.Namespace) -> int:
    from sparse_lens.checkpoint import save_pretrained
    from sparse_lens.oai_import import import_oai
    from sparse_lens.tasks import TASK_NAMES, get_task, non_single_candidates

    out = args.out.expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CLIError(f"--out {out} exists and is not an empty folder; pick a new one")
    try:
        model, config = import_oai(args.src.expanduser(), args.tokenizer)
    except (FileNotFoundError, ValueError) as e:  # UnsafeCheckpointError is a ValueError
        raise CLIError(str(e)) from e
    save_pretrained(model, out)
    cfg = model.cfg
    sys.stdout.write(
        f"imported {args.src} -> {out}: {cfg.n_layers} layers, d_model {cfg.d_model}, "
        f"{cfg.n_heads} heads x d_head {cfg.d_head}, d_mlp {cfg.d_mlp}, vocab {cfg.d_vocab}, "
        f"sinks {cfg.attn_sinks}, bigram table {cfg.use_bigram_table}, "
        f"positions {cfg.positional_embedding}, afrac {cfg.afrac}\n"
    )
    assert model.tokenizer is not None
    missing = non_single_candidates(model.tokenizer, [get_task(n) for n in TASK_NAMES])
    if missing:
        for name, cands in missing.items():
            sys.stdout.write(f"task {name}: candidates not single tokens: {cands}\n")
    else:
        sys.stdout.write("every task candidate is a single token of this vocabulary\n")
    return 0
