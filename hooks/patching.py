"""Activation patching hooks."""

from torch import Tensor
from transformer_lens.hook_points import HookPoint

from hooks._shape import flat, like

# Hooks whose activation is [batch pos head_index channel]: channels index the flattened
# head_index * channel axis, as everywhere in ``hooks`` (node indices of ``sparse_lens.circuits.nodes``).
PER_HEAD_HOOKS = (
    "hook_q",
    "hook_k",
    "hook_v",
    "hook_z",
    "hook_result",
    "hook_q_input",
    "hook_k_input",
    "hook_v_input",
    "hook_attn_in",
)

QUERY_AXIS_HOOKS = ("hook_attn_scores", "hook_pattern", "hook_sink_prob")


def patch_from(
    source: Tensor, positions: list[int] | slice | None = None, channels: list[int] | None = None
):  # noqa: ANN201
    """Hook writing ``source`` (same shape as the activation, e.g. a clean cache entry) into the
    activation at ``positions`` and ``channels``; everywhere if ``None``. Positions are dim 1,
    or the query axis (dim 2) of ``hook_attn_scores``, ``hook_pattern`` and ``hook_sink_prob``
    (``[batch head_index query_pos ...]``).

    ``channels`` index the last dimension, or for per-head hooks (``PER_HEAD_HOOKS``, e.g.
    ``hook_q/k/v/z``) the flattened ``head_index * d_head + channel``.

    Raises:
        ValueError: if ``source`` and the activation differ in shape.
        IndexError: if a channel is outside the (flattened) channel axis.
    """

    def hook(act: Tensor, hook: HookPoint) -> Tensor:
        if source.shape != act.shape:
            raise ValueError(
                f"{hook.name}: patch source {tuple(source.shape)} != activation {tuple(act.shape)}"
            )
        src = like(source, act)
        out = act.clone()
        pos = slice(None) if positions is None else positions
        if (hook.name or "").endswith(QUERY_AXIS_HOOKS):
            if channels is not None:
                raise ValueError(f"{hook.name}: channels do not apply to attention patterns")
            out[:, :, pos] = src[:, :, pos]
            return out
        if channels is None:
            out[:, pos] = src[:, pos]
            return out
        per_head = (hook.name or "").endswith(PER_HEAD_HOOKS) and act.ndim >= 4
        width = act.shape[-2] * act.shape[-1] if per_head else act.shape[-1]
        flat_out, flat_src = flat(out, width), flat(src, width)
        n = flat_out.shape[-1]
        bad = [c for c in channels if not -n <= c < n]
        if bad:
            raise IndexError(f"{hook.name}: channels {bad} out of range for {n} channels")
        flat_out[:, pos, ..., channels] = flat_src[:, pos, ..., channels]
        return flat_out.reshape(act.shape)

    return hook
