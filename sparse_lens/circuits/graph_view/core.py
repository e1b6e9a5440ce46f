"""The core view of a circuit (``core_drawing``): its core nodes labelled with their roles, the
rest collapsed into one box per layer and site (``graph`` module docstring)."""

from sparse_lens.circuits.graph_view.graph import (
    Column,
    Drawing,
    Item,
    Link,
    ViewGraph,
    ViewNode,
    column_name,
    node_item,
    residual_paths,
)


def group_key(column: Column) -> str:
    """The key of the collapsed box of ``column``."""
    return f"group:{column[0]}:{column[1]}"


def _groups(rest: list[ViewNode], any_core: bool) -> list[Item]:
    """One box per column of the non-core nodes ``rest``, its text the count (``73 more
    nodes``; the column's header names the layer and site), its tooltip both and the labels."""
    by_column: dict[Column, list[ViewNode]] = {}
    for n in rest:
        by_column.setdefault(n.column, []).append(n)
    more = "more " if any_core else ""
    return [
        Item(
            key=group_key(col),
            column=col,
            text=f"{len(members)} {more}node{'s' if len(members) > 1 else ''}",
            kind=None,
            count=len(members),
            order=float("inf"),  # below the column's core nodes until ordered
            tooltip=f"{column_name(col)}: {len(members)} {more}node{'s' if len(members) > 1 else ''}"
            " (below the core threshold):\n"
            + ", ".join(m.label for m in members[:40])
            + (" ..." if len(members) > 40 else ""),
        )
        for col, members in sorted(by_column.items())
    ]


def _aggregate(pairs: list[tuple[str, str, float, bool]], kept: set[str]) -> list[Link]:
    """Links of ``(source key, target key, weight, residual)``: kept as they are between two
    ``kept`` keys, summed (count, sum of ``|w|``) otherwise."""
    out: list[Link] = []
    summed: dict[tuple[str, str, bool], list[float]] = {}
    for s, d, w, residual in pairs:
        if s in kept and d in kept:
            out.append(Link(source=s, target=d, weight=w, residual=residual))
        else:
            summed.setdefault((s, d, residual), []).append(abs(w))
    for (s, d, residual), ws in summed.items():
        out.append(Link(source=s, target=d, weight=sum(ws), count=len(ws), residual=residual))
    return out


def core_drawing(graph: ViewGraph) -> Drawing:
    """The core nodes (each labelled ``name · role``), one box per layer and site for the rest,
    edges between core nodes kept and the others aggregated per pair of boxes. Without a core
    (no card, or an empty circuit no worse than the circuit) every node is collapsed."""
    core = graph.core()
    kept = {n.label for n in core}
    key = {n.label: n.label if n.label in kept else group_key(n.column) for n in graph.nodes}
    items = [node_item(n, True) for n in core]
    items += _groups([n for n in graph.nodes if n.label not in kept], bool(core))
    pairs = [(key[s], key[d], w, False) for s, d, w in graph.edges]
    pairs += [(key[w.label], key[r.label], 0.0, True) for w, r in residual_paths(graph.nodes)]
    links = _aggregate([p for p in pairs if p[0] != p[1]], kept)
    return Drawing(task=graph.task, view="core", items=tuple(items), links=tuple(links))
