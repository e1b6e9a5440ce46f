"""Hooks on AbsTopK masks (``blocks.{l}.attn.hook_out_mask``, ``blocks.{l}.mlp.hook_out_mask``)."""

from jaxtyping import Float
from torch import Tensor

from hooks.recording import replace


def force_mask(mask: Float[Tensor, "batch pos d_model"]):  # noqa: ANN201
    """Hook replacing an AbsTopK write mask by ``mask``, e.g. the clean run's, to freeze which
    residual channels a layer may write while other activations are patched (``replace``: on
    the activation's device and dtype).

    Raises (when the hook runs):
        ValueError: if ``mask`` and the activation differ in shape.
    """
    return replace(mask)
