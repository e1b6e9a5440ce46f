"""The circuit graph of a report: the ``ViewGraph`` a page draws and its Graphviz export.

The page's drawings (the core view and the full graph, laid out left to right) are
``sparse_lens.circuits.graph_view``'s, torch-free so that ``Circuit.show`` renders the same
SVG in a notebook. ``circuit_dot`` writes the full graph for Graphviz: one rank per column of
the layout (``graph_view.graph.SITE_ORDER`` within each layer), solid edges the circuit's weights
(pen width ``|w|``, blue positive, red negative), dashed grey lines the residual identity paths
(a write to channel c read later at channel c; drawn for reading, not counted as edges).
"""

from sparse_lens.circuits.circuit import Circuit
from sparse_lens.circuits.graph_view.graph import ViewGraph, column_name, residual_paths
from sparse_lens.circuits.graph_view.show import graph_of
from sparse_lens.circuits.graph_view.svg import KIND_COLOUR
from sparse_lens.model.config import SparseTransformerConfig


def circuit_view_graph(circuit: Circuit, cfg: SparseTransformerConfig) -> ViewGraph:
    """Every node of ``circuit`` (no roles: ``graph_of`` with an explain card adds them)."""
    return graph_of(circuit, cfg)[0]


def circuit_dot(circuit: Circuit, cfg: SparseTransformerConfig) -> str:
    """The circuit in Graphviz ``dot``, left to right: one rank per column, weights as labels
    and pen widths."""
    graph = circuit_view_graph(circuit, cfg)
    wmax = max((abs(w) for _, _, w in circuit.edges), default=1.0) or 1.0
    lines = [
        f"digraph {_dot_id(circuit.task)} {{",
        "  rankdir=LR; node [shape=box, style=rounded, fontsize=8];",
        f'  label="{_dot_str(circuit.summary())}";',
    ]
    columns = sorted({n.column for n in graph.nodes})
    for i, col in enumerate(columns):
        members = " ".join(f'"{_dot_str(n.label)}"' for n in graph.nodes if n.column == col)
        lines.append(f"  subgraph col{i} {{ rank=same; {members} }}  // {column_name(col)}")
    for n in graph.nodes:
        lines.append(
            f'  "{_dot_str(n.label)}" [label="{_dot_str(n.name)}", color="{KIND_COLOUR[n.kind]}", '
            f'tooltip="{_dot_str(n.label)} channel {n.channel}"];'
        )
    for s, d, w in circuit.edges:
        colour = "#1f5fbf" if w > 0 else "#c0392b"
        lines.append(
            f'  "{_dot_str(s)}" -> "{_dot_str(d)}" [color="{colour}", '
            f'penwidth={0.4 + 3 * abs(w) / wmax:.2f}, label="{w:+.3g}"];'
        )
    for w, r in residual_paths(graph.nodes):
        lines.append(
            f'  "{_dot_str(w.label)}" -> "{_dot_str(r.label)}" [style=dashed, color="#bbbbbb"];'
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_str(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _dot_id(text: str) -> str:
    ident = "".join(c if c.isalnum() else "_" for c in text)
    return ident if ident and not ident[0].isdigit() else f"c_{ident}"
