"""Hook functions for ``run_with_hooks``: ablations, node masks, patching, recording and sparsity
hooks, and the primitives they share (``blend``, ``flat``, ``like``).

Every function here *returns* a TL hook ``fn(activation, hook) -> activation``; none adds itself
to a model, so callers keep TL's guarantee that ``run_with_hooks``/``model.hooks()`` remove them.
Node indices address the last dimension of the hooked activation (for ``hook_q/k/v/z`` the
flattened ``head_index * d_head + channel``). Tensors a hook writes (masks, ablation values,
replacements, patch sources) are moved to the activation's device and dtype when it runs.
"""

from hooks._shape import flat, like
from hooks.ablation import mean_ablate, node_mask, resample_ablate, zero_ablate
from hooks.masking import blend
from hooks.patching import patch_from
from hooks.recording import record, replace
from hooks.sparsity import force_mask

__all__ = [
    "blend",
    "flat",
    "force_mask",
    "like",
    "mean_ablate",
    "node_mask",
    "patch_from",
    "record",
    "replace",
    "resample_ablate",
    "zero_ablate",
]
