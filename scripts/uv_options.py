"""Print this machine's pip configuration (extra indexes, index URL, find-links, constraints) as
uv options, one per line: uv reads no pip configuration, so ``scripts/setup.sh`` and
``benchmarks/setup_time.py`` pass these to ``uv pip install`` to install from the same registry
and pins as pip. Standard library only: it runs before anything is installed.

    python scripts/uv_options.py
"""

import shlex
import subprocess
import sys

FLAGS = {
    "find-links": "--find-links",
    "extra-index-url": "--extra-index-url",
    "index-url": "--index-url",
    "constraint": "--constraint",
}


def uv_options(pip_config: str) -> list[str]:
    """The options of ``pip config list`` output, deduplicated, in a stable order."""
    opts: set[str] = set()
    for line in pip_config.splitlines():
        key, _, value = line.strip().partition("=")
        flag = FLAGS.get(key.rsplit(".", 1)[-1])
        if flag:
            opts.update(f"{flag}={part}" for v in shlex.split(value) for part in v.split())
    return sorted(opts)


def main() -> None:
    config = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    ).stdout
    sys.stdout.write("".join(f"{o}\n" for o in uv_options(config)))


if __name__ == "__main__":
    main()
