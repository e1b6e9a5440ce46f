"""Attention-sink analysis: how much of each head's attention goes to its sink.

With a per-head sink logit, ``hook_sink_prob`` is the attention mass a query gives to "nothing";
a head with high sink mass writes little unless its keys beat the sink, which is how the paper's
bracket-counting head thresholds nesting depth (arXiv 2511.13653, bracket-counting circuit).
"""

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sparse_lens import HookedSparseTransformer


@torch.no_grad()
def sink_mass(
    model: HookedSparseTransformer, tokens: Int[Tensor, "batch pos"], batch_size: int = 32
) -> Float[Tensor, "n_layers n_heads"]:
    """Mean sink probability of every head over all query positions of ``tokens``.

    Raises:
        ValueError: the model has no attention sinks (``cfg.attn_sinks`` is False).
    """
    if not model.cfg.attn_sinks:
        raise ValueError("this model has no attention sinks (cfg.attn_sinks is False)")
    total = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    count = 0
    for i in range(0, len(tokens), batch_size):
        batch = tokens[i : i + batch_size]
        _, cache = model.run_with_cache(batch, names_filter=lambda n: n.endswith("hook_sink_prob"))
        for layer in range(model.cfg.n_layers):
            total[layer] += cache[f"blocks.{layer}.attn.hook_sink_prob"].sum(dim=(0, 2)).cpu()
        count += batch.shape[0] * batch.shape[1]
    return total / count


@torch.no_grad()
def sink_removal_effect(
    model: HookedSparseTransformer, tokens: Int[Tensor, "batch pos"]
) -> Float[Tensor, "n_layers n_heads"]:
    """Change in next-token loss when one head's sink is removed (its logit set to -inf)."""
    base = float(model(tokens, return_type="loss"))
    effect = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for layer, block in enumerate(model.blocks):
        for head in range(model.cfg.n_heads):
            saved = block.attn.sinks[head].clone()
            block.attn.sinks[head] = -torch.inf
            try:
                effect[layer, head] = float(model(tokens, return_type="loss")) - base
            finally:
                block.attn.sinks[head] = saved
    return effect
