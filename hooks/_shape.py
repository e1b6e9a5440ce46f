"""Channels of an activation: per-head activations ``[... head_index d_head]`` viewed as flat
channels ``[... channels]``, and tensors moved onto an activation's device and dtype."""

import torch
from torch import Tensor


def flat(act: Tensor, n_channels: int) -> Tensor:
    """``act`` with its trailing dims merged so the last has ``n_channels`` entries: ``act``
    itself if its last dimension already has them, else its last two flattened (a view where
    possible).

    Raises:
        ValueError: if neither the last dimension nor the last two hold ``n_channels`` entries.
    """
    if act.shape[-1] == n_channels:
        return act
    if act.ndim >= 2 and act.shape[-1] * act.shape[-2] == n_channels:
        return act.flatten(-2)
    raise ValueError(
        f"activation of shape {tuple(act.shape)} has no trailing dimension of {n_channels} channels"
    )


def like(value: Tensor | float, act: Tensor) -> Tensor:
    """``value`` as a tensor on ``act``'s device with ``act``'s dtype (no copy if it already is;
    differentiable, so a mask that requires grad keeps its graph)."""
    if isinstance(value, Tensor):
        return value.to(device=act.device, dtype=act.dtype)
    return torch.tensor(value, device=act.device, dtype=act.dtype)
