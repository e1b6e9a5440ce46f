"""The whole ``sparse-lens`` argument tree, and running one command.

Building the parser imports only the command modules, whose handlers import torch and the
library when they run: ``sparse-lens --help`` (and ``sparse-lens CMD --help``) answers without
torch or transformer_lens.
"""

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from analyses.cli.bridge import add_bridge_report, add_fit_bridges, add_train_bridged
from analyses.cli.demo import add_demo
from analyses.cli.explain import add_explain
from analyses.cli.openai import add_import_oai, add_import_oai_circuit
from analyses.cli.options import CLIError
from analyses.cli.prune import add_prune
from analyses.cli.report import add_report
from analyses.cli.sweep import add_sweep
from analyses.cli.tasks import add_tasks
from analyses.cli.train import add_train

DESCRIPTION = "sparse_lens: train, prune, check, bridge and view weight-sparse transformers (start with: sparse-lens demo)."

Adder = Callable[[argparse._SubParsersAction], None]
ADDERS: tuple[Adder, ...] = (
    add_train,
    add_tasks,
    add_prune,
    add_fit_bridges,
    add_train_bridged,
    add_report,
    add_explain,
    add_demo,
    add_bridge_report,
    add_import_oai,
    add_import_oai_circuit,
    add_sweep,
)  # the order of `sparse-lens --help`; each sets its subparser's `handler`


class Parser(argparse.ArgumentParser):
    """The root parser and every subparser: an argument error is one line naming the command,
    ``sparse-lens CMD: error: MESSAGE``, and a pointer to its help, not argparse's whole usage
    block first; exit status 2, as argparse's."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n(see {self.prog} --help)\n")

    def parse_known_args(self, *args: Any, **kwargs: Any) -> tuple[Any, list[str]]:
        """As argparse's, but an argument left over is this parser's error (no command takes
        unknown arguments): a subcommand's is reported as its own (``sparse-lens demo: error:
        unrecognized arguments: --x``), where argparse has the root parser report it."""
        parsed, extra = super().parse_known_args(*args, **kwargs)
        if extra:
            self.error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed, extra


def build_parser() -> Parser:
    parser = Parser(prog="sparse-lens", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for add in ADDERS:
        add(sub)
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) and run its command; returns the exit status.
    A ``CLIError`` is written as ``sparse-lens CMD: error: ...`` and gives status 2; a bad
    option stops the parser with ``SystemExit(2)`` after one line and a pointer to the help
    (``Parser``); Ctrl-C is one line and status 130 (every file is written atomically, so
    what was written is whole; ``--resume`` goes on)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        return args.handler(args)
    except CLIError as e:
        sys.stderr.write(f"sparse-lens {args.command}: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(
            f"sparse-lens {args.command}: interrupted; files written so far are whole "
            "(run it again to resume where it can)\n"
        )
        return 130
