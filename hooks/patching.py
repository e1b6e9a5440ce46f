"""Activation patching hooks."""

from torch import Tensor
from transformer_lens.hook_points import HookPoint


def patch_from(
    source: Tensor, positions: list[int] | slice | None = None, channels: list[int] | None = None
):  # noqa: ANN201
    """Hook writing ``source`` (same shape as the activation, e.g. a clean cache entry) into the
    activation at ``positions`` (dim 1) and ``channels`` (last dim); everywhere if ``None``."""

    def hook(act: Tensor, hook: HookPoint) -> Tensor:
        if source.shape != act.shape:
            raise ValueError(
                f"{hook.name}: patch source {tuple(source.shape)} != activation {tuple(act.shape)}"
            )
        out = act.clone()
        pos = slice(None) if positions is None else positions
        if channels is None:
            out[:, pos] = source[:, pos]
        else:
            out[:, pos, ..., channels] = source[:, pos, ..., channels]
        return out

    return hook
