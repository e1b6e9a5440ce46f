"""One-file checkpoints of a training loop's whole state, for runs that resume exactly.

The loops of the dense GPT-2 and of the bridges keep their models, optimizers, data generator
and records here (the sparse trainer keeps a model folder per checkpoint instead, ``train.py``).
The file is replaced atomically, so a kill at any moment leaves the previous checkpoint whole. It
also stores the run's settings (plain values); resuming with other settings is refused.
"""

from pathlib import Path
from typing import Any

import torch

from sparse_lens.files.atomic import atomic_write


def save_loop_state(path: Path, *, settings: dict[str, Any], step: int, **state: Any) -> None:
    """Write ``state`` (state dicts, generator states, records) after ``step`` steps."""
    payload = {"settings": settings, "step": step} | state
    atomic_write(Path(path), lambda p: torch.save(payload, p))


def load_loop_state(path: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The state saved in ``path`` (``None`` if there is none), after checking its settings.

    Raises:
        ValueError: the file is corrupt, or was written by a run with other settings.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises several kinds for a bad file
        raise ValueError(f"checkpoint {str(path)!r} is corrupt: {e}") from e
    if not isinstance(state, dict) or "step" not in state:
        raise ValueError(f"checkpoint {str(path)!r} is corrupt: not a training-loop state")
    if state.get("settings") != settings:
        raise ValueError(f"cannot resume from {str(path)!r}: its run had other settings")
    return state


def check_resumable(path: Path, finished: bool, resume: bool, what: str) -> None:
    """Refuse to start over a run that holds a checkpoint or a finished result, unless
    resuming (``what`` names the run in the message)."""
    if (finished or Path(path).exists()) and not resume:
        raise ValueError(
            f"{what} already holds a run; pass resume=True (--resume) or pick a new folder"
        )
