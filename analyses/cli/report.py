"""``sparse-lens report RUN_DIR|CIRCUIT_JSON --out DIR``: the offline HTML report of a run's
circuits (or of one circuit), built by ``analyses.report_sources.build_report``."""

import argparse
import contextlib
import sys
from pathlib import Path

from analyses.cli.options import (
    DEFAULT_CACHE,
    POSITIVE_INT,
    CLIError,
    check_device,
    claim,
    device_name,
    out_path,
    pair_count,
)
from sparse_lens.vocab import SAMPLE_WINDOWS

# The report's modules (and torch) are imported inside the handler, when the command runs:
# `sparse-lens --help` imports this module and stays torch-free (tests/analyses/cli/test_parser.py).

REPORT_FILES = ("index.html", "circuits", "figures")


def add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="offline HTML report of a run's circuits (or one circuit)")
    p.set_defaults(handler=cmd_report)
    p.add_argument("source", type=Path, help="a demo/run folder or a circuit JSON")
    p.add_argument(
        "--out",
        type=out_path,
        required=True,
        help="folder for index.html and circuits/",
    )
    p.add_argument("--model", type=Path, default=None, help="model folder (default: found)")
    p.add_argument("--corpus", default=None, help="pretraining corpus (default: the run's)")
    p.add_argument(
        "--cache-dir",
        type=out_path,
        default=DEFAULT_CACHE,
        help="tokenizer/token cache (default: %(default)s)",
    )
    p.add_argument(
        "--node-panels",
        type=POSITIVE_INT,
        default=24,
        help="node panels per circuit (default: %(default)s)",
    )
    p.add_argument(
        "--windows",
        type=POSITIVE_INT,
        default=SAMPLE_WINDOWS,
        help="corpus windows for top contexts (default: %(default)s)",
    )
    p.add_argument(
        "--examples",
        type=pair_count,
        default=None,
        help="test pairs per circuit page (default: the circuit file's own, n_test; else 64)",
    )
    p.add_argument(
        "--device",
        type=device_name,
        default="cpu",
        help="cpu, cuda or cuda:N (CUDA untested; default: %(default)s)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_report(args: argparse.Namespace) -> int:
    """``sparse-lens report``: write the HTML report of ``args.source``; returns the exit code.

    Raises:
        CLIError: the sources or ``--out`` are refused, or building the report fails on a
            missing file, a bad value or a permission (the message is the cause's).
    """
    from analyses.report import ReportConfig
    from analyses.report_sources import build_report, check_report_out, find_sources

    check_device(args.device)
    try:
        check_report_out(find_sources(args.source, args.model), args.source, args.out)
    except (FileNotFoundError, ValueError) as e:
        raise CLIError(str(e)) from e
    with contextlib.ExitStack() as stack:
        args.out = claim(
            stack,
            args.out,
            "report",
            owned=REPORT_FILES,
            legacy=("index.html",),
            within=("demo",),  # a demo's report/ is the report command's
        )
        try:
            rcfg = ReportConfig(
                max_node_panels=args.node_panels, n_windows=args.windows, n_examples=args.examples
            )
            index = build_report(
                args.source,
                args.out,
                model_dir=args.model,
                corpus=args.corpus,
                cache_dir=args.cache_dir.expanduser(),
                rcfg=rcfg,
                progress=not args.quiet,
                device=args.device,
            )
        except (FileNotFoundError, ValueError, PermissionError) as e:
            raise CLIError(str(e)) from e
    sys.stdout.write(f"report written to {index}\n")
    return 0
