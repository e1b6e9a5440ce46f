"""Builders of files in the layout OpenAI publishes for circuit_sparsity, written from its format
(``paper.md`` §1, §2.1, §7) in plain Python/torch, without sparse_lens code.

* ``write_gpt2_bpe``: a GPT-2 "data gym" pair ``vocab.bpe`` + ``encoder.json``, with merges
  learned by a naive pair-counting BPE; ``reference_encode`` is tiktoken's rank-merge algorithm.
* ``gpt_config`` / ``gpt_state_dict``: ``beeg_config.json`` (``asdict(GPTConfig)``, every field)
  and ``final_model.pt`` (``GPT.state_dict()`` key names and shapes).
* ``reference_forward``: the forward pass of the paper's model written out from its description.
"""

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import regex
import torch
import torch.nn.functional as F

PATTERN = r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
EOT = "<|endoftext|>"


def byte_spelling() -> tuple[list[int], dict[int, str]]:
    """GPT-2's byte order (printable first) and byte -> character table."""
    order = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    spell = {b: chr(b) for b in order}
    n = 0
    for b in range(256):
        if b not in spell:
            order.append(b)
            spell[b] = chr(256 + n)
            n += 1
    return order, spell


def learn_merges(texts: list[str], n_merges: int) -> list[tuple[bytes, bytes]]:
    words = Counter(
        tuple(bytes([b]) for b in piece.encode())
        for t in texts
        for piece in regex.findall(PATTERN, t)
    )
    merges = []
    for _ in range(n_merges):
        pairs: Counter = Counter()
        for w, c in words.items():
            for a, b in zip(w, w[1:], strict=False):
                pairs[(a, b)] += c
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        new: Counter = Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new[tuple(out)] += c
        words = new
    return merges


def write_gpt2_bpe(
    directory: Path, texts: list[str], n_merges: int, eot_in_encoder: bool = True
) -> dict[bytes, int]:
    """Write the pair; returns the ranks (token bytes -> id) tiktoken would derive."""
    order, spell = byte_spelling()
    ranks = {bytes([b]): i for i, b in enumerate(order)}
    merges = learn_merges(texts, n_merges)
    for a, b in merges:
        ranks[a + b] = len(ranks)

    def s(tok: bytes) -> str:
        return "".join(spell[b] for b in tok)

    directory.mkdir(parents=True, exist_ok=True)
    lines = ["#version: 0.2"] + [f"{s(a)} {s(b)}" for a, b in merges]
    (directory / "vocab.bpe").write_text("\n".join(lines) + "\n", encoding="utf-8")
    encoder = {s(t): i for t, i in ranks.items()}
    if eot_in_encoder:
        encoder[EOT] = len(ranks)
    (directory / "encoder.json").write_text(json.dumps(encoder), encoding="utf-8")
    return ranks


def reference_encode(text: str, ranks: dict[bytes, int]) -> list[int]:
    """tiktoken's byte-pair merge: repeatedly join the adjacent pair of lowest rank."""
    out = []
    for piece in regex.findall(PATTERN, text):
        parts = [bytes([b]) for b in piece.encode()]
        while len(parts) > 1:
            cands = [
                (ranks.get(a + b, math.inf), i)
                for i, (a, b) in enumerate(zip(parts, parts[1:], strict=False))
            ]
            rank, i = min(cands)
            if rank == math.inf:
                break
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        out += [ranks[p] for p in parts]
    return out


# ------------------------------------------------------------------------- model files
def gpt_config(**overrides: Any) -> dict[str, Any]:
    """Every field of OpenAI's ``GPTConfig``, as ``asdict`` writes it to ``beeg_config.json``."""
    cfg = dict(
        block_size=16,
        vocab_size=40,
        n_layer=2,
        n_head=3,
        d_head=4,
        d_model=12,
        dropout=0.0,
        bias=True,
        ln_bias=True,
        rms_norm=True,
        residual_activation_type="identity",
        activation_type="gelu",
        afrac=0.25,
        afrac_loctypes="attn_in,attn_out,mlp_in,mlp_out,mlp_neuron,attn_v,attn_k,attn_q",
        debug_nans=False,
        tied_unembed=False,
        tokenizer_name="tinypython_2k",
        grad_checkpointing=True,
        d_mlp=24,
        enable_bigram_table=True,
        learnable_bigram_table=True,
        d_pos_emb=None,
        dropout_cat_pos_emb=False,
        sinusoidal_cat_pos_emb=False,
        enable_sparse_kernels=False,
        flash=True,
        sink=True,
    )
    cfg.update(overrides)
    return cfg


def gpt_state_dict(
    cfg: dict[str, Any], seed: int = 0, wpe: bool = False
) -> dict[str, torch.Tensor]:
    """Random weights under ``GPT(cfg).state_dict()``'s names, shapes and entries."""
    g = torch.Generator().manual_seed(seed)
    d, h, e, m, v = cfg["d_model"], cfg["n_head"], cfg["d_head"], cfg["d_mlp"], cfg["vocab_size"]
    T = cfg["block_size"]

    def r(*shape: int, s: float = 0.3) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * s

    sd = {
        "transformer.wte.weight": r(v, d),
        "transformer.wpe.weight": r(T, d) if wpe else torch.zeros(T, d),
    }
    for i in range(cfg["n_layer"]):
        p = f"transformer.h.{i}."
        sd[p + "ln_1.weight"] = 1 + r(d, s=0.1)
        sd[p + "attn.c_attn.weight"] = r(3 * h * e, d)
        if cfg["bias"]:
            sd[p + "attn.c_attn.bias"] = r(3 * h * e, s=0.1)
        sd[p + "attn.c_proj.weight"] = r(d, h * e)
        if cfg["bias"]:
            sd[p + "attn.c_proj.bias"] = r(d, s=0.1)
        if cfg["flash"] and cfg["sink"]:
            sd[p + "attn.attn_imp.sink_logit"] = r(h, s=1.0)
        if not cfg["flash"]:
            sd[p + "attn.bias"] = torch.ones(T, T).tril().view(1, 1, T, T)
        sd[p + "ln_2.weight"] = 1 + r(d, s=0.1)
        sd[p + "mlp.c_fc.weight"] = r(m, d)
        if cfg["bias"]:
            sd[p + "mlp.c_fc.bias"] = r(m, s=0.1)
        sd[p + "mlp.c_proj.weight"] = r(d, m)
        if cfg["bias"]:
            sd[p + "mlp.c_proj.bias"] = r(d, s=0.1)
    sd["transformer.ln_f.weight"] = 1 + r(d, s=0.1)
    sd["lm_head.weight"] = sd["transformer.wte.weight"] if cfg["tied_unembed"] else r(v, d)
    sd["final_logits_bias"] = torch.zeros(v)
    if cfg["enable_bigram_table"]:
        sd["bigram_table"] = torch.rand(v, v, generator=g) * 0.5
    return sd


def write_oai_folder(directory: Path, cfg: dict[str, Any], sd: dict[str, torch.Tensor]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "beeg_config.json").write_text(json.dumps(cfg, indent=2))
    torch.save(sd, directory / "final_model.pt")
    return directory


def reference_forward(
    sd: dict[str, torch.Tensor], cfg: dict[str, Any], idx: torch.Tensor
) -> torch.Tensor:
    """Logits ``[batch pos vocab]`` of the paper's model (App. A; Fig. 12), from the weights in
    OpenAI's ``[out, in]`` layout: pre-norm RMSNorm blocks, AbsTopK (k = int(afrac * width)) at
    the configured locations, causal attention with an optional per-head sink logit in the
    softmax denominator, GELU MLP, untied unembedding plus the bigram table row of each token."""
    h, e = cfg["n_head"], cfg["d_head"]
    sites = cfg["afrac_loctypes"].split(",") if cfg["afrac"] is not None else []
    B, T = idx.shape

    def topk(x: torch.Tensor, site: str) -> torch.Tensor:
        if site not in sites:
            return x
        k = int(cfg["afrac"] * x.shape[-1])
        keep = x.abs().topk(k, dim=-1).indices
        return torch.zeros_like(x).scatter(-1, keep, x.gather(-1, keep))

    def rms(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        eps = torch.finfo(torch.float32).eps
        return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w

    def lin(x: torch.Tensor, name: str) -> torch.Tensor:
        y = x @ sd[name + ".weight"].T
        return y + sd[name + ".bias"] if cfg["bias"] else y

    x = sd["transformer.wte.weight"][idx] + sd["transformer.wpe.weight"][:T]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for i in range(cfg["n_layer"]):
        p = f"transformer.h.{i}."
        a = topk(rms(x, sd[p + "ln_1.weight"]), "attn_in")
        q, k, v = lin(a, p + "attn.c_attn").split(h * e, dim=-1)
        q, k, v = topk(q, "attn_q"), topk(k, "attn_k"), topk(v, "attn_v")
        q, k, v = (t.reshape(B, T, h, e).permute(0, 2, 1, 3) for t in (q, k, v))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(e)
        scores = scores.masked_fill(~causal, -math.inf)
        if cfg["sink"]:
            sink = sd[p + "attn.attn_imp.sink_logit"].view(1, h, 1, 1).expand(B, h, T, 1)
            probs = torch.cat([sink, scores], dim=-1).softmax(-1)[..., 1:]  # zero-value slot
        else:
            probs = scores.softmax(-1)
        z = (probs @ v).permute(0, 2, 1, 3).reshape(B, T, h * e)
        x = x + topk(lin(z, p + "attn.c_proj"), "attn_out")
        mi = topk(rms(x, sd[p + "ln_2.weight"]), "mlp_in")
        act = F.gelu(lin(mi, p + "mlp.c_fc"))
        x = x + topk(lin(topk(act, "mlp_neuron"), p + "mlp.c_proj"), "mlp_out")
    logits = rms(x, sd["transformer.ln_f.weight"]) @ sd["lm_head.weight"].T
    logits = logits + sd["final_logits_bias"]
    if cfg["enable_bigram_table"]:
        logits = logits + sd["bigram_table"][idx]
    return logits


# ------------------------------------------------------------------------- released files
# What the released files hold beyond what OpenAI's code declares, as public code written against
# them documents it (nothing can be downloaded here):
# * beeg_config.json: github.com/openai/circuit_sparsity ``circuit_sparsity/inference/gpt.py``
#   (``load_model`` pops ``bigram_table_rank`` and ``pfrac``, renames ``n_mlp`` to ``d_mlp`` and
#   asserts ``use_tied_aux_matrix`` is false); readers of the released ``csp_yolo1`` folder list
#   ``bigram_table_rank, n_embd, pfrac, expansion_factor, expansion_factor_mlp,
#   debug_exact_topk, sparse_matmul_impl`` beyond ``GPTConfig``.
# * the Hugging Face checkpoint ``openai/circuit-sparsity`` (``trust_remote_code``:
#   ``modeling_circuitgpt.py`` + ``gpt.py``; the GPT under ``circuit_model``): its
#   ``to_circuit_config()`` passes ten fields the published ``GPTConfig`` lacks, each with one
#   value (``HF_EXTRA_FIELDS``), as a public server loading that checkpoint records.
# * viz_data.pt: ``circuit_sparsity/viz.py`` (``load_graph_data``, ``build_figure``, the task
#   tab), github.com/michaelwaves/circuit_sparsity ``scripts/pt_to_parquet.py`` and
#   ``CIRCUIT_EXPLORER_PLAN.md``.
RELEASED_EXTRA_KEYS = dict(
    bigram_table_rank=None,
    pfrac=0.0625,
    expansion_factor=4,
    expansion_factor_mlp=4,
    debug_exact_topk=False,
    sparse_matmul_impl="dense",
)
HF_EXTRA_FIELDS = dict(
    unembed_rank=None,
    bigram_table_rank=None,
    afrac_ste=False,
    afrac_ste_only_non_neurons=False,
    afrac_approx=False,
    rtopk=False,
    mup=False,
    mup_width_multiplier=None,
    enable_fp8_linear=False,
    scale_invariance=False,
)


def released_config(**overrides: Any) -> dict[str, Any]:
    """A ``beeg_config.json`` as released: ``GPTConfig``'s fields, ``n_mlp`` for ``d_mlp``,
    ``use_tied_aux_matrix: false`` and the training keys beyond ``GPTConfig``."""
    cfg = gpt_config(**overrides)
    cfg["n_mlp"] = cfg.pop("d_mlp")
    return cfg | {"use_tied_aux_matrix": False, "n_embd": cfg["d_model"]} | RELEASED_EXTRA_KEYS


REMOTE_CODE = """import pathlib
pathlib.Path({marker!r}).write_text("the snapshot's code ran")
raise RuntimeError("remote code executed")
"""


def write_hf_snapshot(
    directory: Path, cfg: dict[str, Any], sd: dict[str, torch.Tensor], marker: Path, pickled: bool
) -> Path:
    """A Hugging Face snapshot folder of ``openai/circuit-sparsity``: ``config.json`` (the
    ``GPTConfig`` fields, the ten extra fields, transformers' own), the weights under
    ``circuit_model.`` (``model.safetensors`` or ``pytorch_model.bin``) and Python files that
    write ``marker`` and raise if anything imports them."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    config = HF_EXTRA_FIELDS | cfg
    config |= {
        "architectures": ["CircuitGPTForCausalLM"],
        "auto_map": {
            "AutoConfig": "modeling_circuitgpt.CircuitGPTConfig",
            "AutoModelForCausalLM": "modeling_circuitgpt.CircuitGPTForCausalLM",
        },
        "model_type": "circuitgpt",
        "torch_dtype": "float32",
        "transformers_version": "4.57.0",
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    tensors = {f"circuit_model.{k}": v.clone().contiguous() for k, v in sd.items()}
    if pickled:
        torch.save(tensors, directory / "pytorch_model.bin")
    else:
        save_file(tensors, str(directory / "model.safetensors"))
    for name in ("modeling_circuitgpt.py", "gpt.py", "__init__.py"):
        (directory / name).write_text(REMOTE_CODE.format(marker=str(marker)))
    return directory


def write_hub_cache(root: Path, snapshot_writer: Any) -> Path:
    """``models--openai--circuit-sparsity`` as the Hub cache lays it out (``refs/main`` naming
    ``snapshots/<commit>``); ``snapshot_writer(folder)`` fills the snapshot."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    cache = root / "models--openai--circuit-sparsity"
    (cache / "refs").mkdir(parents=True)
    (cache / "refs" / "main").write_text(commit)
    snapshot_writer(cache / "snapshots" / commit)
    return cache


def _pair(w: torch.Tensor, tgt: list[int], src: list[int], bias: torch.Tensor | None) -> Any:
    """``[matrix [n_src(+1) n_tgt], sources, targets]`` from an ``[out, in]`` weight."""
    matrix = w[tgt][:, src].T
    if bias is None:
        return matrix, list(src), list(tgt)
    return torch.cat([matrix, bias[tgt][None]]), [*src, "bias"], list(tgt)


def released_viz_data(
    cfg: dict[str, Any], sd: dict[str, torch.Tensor], kept: dict[str, list[int]], tokens: Any
) -> dict[str, Any]:
    """A ``viz_data.pt`` dict with the released structure: ``circuit_data`` (int64 index tensors),
    ``importances`` (losses stored doubled, ``ch_interv_losses`` one per kept channel,
    ``loc_interv_losses``, ``task_samples``, ``pair_data(_connections)`` from the weights with a
    ``"bias"`` source row), ``prune_config``, ``all_loss``, ``num_total_nodes``, ``samples``."""
    he = cfg["n_head"] * cfg["d_head"]
    pairs = []
    for layer in range(cfg["n_layer"]):
        p, a, m = f"transformer.h.{layer}.", f"{layer}.attn.", f"{layer}.mlp."
        w, b = sd[p + "attn.c_attn.weight"], sd.get(p + "attn.c_attn.bias")
        for i, kind in enumerate("qkv"):
            if a + "act_in" in kept and a + kind in kept:
                rows = [r + i * he for r in kept[a + kind]]
                mat, srcs, _ = _pair(w, rows, kept[a + "act_in"], b)
                pairs.append([mat, srcs, kept[a + kind], (a + "act_in", a + kind)])
        links = [
            (a + "v", a + "resid_delta", "attn.c_proj"),
            (m + "act_in", m + "post_act", "mlp.c_fc"),
            (m + "post_act", m + "resid_delta", "mlp.c_proj"),
        ]
        for src, tgt, name in links:
            if src in kept and tgt in kept:
                w, b = sd[p + name + ".weight"], sd.get(p + name + ".bias")
                pairs.append([*_pair(w, kept[tgt], kept[src], b), (src, tgt)])
    acts = {loc: {c: torch.zeros(tokens.shape) for c in idx} for loc, idx in kept.items()}
    return {
        "circuit_data": {k: torch.tensor(v, dtype=torch.int64) for k, v in kept.items()},
        "importances": {
            "loss": 0.2,
            "interv_loss": 0.3,
            "ch_interv_losses": {k: [0.4] * len(v) for k, v in kept.items()},
            "loc_interv_losses": {k: 0.5 for k in kept},
            "layer_interv_losses": {f"{i}.{s}": 0.5 for i in range(2) for s in ("attn", "mlp")},
            "task_samples": (tokens, acts),
            "pair_data": pairs,
            "pair_data_connections": pairs,
            "beeg_model_config": dict(cfg),
        },
        "prune_config": {"k": 64, "lr": 0.01},
        "all_loss": [[0, 0.9], [1, 0.3]],
        "num_total_nodes": 1234,
        "samples": {k: {} for k in kept},
    }
