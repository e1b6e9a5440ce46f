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

Unsupported variants (LayerNorm instead of RMSNorm, concatenated positional embeddings, ReLU on
the residual stream) raise ``ValueError``.
"""

from typing import Any

import torch
from torch import Tensor

from sparse_lens.model.config import ACT_SITES, SparseTransformerConfig
from sparse_lens.model.transformer import HookedSparseTransformer

# Every field of OpenAI's ``GPTConfig`` (``beeg_config.json`` is its ``asdict``), plus the two
# older keys their loader still accepts (``n_mlp``, renamed ``d_mlp``; ``use_tied_aux_matrix``,
# which must be false).
GPT_CONFIG_FIELDS = frozenset(
    [
        "block_size",
        "vocab_size",
        "n_layer",
        "n_head",
        "d_head",
        "d_model",
        "dropout",
        "bias",
        "ln_bias",
        "rms_norm",
        "residual_activation_type",
        "activation_type",
        "afrac",
        "afrac_loctypes",
        "debug_nans",
        "tied_unembed",
        "tokenizer_name",
        "grad_checkpointing",
        "d_mlp",
        "enable_bigram_table",
        "learnable_bigram_table",
        "d_pos_emb",
        "dropout_cat_pos_emb",
        "sinusoidal_cat_pos_emb",
        "enable_sparse_kernels",
        "flash",
        "sink",
        "n_mlp",
        "use_tied_aux_matrix",
    ]
)


def config_from_circuit_sparsity(
    config: dict[str, Any], wpe_nonzero: bool
) -> SparseTransformerConfig:
    """Translate a ``GPTConfig`` dict into a ``SparseTransformerConfig``.

    Raises:
        ValueError: a key ``GPTConfig`` does not have, a missing size, or a variant this port
            does not support (each named).
    """
    c = dict(config)
    unknown = sorted(set(c) - GPT_CONFIG_FIELDS)
    if unknown:
        raise ValueError(f"circuit_sparsity config has keys GPTConfig does not know: {unknown}")
    if c.pop("use_tied_aux_matrix", False):
        raise ValueError("use_tied_aux_matrix=True models are not supported")
    if "n_mlp" in c:  # older configs, as OpenAI's own loader renames
        c["d_mlp"] = c.pop("n_mlp")
    for key in ("n_layer", "n_head", "d_model", "vocab_size", "block_size"):
        if key not in c:
            raise ValueError(f"circuit_sparsity config lacks {key!r}")
    if not c.get("rms_norm", False):
        raise ValueError("only rms_norm=True circuit_sparsity models can be imported")
    if c.get("d_pos_emb") is not None:
        raise ValueError("concatenated positional embeddings (d_pos_emb) are not supported")
    if c.get("residual_activation_type", "identity") != "identity":
        raise ValueError(
            f"residual_activation_type={c['residual_activation_type']!r} is not supported"
        )
    d_model, n_heads = int(c["d_model"]), int(c["n_head"])
    afrac = c.get("afrac")
    sites_str = c.get("afrac_loctypes", "attn_in,attn_out,mlp_in,mlp_out")
    sites = tuple(s for s in sites_str.split(",") if s)
    unknown = [s for s in sites if s not in ACT_SITES]
    if unknown:
        raise ValueError(f"circuit_sparsity afrac_loctypes has unknown sites {unknown}")
    d_head = int(c.get("d_head") or d_model // n_heads)
    d_mlp = int(c.get("d_mlp") or 4 * d_model)
    if afrac is not None:  # OpenAI keeps int(afrac * width) entries, zero if that rounds to 0
        widths = {"attn_q": n_heads * d_head, "attn_k": n_heads * d_head}
        widths |= {"attn_v": n_heads * d_head, "mlp_neuron": d_mlp}
        empty = [s for s in sites if int(float(afrac) * widths.get(s, d_model)) == 0]
        if empty:
            raise ValueError(f"afrac={afrac} keeps no entries at {empty}; not supported")
    return SparseTransformerConfig(
        d_model=d_model,
        n_heads=n_heads,
        d_head=d_head,
        n_layers=int(c["n_layer"]),
        d_mlp=d_mlp,
        d_vocab=int(c["vocab_size"]),
        n_ctx=int(c["block_size"]),
        act_fn=c.get("activation_type", "gelu"),
        eps=torch.finfo(torch.float32).eps,  # nn.RMSNorm(eps=None)
        attn_sinks=bool(c.get("sink", False)),
        use_bigram_table=bool(c.get("enable_bigram_table", False)),
        positional_embedding="learned" if wpe_nonzero else "none",
        use_bias=bool(c.get("bias", True)),
        afrac=1.0 if afrac is None else float(afrac),
        act_sparse_sites=sites,
        default_prepend_bos=False,
        model_name="circuit_sparsity",
    )


def _take(sd: dict[str, Tensor], key: str) -> Tensor:
    if key not in sd:
        raise ValueError(f"circuit_sparsity state dict lacks {key!r}")
    return sd.pop(key)


def from_circuit_sparsity(
    state_dict: dict[str, Tensor], config: dict[str, Any]
) -> HookedSparseTransformer:
    """Build a ``HookedSparseTransformer`` from an OpenAI ``circuit_sparsity`` checkpoint.

    Raises:
        ValueError: a tensor is missing, left over, or of the wrong shape, or the config uses a
            variant this port does not support.
    """
    sd = {k.removeprefix("_orig_mod."): v.detach().float() for k, v in state_dict.items()}
    wpe = sd.get("transformer.wpe.weight")
    cfg = config_from_circuit_sparsity(config, wpe_nonzero=wpe is not None and bool(wpe.any()))
    H, e, d = cfg.n_heads, cfg.d_head, cfg.d_model
    new: dict[str, Tensor] = {"embed.W_E": _take(sd, "transformer.wte.weight")}
    if wpe is not None:
        sd.pop("transformer.wpe.weight")
        if cfg.positional_embedding == "learned":
            new["pos_embed.W_pos"] = wpe
    for i in range(cfg.n_layers):
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
    # shapes first, from a model on the meta device: a config claiming a huge vocabulary must
    # not allocate its tables before the tensors it comes with are compared
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
