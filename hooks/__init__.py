"""Hook functions for ``run_with_hooks``: ablations, node masks, patching and sparsity hooks.

Every function here *returns* a TL hook ``fn(activation, hook) -> activation``; none adds itself
to a model, so callers keep TL's guarantee that ``run_with_hooks``/``model.hooks()`` remove them.
Node indices address the last dimension of the hooked activation (for ``hook_q/k/v/z`` the
flattened ``head_index * d_head + channel``).
"""

from hooks._shape import flat
from hooks.ablation import mean_ablate, node_mask, resample_ablate, zero_ablate
from hooks.patching import patch_from
from hooks.sparsity import force_mask

__all__ = [
    "flat",
    "force_mask",
    "mean_ablate",
    "node_mask",
    "patch_from",
    "resample_ablate",
    "zero_ablate",
]
