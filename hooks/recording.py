"""Hooks that read an activation into a dict (``record``) or write a given one (``replace``)."""

from collections.abc import MutableMapping

from jaxtyping import Float
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from hooks._shape import like


def record(store: MutableMapping[str, Tensor], key: str | None = None, *, detach: bool = True):  # noqa: ANN201 - returns a TL hook
    """Hook storing the activation in ``store[key]`` (``store[hook.name]`` when ``key`` is None)
    and passing it on unchanged; a later run overwrites the entry.

    Args:
        store: where the activation goes.
        key: the entry to write; give the name you asked for when a hook point may report
            another (on a ``TransformerBridge``, an alias such as ``blocks.0.hook_resid_pre``
            is called with its canonical name).
        detach: store ``act.detach()`` (the default); False keeps the autograd graph, e.g. to
            take gradients with respect to the activation.
    """

    def hook(act: Tensor, hook: HookPoint) -> None:
        store[key if key is not None else hook.name] = act.detach() if detach else act  # type: ignore[index]

    return hook


def replace(value: Float[Tensor, "..."]):  # noqa: ANN201 - returns a TL hook
    """Hook returning ``value`` in place of the activation, moved to the activation's device
    and dtype (differentiably: gradients flow back to ``value``).

    Raises (when the hook runs):
        ValueError: if ``value`` and the activation differ in shape (nothing is broadcast).
    """

    def hook(act: Tensor, hook: HookPoint) -> Tensor:
        if value.shape != act.shape:
            raise ValueError(
                f"{hook.name}: replacement {tuple(value.shape)} != activation {tuple(act.shape)}"
            )
        return like(value, act)

    return hook
