"""A circuit's graph as a person reads it: its nodes with roles and knockouts, its edges, and two
drawings of it (torch-free).

``ViewGraph`` holds every kept node (``ViewNode``: label, site, layer, channel, head; the role and
the single-node knockout in the circuit when an explain card gave them) and the circuit's edges
``(source label, destination label, weight)``. Two drawings (``Drawing``: boxes and links,
placed by ``layout.layered_layout``):

- ``core_drawing``: the circuit's **core**, the nodes whose knockout in the circuit costs at least
  ``core_share`` (default ``CORE_SHARE``) of the gap between the empty circuit's task loss and the
  circuit's, each labelled with its role; every other node collapsed into one box per layer and
  site with its count; edges between core nodes kept, edges to a collapsed box aggregated with
  their count.
- ``full_drawing``: every node.

Residual identity paths (a write to channel c read later at channel c) are drawn dashed; they are
not edges of the circuit (arXiv 2511.13653, App. A.5 counts weights between mask locations).
"""

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from sparse_lens.vocab import NodeKind

CORE_SHARE = 0.05  # a core node's knockout costs at least this share of the empty-circuit gap
NO_ROLE = "no measurable role"

# columns left to right within a layer: attention reads, q/k/v, writes, MLP reads, neurons, writes
SITE_ORDER: dict[NodeKind, int] = {
    "attn_in": 0, "q": 1, "k": 1, "v": 1, "attn_out": 2,
    "mlp_in": 3, "neuron": 4, "mlp_out": 5, "final": 6,
}  # fmt: skip
SITE_NAME = ("attn in", "q/k/v", "attn out", "mlp in", "mlp", "mlp out", "final resid")
READS: tuple[NodeKind, ...] = ("attn_in", "mlp_in", "final")
WRITES: tuple[NodeKind, ...] = ("attn_out", "mlp_out")
Column = tuple[int, int]  # (layer, SITE_ORDER)


@runtime_checkable
class NodeLike(Protocol):
    """A kept node as ``Circuit.node_refs`` and the explain card's nodes give it."""

    @property
    def label(self) -> str: ...
    @property
    def kind(self) -> NodeKind: ...
    @property
    def layer(self) -> int: ...
    @property
    def channel(self) -> int: ...
    @property
    def head(self) -> int | None: ...


@dataclass(frozen=True, kw_only=True)
class ViewNode:
    """One kept node; ``role`` and ``knockout`` (task-loss increase in nats when it alone is
    ablated in the circuit) come from an explain card, else None. ``channel`` is the channel of
    its hook (without the model's config, a q/k/v node's channel within its head); a q/k/v
    node's channel within its head is read off its label (``...h2.c3``)."""

    label: str
    kind: NodeKind
    layer: int
    channel: int
    head: int | None = None
    role: str | None = None
    knockout: float | None = None

    @property
    def column(self) -> Column:
        return (self.layer, SITE_ORDER[self.kind])

    @property
    def name(self) -> str:
        """Short name: ``L0 mlp 17`` (a neuron), ``L1 H2 v 0``, ``L0 attn out 5``, ``final 3``."""
        if self.kind == "final":
            return f"final {self.channel}"
        if self.kind in ("q", "k", "v"):
            m = re.search(r"\.c(\d+)$", self.label)
            head = f"H{self.head} " if self.head is not None else ""
            return f"L{self.layer} {head}{self.kind} {m.group(1) if m else self.channel}"
        return f"L{self.layer} {SITE_NAME[SITE_ORDER[self.kind]]} {self.channel}"


def column_name(column: Column) -> str:
    """``L0 mlp``, ``L1 q/k/v``, ``final resid``."""
    layer, site = column
    return SITE_NAME[site] if site == SITE_ORDER["final"] else f"L{layer} {SITE_NAME[site]}"


@dataclass(frozen=True, kw_only=True)
class ViewGraph:
    """A circuit for drawing: its nodes, edges and, from an explain card, the task losses of
    the circuit and of the empty circuit (nats) that define the core."""

    task: str
    nodes: tuple[ViewNode, ...]
    edges: tuple[tuple[str, str, float], ...]
    circuit_loss: float | None = None
    empty_loss: float | None = None
    core_share: float = CORE_SHARE

    def __post_init__(self) -> None:
        if not 0 < self.core_share <= 1:
            raise ValueError(f"core_share must be in (0, 1], got {self.core_share!r}")

    @property
    def gap(self) -> float | None:
        """Empty-circuit loss minus circuit loss (nats), None without an explain card."""
        if self.circuit_loss is None or self.empty_loss is None:
            return None
        return self.empty_loss - self.circuit_loss

    @property
    def core_threshold(self) -> float | None:
        """The knockout (nats) a core node costs at least: ``core_share`` of a positive gap."""
        gap = self.gap
        return None if gap is None else self.core_share * max(gap, 0.0)

    @property
    def has_core(self) -> bool:
        """Whether knockouts and a positive gap define a core."""
        gap = self.gap
        return gap is not None and gap > 0 and all(n.knockout is not None for n in self.nodes)

    def core(self) -> tuple[ViewNode, ...]:
        """The nodes whose knockout in the circuit is at least ``core_threshold`` (none
        without a core)."""
        if not self.has_core:
            return ()
        limit = self.core_threshold or 0.0
        return tuple(n for n in self.nodes if (n.knockout or 0.0) >= limit)


def view_graph(
    task: str,
    nodes: Iterable[NodeLike],
    edges: Iterable[tuple[str, str, float]],
    *,
    roles: dict[str, tuple[str, float]] | None = None,
    losses: tuple[float, float] | None = None,
    core_share: float = CORE_SHARE,
) -> ViewGraph:
    """A ``ViewGraph`` of ``nodes`` and ``edges``; ``roles[label] = (role, knockout)`` and
    ``losses = (circuit, empty)`` come from an explain card.

    Raises:
        ValueError: ``core_share`` is not in (0, 1].
    """
    roles = roles or {}
    view_nodes = tuple(
        ViewNode(
            label=n.label,
            kind=n.kind,
            layer=n.layer,
            channel=n.channel,
            head=n.head,
            role=roles[n.label][0] if n.label in roles else None,
            knockout=roles[n.label][1] if n.label in roles else None,
        )
        for n in nodes
    )
    circuit_loss, empty_loss = losses if losses is not None else (None, None)
    return ViewGraph(
        task=task,
        nodes=view_nodes,
        edges=tuple(edges),
        circuit_loss=circuit_loss,
        empty_loss=empty_loss,
        core_share=core_share,
    )


# -- drawings ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Item:
    """A box of a drawing: one node (``key`` its label) or a collapsed group of ``count`` nodes
    of one column (``key`` ``group:{layer}:{site}``, ``kind`` None)."""

    key: str
    column: Column
    text: str
    kind: NodeKind | None
    count: int = 1
    order: float = 0.0  # initial position within its column
    tooltip: str = ""


@dataclass(frozen=True, kw_only=True)
class Link:
    """A line of a drawing: one edge (``count`` 1, ``weight`` its weight), or ``count`` edges
    between collapsed boxes (``weight`` the sum of their ``|w|``); ``residual`` for identity
    paths."""

    source: str
    target: str
    weight: float
    count: int = 1
    residual: bool = False


@dataclass(frozen=True, kw_only=True)
class Drawing:
    """What one SVG shows: ``view`` ``"core"`` or ``"full"``, its boxes and lines."""

    task: str
    view: str
    items: tuple[Item, ...]
    links: tuple[Link, ...]


def residual_paths(nodes: Sequence[ViewNode]) -> list[tuple[ViewNode, ViewNode]]:
    """``(write, read)`` pairs on the same residual channel, the read in a later column."""
    reads: dict[int, list[ViewNode]] = {}
    for n in nodes:
        if n.kind in READS:
            reads.setdefault(n.channel, []).append(n)
    return [
        (w, r)
        for w in nodes
        if w.kind in WRITES
        for r in reads.get(w.channel, [])
        if r.column > w.column
    ]


def _tooltip(n: ViewNode) -> str:
    parts = [n.label]
    if n.role is not None:
        parts.append(f"role: {n.role}")
    if n.knockout is not None:
        parts.append(f"knockout in the circuit: {n.knockout:+.4f} nats")
    return "\n".join(parts)


def node_item(n: ViewNode, with_role: bool) -> Item:
    role = n.role if with_role and n.role is not None else None
    text = f"{n.name} · {role}" if role else n.name
    return Item(
        key=n.label,
        column=n.column,
        text=text,
        kind=n.kind,
        order=float(n.channel),
        tooltip=_tooltip(n),
    )


def full_drawing(graph: ViewGraph) -> Drawing:
    """Every node (labelled with its role when it has one), every edge and residual path."""
    items = tuple(node_item(n, n.role not in (None, NO_ROLE)) for n in graph.nodes)
    links = [Link(source=s, target=d, weight=w) for s, d, w in graph.edges]
    links += [
        Link(source=w.label, target=r.label, weight=0.0, residual=True)
        for w, r in residual_paths(graph.nodes)
    ]
    return Drawing(task=graph.task, view="full", items=items, links=tuple(links))
