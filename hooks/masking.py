"""The node-mask formula, written once: keep some channels of an activation, replace the rest.

``blend(act, keep, value)`` is the pruning primitive of the paper (arXiv 2511.13653, §3.2-3.3):
a channel whose ``keep`` is 1 passes unchanged, one whose ``keep`` is 0 takes ``value`` (its
zero, mean or resampled ablation value); a ``keep`` between 0 and 1 (a relaxed mask)
interpolates, differentiably in ``keep``. Every place that masks nodes uses it: the ablation and
node-mask hooks, the mask-training hooks of the pruner, and the baked-in channel overrides of a
circuit model.
"""

from typing import cast

import torch
from jaxtyping import Float
from torch import Tensor

from hooks._shape import like


def align_value(value: Tensor, act: Tensor) -> Tensor:
    """``value`` reshaped to broadcast against ``act`` (``[... channels]``).

    A scalar or ``[channels]`` value is returned as is. A value of more dimensions holds the
    leading dims of ``act`` (e.g. resampled activations ``[batch pos channels]``); where ``act``
    has extra dims before its channel axis (a per-head fork of the same positions, such as a
    split-QKV ``attn.hook_in`` ``[batch pos 3 head_index d_model]``), singleton dims are inserted
    there so the value broadcasts over them.
    """
    if value.ndim <= 1 or value.ndim >= act.ndim:
        return value
    extra = [1] * (act.ndim - value.ndim)
    return value.reshape(*value.shape[:-1], *extra, value.shape[-1])


def blend(
    act: Float[Tensor, "*lead channels"],
    keep: Float[Tensor, " _channels"],  # "_": checked below, with a ValueError
    value: Float[Tensor, "..."] | float,
) -> Float[Tensor, "*lead channels"]:
    """``act`` where ``keep`` is 1, ``value`` where it is 0: ``value + keep * (act - value)``.

    Computed as ``torch.lerp(value, act, keep)``, so a 0/1 ``keep`` gives exactly ``act`` or
    exactly ``value`` (for finite values). ``keep`` and ``value`` are moved to ``act``'s device
    and dtype first (the result has ``act``'s dtype, whatever the mask's); gradients flow to
    ``act``, ``keep`` and ``value``.

    Args:
        act: the activation, channels last (flatten per-head activations first, ``flat``).
        keep: one weight per channel, 1 keeps it.
        value: what removed channels take: a scalar, a ``[channels]`` vector (a mean), or a
            tensor holding ``act``'s leading dims (resampled activations ``[batch pos
            channels]``; see ``align_value``).

    Raises:
        ValueError: if ``keep`` is not ``[channels]`` or ``value`` does not broadcast to
            ``act``'s shape.
    """
    if keep.shape != act.shape[-1:]:
        raise ValueError(
            f"mask of shape {tuple(keep.shape)} != the {act.shape[-1]} channels of an "
            f"activation of shape {tuple(act.shape)}"
        )
    base = align_value(like(value, act), act)
    try:
        # torch.broadcast_shapes is unannotated; it returns a ``Size``
        shape = cast(torch.Size, torch.broadcast_shapes(base.shape, act.shape))  # pyright: ignore[reportUnknownMemberType]
        fits = shape == act.shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(
            f"ablation value of shape {tuple(base.shape)} does not broadcast to the activation "
            f"{tuple(act.shape)}"
        )
    return torch.lerp(base.expand_as(act), act, like(keep, act))
