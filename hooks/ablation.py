"""Ablation and node-mask hooks.

``node_mask(mask, baseline)`` is the pruning primitive of the paper (arXiv 2511.13653,
§3.2-3.3) as a hook: ``blend`` (``hooks.masking``) keeps channels where ``mask`` is 1 (a 0/1
tensor or a differentiable relaxation of one) and gives the rest ``baseline``, the zero, mean or
resampled value of removed nodes. Masks and baselines follow the activation's device and dtype.
"""

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from hooks._shape import flat
from hooks.masking import blend


def node_mask(mask: Float[Tensor, " channels"], baseline: Float[Tensor, "..."] | float = 0.0):  # noqa: ANN201 - returns a TL hook
    """Hook keeping channels where ``mask`` is 1 and replacing the rest by ``baseline``.

    Args:
        mask: one value per channel of the hooked activation (flattened over heads).
        baseline: a scalar, a ``[channels]`` vector (e.g. the mean) or a tensor holding the
            activation's leading dims (e.g. resampled activations ``[batch pos channels]``).

    Raises (when the hook runs):
        ValueError: if the activation has no ``mask.shape[-1]`` channels or ``baseline`` does
            not broadcast to it.
    """
    n = mask.shape[-1]

    def hook(act: Tensor, hook: HookPoint) -> Tensor:
        return blend(flat(act, n), mask, baseline).reshape(act.shape)

    return hook


def _kept(n_channels: int, indices: Int[Tensor, " k"] | list[int]) -> Tensor:
    mask = torch.ones(n_channels)
    mask[torch.as_tensor(indices, dtype=torch.long)] = 0.0
    return mask


def zero_ablate(indices: Int[Tensor, " k"] | list[int], n_channels: int):  # noqa: ANN201
    """Hook setting the given channels to zero."""
    return node_mask(_kept(n_channels, indices), 0.0)


def mean_ablate(mean: Float[Tensor, " channels"], indices: Int[Tensor, " k"] | list[int]):  # noqa: ANN201
    """Hook setting the given channels to ``mean`` (a per-channel constant)."""
    return node_mask(_kept(mean.shape[-1], indices), mean)


def resample_ablate(
    source: Float[Tensor, "batch pos channels"], indices: Int[Tensor, " k"] | list[int]
):  # noqa: ANN201
    """Hook replacing the given channels by the activations of another run, ``source``.

    Raises (when the hook runs):
        ValueError: if ``source`` and the (flattened) activation differ in shape.
    """
    mask = _kept(source.shape[-1], indices)

    def hook(act: Tensor, hook: HookPoint) -> Tensor:
        x = flat(act, mask.shape[-1])
        if source.shape != x.shape:
            raise ValueError(
                f"resample source {tuple(source.shape)} != activation {tuple(x.shape)}"
            )
        return blend(x, mask, source).reshape(act.shape)

    return hook
