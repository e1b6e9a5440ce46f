"""Viewing per-head activations ``[... head_index d_head]`` as flat channels ``[... channels]``."""

from torch import Tensor


def flat(act: Tensor, n_channels: int) -> Tensor:
    """``act`` with its trailing dims merged so the last has ``n_channels`` entries."""
    if act.shape[-1] == n_channels:
        return act
    if act.ndim >= 2 and act.shape[-1] * act.shape[-2] == n_channels:
        return act.flatten(-2)
    raise ValueError(
        f"activation of shape {tuple(act.shape)} has no trailing dimension of {n_channels} channels"
    )
