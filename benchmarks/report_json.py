"""The one way a benchmark hands back its result: JSON to stdout and, given a path, to that file
(written to a temporary file beside it, then renamed, so a killed run leaves the old result
whole). Standard library only, so every benchmark can use it, whatever it imports."""

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def emit(result: dict[str, Any], out: Path | None) -> None:
    """Print ``result`` as indented JSON and, if ``out`` is given, write it there atomically
    (parent folders created)."""
    text = json.dumps(result, indent=2) + "\n"
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    print(text, end="")


def benchmark_parser(
    doc: str | None, *, quick: str, default_out: Path | None = None
) -> argparse.ArgumentParser:
    """The options every benchmark shares: ``--out`` (the JSON file; ``default_out``, or stdout
    only when None) and ``--quick`` (the smoke-test mode, described by ``quick``). The
    description is the first line of ``doc`` (the script's docstring)."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n")[0])
    where = default_out or "stdout only"
    parser.add_argument("--out", type=Path, default=default_out, help=f"JSON file ({where})")
    parser.add_argument("--quick", action="store_true", help=quick)
    return parser
