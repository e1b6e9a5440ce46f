"""``sparse_lens.tasks.selection``'s JSON task tables: ``tasks.json`` names the table that
chooses the tasks by its use (``selection``), not ``validation`` (a circuit page's validation
examples are another set: the pruner's ``n_val``), every table gives its split, n and target,
every row whether it is solved, and a file of the older layout still reads."""

import pytest

from sparse_lens.tasks.selection import (
    LEGACY_SELECTION,
    PAPER_TARGET,
    SELECTION,
    TABLE_USES,
    is_solved,
    selection_table,
    table_record,
    task_tables_record,
    val_examples,
)


def _row(loss: float, n: int) -> dict[str, float]:
    return {"loss": loss, "accuracy": 0.9, "n": n, "dropped": 0}


def test_solved_is_at_or_below_the_target():
    assert is_solved(PAPER_TARGET) and is_solved(0.1) and not is_solved(0.151)
    assert is_solved(0.2, target=0.2) and not is_solved(0.2, target=0.19)


def test_a_table_record_gives_split_n_seed_target_and_solved_per_task():
    rows = {"a": _row(0.15, 200), "b": _row(0.4, 146) | {"dropped": 54}}
    record = table_record(rows, split="val", n=200, seed=3, target=0.2)
    assert {k: v for k, v in record.items() if k != "losses"} == {
        "split": "val",
        "n": 200,
        "seed": 3,
        "target_loss": 0.2,
    }
    assert record["losses"] == {
        "a": _row(0.15, 200) | {"solved": True},
        "b": _row(0.4, 146) | {"dropped": 54, "solved": False},
    }
    assert "solved" not in rows["a"]  # the caller's rows are left alone


def test_tasks_json_names_the_choosing_table_by_its_use_with_split_and_n():
    """``"validation"`` (val split, n = 100) read as the circuit pages' validation split
    (the pruner's 128 examples); the table is now ``"selection"`` and says what it is for."""
    test, val = {"a": _row(0.1, 200)}, {"a": _row(0.3, 100)}
    record = task_tables_record(test, val, 200)
    assert set(record) == {"test", SELECTION} and SELECTION == "selection"
    assert LEGACY_SELECTION not in record
    chooser = record[SELECTION]
    assert (chooser["split"], chooser["n"], chooser["seed"]) == ("val", val_examples(200), 0)
    assert chooser["use"] == TABLE_USES[SELECTION] and "n_val" in chooser["use"]
    assert (record["test"]["split"], record["test"]["n"]) == ("test", 200)
    assert {t["target_loss"] for t in record.values()} == {PAPER_TARGET}
    assert record["test"]["losses"]["a"]["solved"] and not chooser["losses"]["a"]["solved"]


def test_the_selection_table_reads_from_the_new_and_the_older_layout():
    rows = {"a": _row(0.3, 100)}
    new = task_tables_record({"a": _row(0.1, 200)}, rows, 200)
    assert selection_table(new) == new[SELECTION]["losses"]
    old = {"test": {"split": "test", "n": 200, "losses": {}}, "validation": {"losses": rows}}
    assert selection_table(old) == rows
    with pytest.raises(KeyError, match="no task selection table.*keys here: \\['a'\\]"):
        selection_table({"a": _row(0.1, 50)})  # a flat table (a sweep point's) has none
