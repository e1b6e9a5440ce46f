"""Hooks: hook-point functions for ``run_with_hooks`` and weight-sparsity optimizer hooks.

Hook-point functions (ablations, node masks, patching, AbsTopK) each *return* a TL hook
``fn(activation, hook) -> activation``; none adds itself to a model, so callers keep TL's
guarantee that ``run_with_hooks``/``model.hooks()`` remove them. Node indices address the last
dimension of the hooked activation (for ``hook_q/k/v/z`` the flattened
``head_index * d_head + channel``).

Weight sparsity (arXiv 2511.13653 §2) is a set of ``torch.optim.Optimizer`` step hooks;
``sparsify(model, optimizer, density=..., total_steps=...)`` attaches them in one call and
returns a handle whose ``remove()`` detaches them (``hooks.weight_sparsity``).
"""

from hooks._shape import flat
from hooks.ablation import mean_ablate, node_mask, resample_ablate, zero_ablate
from hooks.patching import patch_from
from hooks.sparsity import abs_topk_hook, force_mask
from hooks.topk import abs_topk, abs_topk_mask
from hooks.weight_sparsity import (
    SparseParam,
    Sparsified,
    linear_weights,
    sparsify,
    tl_weights,
)

__all__ = [
    "SparseParam",
    "Sparsified",
    "abs_topk",
    "abs_topk_hook",
    "abs_topk_mask",
    "flat",
    "force_mask",
    "linear_weights",
    "mean_ablate",
    "node_mask",
    "patch_from",
    "resample_ablate",
    "sparsify",
    "tl_weights",
    "zero_ablate",
]
