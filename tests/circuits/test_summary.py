"""``sparse_lens.circuits.summary``: circuit-size summaries under one key name."""

import pytest

from sparse_lens.circuits.summary import all_tasks_summary, with_one_name


def test_all_tasks_summary_geometric_mean_over_circuits_only():
    rows = {
        "a": {"nodes": 3, "edges": 4, "loss": 0.1},
        "b": {"nodes": 1, "edges": 0, "loss": 0.1},  # no edges: counted, not averaged
        "c": {"skipped": "the full model misses the target"},
        "d": {"nodes": 5, "edges": 16, "loss": 0.1},
    }
    summary = all_tasks_summary(rows)
    assert summary["tasks"] == rows
    assert summary["n_circuits"] == 3
    assert summary["n_empty_circuits"] == 1
    assert summary["geometric_mean_edges"] == pytest.approx(8.0)  # sqrt(4 * 16)
    empty = all_tasks_summary({"c": rows["c"]})
    assert empty == {
        "tasks": {"c": rows["c"]},
        "geometric_mean_edges": None,
        "n_circuits": 0,
        "n_empty_circuits": 0,
    }
    only_empty = all_tasks_summary({"b": rows["b"]})
    assert only_empty["geometric_mean_edges"] is None and only_empty["n_empty_circuits"] == 1


def test_an_old_point_row_reads_under_the_one_name(tmp_path):
    """A sweep ``point.json`` written before the one key name (``geo_mean_edges``) reads back
    with ``geometric_mean_edges``; a new row is left as it is."""
    import json

    from sparse_lens.sweep.recorded import read_point_row

    old = {"geo_mean_edges": 8.0, "n_circuits": 2}
    assert with_one_name(old) == {"n_circuits": 2, "geometric_mean_edges": 8.0}
    new = {"geometric_mean_edges": 3.0}
    assert with_one_name(new) is new
    row = {
        "name": "p", "kind": "sparse", "solved": [], "circuits": {}, "tasks": {},
        "target_loss": 0.15, "val_loss": 3.0, "steps": 10, "n_circuits": 0,
        "n_empty_circuits": 0, "geo_mean_edges": None,
    }  # fmt: skip
    path = tmp_path / "point.json"
    path.write_text(json.dumps(row))
    read = read_point_row(path)
    assert "geo_mean_edges" not in read and read["geometric_mean_edges"] is None
