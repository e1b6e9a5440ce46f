"""Import a model folder as OpenAI publishes it for circuit_sparsity (github.com/openai/circuit_sparsity, the paper's released models).

A released model is a folder ``beeg_config.json`` (``GPTConfig`` fields) + ``final_model.pt``
(its ``state_dict``); its tokenizer is ``tinypython/{vocab.bpe, encoder.json}``.
``import_oai(src, tokenizer_dir)`` returns a ``HookedSparseTransformer`` with that tokenizer;
``save_pretrained`` then writes an ordinary model folder that every command reads.

Weights are read with ``torch.load(weights_only=True)`` only: a file whose unpickling would run
code is refused (``UnsafeCheckpointError``). Key and shape checks are strict
(``from_circuit_sparsity``). Nothing is downloaded.
"""

import logging
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sparse_lens.data.gpt2_bpe import ENCODER_JSON, VOCAB_BPE, load_gpt2_bpe
from sparse_lens.files.atomic import read_json
from sparse_lens.model.transformer import HookedSparseTransformer
from sparse_lens.openai_models.convert import from_circuit_sparsity

logger = logging.getLogger(__name__)

OAI_CONFIG = "beeg_config.json"
OAI_WEIGHTS = "final_model.pt"


class UnsafeCheckpointError(ValueError):
    """A checkpoint that cannot be read without unpickling code."""


def safe_torch_load(path: Path, what: str, data_globals: tuple[Any, ...] = ()) -> Any:
    """``torch.load(path, weights_only=True)`` with ``data_globals`` allowed as plain data.

    Raises:
        FileNotFoundError: the file is missing.
        UnsafeCheckpointError: the file needs code to unpickle (it is never run).
        ValueError: the file is corrupt or truncated.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} is missing")
    try:
        with torch.serialization.safe_globals(list(data_globals)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsafeCheckpointError(
            f"{path}: refusing to load: the file needs code to be unpickled, and sparse_lens "
            f"only reads data (torch.load(weights_only=True)). Detail: {first}"
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise ValueError(f"{what} {str(path)!r} is corrupt or truncated: {e}") from e


def load_oai_weights(path: str | Path) -> dict[str, Tensor]:
    """The state dict in ``final_model.pt``, read with ``weights_only=True``.

    Raises:
        FileNotFoundError: the file is missing.
        UnsafeCheckpointError: the file needs code to unpickle (it is never run).
        ValueError: the file is corrupt or truncated, or holds something other than a flat
            name -> tensor dict.
    """
    path = Path(path)
    obj = safe_torch_load(path, "weights file")
    if not isinstance(obj, dict):
        raise ValueError(
            f"{path}: expected a state dict (name -> tensor), got {type(obj).__name__}"
        )
    bad = sorted(str(k) for k, v in obj.items() if not isinstance(v, Tensor))
    if bad:
        raise ValueError(f"{path}: entries that are not tensors: {bad[:5]}")
    return obj


def import_oai(
    src: str | Path, tokenizer_dir: str | Path | None = None
) -> tuple[HookedSparseTransformer, dict[str, Any]]:
    """Read an OpenAI model folder (and the tokenizer files) into a ``HookedSparseTransformer``.

    ``tokenizer_dir`` holds ``vocab.bpe`` + ``encoder.json``; ``None`` looks in ``src``.
    Returns the model (eval mode) and its ``beeg_config.json`` dict.

    Raises:
        FileNotFoundError: a file is missing (named).
        UnsafeCheckpointError: ``final_model.pt`` needs code to unpickle.
        ValueError: a config key, weight name or shape does not fit (named), or the tokenizer's
            vocabulary size differs from the model's.
    """
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"model folder {str(src)!r} does not exist")
    config = read_json(src / OAI_CONFIG, "config")
    if not isinstance(config, dict):
        raise ValueError(f"{src / OAI_CONFIG}: expected a JSON object of GPTConfig fields")
    tok_dir = Path(tokenizer_dir) if tokenizer_dir is not None else src
    if not (tok_dir / VOCAB_BPE).is_file() and tokenizer_dir is None:
        raise FileNotFoundError(
            f"{src} has no {VOCAB_BPE}/{ENCODER_JSON}: pass --tokenizer DIR with the tinypython "
            "files (see the README for where to get them)"
        )
    tokenizer = load_gpt2_bpe(tok_dir)
    state = load_oai_weights(src / OAI_WEIGHTS)
    try:
        model = from_circuit_sparsity(state, config)
    except ValueError as e:
        raise ValueError(f"{src}: {e}") from e
    if tokenizer.vocab_size != model.cfg.d_vocab:
        raise ValueError(
            f"the tokenizer in {tok_dir} has {tokenizer.vocab_size} tokens but the model's "
            f"vocab_size is {model.cfg.d_vocab}"
        )
    if config.get("tokenizer_name", "tinypython_2k") != "tinypython_2k":
        logger.warning("%s was trained with tokenizer %r", src, config["tokenizer_name"])
    model.tokenizer = tokenizer
    return model.eval(), config
