"""``python -m analyses.cli`` (also under ``torchrun -m analyses.cli train ...``)."""

from analyses.cli.main import entry

entry()
