"""Architecture config of a weight-sparse transformer (Gao et al. 2025, arXiv 2511.13653, App. A).

``SparseTransformerConfig`` subclasses TransformerLens' ``TransformerLensConfig`` so every TL tool
that reads ``model.cfg`` (``n_layers``, ``d_model``, ``normalization_type`` ...) finds what it
expects. It is immutable after construction: TL's dataclass is not frozen, so a frozen subclass
cannot be declared with ``@dataclass(frozen=True)``; instead ``__setattr__`` refuses writes once
``__post_init__`` is done. Use ``dataclasses.replace`` (or ``cfg.replace(...)``) for variants.

The runtime switches TL flips through ``model.set_use_*`` (``use_attn_result``,
``use_split_qkv_input``, ``use_attn_in``, ``use_hook_mlp_in``) are config fields too; the model
swaps in a replaced config when they change.
"""

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args, get_origin

import torch
from transformer_lens.config import TransformerLensConfig

from sparse_lens.vocab import ACT_SITES, PAPER_ACT_SITES, ActSite

PositionalEmbedding = Literal["none", "learned"]
ActFn = Literal["gelu", "relu"]
NormalizationType = Literal["RMS"]
CONFIG_VERSION = 1

_RUNTIME_FLAGS = ("use_attn_result", "use_split_qkv_input", "use_attn_in", "use_hook_mlp_in")
# TransformerLensConfig fields this architecture fixes: each must keep this value, or the config
# is refused (a field that would be accepted and ignored gives silently wrong numbers).
UNSUPPORTED_TL_FIELDS: dict[str, tuple[object, str]] = {
    "attn_only": (False, "every block has an MLP (the paper's architecture)"),
    "gated_mlp": (False, "the MLP is W_in -> activation -> W_out, not gated"),
    "n_key_value_heads": (None, "attention has one key/value head per query head"),
    "layer_norm_folding": (False, "RMSNorm gains are not folded (see the README)"),
    "num_experts": (None, "there are no mixture-of-experts layers"),
    "experts_per_token": (None, "there are no mixture-of-experts layers"),
}
# Derived from other fields in __post_init__ (init=False: passing them is a TypeError).
DERIVED_TL_FIELDS = ("positional_embedding_type", "uses_rms_norm", "final_rms")


@dataclass(kw_only=True)
class SparseTransformerConfig(TransformerLensConfig):
    """Architecture of a ``HookedSparseTransformer``.

    Field names follow TransformerLens (``d_model, n_heads, d_head, d_mlp, n_layers, d_vocab,
    n_ctx``). The paper-specific knobs:

    | field | meaning | paper |
    |---|---|---|
    | ``attn_sinks`` | per-head learnable sink logit with zero value | some models |
    | ``use_bigram_table`` | dense ``d_vocab x d_vocab`` table added to logits | yes |
    | ``positional_embedding`` | ``"none"`` or ``"learned"`` absolute positions | none |
    | ``use_bias`` | biases on every linear map except the unembedding | yes |
    | ``afrac`` | fraction of entries AbsTopK keeps at each active site | 0.25 |
    | ``act_sparse_sites`` | the sites where AbsTopK runs (``ACT_SITES``) | the 8 paper sites |
    | ``weight_density`` | target nonzero fraction of block matrices | pfrac/ef^2 |
    | ``embed_density`` | target nonzero fraction of W_E, W_U, W_pos and biases | pfrac/ef |
    | ``min_nonzero_per_neuron`` | nonzeros kept per neuron / q,k,v,o channel | 4 |
    | ``circuit_overrides`` | per-channel keep/fill buffers at every node location | - |

    ``circuit_overrides`` is set by ``Circuit.to_model()``: removed nodes are replaced by their
    ablation value inside the forward pass, exactly where the pruning hooks act.

    A dense model is ``afrac=1.0`` (or no sites) and both densities 1.0; it runs the same code.
    """

    # Pyright flags two things below that are sound here: a required field overriding one with a
    # default (allowed in a kw_only dataclass) and a narrower type than TL's mutable field
    # (this config is immutable after __post_init__, so nothing can write a wider value).
    d_model: int
    d_head: int
    n_layers: int
    n_ctx: int
    n_heads: int  # pyright: ignore[reportGeneralTypeIssues]
    d_mlp: int  # pyright: ignore[reportGeneralTypeIssues, reportIncompatibleVariableOverride]
    d_vocab: int  # pyright: ignore[reportGeneralTypeIssues]
    normalization_type: NormalizationType = "RMS"  # pyright: ignore[reportIncompatibleVariableOverride]
    act_fn: ActFn = "gelu"  # pyright: ignore[reportIncompatibleVariableOverride]
    eps: float = 1e-6
    device: str | None = "cpu"
    dtype: torch.dtype = torch.float32
    default_prepend_bos: bool = True
    positional_embedding_type: str = field(default="none", init=False)  # from positional_embedding
    uses_rms_norm: bool = field(default=True, init=False)
    final_rms: bool = field(default=True, init=False)
    model_name: str = "sparse"
    use_attn_in: bool = False
    use_hook_mlp_in: bool = False
    attn_sinks: bool = True
    use_bigram_table: bool = True
    positional_embedding: PositionalEmbedding = "none"
    use_bias: bool = True
    afrac: float = 0.25
    act_sparse_sites: tuple[ActSite, ...] = field(default=PAPER_ACT_SITES)
    weight_density: float = 1.0
    embed_density: float = 1.0
    min_nonzero_per_neuron: int = 4
    init_std: float = 0.02
    seed: int | None = None
    circuit_overrides: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "_frozen", False)
        for name in ("d_model", "d_head", "n_layers", "n_ctx", "n_heads", "d_mlp", "d_vocab"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name, (required, why) in UNSUPPORTED_TL_FIELDS.items():
            if getattr(self, name) != required:
                raise ValueError(
                    f"{name}={getattr(self, name)!r} is not supported: {why}; it must be {required!r}"
                )
        # run-time checks of values a caller may pass against the annotations (here and below)
        if self.device is not None and not isinstance(self.device, str | torch.device):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise ValueError(f"device must be a str, a torch.device or None, got {self.device!r}")
        if self.device is not None:
            check_device_available(self.device)
        if self.normalization_type not in get_args(NormalizationType):
            raise ValueError(
                f"normalization_type must be one of {get_args(NormalizationType)}, "
                f"got {self.normalization_type!r}"
            )
        if self.act_fn not in get_args(ActFn):
            raise ValueError(f"act_fn must be one of {get_args(ActFn)}, got {self.act_fn!r}")
        if self.positional_embedding not in get_args(PositionalEmbedding):
            raise ValueError(
                "positional_embedding must be one of "
                f"{get_args(PositionalEmbedding)}, got {self.positional_embedding!r}"
            )
        if not (isinstance(self.afrac, int | float) and 0.0 < self.afrac <= 1.0):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise ValueError(f"afrac must be in (0, 1], got {self.afrac!r}")
        sites = tuple(self.act_sparse_sites)
        unknown = [s for s in sites if s not in ACT_SITES]
        if unknown:
            raise ValueError(f"act_sparse_sites has unknown sites {unknown}; known: {ACT_SITES}")
        if len(set(sites)) != len(sites):
            raise ValueError(f"act_sparse_sites has duplicates: {sites}")
        object.__setattr__(self, "act_sparse_sites", sites)
        for name in ("weight_density", "embed_density"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value!r}")
        if self.min_nonzero_per_neuron < 0:
            raise ValueError(
                f"min_nonzero_per_neuron must be >= 0, got {self.min_nonzero_per_neuron!r}"
            )
        for name in ("eps", "init_std"):  # NaN and inf pass a plain `<= 0` check
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 < value < math.inf):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if self.use_split_qkv_input and self.use_attn_in:
            raise ValueError("use_split_qkv_input and use_attn_in are mutually exclusive")
        # TL reads positional_embedding_type; keep it consistent with our own field.
        pos_type = "standard" if self.positional_embedding == "learned" else "none"
        object.__setattr__(self, "positional_embedding_type", pos_type)
        object.__setattr__(self, "uses_rms_norm", True)
        object.__setattr__(self, "final_rms", True)
        object.__setattr__(self, "_frozen", True)

    def __setattr__(self, name: str, value: object) -> None:
        if getattr(self, "_frozen", False):
            raise dataclasses.FrozenInstanceError(
                f"SparseTransformerConfig is immutable; use cfg.replace({name}=...)"
            )
        object.__setattr__(self, name, value)

    def replace(self, **changes: object) -> "SparseTransformerConfig":
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    # Derived quantities -------------------------------------------------------------------------
    def act_sparse(self, site: ActSite) -> bool:
        """Whether AbsTopK runs at ``site``."""
        return self.afrac < 1.0 and site in self.act_sparse_sites

    def act_k(self, dim: int) -> int:
        """Entries AbsTopK keeps out of ``dim`` (at least 1)."""
        return max(1, int(self.afrac * dim))

    @property
    def is_weight_sparse(self) -> bool:
        return self.weight_density < 1.0 or self.embed_density < 1.0

    # Serialisation ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with a ``config_version`` field."""
        # Any: one value type per field (int, float, str, list ...), read by name by callers
        out: dict[str, Any] = {"config_version": CONFIG_VERSION}
        for f in dataclasses.fields(self):
            if f.name in _RUNTIME_FLAGS or f.name in ("device",) or f.name in DERIVED_TL_FIELDS:
                continue
            value: object = getattr(self, f.name)
            if isinstance(value, torch.dtype):
                value = str(value).removeprefix("torch.")
            elif isinstance(value, tuple):
                value = list(cast(tuple[object, ...], value))  # isinstance leaves items unknown
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any]) -> "SparseTransformerConfig":
        """Inverse of ``to_dict``; unknown or missing keys raise ``ValueError``.

        Raises:
            ValueError: ``config_dict`` is not an object, has unknown or missing keys, a dtype that
                is not a floating-point torch dtype, or a field inconsistent with the others (named).
        """
        # Any: parsed JSON; each value's type is checked (``_check_field_types``) before ``cls(**d)``
        d = config_dict
        if not isinstance(d, dict):  # pyright: ignore[reportUnnecessaryIsInstance]  # parsed JSON
            raise ValueError(f"config must be a JSON object, got {type(d).__name__}")
        d = _migrate(dict(d))
        derived = {name: d.pop(name) for name in DERIVED_TL_FIELDS if name in d}
        _check_field_types(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"config has unknown keys {unknown}")
        if "dtype" in d:
            name = d["dtype"]
            dtype = getattr(torch, str(name), None)
            if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
                raise ValueError(f"config dtype {name!r} is not a floating-point torch dtype")
            d["dtype"] = dtype
        if "act_sparse_sites" in d:
            d["act_sparse_sites"] = tuple(d["act_sparse_sites"])
        try:
            cfg = cls(**d)
        except TypeError as e:
            raise ValueError(f"config is incomplete or malformed: {e}") from e
        for name, value in derived.items():  # older files wrote these derived fields
            if value != getattr(cfg, name):
                raise ValueError(f"config has {name}={value!r}, inconsistent with its other fields")
        return cfg

    @classmethod
    def tiny(cls, **overrides: Any) -> "SparseTransformerConfig":
        """A 2-layer toy for tests: sinks, bigram table, AbsTopK at all 8 paper sites."""
        # Any: any fields of the constructor, each of its own type (checked by ``__post_init__``)
        base: dict[str, Any] = dict(
            d_model=16, d_head=4, n_heads=4, n_layers=2, d_mlp=32, d_vocab=64, n_ctx=16
        )
        base.update(overrides)
        return cls(**base)


# A field's annotation -> (the JSON type it wants, in words; a check of a parsed JSON value).
_FIELD_TYPES: dict[object, tuple[str, Callable[[object], bool]]] = {
    int: ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    float: ("a number", lambda v: isinstance(v, int | float) and not isinstance(v, bool)),
    bool: ("true or false", lambda v: isinstance(v, bool)),
    str: ("a string", lambda v: isinstance(v, str)),
    str | None: ("a string or null", lambda v: v is None or isinstance(v, str)),
    int | None: ("an integer or null", lambda v: v is None or _FIELD_TYPES[int][1](v)),
    tuple[str, ...]: (
        "a list of strings",
        lambda v: (
            isinstance(v, list | tuple)
            # isinstance leaves the items unknown; a parsed JSON list holds objects
            and all(isinstance(x, str) for x in cast(list[object] | tuple[object, ...], v))
        ),
    ),
    torch.dtype: ("a dtype name such as 'float32'", lambda v: isinstance(v, str)),
}


def _json_type(hint: object) -> object:
    """The ``_FIELD_TYPES`` key of a field's annotation: Literal values are checked as strings
    here (their allowed values in ``__post_init__``)."""
    if get_origin(hint) is Literal:
        return str
    if get_origin(hint) is tuple and get_origin(get_args(hint)[0]) is Literal:
        return tuple[str, ...]
    return hint


def check_device_available(device: str | torch.device) -> None:
    """Refuse a device this machine does not have (``cuda`` without CUDA, ``cuda:3`` on a
    one-GPU machine, ``mps`` off a Mac) or a name torch does not know, before any tensor is
    put there (torch's own error is an ``AssertionError`` from deep inside ``.to``).

    Raises:
        ValueError: naming the device and what the machine has.
    """
    try:
        d = torch.device(device)
    except (RuntimeError, ValueError, TypeError) as e:
        raise ValueError(f"device {str(device)!r} is not a torch device (e.g. cpu, cuda:0)") from e
    if d.type in ("cpu", "meta"):
        return
    backend = getattr(torch, d.type, None)  # torch.cuda, torch.mps, torch.xpu ...
    is_available = getattr(backend, "is_available", None)
    if not callable(is_available) or not is_available():
        raise ValueError(
            f"device {str(device)!r} is not available on this machine (no {d.type.upper()}); "
            "use cpu"
        )
    count = getattr(backend, "device_count", None)
    n = count() if callable(count) else None
    # torch's stub types ``device.index`` as ``int``; it is ``None`` for a bare ``cuda``
    if d.index is not None and isinstance(n, int) and d.index >= n:  # pyright: ignore[reportUnnecessaryComparison]
        raise ValueError(
            f"device {str(device)!r} is not available: this machine has {n} {d.type} device(s)"
        )


def _check_field_types(d: Mapping[str, object]) -> None:
    """Raise ``ValueError`` naming the first field of a serialised config of the wrong JSON
    type (a string ``afrac``, an integer ``act_sparse_sites`` ...)."""
    hints = SparseTransformerConfig.__annotations__
    for name, value in d.items():
        want = _FIELD_TYPES.get(_json_type(hints.get(name)))
        if want is not None and not want[1](value):
            raise ValueError(f"config field {name} must be {want[0]}, got {value!r}")


def _migrate(d: dict[str, Any]) -> dict[str, Any]:
    """Bring an older serialised config up to ``CONFIG_VERSION``."""
    # Any: parsed JSON, passed on to ``from_dict`` (see there)
    version = d.pop("config_version", None)
    if version is None:
        raise ValueError("config has no 'config_version' field")
    if not isinstance(version, int) or version > CONFIG_VERSION or version < 1:
        raise ValueError(
            f"config_version {version!r} is not supported (this sparse_lens reads up to "
            f"{CONFIG_VERSION})"
        )
    return d
