"""Activation-sparsity hooks: AbsTopK on any hook point, and hooks on the AbsTopK write masks
(``blocks.{l}.attn.hook_out_mask``, ``blocks.{l}.mlp.hook_out_mask``) of arXiv 2511.13653 §2."""

from jaxtyping import Float
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from hooks.recording import replace
from hooks.topk import abs_topk


def abs_topk_hook(k: int):  # noqa: ANN201 - returns a TL hook
    """Hook applying AbsTopK to the activation: all but the ``k`` largest-magnitude entries of
    its last dimension are zeroed (the gradient reaches the kept ones only). On a dense
    TransformerLens model, e.g. ``model.add_hook("blocks.0.mlp.hook_post", abs_topk_hook(16))``
    makes that layer's MLP activations k-sparse, as the paper's sparse models are.

    Raises:
        ValueError: ``k`` < 1.
    """
    if k < 1:
        raise ValueError(f"AbsTopK needs k >= 1, got {k!r}")

    def hook(act: Tensor, hook: HookPoint) -> Tensor:
        return abs_topk(act, k)

    return hook


def force_mask(mask: Float[Tensor, "batch pos d_model"]):  # noqa: ANN201
    """Hook replacing an AbsTopK write mask by ``mask``, e.g. the clean run's, to freeze which
    residual channels a layer may write while other activations are patched (``replace``: on
    the activation's device and dtype).

    Raises (when the hook runs):
        ValueError: if ``mask`` and the activation differ in shape.
    """
    return replace(mask)
