"""Import a model as OpenAI publishes it for circuit_sparsity (github.com/openai/circuit_sparsity, the paper's released models).

Two sources hold the same models:

* a blob folder (``models/<name>/`` on ``openaipublic.blob.core.windows.net/circuit-sparsity``):
  ``beeg_config.json`` (``GPTConfig`` fields, plus training keys) + ``final_model.pt`` (its
  ``state_dict``);
* a Hugging Face snapshot of ``openai/circuit-sparsity`` (the folder ``huggingface-cli
  download`` writes, or the Hub cache folder ``models--openai--circuit-sparsity``):
  ``config.json`` (the same fields, the ten ``to_circuit_config()`` adds and ``transformers``'
  own), ``model.safetensors`` or ``pytorch_model.bin`` with the ``GPT`` under
  ``circuit_model.``, and ``trust_remote_code`` Python files (``modeling_circuitgpt.py``,
  ``gpt.py``) that are never imported or run here.

The tokenizer is ``tinypython/{vocab.bpe, encoder.json}``. ``import_oai(src, tokenizer_dir)``
returns a ``HookedSparseTransformer`` with that tokenizer and the config keys it dropped (each
with the reason); ``save_pretrained`` then writes an ordinary model folder that every command
reads.

Weights are read with ``safetensors`` or ``torch.load(weights_only=True)`` only: a file whose
unpickling would run code is refused (``UnsafeCheckpointError``). Config, key and shape checks
are strict (``from_circuit_sparsity``). Nothing is downloaded.
"""

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from sparse_lens.data.gpt2_bpe import ENCODER_JSON, VOCAB_BPE, load_gpt2_bpe
from sparse_lens.files.atomic import read_json
from sparse_lens.model.transformer import HookedSparseTransformer
from sparse_lens.openai_models.convert import check_gpt_config, from_circuit_sparsity

logger = logging.getLogger(__name__)

OAI_CONFIG = "beeg_config.json"
OAI_WEIGHTS = "final_model.pt"
HF_CONFIG = "config.json"
HF_SAFETENSORS = "model.safetensors"
HF_INDEX = "model.safetensors.index.json"
HF_BIN = "pytorch_model.bin"
HF_PREFIX = "circuit_model."  # the GPT inside the Hub checkpoint's CircuitGPTForCausalLM
# transformers' own config fields: no effect on the weights or the forward pass
HF_BOOKKEEPING = frozenset(
    [
        "architectures",
        "auto_map",
        "model_type",
        "torch_dtype",
        "dtype",
        "transformers_version",
        "_name_or_path",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "use_cache",
        "tie_word_embeddings",
    ]
)
Source = Literal["blob folder", "Hugging Face snapshot"]


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
    """The state dict in ``final_model.pt`` (or ``pytorch_model.bin``), read with
    ``weights_only=True``.

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
    bad = sorted(
        str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)
    )
    if bad:
        raise ValueError(f"{path}: entries that are not named tensors: {bad[:5]}")
    return obj


def hub_snapshot(src: Path) -> Path:
    """The snapshot folder of a Hub cache folder (``models--openai--circuit-sparsity``: the one
    ``refs/main`` names, else its only snapshot); any other folder is returned as it is.

    Raises:
        FileNotFoundError: ``refs/main`` names a snapshot that is missing, or there is no
            snapshot, or several and no ``refs/main`` (named).
    """
    snaps = src / "snapshots"
    if not snaps.is_dir():
        return src
    ref = src / "refs" / "main"
    if ref.is_file():
        chosen = snaps / ref.read_text(encoding="utf-8").strip()
        if not chosen.is_dir():
            raise FileNotFoundError(f"{ref} names snapshot {chosen.name!r}, which is missing")
        return chosen
    found = sorted(p for p in snaps.iterdir() if p.is_dir())
    if len(found) != 1:
        raise FileNotFoundError(
            f"{snaps} holds {len(found)} snapshots ({[p.name for p in found][:4]}) and no "
            "refs/main: pass the snapshot folder itself"
        )
    return found[0]


def load_hf_weights(folder: Path) -> dict[str, Tensor]:
    """The ``GPT`` state dict of a Hugging Face snapshot: ``model.safetensors`` (or its shards
    from ``model.safetensors.index.json``), else ``pytorch_model.bin`` read with
    ``weights_only=True``; the ``circuit_model.`` prefix removed.

    Raises:
        FileNotFoundError: no weights file.
        UnsafeCheckpointError: ``pytorch_model.bin`` needs code to unpickle (it is never run).
        ValueError: a corrupt file, or a tensor outside ``circuit_model.`` (named).
    """
    if (folder / HF_SAFETENSORS).is_file():
        files = [folder / HF_SAFETENSORS]
    elif (folder / HF_INDEX).is_file():
        index = read_json(folder / HF_INDEX, "weights index")
        shards = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(shards, dict) or not all(isinstance(v, str) for v in shards.values()):
            raise ValueError(f"{folder / HF_INDEX}: expected a 'weight_map' of file names")
        files = [folder / Path(name).name for name in sorted(set(shards.values()))]
    elif (folder / HF_BIN).is_file():
        files = []
    else:
        raise FileNotFoundError(f"{folder} has no {HF_SAFETENSORS} and no {HF_BIN}")
    state: dict[str, Tensor] = {} if files else load_oai_weights(folder / HF_BIN)
    for file in files:
        try:
            state |= load_file(str(file))
        except (SafetensorError, OSError) as e:
            raise ValueError(f"weights file {str(file)!r} is corrupt or missing: {e}") from e
    outside = sorted(k for k in state if not k.startswith(HF_PREFIX))
    if outside:
        raise ValueError(f"{folder}: tensors outside {HF_PREFIX!r}: {outside[:5]}")
    return {k.removeprefix(HF_PREFIX): v for k, v in state.items()}


@dataclass(frozen=True, kw_only=True)
class ImportedModel:
    """What ``import_oai`` read: the model (eval mode), the config as the file holds it, which
    source it came from, and the config keys dropped, each with the reason."""

    model: HookedSparseTransformer
    config: dict[str, Any]
    source: Source
    dropped: dict[str, str]


def read_source(src: Path) -> tuple[dict[str, Any], dict[str, Tensor], Source, dict[str, str]]:
    """Config, state dict, source kind and dropped ``transformers`` keys of a blob folder or a
    Hugging Face snapshot (``hub_snapshot`` resolves a Hub cache folder). No Python file in the
    folder is read.

    Raises:
        FileNotFoundError: neither ``beeg_config.json`` nor ``config.json`` with weights.
        UnsafeCheckpointError: a weights file needs code to unpickle.
        ValueError: a config that is not a JSON object, a sparse_lens model folder, or bad
            weights (named).
    """
    folder = hub_snapshot(src)
    if (folder / OAI_CONFIG).is_file():
        config = _config_object(folder / OAI_CONFIG)
        return config, load_oai_weights(folder / OAI_WEIGHTS), "blob folder", {}
    if not (folder / HF_CONFIG).is_file():
        raise FileNotFoundError(
            f"{folder} has neither {OAI_CONFIG} (a blob folder) nor {HF_CONFIG} (a Hugging Face "
            "snapshot of openai/circuit-sparsity)"
        )
    config = _config_object(folder / HF_CONFIG)
    if "config_version" in config:
        raise ValueError(f"{folder} is already a sparse_lens model folder; nothing to import")
    dropped = {k: _HF_REASON for k in sorted(config) if k in HF_BOOKKEEPING}
    config = {k: v for k, v in config.items() if k not in HF_BOOKKEEPING}
    return config, load_hf_weights(folder), "Hugging Face snapshot", dropped


_HF_REASON = "a transformers field; no effect on the weights (the snapshot's code is not run)"


def _config_object(path: Path) -> dict[str, Any]:
    config = read_json(path, "config")
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object of GPTConfig fields")
    return config


def import_oai(src: str | Path, tokenizer_dir: str | Path | None = None) -> ImportedModel:
    """Read an OpenAI model (blob folder or Hugging Face snapshot) and the tokenizer files
    into a ``HookedSparseTransformer``.

    ``tokenizer_dir`` holds ``vocab.bpe`` + ``encoder.json``; ``None`` looks in ``src``.

    Raises:
        FileNotFoundError: a file is missing (named).
        UnsafeCheckpointError: a weights file needs code to unpickle.
        ValueError: a config key, value, weight name or shape does not fit (named), or the
            tokenizer's vocabulary size differs from the model's.
    """
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"model folder {str(src)!r} does not exist")
    tok_dir = Path(tokenizer_dir) if tokenizer_dir is not None else hub_snapshot(src)
    if not (tok_dir / VOCAB_BPE).is_file() and tokenizer_dir is None:
        raise FileNotFoundError(
            f"{src} has no {VOCAB_BPE}/{ENCODER_JSON}: pass --tokenizer DIR with the tinypython "
            "files (see the README for where to get them)"
        )
    tokenizer = load_gpt2_bpe(tok_dir)
    config, state, source, dropped = read_source(src)
    try:
        dropped |= check_gpt_config(config)
        model = from_circuit_sparsity(state, config)
    except ValueError as e:
        raise ValueError(f"{src}: {e}") from e
    if tokenizer.vocab_size != model.cfg.d_vocab:
        raise ValueError(
            f"the tokenizer in {tok_dir} has {tokenizer.vocab_size} tokens but the model's "
            f"vocab_size is {model.cfg.d_vocab}"
        )
    if config.get("tokenizer_name") not in (None, "tinypython_2k"):
        logger.warning("%s was trained with tokenizer %r", src, config["tokenizer_name"])
    model.tokenizer = tokenizer
    return ImportedModel(model=model.eval(), config=config, source=source, dropped=dropped)
