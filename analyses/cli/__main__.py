"""``python -m analyses.cli`` (also under ``torchrun -m analyses.cli train ...``)."""

import sys

from analyses.cli import main

sys.exit(main())
