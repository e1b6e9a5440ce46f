"""The graph section of a circuit page and of ``show`` (torch-free): the core view, a sentence
stating how the core was chosen, and the full graph behind a ``<details>`` (one click away)."""

from collections.abc import Mapping

from sparse_lens.circuits.graph_view.core import core_drawing
from sparse_lens.circuits.graph_view.graph import ViewGraph, full_drawing
from sparse_lens.circuits.graph_view.svg import drawing_svg, esc

GRAPH_CSS = """
.graph { overflow-x: auto; border: 1px solid #eee; max-width: 100%; }
details.full-graph > summary, details.stage > summary { cursor: pointer; margin: 6px 0; }
.circuit-card .summary { font-size: 1.05em; line-height: 1.45; }
.card-warning { background: #fde8e8; border: 1px solid #b00; padding: 0.5em; }
"""


def core_note(graph: ViewGraph) -> str:
    """How the core was chosen, with its numbers (or why there is none)."""
    if graph.gap is None:
        return (
            "No explain card (it needs the model and a mean- or zero-ablated circuit), so no "
            "knockouts define a core: the full graph is shown."
        )
    if not graph.has_core:
        return (
            f"The empty circuit's task loss ({graph.empty_loss:.3f}) is not above the circuit's "
            f"({graph.circuit_loss:.3f}): no knockout gap defines a core."
        )
    core = graph.core()
    left = [n for n in graph.nodes if n not in core]
    nearest = max(left, key=lambda n: n.knockout or 0.0, default=None)
    miss = (
        f"; the largest knockout left out is {nearest.knockout or 0.0:.4g} nats ({nearest.label})"
        if nearest is not None
        else ""
    )
    return (
        f"Core: the {len(core)} of {len(graph.nodes)} nodes whose single-node knockout in the "
        f"circuit costs at least {graph.core_share:.0%} of the gap between the empty circuit's "
        f"task loss ({graph.empty_loss:.3f}) and the circuit's ({graph.circuit_loss:.3f}), "
        f"i.e. at least {graph.core_threshold:.4g} nats (explain card){miss}. Each is labelled with "
        "its role; the other nodes are collapsed into one box per layer and site with their "
        "count. Grey lines aggregate the edges to a collapsed box (width grows with their count, "
        "hover for it); blue and red lines are single weights (positive, negative; width |w|); "
        "dashed lines are residual identity paths (not counted as edges)."
    )


def graph_section(
    graph: ViewGraph, node_info: Mapping[str, Mapping[str, float]] | None = None
) -> str:
    """The core view (when a core exists) and the full graph one click away."""
    full = drawing_svg(full_drawing(graph), node_info)
    parts = [f'<p class="note">{esc(core_note(graph))}</p>']
    if graph.has_core:
        parts.append(
            f'<div class="graph core-graph">{drawing_svg(core_drawing(graph), node_info)}</div>'
        )
    opened = "" if graph.has_core else " open"
    parts.append(
        f'<details class="full-graph"{opened}><summary>The full graph: all {len(graph.nodes)} '
        f"nodes and {len(graph.edges)} edges</summary>"
        f'<div class="graph full-graph">{full}</div></details>'
    )
    return "".join(parts)
