"""Ablation and node-mask hooks.

``node_mask(mask, baseline)`` is the pruning primitive of ``paper.md`` §3.2-3.3: it returns
``x * m + baseline * (1 - m)`` for a per-channel mask ``m`` (a 0/1 tensor or a differentiable
relaxation of one), so ``baseline`` is the zero, mean or resampled value of removed nodes.
"""

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from hooks._shape import flat


def node_mask(mask: Float[Tensor, " channels"], baseline: Float[Tensor, "..."] | float = 0.0):  # noqa: ANN201 - returns a TL hook
    """Hook keeping channels where ``mask`` is 1 and replacing the rest by ``baseline``.

    Args:
        mask: one value per channel of the hooked activation (flattened over heads).
        baseline: a scalar, a ``[channels]`` vector (e.g. the mean) or a tensor broadcastable to
            the flattened activation (e.g. resampled activations ``[batch pos channels]``).
    """
    n = mask.shape[-1]

    def hook(act: Tensor, hook: HookPoint) -> Tensor:
        x = flat(act, n)
        base = baseline
        if isinstance(base, Tensor) and base.ndim >= 3 and x.ndim > base.ndim:
            # a per-position baseline [batch pos channels] on a per-head fork of the same
            # positions (e.g. attn.hook_in [batch pos 3 head_index d_model]): broadcast over heads
            extra = [1] * (x.ndim - base.ndim)
            base = base.reshape(*base.shape[:-1], *extra, base.shape[-1])
        out = x * mask + (1 - mask) * base
        return out.reshape(act.shape)

    return hook


def zero_ablate(indices: Int[Tensor, " k"] | list[int], n_channels: int):  # noqa: ANN201
    """Hook setting the given channels to zero."""
    mask = torch.ones(n_channels)
    mask[torch.as_tensor(indices, dtype=torch.long)] = 0.0
    return node_mask(mask, 0.0)


def mean_ablate(mean: Float[Tensor, " channels"], indices: Int[Tensor, " k"] | list[int]):  # noqa: ANN201
    """Hook setting the given channels to ``mean`` (a per-channel constant)."""
    mask = torch.ones(mean.shape[-1], dtype=mean.dtype)
    mask[torch.as_tensor(indices, dtype=torch.long)] = 0.0
    return node_mask(mask, mean)


def resample_ablate(
    source: Float[Tensor, "batch pos channels"], indices: Int[Tensor, " k"] | list[int]
):  # noqa: ANN201
    """Hook replacing the given channels by the activations of another run, ``source``."""
    mask = torch.ones(source.shape[-1], dtype=source.dtype)
    mask[torch.as_tensor(indices, dtype=torch.long)] = 0.0

    def hook(act: Tensor, hook: HookPoint) -> Tensor:
        x = flat(act, mask.shape[-1])
        if source.shape != x.shape:
            raise ValueError(
                f"resample source {tuple(source.shape)} != activation {tuple(x.shape)}"
            )
        return (x * mask + source * (1 - mask)).reshape(act.shape)

    return hook
