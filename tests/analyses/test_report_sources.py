"""``analyses.report_sources``: reading what a report is built from, without a model."""

import json

import pytest

from analyses.report import task_section
from analyses.report_sources import read_task_table
from sparse_lens.tasks.selection import table_record, task_tables_record


def _row(loss: float, n: int) -> dict[str, float]:
    return {"loss": loss, "accuracy": 0.9, "n": n, "dropped": 0}


def test_the_report_shows_the_demos_test_table_under_its_split_and_n(tmp_path):
    """``tasks.json`` holds a table per split (``task_tables_record``); the index shows the test
    table and says so, with its n."""
    path = tmp_path / "tasks.json"
    test, val = {"a": _row(0.2, 200), "b": _row(0.4, 200)}, {"a": _row(0.3, 100)}
    path.write_text(json.dumps(task_tables_record(test, val, 200)))
    table, split = read_task_table(path)
    assert (table, split) == (table_record(test, split="test", n=200)["losses"], "test")
    assert "Task loss of the full model (test split, n = 200 per task)" in task_section(table)
    assert "(validation split, n = 100 per task)" in task_section(val, split="val")


def test_a_flat_task_table_is_the_test_splits(tmp_path):
    """A sweep point's ``tasks.json`` (or a demo's from before the splits were recorded) is
    one ``{task: row}`` table of the test split."""
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps({"a": _row(0.2, 50)}))
    assert read_task_table(path) == ({"a": _row(0.2, 50)}, "test")
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a JSON list"):
        read_task_table(path)
