"""Removed edges: single weights between two kept nodes, ablated (arXiv 2511.13653, App. A.5; the manual
clean-up the paper applies to its quote circuit, here automated by ``circuits/cleanup.py``).

Removing the edge ``i -> j`` of a weight matrix ``W`` (``[source channels, destination
channels]``, see ``circuits/nodes.py``) means that destination ``j`` receives the source's ablation value
``fill_i`` through that weight instead of its actual value:

    dst_pre[j] = sum_{i' != i} x_{i'} W[i', j] + fill_i W[i, j] + b[j]

which is the weight edit ``W[i, j] = 0, b[j] += fill_i W[i, j]``. ``to_model`` bakes exactly
that edit into the weights; ``edge_hooks`` computes the same value with TL hooks: it records the
source activation where the weight reads it and adds ``(fill - x) @ D`` (``D`` the removed
weights) to the destination's pre-activation, before any AbsTopK (``hook_q_pre``, ``hook_k_pre``,
``hook_v_pre``, ``attn.hook_out_pre``, ``mlp.hook_pre``, ``mlp.hook_out_pre``). For ``v ->
attn_out`` the weight is ``W_O``, which reads the head output ``z`` (the attention-weighted
values), so the fill is what ``z`` would hold had the value node been ablated: the
attention-weighted fill ``sum_k p[q, k] fill_k``. With attention sinks the pattern rows sum to
``1 - sink probability``, so a constant fill enters as ``(1 - p_sink[q]) * fill``, not ``fill``:
only then is cutting every out-edge of a value channel the same as cutting the channel. That
fill depends on the position, so such an edge has no weight edit: ``fold_removed_edges`` refuses
it in a model with sinks.
"""

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from hooks import flat, like, record
from hooks.types import HookList
from sparse_lens.model.transformer import HookedSparseTransformer

Edge = tuple[str, int, str, int]  # (source hook, source channel, destination hook, dest channel)


@dataclass(frozen=True)
class EdgeSite:
    """Where an edge's weight reads its source (``read``) and where its destination's
    pre-activation can be corrected (``pre``), with the weight and bias as ``[src, dst]``;
    ``pattern`` names the attention pattern that mixes the source over positions before the
    weight reads it (``v -> attn_out`` only), else None."""

    read: str
    pre: str
    weight: Tensor
    bias: Tensor
    pattern: str | None = None


def edge_site(model: HookedSparseTransformer, src_hook: str, dst_hook: str) -> EdgeSite:
    """The ``EdgeSite`` of edges from ``src_hook`` to ``dst_hook`` (views of the weights).

    Raises:
        ValueError: the pair is not one of ``circuits/nodes.py``'s edge kinds.
    """
    cfg = model.cfg
    layer = int(dst_hook.split(".")[1])
    b, block = f"blocks.{layer}", model.blocks[layer]
    hd = cfg.n_heads * cfg.d_head
    attn, mlp = block.attn, block.mlp
    for kind in ("q", "k", "v"):
        if (src_hook, dst_hook) == (f"{b}.attn.hook_in", f"{b}.attn.hook_{kind}"):
            W = getattr(attn, f"W_{kind.upper()}")
            return EdgeSite(
                f"{b}.attn.hook_in",
                f"{b}.attn.hook_{kind}_pre",
                W.permute(1, 0, 2).reshape(cfg.d_model, hd),
                getattr(attn, f"b_{kind.upper()}").reshape(hd),
            )
    if (src_hook, dst_hook) == (f"{b}.attn.hook_v", f"{b}.hook_attn_out"):
        return EdgeSite(
            f"{b}.attn.hook_z",
            f"{b}.attn.hook_out_pre",
            attn.W_O.reshape(hd, -1),
            attn.b_O,
            pattern=f"{b}.attn.hook_pattern",
        )
    if (src_hook, dst_hook) == (f"{b}.mlp.hook_in", f"{b}.mlp.hook_post"):
        return EdgeSite(f"{b}.mlp.hook_in", f"{b}.mlp.hook_pre", mlp.W_in, mlp.b_in)
    if (src_hook, dst_hook) == (f"{b}.mlp.hook_post", f"{b}.hook_mlp_out"):
        return EdgeSite(f"{b}.mlp.hook_post", f"{b}.mlp.hook_out_pre", mlp.W_out, mlp.b_out)
    raise ValueError(f"no edge kind from {src_hook!r} to {dst_hook!r}")


def _group(edges: list[Edge]) -> dict[tuple[str, str], list[Edge]]:
    out: dict[tuple[str, str], list[Edge]] = {}
    for e in edges:
        out.setdefault((e[0], e[2]), []).append(e)
    return out


@torch.no_grad()
def edge_hooks(
    model: HookedSparseTransformer, removed: list[Edge], baselines: dict[str, Tensor]
) -> HookList:
    """TL hooks ablating the ``removed`` edges (see the module docstring); add them after the
    node-mask hooks. ``baselines``: per source hook, its ``[channels]`` ablation values.

    Raises:
        ValueError: edges are removed from a model with ``use_attn_result``.
    """
    if removed and model.cfg.use_attn_result:
        raise ValueError("edge ablation does not support use_attn_result models")
    hooks: HookList = []
    for n, ((src, dst), group) in enumerate(sorted(_group(removed).items())):
        site = edge_site(model, src, dst)
        D = torch.zeros_like(site.weight)
        for _, i, _, j in group:
            D[i, j] = site.weight[i, j]
        fill = torch.as_tensor(baselines[src], dtype=D.dtype)
        store: dict[str, Tensor] = {}
        key = f"{n}"

        def correct(
            act: Tensor,
            hook: Any,
            store: dict = store,
            key: str = key,
            D: Tensor = D,
            fill: Tensor = fill,
        ) -> Tensor:
            x = flat(store.pop(key), D.shape[0])
            pattern = store.pop(f"{key}.pattern", None)
            f = like(fill, x) if pattern is None else mixed_fill(pattern, like(fill, x))
            pre = flat(act, D.shape[1])
            return (pre + (f - x) @ like(D, x)).reshape(act.shape)

        hooks += [(site.read, record(store, key, detach=False)), (site.pre, correct)]
        if site.pattern is not None:
            hooks.append((site.pattern, record(store, f"{key}.pattern", detach=False)))
    return hooks


def mixed_fill(
    pattern: Float[Tensor, "batch head query key"], fill: Tensor
) -> Float[Tensor, "batch query channels"]:
    """What the head output ``z`` holds when every value takes ``fill``: ``sum_k p[q, k]
    fill_k`` per head (module docstring). ``fill``: ``[channels]`` (a constant; the result is
    ``(sum_k p[q, k]) * fill``, i.e. ``(1 - p_sink) * fill`` with sinks) or ``[batch key
    channels]`` (resample), channels ``head_index * d_head``."""
    n_heads = pattern.shape[1]
    if fill.ndim == 1:
        mass = pattern.sum(-1).transpose(1, 2)  # [batch query head]
        return (mass[..., None] * fill.reshape(n_heads, -1)).flatten(-2)
    v = fill.reshape(*fill.shape[:2], n_heads, -1)
    return torch.einsum("bhqk,bkhe->bqhe", pattern, v).flatten(-2)


@torch.no_grad()
def fold_removed_edges(
    model: HookedSparseTransformer, removed: list[Edge], baselines: dict[str, Tensor]
) -> None:
    """Bake the removed edges into ``model``'s weights in place: ``W[i, j] = 0``,
    ``b[j] += fill_i W[i, j]``.

    Raises:
        ValueError: a removed ``v -> attn_out`` edge in a model with attention sinks (its fill
            ``(1 - p_sink) * fill`` varies by position, so no weight edit equals it).
    """
    for (src, dst), group in _group(removed).items():
        site = edge_site(model, src, dst)
        if site.pattern is not None and model.cfg.attn_sinks:
            raise ValueError(
                f"a removed edge {src} -> {dst} does not bake into weights in a model with "
                "attention sinks: its ablated value is (1 - sink probability) * fill, which "
                "varies by position; run the circuit with fwd_hooks instead"
            )
        fill = torch.as_tensor(baselines[src], dtype=site.weight.dtype, device=site.weight.device)
        layer = model.blocks[int(dst.split(".")[1])]
        kind = dst.rsplit("_", 1)[-1]
        per_head = kind in ("q", "k", "v")  # W_Q etc. are [n_heads d_model d_head]: no flat view
        d_head = model.cfg.d_head
        for _, i, _, j in group:
            site.bias[j] += fill[i] * site.weight[i, j]
            if per_head:
                getattr(layer.attn, f"W_{kind.upper()}")[j // d_head, i, j % d_head] = 0.0
            else:
                site.weight[i, j] = 0.0
