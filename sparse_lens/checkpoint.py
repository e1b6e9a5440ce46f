"""Model folders: ``model.safetensors`` + ``config.json`` + ``tokenizer.json``.

Writes are atomic per file (temp file + rename). Loading is strict: a missing, truncated or
corrupt file, a tensor missing or unexpected, or a shape that does not match the config raises
an error naming the file and the problem.
"""

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from sparse_lens.config import SparseTransformerConfig
from sparse_lens.io import atomic_write, atomic_write_json, read_json
from sparse_lens.model import HookedSparseTransformer
from sparse_lens.tokenizer import Tokenizer

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TOKENIZER = "tokenizer.json"


def save_pretrained(model: HookedSparseTransformer, directory: str | Path) -> Path:
    """Write the model folder; returns its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(
        directory / WEIGHTS, lambda p: save_file(tensors, str(p), metadata={"format": "pt"})
    )
    atomic_write_json(directory / CONFIG, model.cfg.to_dict())
    if model.tokenizer is not None:
        model.tokenizer.save(directory / TOKENIZER)
    return directory


def load_pretrained(
    directory: str | Path, device: str | torch.device = "cpu"
) -> HookedSparseTransformer:
    """Load a folder written by ``save_pretrained``.

    Raises:
        FileNotFoundError: the folder, its config or its weights are missing.
        ValueError: a file is corrupt or truncated, or weights do not match the config.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"model folder {str(directory)!r} does not exist")
    cfg_path = directory / CONFIG
    try:
        cfg = SparseTransformerConfig.from_dict(read_json(cfg_path, "config"))
    except ValueError as e:
        raise ValueError(f"{cfg_path}: {e}") from e
    tok_path = directory / TOKENIZER
    tokenizer = Tokenizer.load(tok_path) if tok_path.exists() else None
    weights_path = directory / WEIGHTS
    if not weights_path.is_file():
        raise FileNotFoundError(f"weights file {str(weights_path)!r} is missing")
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ValueError(f"weights file {str(weights_path)!r} is corrupt or truncated: {e}") from e
    model = HookedSparseTransformer(cfg, tokenizer=tokenizer)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"weights file {str(weights_path)!r} does not match {CONFIG}: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise ValueError(
                f"weights file {str(weights_path)!r}: {name} has shape {tuple(tensor.shape)}, "
                f"{CONFIG} implies {tuple(expected[name].shape)}"
            )
    model.load_state_dict(state, strict=True)
    return model.to(device)
