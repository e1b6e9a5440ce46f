"""Benchmark: how long setting up the environment takes, by installer and by what is installed.

Each variant creates a fresh virtual environment in a temporary folder and installs CPU torch
2.13.0 first, then this package (editable), with the package caches turned off (``pip
--no-cache-dir``, ``uv --no-cache``) so every variant starts as a fresh machine would; the
indexes, find-links and constraints are the machine's pip configuration
(``pip config list``), passed to uv as the same options, so both install the same pinned
packages from the same registry. Variants:

* ``pip_dev``: what ``scripts/setup.sh`` did: upgrade pip, then ``pip install -e '.[dev]'``;
* ``pip_runtime``: no pip upgrade, ``pip install -e .`` (what the demo needs);
* ``uv_runtime`` / ``uv_dev``: ``pip install uv`` into the environment, then ``uv pip install``
  of the same requirements (``--index-strategy unsafe-best-match``: like pip, every index is
  searched for the best version; uv's default takes the first index that has the package).

It writes a JSON of seconds, the ratios to ``pip_dev``, and per variant the installed
``torch`` and ``transformer-lens`` versions (they must agree across variants).

    python benchmarks/setup_time.py --out benchmarks/results/setup_time.json
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report_json import emit  # benchmarks/report_json.py

ROOT = Path(__file__).resolve().parents[1]
TORCH = "torch==2.13.0"


def pip_options() -> list[str]:
    """The machine's pip configuration as uv options (``scripts/uv_options.py``, which
    ``scripts/setup.sh`` uses too)."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "uv_options.py")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return out.split()


def run(cmd: list[str], cwd: Path = ROOT) -> None:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr[-2000:]}")


def versions(python: Path) -> dict[str, str]:
    code = (
        "import importlib.metadata as m; print(m.version('torch'), m.version('transformer-lens'))"
    )
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True).stdout.split()
    return {"torch": out[0], "transformer-lens": out[1]} if len(out) == 2 else {}


def variant(name: str, venv: Path) -> float:
    t0 = time.perf_counter()
    run([sys.executable, "-m", "venv", str(venv)])
    py = venv / "bin" / "python"
    pip = [str(py), "-m", "pip", "install", "-q", "--no-cache-dir"]
    extra = "-e.[dev]" if name.endswith("dev") else "-e."
    if name.startswith("pip"):
        if name == "pip_dev":
            run([*pip, "--upgrade", "pip"])
        run([*pip, TORCH])
        run([*pip, extra])
    else:
        run([*pip, "uv"])
        uv = [str(venv / "bin" / "uv"), "pip", "install", "-q", "--no-cache", "--python", str(py)]
        uv += pip_options() + ["--index-strategy", "unsafe-best-match"]  # pip's: every index
        run([*uv, TORCH])
        run([*uv, extra])
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/setup_time.json"))
    parser.add_argument(
        "--variants", nargs="+", default=["pip_dev", "pip_runtime", "uv_runtime", "uv_dev"]
    )
    args = parser.parse_args()
    seconds, installed, errors = {}, {}, {}
    for name in args.variants:
        tmp = Path(tempfile.mkdtemp(prefix=f"setup-{name}-"))
        try:
            seconds[name] = variant(name, tmp / "venv")
            installed[name] = versions(tmp / "venv" / "bin" / "python")
        except RuntimeError as e:  # a variant that cannot install is a result too
            errors[name] = str(e)[-1000:]
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    base = seconds.get("pip_dev")
    result = {
        "seconds": seconds,
        "over_pip_dev": {k: v / base for k, v in seconds.items()} if base else {},
        "installed": installed,
        "errors": errors,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    emit(result, args.out)


if __name__ == "__main__":
    main()
