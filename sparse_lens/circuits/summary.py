"""Circuit-size summaries: one circuit's summary row, and the paper's circuit-size metric over
a model's task circuits (arXiv 2511.13653 §3.2: the geometric mean of the circuits' edges).

Every output file that reports the metric names it ``geometric_mean_edges``; sweep point files
written before that name it ``geo_mean_edges`` (``with_one_name`` renames it on reading).
"""

import math
from collections.abc import Mapping
from typing import Any

from sparse_lens.circuits.circuit import Circuit

GEOMETRIC_MEAN_EDGES = "geometric_mean_edges"
_OLD_GEOMETRIC_MEAN_EDGES = "geo_mean_edges"  # sweep point.json files before the one name


def geometric_mean(values: list[int] | list[float]) -> float | None:
    """Geometric mean of positive ``values``, ``None`` if empty.

    Callers leave out circuits of 0 edges (see ``nonempty_edges``): ``log 0`` has no value, and
    counting such a circuit as 1 edge would inflate any ratio taken against it.

    Raises:
        ValueError: a value is not > 0 (named).
    """
    if not values:
        return None
    bad = [v for v in values if not v > 0]
    if bad:
        raise ValueError(f"a geometric mean needs positive values, got {bad[0]!r}")
    return math.exp(sum(math.log(v) for v in values) / len(values))


def nonempty_edges(edges: list[int]) -> tuple[list[int], int]:
    """(the edge counts above 0, the number of circuits of 0 edges). A circuit of 0 edges is
    the mean-ablated model alone meeting the target: the task needs no circuit, so it has no
    size to average (reported as ``n_empty_circuits`` instead)."""
    return [e for e in edges if e > 0], sum(1 for e in edges if e == 0)


def circuit_sizes(per_task: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``{"geometric_mean_edges": g, "n_circuits": k, "n_empty_circuits": z}`` of one circuit
    row per task: a row holds ``"edges"`` when the task has a circuit (else e.g.
    ``{"skipped": why}``), ``k`` counts the circuits, ``z`` those of 0 edges (the mean-ablated
    model alone meets the target), and ``g`` is the geometric mean of the edges of the other
    ``k - z`` (``None`` when there are none). A 0-edge circuit is left out of ``g``: counting it
    as 1 edge would make the model look smaller than any circuit it has."""
    edges, n_empty = nonempty_edges([r["edges"] for r in per_task.values() if "edges" in r])
    return {
        GEOMETRIC_MEAN_EDGES: geometric_mean(edges),
        "n_circuits": len(edges) + n_empty,
        "n_empty_circuits": n_empty,
    }


def all_tasks_summary(per_task: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The summary of one circuit per task (``prune --all-tasks``'s ``summary.json``):
    ``{"tasks": per_task} | circuit_sizes(per_task)``."""
    return {"tasks": dict(per_task)} | circuit_sizes(per_task)


def with_one_name(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` (a summary or sweep point row) with the geometric mean of its circuit edges
    under its one name: a sweep point file written before it holds ``geo_mean_edges``."""
    if _OLD_GEOMETRIC_MEAN_EDGES not in row or GEOMETRIC_MEAN_EDGES in row:
        return row
    renamed = {k: v for k, v in row.items() if k != _OLD_GEOMETRIC_MEAN_EDGES}
    return renamed | {GEOMETRIC_MEAN_EDGES: row[_OLD_GEOMETRIC_MEAN_EDGES]}


def summary_row(circuit: Circuit, file: str) -> dict[str, Any]:
    """One circuit's row of a summary (``summary.json``, a sweep point's ``circuits``): its
    size, losses, pruning seconds, ``file``, and with a faithfulness report the failed checks."""
    row = {
        "nodes": circuit.n_nodes,
        "edges": circuit.n_edges,
        "loss": circuit.loss,
        "test_loss": circuit.test_loss,
        "calibrated_loss": circuit.calibrated_loss,
        "seconds": circuit.extra.get("prune_seconds"),
        "file": file,
    }
    if "faithfulness" in circuit.extra:
        row["failed_checks"] = circuit.extra["faithfulness"]["failed"]
    return row
