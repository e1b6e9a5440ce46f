"""``sparse-lens import-oai SRC --out DIR [--tokenizer DIR]``.

Reads a model as OpenAI publishes it (a blob folder, ``beeg_config.json`` + ``final_model.pt``,
or a Hugging Face snapshot of ``openai/circuit-sparsity``, ``config.json`` + weights, whose
Python files are never run) and the tinypython tokenizer files (``vocab.bpe`` +
``encoder.json``; default: in ``SRC``), and writes an ordinary sparse_lens model folder
(``model.safetensors`` + ``config.json`` + ``tokenizer.json``; ``config.json`` lists the source
config keys dropped and why). It then lists the task-suite candidates that are not single tokens
of that vocabulary (those tasks drop such examples). ``--out`` must be new or empty, or a folder
an earlier ``import-oai`` wrote (``files.outputs.claim_output``): nothing of anyone else's is
overwritten.

``sparse-lens import-oai-circuit VIZ_DATA --model DIR --task NAME --out FILE [--faithfulness]``
turns a circuit OpenAI published (``viz_data.pt``) into a circuit JSON of the imported model,
with mean-ablation values over pretraining windows (``--corpus``, default the standard library,
tokenised with the model's tokenizer) and optionally our faithfulness report.
"""

import argparse
import contextlib
import sys
from pathlib import Path

from analyses.cli.options import (
    DEFAULT_CACHE,
    POSITIVE_INT,
    CLIError,
    cache_path,
    check_replaceable_circuit,
    claim,
    load_model,
    out_path,
)

# The library (and torch) is imported inside the handlers, when a command runs: `sparse-lens
# --help` imports this module and stays torch-free (tests/analyses/cli/test_parser.py).


def add_import_oai(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-oai", help="import an OpenAI circuit_sparsity model folder (beeg_config.json)"
    )
    p.set_defaults(handler=cmd_import_oai)
    p.add_argument(
        "src",
        type=Path,
        help="blob folder (beeg_config.json, final_model.pt) or Hugging Face snapshot folder",
    )
    p.add_argument("--out", type=out_path, required=True, help="new model folder to write")
    p.add_argument(
        "--tokenizer",
        type=Path,
        default=None,
        help="folder with the tinypython vocab.bpe and encoder.json (default: SRC)",
    )


def cmd_import_oai(args: argparse.Namespace) -> int:
    """``sparse-lens import-oai``: take ``--out`` (``claim``: a new or empty folder, or one an
    earlier ``import-oai`` wrote; locked) before any work, then convert; returns the exit code.

    Raises:
        CLIError: ``--out`` is refused (a file, a folder holding other files, a bad path, busy).
    """
    from sparse_lens.model.checkpoint import MODEL_FILES

    with contextlib.ExitStack() as stack:
        out = claim(stack, args.out, "import-oai", owned=MODEL_FILES, legacy=())
        return _import_oai(args, out)


def _import_oai(args: argparse.Namespace, out: Path) -> int:
    """``import-oai`` into the held folder ``out``; returns the exit code.

    Raises:
        CLIError: the import fails on a missing file or a bad (or unsafe) checkpoint (the
            message is the cause's).
    """
    from sparse_lens.model.checkpoint import save_into
    from sparse_lens.openai_models.weights import import_oai
    from sparse_lens.tasks.task import TASK_NAMES, get_task, non_single_candidates

    try:
        got = import_oai(args.src.expanduser(), args.tokenizer)
    except (FileNotFoundError, ValueError) as e:  # UnsafeCheckpointError is a ValueError
        raise CLIError(str(e)) from e
    model = got.model
    record = {"source": got.source, "path": str(args.src), "dropped_config_keys": got.dropped}
    save_into(model, out, imported_from=record)
    cfg = model.cfg
    for key, why in got.dropped.items():
        sys.stdout.write(f"dropped config key {key}: {why}\n")
    sys.stdout.write(
        f"imported {got.source} {args.src} -> {out}: {cfg.n_layers} layers, d_model {cfg.d_model}, "
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


def add_import_oai_circuit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-oai-circuit", help="import an OpenAI viz_data.pt circuit as a circuit JSON"
    )
    p.set_defaults(handler=cmd_import_oai_circuit)
    p.add_argument("viz_data", type=Path, help="OpenAI's viz_data.pt")
    p.add_argument("--model", type=Path, required=True, help="the imported model's folder")
    p.add_argument("--task", required=True, help="our task name (e.g. single_double_quote)")
    p.add_argument("--out", type=out_path, required=True, help="circuit JSON to write")
    p.add_argument("--corpus", default=None, help="pretraining text for mean ablation (stdlib)")
    p.add_argument("--cache-dir", type=out_path, default=DEFAULT_CACHE, help="token/means cache")
    p.add_argument("--faithfulness", action="store_true", help="add the faithfulness report")
    p.add_argument("--n", type=POSITIVE_INT, default=128, help="task examples for the report")
    p.add_argument(
        "--steps", type=POSITIVE_INT, default=200, help="mask steps of the report's controls"
    )


def cmd_import_oai_circuit(args: argparse.Namespace) -> int:
    """``sparse-lens import-oai-circuit``: take ``--out`` (``claim``: a new file, or a circuit
    file; locked) and check ``--cache-dir`` before any work, then import; returns the exit code.

    Raises:
        CLIError: ``--out`` is refused (someone's other file, a folder, a bad path, busy), or
            ``--cache-dir`` cannot hold a cache.
    """
    with contextlib.ExitStack() as stack:
        args.out = claim(
            stack,
            args.out,
            "import-oai-circuit",
            kind="file",
            check_existing=check_replaceable_circuit,
        )
        args.cache_dir = cache_path(args.cache_dir)
        return _import_oai_circuit(args)


def _import_oai_circuit(args: argparse.Namespace) -> int:
    """``import-oai-circuit`` into the held file ``args.out``; returns the exit code.

    Raises:
        CLIError: the model has no ``tokenizer.json``, or a file is missing or a value is bad
            (the message is the cause's).
    """
    from sparse_lens.circuits.ablation import ablation_means, make_ablation
    from sparse_lens.circuits.faithfulness import faithfulness_report, verdict_lines
    from sparse_lens.circuits.masks import PruneConfig
    from sparse_lens.data.token_data import model_token_data
    from sparse_lens.openai_models.viz_circuit import circuit_from_viz_data, load_viz_data
    from sparse_lens.tasks.selection import other_task
    from sparse_lens.tasks.task import get_task

    cache = args.cache_dir.expanduser()
    try:
        task = get_task(args.task)
        model = load_model(args.model, "--model")
        viz = load_viz_data(args.viz_data)
        data = model_token_data(model, args.corpus, cache)
        n_ctx = min(model.cfg.n_ctx, 256)
        data.check_fits(n_ctx)
        windows = data.val_windows(64, n_ctx)
        means = ablation_means(model, windows, cache)
        circuit = circuit_from_viz_data(viz, model, means, task=task.name)
        if args.faithfulness:
            abl = make_ablation("mean", model, windows, cache_dir=cache)
            other = other_task(model, task.name, min(args.n, 32))
            circuit.extra["faithfulness"] = faithfulness_report(
                model, circuit, task, abl, PruneConfig(steps=args.steps), windows, n=args.n,
                other_task=other,
            )  # fmt: skip
    except (FileNotFoundError, ValueError) as e:
        raise CLIError(str(e)) from e
    circuit.extra["model_dir"] = str(args.model.resolve())
    circuit.save(args.out)
    sys.stdout.write(circuit.summary() + f" -> {args.out}\n")
    edges = circuit.extra["oai_file_edges"]
    sys.stdout.write(
        f"OpenAI's file: {circuit.extra['oai_file_nodes']} nodes, "
        f"{'no pair_data_connections' if edges is None else f'{edges} edges'}; ours: "
        f"{circuit.n_nodes} nodes, {circuit.n_edges} edges (nonzero weights between kept "
        "nodes of one block)\n"
    )
    samples = circuit.extra.get("oai_task_samples")
    if samples:
        sys.stdout.write(
            f"on the file's {samples['n']} task samples the circuit's top token at the answer "
            f"position is the full model's in {samples['circuit_top1_agrees']:.0%}\n"
        )
    report = circuit.extra.get("faithfulness")
    if report:
        lines = verdict_lines(report)
        sys.stdout.write(
            "faithfulness on our task data:\n"
            + "".join(f"  {line}\n" for line in lines)
            + f"(full report in {args.out})\n"
        )
    return 0
