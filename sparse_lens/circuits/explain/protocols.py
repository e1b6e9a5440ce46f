"""What ``explain`` reads of a circuit and its nodes, as protocols.

``sparse_lens.circuits.circuit.Circuit`` and ``NodeRef`` satisfy them. ``explain`` names them
instead of importing ``circuit`` so that ``Circuit.explain`` can delegate here without an import
cycle (``tests/test_architecture.py``).
"""

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

from hooks.types import HookList
from sparse_lens.circuits.nodes import NodeKind
from sparse_lens.model.config import SparseTransformerConfig
from sparse_lens.model.transformer import HookedSparseTransformer


@runtime_checkable
class NodeRefLike(Protocol):
    """One kept node (``circuit.NodeRef``)."""

    @property
    def label(self) -> str: ...
    @property
    def hook(self) -> str: ...
    @property
    def channel(self) -> int: ...
    @property
    def kind(self) -> NodeKind: ...
    @property
    def layer(self) -> int: ...
    @property
    def head(self) -> int | None: ...


@runtime_checkable
class CircuitLike(Protocol):
    """A circuit as ``explain`` runs it (``circuit.Circuit``)."""

    @property
    def task(self) -> str: ...
    @property
    def ablation(self) -> str: ...
    @property
    def freeze_norms(self) -> bool: ...
    @property
    def target_loss(self) -> float: ...
    @property
    def nodes(self) -> dict[str, list[int]]: ...
    @property
    def sizes(self) -> dict[str, int]: ...
    @property
    def baselines(self) -> dict[str, list[float]]: ...
    @property
    def extra(self) -> dict[str, Any]: ...
    @property
    def n_nodes(self) -> int: ...
    @property
    def n_edges(self) -> int: ...

    def check_model(self, model: HookedSparseTransformer) -> None: ...

    def masks(self) -> dict[str, Tensor]: ...

    def fwd_hooks(
        self,
        model: HookedSparseTransformer,
        tokens: Tensor | None = None,
        *,
        patches: HookList | None = None,
        masks: dict[str, Tensor] | None = None,
    ) -> HookList: ...

    def node_refs(self, cfg: SparseTransformerConfig) -> Sequence[NodeRefLike]: ...
