"""Model folders: ``model.safetensors`` + ``config.json`` + ``tokenizer.json``.

A folder is written whole or not at all: its files are built in a temporary sibling folder that
is renamed into place (``files.atomic.atomic_dir``). ``config.json`` records the SHA-256 of the
``tokenizer.json`` written with it (``tokenizer_sha256``), so a tokenizer from another run placed
next to the model is refused, and of ``model.safetensors`` (``weights_sha256``), so weights
changed on disk (a flipped bit, another run's file) are refused on load. A folder written before
the weights had a digest (no ``weights_sha256``) loads as before, with every other check.

Loading is strict and checks before it allocates: the config must be a well-typed object, the
shapes in the safetensors header must be those the config implies (read without building the
model, so a crafted ``d_vocab`` cannot make it allocate), every tensor must be floating point,
no tensor may be missing or extra, and every weight must be finite. Errors name the file, the value and what to do. Nothing is
unpickled.
"""

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol, TypeVar, cast, runtime_checkable

import torch
from safetensors import SafetensorError, safe_open

# safetensors annotates ``filename`` as a bare ``os.PathLike``; we pass ``str``
from safetensors.torch import load_file, save_file  # pyright: ignore[reportUnknownVariableType]
from torch import nn

from sparse_lens.data.tokenizer import Tokenizer, json_sha256
from sparse_lens.files.atomic import atomic_dir, fault_point, read_json
from sparse_lens.model.config import SparseTransformerConfig, check_device_available

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TOKENIZER = "tokenizer.json"
MODEL_FILES = (WEIGHTS, CONFIG, TOKENIZER)
TOKENIZER_SHA = "tokenizer_sha256"  # in config.json, beside the config's own fields
# in config.json of an imported model: where it came from and the source keys dropped (why)
IMPORTED_FROM = "imported_from"
WEIGHTS_SHA = "weights_sha256"  # likewise; absent in folders written before it was recorded
DIGESTS = (TOKENIZER_SHA, WEIGHTS_SHA)
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")  # safetensors' names of torch's float dtypes


@runtime_checkable
class FolderModel(Protocol):
    """What a model folder is written from: TL's ``cfg`` (a ``SparseTransformerConfig``), a
    tokenizer (or ``None``) and a ``state_dict``; ``HookedSparseTransformer`` is one."""

    cfg: SparseTransformerConfig
    tokenizer: Tokenizer | None

    def state_dict(self) -> dict[str, torch.Tensor]: ...


M = TypeVar("M", bound=nn.Module)
# Builds the model a folder holds: ``HookedSparseTransformer(cfg, tokenizer=...)`` (the model class
# passes itself, so this module does not import the model).
ModelBuilder = Callable[..., M]


@runtime_checkable  # beartype (in the tests) checks get_slice's return against it
class _SafeSlice(Protocol):
    """What ``safe_open(...).get_slice`` returns (safetensors' stub leaves it untyped)."""

    def get_dtype(self) -> str: ...

    def get_shape(self) -> list[int]: ...


@runtime_checkable
class _SafeFile(Protocol):
    """An open safetensors file, as ``_header_shapes`` uses it (safetensors' stub leaves
    ``safe_open``'s ``__enter__`` and methods untyped)."""

    def keys(self) -> list[str]: ...

    def get_slice(self, name: str) -> _SafeSlice: ...


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_model_files(
    model: FolderModel,
    directory: Path,
    name: str,
    imported_from: Mapping[str, object] | None = None,
) -> None:
    """Write the three files into ``directory``, a folder ``atomic_dir`` builds for the model
    folder called ``name`` (which names the fault points ``dir:NAME/FILE``); ``imported_from``
    (JSON-ready) is recorded in ``config.json`` under that name."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    label = f"dir:{name}"
    save_file(tensors, str(directory / WEIGHTS), metadata={"format": "pt"})
    fault_point(f"{label}/{WEIGHTS}")
    config = model.cfg.to_dict()
    if imported_from is not None:
        config[IMPORTED_FROM] = imported_from
    config[WEIGHTS_SHA] = file_sha256(directory / WEIGHTS)
    if model.tokenizer is not None:
        text = model.tokenizer.to_json()
        config[TOKENIZER_SHA] = json_sha256(text)
        (directory / TOKENIZER).write_text(text, encoding="utf-8")
        fault_point(f"{label}/{TOKENIZER}")
    (directory / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    fault_point(f"{label}/{CONFIG}")


def save_pretrained(
    model: FolderModel, directory: str | Path, imported_from: Mapping[str, object] | None = None
) -> Path:
    """Write the model folder whole (replacing a model folder already there); returns its path.
    ``imported_from``: what an imported model came from, kept in ``config.json``.

    Raises:
        ValueError: ``directory`` holds files other than a model's (nothing is deleted).
    """
    directory = Path(directory)
    with atomic_dir(directory, replaces=MODEL_FILES) as tmp:
        write_model_files(model, tmp, directory.name, imported_from)
    return directory


def save_into(
    model: FolderModel, directory: Path, imported_from: Mapping[str, object] | None = None
) -> Path:
    """Write the model files into ``directory``, an existing folder the caller holds (e.g. by
    ``files.outputs.claim_output``, whose lock and owner files stay there): each file is written
    to a temporary folder inside it and renamed into place, ``config.json`` removed first and
    renamed last, so a killed write leaves a folder that does not load (never one whose config
    names other weights). A ``tokenizer.json`` of an earlier model is removed when this model
    has none. ``imported_from`` as in ``save_pretrained``. Returns ``directory``.

    Raises:
        ValueError: ``directory`` is not a folder.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"{str(directory)!r} is not a folder; create (and hold) it first")
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory))
    try:
        write_model_files(model, tmp, directory.name, imported_from)
        (directory / CONFIG).unlink(missing_ok=True)
        for name in (WEIGHTS, TOKENIZER, CONFIG):
            if not (tmp / name).exists():
                (directory / name).unlink(missing_ok=True)
                continue
            os.chmod(tmp / name, 0o644)
            with (tmp / name).open("rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp / name, directory / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def read_config(cfg_path: Path) -> tuple[SparseTransformerConfig, str | None]:
    """The config in ``cfg_path`` and the tokenizer digest it records (``None`` if none).

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: not JSON, not an object, or a field of the wrong type or value (named).
    """
    cfg, digests = read_config_digests(cfg_path)
    return cfg, digests[TOKENIZER_SHA]


def read_config_digests(cfg_path: Path) -> tuple[SparseTransformerConfig, dict[str, str | None]]:
    """The config in ``cfg_path`` and the digests it records (``DIGESTS``: name -> SHA-256 hex,
    ``None`` where absent).

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: not JSON, not an object, a field of the wrong type or value, or a digest
            that is not 64 hex digits (each named with the file).
    """
    raw = read_json(cfg_path, "config")
    if not isinstance(raw, dict):
        raise ValueError(
            f"{cfg_path}: holds a JSON {type(raw).__name__}, not an object of config fields; "
            "restore the file written with the model"
        )
    raw = dict(cast(dict[str, object], raw))  # a JSON object: str keys
    raw.pop(IMPORTED_FROM, None)  # a record for the reader, not a setting
    values = {name: raw.pop(name, None) for name in DIGESTS}
    digests = {name: _check_digest(cfg_path, name, value) for name, value in values.items()}
    try:
        return SparseTransformerConfig.from_dict(raw), digests
    except ValueError as e:
        raise ValueError(f"{cfg_path}: {e}; restore the file written with the model") from e


def _check_digest(cfg_path: Path, name: str, value: object) -> str | None:
    """``value``, the digest ``name`` read from ``cfg_path``, once checked: ``None`` (absent) or
    a SHA-256 of 64 lowercase hex digits.

    Raises:
        ValueError: anything else (named with the file).
    """
    if value is None or (
        isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    ):
        return value
    raise ValueError(
        f"{cfg_path}: {name} must be a SHA-256 (64 hex digits), got {value!r:.80}; "
        "restore the file written with the model"
    )


def expected_shapes(
    cfg: SparseTransformerConfig, build: ModelBuilder[nn.Module]
) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor the model ``build(cfg)`` holds, without allocating it
    (built on the ``meta`` device)."""
    with torch.device("meta"):
        model = build(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_shapes(
    shapes: dict[str, tuple[int, ...]],
    cfg: SparseTransformerConfig,
    build: ModelBuilder[nn.Module],
    where: str,
) -> None:
    """Raise ``ValueError`` naming the first tensor missing, extra or of another shape than
    ``cfg`` implies for the model ``build(cfg)``.

    Raises:
        ValueError: a tensor is missing, extra or of another shape (the first one is named).
    """
    expected = expected_shapes(cfg, build)
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{where} does not match {CONFIG}: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    for name, shape in shapes.items():
        if tuple(shape) != expected[name]:
            raise ValueError(
                f"{where}: {name} has shape {tuple(shape)}, {CONFIG} implies {expected[name]}"
            )


def check_finite(state: dict[str, torch.Tensor], where: str) -> None:
    """Raise ``ValueError`` naming the first tensor holding NaN or infinity.

    Raises:
        ValueError: a tensor holds NaN or infinity (the first one is named).
    """
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(
                f"{where}: {name} holds {bad} non-finite values (NaN or inf); the model is "
                "broken, load an earlier checkpoint"
            )


def _header_shapes(weights_path: Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in the safetensors header, after checking each is floating
    point (an integer tensor would load into a float parameter without complaint).

    Raises:
        ValueError: the file is corrupt or truncated, or a tensor is not floating point.
    """
    try:
        # safetensors' stub leaves ``__enter__`` untyped; it returns the open file
        with safe_open(str(weights_path), framework="pt") as opened:  # pyright: ignore[reportUnknownVariableType]
            f = cast(_SafeFile, opened)
            slices = {k: f.get_slice(k) for k in f.keys()}  # noqa: SIM118
            dtypes = {k: str(v.get_dtype()) for k, v in slices.items()}
            shapes = {k: tuple(v.get_shape()) for k, v in slices.items()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ValueError(f"weights file {str(weights_path)!r} is corrupt or truncated: {e}") from e
    for name, dtype in dtypes.items():
        if dtype not in FLOAT_DTYPES:
            raise ValueError(
                f"weights file {str(weights_path)!r}: {name} is {dtype}, not floating point "
                f"({', '.join(FLOAT_DTYPES)}); a model's weights are floats: restore the file "
                "written with the model"
            )
    return shapes


def check_weights_digest(weights_path: Path, recorded: str | None) -> None:
    """Compare the SHA-256 of ``weights_path`` with the one ``config.json`` records (nothing to
    compare for a folder written before it was recorded, ``recorded=None``).

    Raises:
        ValueError: the digests differ (the file was changed or corrupted on disk).
    """
    if recorded is None:
        return
    got = file_sha256(weights_path)
    if got != recorded:
        raise ValueError(
            f"weights file {str(weights_path)!r} is not the one saved with this model (sha256 "
            f"{got[:12]}..., {CONFIG} records {WEIGHTS_SHA} {recorded[:12]}...): it was changed "
            "or corrupted on disk; restore it from the run that wrote the model"
        )


def load_pretrained(
    directory: str | Path, build: ModelBuilder[M], device: str | torch.device = "cpu"
) -> M:
    """Load a folder written by ``save_pretrained`` into ``build(cfg, tokenizer=tokenizer)``
    (``HookedSparseTransformer.from_pretrained`` passes its class).

    Raises:
        FileNotFoundError: the folder, its config or its weights are missing.
        ValueError: ``device`` is not available here, a file is corrupt or truncated, the
            config is malformed (or names a device this machine lacks), the weights are
            not the ones ``config.json`` records the digest of, are not floating point, do not
            match the config or are not finite, or the tokenizer is not the one saved with them.
    """
    directory = Path(directory)
    check_device_available(device)
    if not directory.is_dir():
        raise FileNotFoundError(f"model folder {str(directory)!r} does not exist")
    cfg_path = directory / CONFIG
    cfg, digests = read_config_digests(cfg_path)
    tok_path = directory / TOKENIZER
    tokenizer = _load_tokenizer(tok_path, digests[TOKENIZER_SHA])
    weights_path = directory / WEIGHTS
    if not weights_path.is_file():
        raise FileNotFoundError(f"weights file {str(weights_path)!r} is missing")
    check_weights_digest(weights_path, digests[WEIGHTS_SHA])
    check_shapes(_header_shapes(weights_path), cfg, build, f"weights file {str(weights_path)!r}")
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ValueError(f"weights file {str(weights_path)!r} is corrupt or truncated: {e}") from e
    check_finite(state, f"weights file {str(weights_path)!r}")
    model = build(cfg, tokenizer=tokenizer)
    model.load_state_dict(state, strict=True)
    return model.to(device)


def _load_tokenizer(tok_path: Path, sha: str | None) -> Tokenizer | None:
    if not tok_path.exists():
        if sha is not None:
            raise FileNotFoundError(
                f"tokenizer file {str(tok_path)!r} is missing ({CONFIG} records one); restore it "
                "from the run that wrote the model"
            )
        return None
    tokenizer = Tokenizer.load(tok_path)  # a corrupt file is reported as such
    if sha is not None:
        got = json_sha256(tok_path.read_text(encoding="utf-8"))
        if got != sha:
            raise ValueError(
                f"tokenizer file {str(tok_path)!r} is not the one saved with this model "
                f"(sha256 {got[:12]}..., {CONFIG} records {sha[:12]}...); restore the run's own "
                "tokenizer.json"
            )
    return tokenizer
