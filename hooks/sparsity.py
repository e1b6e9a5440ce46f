"""Hooks on AbsTopK masks (``blocks.{l}.attn.hook_out_mask``, ``blocks.{l}.mlp.hook_out_mask``)."""

from jaxtyping import Float
from torch import Tensor
from transformer_lens.hook_points import HookPoint


def force_mask(mask: Float[Tensor, "batch pos d_model"]):  # noqa: ANN201
    """Hook replacing an AbsTopK write mask by ``mask``, e.g. the clean run's, to freeze which
    residual channels a layer may write while other activations are patched."""

    def hook(act: Tensor, hook: HookPoint) -> Tensor:
        if mask.shape != act.shape:
            raise ValueError(f"{hook.name}: mask {tuple(mask.shape)} != {tuple(act.shape)}")
        return mask.to(act.dtype)

    return hook
