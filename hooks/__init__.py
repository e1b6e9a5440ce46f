"""Hooks: hook-point functions for ``run_with_hooks`` (ablations, node masks, patching,
recording, AbsTopK and its masks, and the primitives they share: ``blend``, ``flat``, ``like``)
and the weight-sparsity optimizer hooks.

Every hook-point function here *returns* a TL hook ``fn(activation, hook) -> activation``; none
adds itself to a model, so callers keep TL's guarantee that ``run_with_hooks``/``model.hooks()``
remove them. Node indices address the last dimension of the hooked activation (for
``hook_q/k/v/z`` the flattened ``head_index * d_head + channel``). Tensors a hook writes (masks,
ablation values, replacements, patch sources) are moved to the activation's device and dtype
when it runs.

Weight sparsity (arXiv 2511.13653 §2) is a set of ``torch.optim.Optimizer`` step hooks;
``sparsify(model, optimizer, density=..., total_steps=...)`` attaches them in one call and
returns a handle whose ``remove()`` detaches them (``hooks.weight_sparsity``).
"""

from hooks._shape import flat, like
from hooks.ablation import mean_ablate, node_mask, resample_ablate, zero_ablate
from hooks.masking import blend
from hooks.patching import patch_from
from hooks.recording import record, replace
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
    "blend",
    "flat",
    "force_mask",
    "like",
    "linear_weights",
    "mean_ablate",
    "node_mask",
    "patch_from",
    "record",
    "replace",
    "resample_ablate",
    "sparsify",
    "tl_weights",
    "zero_ablate",
]
