"""Import checkpoints in the layout of OpenAI's ``circuit_sparsity`` release (the paper's code release; architecture in App. A).

``from_circuit_sparsity(state_dict, config)`` takes the ``final_model.pt`` state dict and the
``beeg_config.json`` dict (``GPTConfig`` fields) and returns a ``HookedSparseTransformer`` with
the same logits. Nothing is downloaded: the caller loads both from disk (``openai_models/weights.py`` and
``sparse-lens import-oai`` do, with the tokenizer files).

Name table (OpenAI ``nn.Linear`` weights are ``[out, in]``; TL layout is ``[in, out]``):

| circuit_sparsity | sparse_lens |
|---|---|
| ``transformer.wte.weight`` ``[V d]`` | ``embed.W_E`` |
| ``transformer.wpe.weight`` ``[n_ctx d]`` | ``pos_embed.W_pos`` (only if nonzero) |
| ``transformer.h.{i}.ln_1.weight`` / ``ln_2.weight`` | ``blocks.{i}.ln1.w`` / ``ln2.w`` |
| ``transformer.h.{i}.attn.c_attn.weight`` ``[3He d]`` | ``W_Q, W_K, W_V`` ``[H d e]`` |
| ``transformer.h.{i}.attn.c_attn.bias`` ``[3He]`` | ``b_Q, b_K, b_V`` ``[H e]`` |
| ``transformer.h.{i}.attn.c_proj.weight`` ``[d He]`` | ``W_O`` ``[H e d]`` |
| ``transformer.h.{i}.attn.attn_imp.sink_logit`` ``[H]`` | ``blocks.{i}.attn.sinks`` |
| ``transformer.h.{i}.mlp.c_fc.weight`` ``[d_mlp d]`` | ``W_in`` ``[d d_mlp]`` |
| ``transformer.h.{i}.mlp.c_proj.weight`` ``[d d_mlp]`` | ``W_out`` ``[d_mlp d]`` |
| ``transformer.ln_f.weight`` | ``ln_final.w`` |
| ``lm_head.weight`` ``[V d]`` | ``unembed.W_U`` ``[d V]`` |
| ``final_logits_bias`` ``[V]`` | ``unembed.b_U`` |
| ``bigram_table`` ``[V V]`` | ``bigram.W_bigram`` |

Config keys (``check_gpt_config``): every key is typed and range-checked (``CONFIG_KINDS``)
before any tensor is built. Keys that change the forward pass must hold their one supported
value (``SUPPORTED_ONLY``: RMSNorm, identity residual, no concatenated positions, no tied aux
matrix, and the ten fields the Hugging Face checkpoint's ``to_circuit_config()`` passes);
training-only keys are dropped, each with a reason (``TRAINING_ONLY``). Every tensor's shape is
compared with the config (``check_oai_tensors``, naming the key and both shapes) before
anything is reshaped.

Unsupported variants (LayerNorm instead of RMSNorm, concatenated positional embeddings, ReLU on
the residual stream) raise ``ValueError``.
"""

import json
import math
import re
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from sparse_lens.model.config import ACT_SITES, SparseTransformerConfig
from sparse_lens.model.transformer import HookedSparseTransformer


def _pos_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _opt(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


_POS_INT = (_pos_int, "a positive integer")
_OPT_POS_INT = (_opt(_pos_int), "a positive integer or null")
_BOOL = (lambda v: isinstance(v, bool), "true or false")
_STR = (lambda v: isinstance(v, str), "a string")
_OPT_STR = (_opt(lambda v: isinstance(v, str)), "a string or null")
_FRAC = (_opt(lambda v: _number(v) and 0 < v <= 1), "a number in (0, 1] or null")
_DROPOUT = (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)")
_POS_NUM = (_opt(lambda v: _number(v) and v > 0), "a positive number or null")

# Every key a released config may hold, with its type and range: OpenAI's ``GPTConfig`` fields
# (``beeg_config.json`` is its ``asdict``), the older keys its ``load_model`` still takes
# (``n_mlp``, read as ``d_mlp``; ``use_tied_aux_matrix``, which must be false), the training keys
# the released configs carry beyond ``GPTConfig`` (``load_model`` pops ``bigram_table_rank`` and
# ``pfrac``; readers of ``csp_yolo1`` list the rest), and the ten fields the Hugging Face
# checkpoint's ``to_circuit_config()`` passes (``unembed_rank`` ... ``scale_invariance``).
CONFIG_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    **dict.fromkeys(("n_layer", "n_head", "d_model", "vocab_size", "block_size"), _POS_INT),
    **dict.fromkeys(("d_head", "d_mlp", "n_mlp", "d_pos_emb", "n_embd"), _OPT_POS_INT),
    **dict.fromkeys(("unembed_rank", "bigram_table_rank"), _OPT_POS_INT),
    **dict.fromkeys(
        (
            "bias", "ln_bias", "rms_norm", "debug_nans", "tied_unembed", "grad_checkpointing",
            "enable_bigram_table", "learnable_bigram_table", "dropout_cat_pos_emb",
            "sinusoidal_cat_pos_emb", "enable_sparse_kernels", "flash", "sink",
            "use_tied_aux_matrix", "debug_exact_topk", "afrac_ste", "afrac_ste_only_non_neurons",
            "afrac_approx", "rtopk", "mup", "enable_fp8_linear", "scale_invariance",
        ),
        _BOOL,
    ),
    **dict.fromkeys(("residual_activation_type", "activation_type", "afrac_loctypes"), _STR),
    **dict.fromkeys(("tokenizer_name", "sparse_matmul_impl"), _OPT_STR),
    "dropout": _DROPOUT,
    "afrac": _FRAC,
    "pfrac": _FRAC,
    **dict.fromkeys(("expansion_factor", "expansion_factor_mlp", "mup_width_multiplier"), _POS_NUM),
}  # fmt: skip
GPT_CONFIG_FIELDS = frozenset(CONFIG_KINDS)

# Keys that change the forward pass, with the one value this port (and OpenAI's published
# ``GPT``) supports; any other value is refused, naming the key and the value.
SUPPORTED_ONLY: dict[str, Any] = {
    "rms_norm": True,
    "residual_activation_type": "identity",
    "d_pos_emb": None,
    "use_tied_aux_matrix": False,
    "unembed_rank": None,
    "bigram_table_rank": None,
    "afrac_ste": False,
    "afrac_ste_only_non_neurons": False,
    "afrac_approx": False,
    "rtopk": False,
    "mup": False,
    "mup_width_multiplier": None,
    "enable_fp8_linear": False,
    "scale_invariance": False,
}

# Keys read and dropped: each only steers training or a kernel choice, or is a width the
# tensors themselves carry (checked against them). The reason goes into the written config.
TRAINING_ONLY: dict[str, str] = {
    "dropout": "dropout is off at inference",
    "debug_nans": "a NaN-assertion switch",
    "grad_checkpointing": "recomputation during training; the same forward",
    "flash": "attention kernel choice; the same forward (sink logits come from the weights)",
    "enable_sparse_kernels": "kernel choice; the same forward",
    "sparse_matmul_impl": "sparse-kernel choice for training; the same forward",
    "debug_exact_topk": "a training switch; the released forward's AbsTopK is exact",
    "learnable_bigram_table": "whether training updates the table; it is read from the weights",
    "ln_bias": "a LayerNorm setting; these models use RMSNorm, which has no bias",
    "dropout_cat_pos_emb": "only used with concatenated positions (d_pos_emb), which are off",
    "sinusoidal_cat_pos_emb": "only used with concatenated positions (d_pos_emb), which are off",
    "pfrac": "the training weight density (OpenAI's load_model pops it)",
    "expansion_factor": "the width multiplier used to set d_model; d_model is checked",
    "expansion_factor_mlp": "the width multiplier used to set d_mlp; d_mlp is checked",
    "n_embd": "not a GPTConfig field (nanoGPT's width name); the width read is d_model",
    "tokenizer_name": "the tokenizer comes from the given files (a non-tinypython name warns)",
}


def check_gpt_config(config: dict[str, Any]) -> dict[str, str]:
    """Type- and range-check every key of a released config, before any tensor is built;
    returns the keys read and dropped, each with the reason (``TRAINING_ONLY``).

    Source: ``GPTConfig`` and ``load_model`` in ``circuit_sparsity/inference/gpt.py``
    (github.com/openai/circuit_sparsity); the paper's released models (arXiv 2511.13653, §1).

    Raises:
        ValueError: an unknown key, a value of the wrong type or range, an architecture key with
            a value other than the supported one (each named with its value), or both ``n_mlp``
            and ``d_mlp``.
    """
    unknown = sorted(set(config) - GPT_CONFIG_FIELDS)
    if unknown:
        raise ValueError(f"circuit_sparsity config has keys GPTConfig does not know: {unknown}")
    for key, value in config.items():
        check, want = CONFIG_KINDS[key]
        if not check(value):
            raise ValueError(f"circuit_sparsity config {key}={value!r}: must be {want}")
        if key in SUPPORTED_ONLY and value != SUPPORTED_ONLY[key]:
            raise ValueError(
                f"circuit_sparsity config {key}={value!r} is not supported (only "
                f"{json_value(SUPPORTED_ONLY[key])}: it changes the architecture)"
            )
    if config.get("n_mlp") is not None and config.get("d_mlp") is not None:
        raise ValueError("circuit_sparsity config has both n_mlp and d_mlp; n_mlp is d_mlp")
    for key in ("n_layer", "n_head", "d_model", "vocab_size", "block_size", "rms_norm"):
        if key not in config:
            raise ValueError(f"circuit_sparsity config lacks {key!r}")
    return {k: TRAINING_ONLY[k] for k in config if k in TRAINING_ONLY}


def json_value(value: Any) -> str:
    """``value`` as JSON spells it (``true``, ``null``, ``"identity"``)."""
    return json.dumps(value)


def config_from_circuit_sparsity(
    config: dict[str, Any], wpe_nonzero: bool
) -> SparseTransformerConfig:
    """Translate a ``GPTConfig`` dict into a ``SparseTransformerConfig``.

    Raises:
        ValueError: a key ``GPTConfig`` does not have, a missing size, a value of the wrong type
            or range, or a variant this port does not support (each named, with its value).
    """
    check_gpt_config(config)
    c = dict(config)
    if c.get("n_mlp") is not None:  # older configs, as OpenAI's own loader renames
        c["d_mlp"] = c["n_mlp"]
    d_model, n_heads = c["d_model"], c["n_head"]
    sites = tuple(s for s in c.get("afrac_loctypes", ",".join(_DEFAULT_SITES)).split(",") if s)
    unknown = [s for s in sites if s not in ACT_SITES]
    if unknown:
        raise ValueError(f"circuit_sparsity afrac_loctypes has unknown sites {unknown}")
    act_fn = c.get("activation_type", "gelu")
    if act_fn not in ("gelu", "relu"):
        raise ValueError(f"circuit_sparsity config activation_type={act_fn!r}: gelu or relu")
    d_head = c.get("d_head") or d_model // n_heads
    d_mlp = c.get("d_mlp") or 4 * d_model
    afrac = c.get("afrac")
    if afrac is not None:  # OpenAI keeps int(afrac * width) entries, zero if that rounds to 0
        widths = {"attn_q": n_heads * d_head, "attn_k": n_heads * d_head}
        widths |= {"attn_v": n_heads * d_head, "mlp_neuron": d_mlp}
        empty = [s for s in sites if int(afrac * widths.get(s, d_model)) == 0]
        if empty:
            raise ValueError(f"afrac={afrac} keeps no entries at {empty}; not supported")
    return SparseTransformerConfig(
        d_model=d_model,
        n_heads=n_heads,
        d_head=d_head,
        n_layers=c["n_layer"],
        d_mlp=d_mlp,
        d_vocab=c["vocab_size"],
        n_ctx=c["block_size"],
        act_fn=act_fn,
        eps=torch.finfo(torch.float32).eps,  # nn.RMSNorm(eps=None)
        attn_sinks=c.get("sink", False),
        use_bigram_table=c.get("enable_bigram_table", False),
        positional_embedding="learned" if wpe_nonzero else "none",
        use_bias=c.get("bias", True),
        afrac=1.0 if afrac is None else float(afrac),
        act_sparse_sites=sites,
        default_prepend_bos=False,
        model_name="circuit_sparsity",
    )


_DEFAULT_SITES = ("attn_in", "attn_out", "mlp_in", "mlp_out")


def _take(sd: dict[str, Tensor], key: str) -> Tensor:
    if key not in sd:
        raise ValueError(f"circuit_sparsity state dict lacks {key!r}")
    return sd.pop(key)


_LAYER_KEY = re.compile(r"transformer\.h\.(\d+)\.(.+)")


def oai_shape(key: str, cfg: SparseTransformerConfig) -> tuple[tuple[int, ...], str] | None:
    """The shape ``key`` must have in a ``circuit_sparsity`` state dict of the model ``cfg``
    describes, with the config fields it comes from; ``None`` for a key the model lacks.

    Source: the module shapes of ``GPT`` in ``circuit_sparsity/inference/gpt.py``
    (github.com/openai/circuit_sparsity).
    """
    d, V, T, H, e, m = cfg.d_model, cfg.d_vocab, cfg.n_ctx, cfg.n_heads, cfg.d_head, cfg.d_mlp
    top = {
        "transformer.wte.weight": ((V, d), "vocab_size, d_model"),
        "transformer.wpe.weight": ((T, d), "block_size, d_model"),
        "transformer.ln_f.weight": ((d,), "d_model"),
        "lm_head.weight": ((V, d), "vocab_size, d_model"),
        "final_logits_bias": ((V,), "vocab_size"),
        "bigram_table": ((V, V), "vocab_size"),
    }
    match = _LAYER_KEY.fullmatch(key)
    if match is None or int(match[1]) >= cfg.n_layers:
        return top.get(key)
    qkv, he = "3 * n_head * d_head", "n_head * d_head"
    return {
        "ln_1.weight": ((d,), "d_model"),
        "ln_2.weight": ((d,), "d_model"),
        "attn.c_attn.weight": ((3 * H * e, d), f"{qkv}, d_model"),
        "attn.c_attn.bias": ((3 * H * e,), qkv),
        "attn.c_proj.weight": ((d, H * e), f"d_model, {he}"),
        "attn.c_proj.bias": ((d,), "d_model"),
        "attn.attn_imp.sink_logit": ((H,), "n_head"),
        "attn.bias": ((1, 1, T, T), "1, 1, block_size, block_size"),
        "mlp.c_fc.weight": ((m, d), "d_mlp, d_model"),
        "mlp.c_fc.bias": ((m,), "d_mlp"),
        "mlp.c_proj.weight": ((d, m), "d_model, d_mlp"),
        "mlp.c_proj.bias": ((d,), "d_model"),
    }.get(match[2])


def check_oai_tensors(sd: dict[str, Tensor], cfg: SparseTransformerConfig) -> None:
    """Compare every tensor of a ``circuit_sparsity`` state dict with the shape the config
    implies, before anything is reshaped or allocated.

    Raises:
        ValueError: a tensor that is not floating point, or of another shape than the config
            implies (the key, both shapes and the config fields named); a key the model lacks.
    """
    sizes = {"vocab_size": cfg.d_vocab, "d_model": cfg.d_model, "block_size": cfg.n_ctx}
    sizes |= {"n_head": cfg.n_heads, "d_head": cfg.d_head, "d_mlp": cfg.d_mlp}
    for key, tensor in sd.items():
        if not tensor.is_floating_point():
            raise ValueError(f"{key}: dtype {tensor.dtype}; weights must be floating point")
        spec = oai_shape(key, cfg)
        if spec is None:
            continue  # left over: named after the conversion
        want, fields = spec
        got = tuple(tensor.shape)
        if got != want and not (key.endswith("sink_logit") and got == (1,)):
            used = ", ".join(f"{f}={sizes[f]}" for f in sizes if f in fields)
            raise ValueError(
                f"{key} has shape {got} in the weights, but the config implies {want} "
                f"({fields}; {used})"
            )


def _convert_layer(
    sd: dict[str, Tensor], cfg: SparseTransformerConfig, i: int, new: dict[str, Tensor]
) -> None:
    H, e, d = cfg.n_heads, cfg.d_head, cfg.d_model
    p, q = f"transformer.h.{i}.", f"blocks.{i}."
    new[q + "ln1.w"] = _take(sd, p + "ln_1.weight")
    new[q + "ln2.w"] = _take(sd, p + "ln_2.weight")
    w_qkv = _take(sd, p + "attn.c_attn.weight")  # [3 H e, d]
    for name, w in zip(("W_Q", "W_K", "W_V"), w_qkv.split(H * e, dim=0), strict=True):
        new[q + f"attn.{name}"] = w.reshape(H, e, d).transpose(1, 2).contiguous()
    new[q + "attn.W_O"] = _take(sd, p + "attn.c_proj.weight").T.reshape(H, e, d).contiguous()
    new[q + "mlp.W_in"] = _take(sd, p + "mlp.c_fc.weight").T.contiguous()
    new[q + "mlp.W_out"] = _take(sd, p + "mlp.c_proj.weight").T.contiguous()
    if cfg.use_bias:
        b_qkv = _take(sd, p + "attn.c_attn.bias")
        for name, b in zip(("b_Q", "b_K", "b_V"), b_qkv.split(H * e), strict=True):
            new[q + f"attn.{name}"] = b.reshape(H, e)
        new[q + "attn.b_O"] = _take(sd, p + "attn.c_proj.bias")
        new[q + "mlp.b_in"] = _take(sd, p + "mlp.c_fc.bias")
        new[q + "mlp.b_out"] = _take(sd, p + "mlp.c_proj.bias")
    if cfg.attn_sinks:
        sink = _take(sd, p + "attn.attn_imp.sink_logit")
        new[q + "attn.sinks"] = sink.expand(H).clone()


def from_circuit_sparsity(
    state_dict: dict[str, Tensor], config: dict[str, Any]
) -> HookedSparseTransformer:
    """Build a ``HookedSparseTransformer`` from an OpenAI ``circuit_sparsity`` checkpoint.

    ``state_dict``: ``GPT.state_dict()`` names (``[out, in]`` weights; a ``_orig_mod.`` prefix
    is dropped); ``config``: the ``beeg_config.json`` dict. Every config field is checked
    (``check_gpt_config``) and every tensor's shape compared with it (``check_oai_tensors``)
    before anything is reshaped or allocated.

    Raises:
        ValueError: a config field of the wrong type, range or value, or a variant this port
            does not support; a tensor missing, left over, not floating point or of the wrong
            shape (each named).
    """
    sd = {k.removeprefix("_orig_mod."): v.detach() for k, v in state_dict.items()}
    wpe = sd.get("transformer.wpe.weight")
    if wpe is not None and not wpe.is_floating_point():
        raise ValueError(
            f"transformer.wpe.weight: dtype {wpe.dtype}; weights must be floating point"
        )
    cfg = config_from_circuit_sparsity(config, wpe_nonzero=wpe is not None and bool(wpe.any()))
    check_oai_tensors(sd, cfg)
    sd = {k: v.float() for k, v in sd.items()}
    if "lm_head.weight" not in sd and config.get("tied_unembed") and "transformer.wte.weight" in sd:
        sd["lm_head.weight"] = sd["transformer.wte.weight"]  # a tied copy deduplicated on save
    new: dict[str, Tensor] = {"embed.W_E": _take(sd, "transformer.wte.weight")}
    wpe = sd.pop("transformer.wpe.weight", None)
    if wpe is not None and cfg.positional_embedding == "learned":
        new["pos_embed.W_pos"] = wpe
    for i in range(cfg.n_layers):
        _convert_layer(sd, cfg, i, new)
    new["ln_final.w"] = _take(sd, "transformer.ln_f.weight")
    new["unembed.W_U"] = _take(sd, "lm_head.weight").T.contiguous()
    if "final_logits_bias" in sd:
        new["unembed.b_U"] = sd.pop("final_logits_bias")
    if cfg.use_bigram_table:
        new["bigram.W_bigram"] = _take(sd, "bigram_table")
    sd.pop("bigram_table", None)
    masks = {f"transformer.h.{i}.attn.bias" for i in range(cfg.n_layers)}  # causal-mask buffers
    leftovers = sorted(k for k in sd if k not in masks)
    if leftovers:
        raise ValueError(f"circuit_sparsity state dict has unconverted tensors {leftovers[:8]}")
    return _build(cfg, new)


def _build(cfg: SparseTransformerConfig, new: dict[str, Tensor]) -> HookedSparseTransformer:
    # shapes again, on the converted names, from a model on the meta device
    from sparse_lens.model.checkpoint import check_finite, expected_shapes  # noqa: PLC0415

    with torch.device("meta"):
        params = {name for name, _ in HookedSparseTransformer(cfg).named_parameters()}
    expected = expected_shapes(cfg, HookedSparseTransformer)
    for name, tensor in new.items():
        if name not in expected or expected[name] != tuple(tensor.shape):
            raise ValueError(
                f"{name}: shape {tuple(tensor.shape)} does not fit the config "
                f"({expected.get(name)})"
            )
    missing = sorted(params - set(new) - {"unembed.b_U"})  # buffers (bias=False zeros) stay
    if missing:
        raise ValueError(f"circuit_sparsity import left {missing} unset")
    check_finite(new, "circuit_sparsity state dict")
    model = HookedSparseTransformer(cfg)
    model.load_state_dict(new, strict=False)
    return model
