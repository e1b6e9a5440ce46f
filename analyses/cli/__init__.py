"""The ``sparse-lens`` command: every subcommand, one module per command group.

``parser`` builds the argument tree (torch-free); ``options`` holds the shared option types;
``train``, ``tasks``, ``prune``, ``report``, ``explain``, ``demo``, ``bridge``, ``openai`` and
``sweep`` each add their subcommands and import the library only when one runs. ``main(argv)``
runs one command in this process and returns its exit status (the installed ``sparse-lens`` script).
"""

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sparse-lens`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    from analyses.cli.parser import run

    return run(argv)
