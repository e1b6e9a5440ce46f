"""``show(circuit, model=None)``: a circuit's graph (and, with a model, its explain card) as an
object a notebook renders inline (``_repr_html_``), offline: inline SVG and CSS, no network.

``graph_of`` builds the ``ViewGraph`` of a circuit: its nodes from the model's config (or from
an explain card's nodes), roles and knockouts from the card. Without a config or a card, q/k/v
channels are named by the edges that touch them (a channel's head needs ``d_head``), and
channels without edges are counted in a note, not drawn.

``Circuit.show`` delegates here; this module reads a circuit by attribute (``task``, ``nodes``,
``edges``) and does not import ``circuits.circuit``, so the import graph stays acyclic.
"""

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from sparse_lens.circuits.graph_view.card_html import CardView, card_html, card_view
from sparse_lens.circuits.graph_view.graph import CORE_SHARE, ViewGraph, ViewNode, view_graph
from sparse_lens.circuits.graph_view.sections import GRAPH_CSS, graph_section
from sparse_lens.circuits.graph_view.svg import GRAPH_SCRIPT, esc
from sparse_lens.vocab import NodeKind

if TYPE_CHECKING:
    from sparse_lens.circuits.explain.card import CircuitCard
    from sparse_lens.model.config import SparseTransformerConfig
    from sparse_lens.model.transformer import HookedSparseTransformer


@runtime_checkable
class CircuitData(Protocol):
    """What ``show`` reads of a circuit (``circuits.circuit.Circuit``)."""

    @property
    def task(self) -> str: ...
    @property
    def nodes(self) -> dict[str, list[int]]: ...
    @property
    def edges(self) -> list[tuple[str, str, float]]: ...


_HOOK = re.compile(r"blocks\.(\d+)\.(attn\.hook_in|attn\.hook_[qkv]|hook_attn_out|mlp\.hook_in|"
                   r"mlp\.hook_post|hook_mlp_out|hook_resid_post)")  # fmt: skip
_HOOK_KIND: dict[str, NodeKind] = {
    "attn.hook_in": "attn_in", "attn.hook_q": "q", "attn.hook_k": "k", "attn.hook_v": "v",
    "hook_attn_out": "attn_out", "mlp.hook_in": "mlp_in", "mlp.hook_post": "neuron",
    "hook_mlp_out": "mlp_out", "hook_resid_post": "final",
}  # fmt: skip
_PART = {"attn_in": "attn", "attn_out": "attn", "mlp_in": "mlp", "neuron": "mlp",
         "mlp_out": "mlp", "final": "resid"}  # fmt: skip


def _nodes_from_hooks(circuit: CircuitData) -> tuple[list[ViewNode], int]:
    """The nodes without a config: labels as ``circuits.nodes.node_label`` writes them; q/k/v
    channels from the edges' labels. Returns the nodes and the q/k/v channels left unnamed."""
    ends = {lab for s, d, _ in circuit.edges for lab in (s, d)}
    nodes, unnamed = [], 0
    for hook, chans in circuit.nodes.items():
        m = _HOOK.fullmatch(hook)
        if m is None or not chans:
            continue
        layer, kind = int(m.group(1)), _HOOK_KIND[m.group(2)]
        if kind in ("q", "k", "v"):
            named = sorted(e for e in ends if e.startswith(f"{layer}.attn.{kind}.h"))
            for lab in named:
                head, within = (int(x) for x in re.findall(r"\d+", lab.split(".", 3)[3]))
                nodes.append(ViewNode(label=lab, kind=kind, layer=layer, channel=within, head=head))
            unnamed += len(chans) - len(named)
            continue
        nodes += [
            ViewNode(label=f"{layer}.{_PART[kind]}.{kind}.{c}", kind=kind, layer=layer, channel=c)
            for c in chans
        ]
    return nodes, unnamed


def graph_of(
    circuit: CircuitData,
    cfg: "SparseTransformerConfig | None" = None,
    card: "CircuitCard | None" = None,
    *,
    core_share: float = CORE_SHARE,
) -> tuple[ViewGraph, str]:
    """The ``ViewGraph`` of ``circuit`` and a note on what it could not draw ("" if nothing).

    Raises:
        ValueError: ``core_share`` is not in (0, 1].
    """
    from sparse_lens.circuits.nodes import node_label, node_locations

    note, nodes = "", list[ViewNode]()
    if cfg is not None:
        for loc in node_locations(cfg):
            for c in circuit.nodes.get(loc.hook, []):
                head = c // cfg.d_head if loc.kind in ("q", "k", "v") else None
                label = node_label(loc, c, cfg)
                nodes.append(ViewNode(label=label, kind=loc.kind, layer=loc.layer, channel=c, head=head))  # fmt: skip
    elif card is not None:
        nodes = [ViewNode(label=n.label, kind=n.kind, layer=n.layer, channel=n.channel, head=n.head) for n in card.nodes]  # fmt: skip
    else:
        nodes, unnamed = _nodes_from_hooks(circuit)
        if unnamed:
            note = (f"{unnamed} q/k/v channel(s) without edges are not drawn (naming their head "
                    "needs the model's d_head: pass the model).")  # fmt: skip
    roles = {n.label: (n.role, n.knockout_circuit) for n in card.nodes} if card else None
    losses = (card.losses["circuit"], card.losses["empty"]) if card else None
    graph = view_graph(circuit.task, nodes, circuit.edges, roles=roles, losses=losses,
                       core_share=core_share)  # fmt: skip
    return graph, note


@dataclass(frozen=True, kw_only=True)
class CircuitView:
    """A circuit's graph (core view and full graph) and optional card, rendered inline by a
    notebook (``_repr_html_``) or saved as a page (``html()``)."""

    graph: ViewGraph
    card: CardView | None = None
    note: str = ""

    def html(self) -> str:
        """A self-contained ``<div>``: style, title, card, graphs (no network)."""
        parts = [f"<div class=\"sparse-lens-circuit\"><style>{GRAPH_CSS}</style>",
                 f"<h3>Circuit for {esc(self.graph.task)}: {len(self.graph.nodes)} nodes, "
                 f"{len(self.graph.edges)} edges</h3>"]  # fmt: skip
        if self.card is not None:
            parts.append(card_html(self.card))
        if self.note:
            parts.append(f'<p class="note">{esc(self.note)}</p>')
        parts += [graph_section(self.graph), GRAPH_SCRIPT, "</div>"]
        return "".join(parts)

    def _repr_html_(self) -> str:
        return self.html()


def show(
    circuit: CircuitData,
    model: "HookedSparseTransformer | None" = None,
    *,
    card: "CircuitCard | None" = None,
    core_share: float = CORE_SHARE,
    **explain_kwargs: Any,
) -> CircuitView:
    """``circuit``'s graph, for a notebook: with ``model`` (or an explain ``card``), its core
    view and card; without either, the full graph (no knockouts define a core).

    Args:
        circuit: a ``Circuit``.
        model: the model the circuit was pruned from; ``explain`` runs on it unless ``card``
            is given (``explain_kwargs`` go to it).
        card: an explain card of ``circuit`` already computed.
        core_share: share of the empty-circuit gap a core node's knockout costs at least.

    Raises:
        ValueError: as ``explain`` (a resample-ablated circuit, a model that is not the
            circuit's), or ``core_share`` not in (0, 1].
    """
    if model is not None and card is None:
        from sparse_lens.circuits.explain import explain

        card = explain(model, circuit, **explain_kwargs)  # type: ignore[arg-type]
    cfg = model.cfg if model is not None else None
    graph, note = graph_of(circuit, cfg, card, core_share=core_share)
    view = None
    if card is not None:
        from sparse_lens.circuits.explain.sample import sample_text

        view = card_view(card, sample=sample_text(card.provenance.get("pretraining_sample")))
    return CircuitView(graph=graph, card=view, note=note)
