"""The sweep's table: one row per grid point, dense baselines matched on pretraining loss.

``match_dense`` pairs every sparse point with the dense baseline of the nearest final
validation loss (the paper's Fig. 2 compares models matched on pretraining loss) and gives
the dense/sparse circuit-edge ratio: the geometric mean, over the tasks both models solve and
both have a circuit of at least one edge for, of ``edges_dense / edges_sparse``. A circuit of
0 edges (the mean-ablated model alone meets the target) has no size to compare: its task is
left out and counted in ``n_empty_tasks``.
The loss gap of the match is reported with it: with one dense model per width the match is only
as close as the dense losses allow.

Files: ``table.json`` (settings, rows with every task and circuit, status of every point),
``table.csv`` (one line per point, scalar columns) and ``circuits.csv`` (one line per circuit).
"""

import csv
import io
import math
from pathlib import Path
from typing import Any

from sparse_lens.circuits.summary import geometric_mean
from sparse_lens.files.atomic import atomic_write_json, atomic_write_text
from sparse_lens.sweep.grid import PointSpec, SweepConfig
from sparse_lens.sweep.recorded import read_point_row

POINT_COLUMNS = (
    "name", "kind", "d_model", "d_mlp", "n_layers", "afrac", "l0", "weight_density",
    "embed_density", "l0_total", "steps", "tokens", "val_loss", "n_solved", "n_circuits",
    "n_empty_circuits", "geometric_mean_edges", "matched_dense", "loss_gap", "edge_ratio",
    "n_common_tasks", "n_empty_tasks", "train_s",
    "status",
)  # fmt: skip
CIRCUIT_COLUMNS = (
    "point", "kind", "d_model", "l0", "task", "task_loss", "task_accuracy", "target_loss",
    "nodes", "edges", "circuit_loss", "test_loss", "seconds",
)  # fmt: skip


def collect(out: Path, points: list[PointSpec]) -> list[dict[str, Any]]:
    """The rows of every point of the grid that has finished (``point.json``); a finished
    point's status is ``done`` whether this run or an earlier one finished it (``table.json``'s
    ``status`` says which, per point), so a resumed sweep tables like an uninterrupted one."""
    rows = []
    for spec in points:
        path = out / "points" / spec.name / "point.json"
        if path.exists():
            row = read_point_row(path)
            rows.append(row | {"status": "done", "n_solved": len(row["solved"])})
    return rows


def _edges(row: dict[str, Any]) -> dict[str, int]:
    return {t: c["edges"] for t, c in row["circuits"].items() if "edges" in c}


def match_dense(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with ``matched_dense``, ``loss_gap``, ``edge_ratio`` and ``n_common_tasks`` set
    and ``n_empty_tasks`` set on the sparse rows (``None`` where no dense baseline or no common
    circuit of at least one edge)."""
    dense = [r for r in rows if r["kind"] == "dense" and math.isfinite(r["val_loss"])]
    out = []
    for row in rows:
        extra: dict[str, Any] = dict.fromkeys(("matched_dense", "loss_gap", "edge_ratio"))
        extra |= {"n_common_tasks": 0, "n_empty_tasks": 0}
        if row["kind"] == "sparse" and dense and math.isfinite(row["val_loss"]):
            match = min(dense, key=lambda d: abs(d["val_loss"] - row["val_loss"]))
            mine, theirs = _edges(row), _edges(match)
            both = mine.keys() & theirs.keys()
            common = sorted(t for t in both if mine[t] > 0 and theirs[t] > 0)
            ratios = [theirs[t] / mine[t] for t in common]
            extra |= {
                "matched_dense": match["name"],
                "loss_gap": match["val_loss"] - row["val_loss"],
                "edge_ratio": geometric_mean(ratios),
                "n_common_tasks": len(common),
                "n_empty_tasks": len(both) - len(common),
            }
        out.append(row | extra)
    return out


def overall_ratio(rows: list[dict[str, Any]]) -> float | None:
    """Geometric mean of the edge ratios of every matched sparse point."""
    return geometric_mean([r["edge_ratio"] for r in rows if r.get("edge_ratio") is not None])


def _csv(columns: tuple[str, ...], records: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in records:
        writer.writerow({k: "" if r.get(k) is None else r.get(k) for k in columns})
    return buf.getvalue()


def circuit_records(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per circuit (or skipped circuit) of every row."""
    records = []
    for row in rows:
        for task, c in row["circuits"].items():
            t = row["tasks"][task]
            records.append({
                "point": row["name"], "kind": row["kind"], "d_model": row["d_model"],
                "l0": row["l0"], "task": task, "task_loss": t["loss"],
                "task_accuracy": t["accuracy"], "target_loss": row["target_loss"],
                "nodes": c.get("nodes"), "edges": c.get("edges"), "circuit_loss": c.get("loss"),
                "test_loss": c.get("test_loss"), "seconds": c.get("seconds"),
            })  # fmt: skip
    return records


def write_table(
    out: Path, scfg: SweepConfig, rows: list[dict[str, Any]], status: dict[str, str]
) -> dict[str, Path]:
    """Write ``table.json``, ``table.csv`` and ``circuits.csv`` into ``out``; their paths."""
    flat = [r | {"train_s": r.get("timings", {}).get("train_s")} for r in rows]
    paths = {"json": out / "table.json", "csv": out / "table.csv", "circuits": out / "circuits.csv"}
    atomic_write_json(
        paths["json"],
        {
            "config": scfg.to_dict(),
            "rows": rows,
            "status": status,
            "edge_ratio": overall_ratio(rows),
        },
    )
    atomic_write_text(paths["csv"], _csv(POINT_COLUMNS, flat))
    atomic_write_text(paths["circuits"], _csv(CIRCUIT_COLUMNS, circuit_records(rows)))
    return paths
