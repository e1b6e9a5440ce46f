"""``sparse_lens.tasks.selection``: which tasks to prune at what target."""

import math

import pytest

import sparse_lens.tasks.selection as selection
from sparse_lens.tasks.selection import (
    PAPER_TARGET,
    choose_tasks,
    relaxed_target,
    task_tables,
)
from sparse_lens.tasks.task import get_task


def test_relaxed_target_is_a_quarter_above_the_loss_but_at_most_halfway_to_chance():
    assert relaxed_target(0.2) == 0.25  # 1.25 * 0.2 < (0.2 + ln 2) / 2
    assert relaxed_target(0.52) == round((0.52 + math.log(2)) / 2, 3)  # halfway is lower
    assert relaxed_target(0.4) == 0.5  # 1.25 * 0.4 < 0.547 halfway
    assert relaxed_target(0.0) == 0.0


def test_choose_tasks_solved_then_relaxed_then_the_best():
    table = {
        "a": {"loss": 0.1, "accuracy": 0.97},
        "b": {"loss": 0.15, "accuracy": 0.9},  # at the target: solved
        "q": {"loss": 0.5, "accuracy": 0.7},
        "r": {"loss": 0.6, "accuracy": 0.5},
    }
    worst = {"a": 0.12, "b": 0.16, "q": 0.52, "r": 0.61}
    assert choose_tasks(table, worst, relaxed=("q", "r")) == {
        "a": PAPER_TARGET,
        "b": PAPER_TARGET,
        "q": relaxed_target(0.52),  # from the worse loss; r is below the accuracy bar
    }
    assert choose_tasks(table, worst, relaxed=("q", "r"), min_accuracy=0.5)["r"] == (
        relaxed_target(0.61)
    )
    assert choose_tasks(table, worst, relaxed=(), target=0.12) == {"a": 0.12}
    unsolved = {"q": {"loss": 0.5, "accuracy": 0.6}, "r": {"loss": 0.4, "accuracy": 0.6}}
    assert choose_tasks(unsolved, worst, relaxed=("q",)) == {"r": relaxed_target(0.61)}
    assert choose_tasks({}, {}, relaxed=()) == {}


def test_choose_tasks_relaxes_the_papers_quote_and_bracket_tasks_by_default():
    table = {
        "single_double_quote": {"loss": 0.3, "accuracy": 0.8},
        "bracket_counting": {"loss": 0.3, "accuracy": 0.8},
        "else_elif": {"loss": 0.3, "accuracy": 0.8},
    }
    worst = {name: 0.3 for name in table}
    assert set(choose_tasks(table, worst)) == {"single_double_quote", "bracket_counting"}
    with pytest.raises(KeyError, match="bracket_counting"):
        choose_tasks({"single_double_quote": table["single_double_quote"]}, worst)


def test_tasks_are_chosen_on_validation_and_reported_on_test(monkeypatch):
    """The split a circuit's loss is reported on (test) never picks its task or target."""
    calls = []
    a, b = get_task("else_elif"), get_task("for_while")
    losses = {"test": {a.name: 0.1, b.name: 0.5}, "val": {a.name: 0.3, b.name: 0.12}}

    def fake_table(model, tasks, split, n):
        calls.append((split, n))
        return {t.name: {"loss": losses[split][t.name], "accuracy": 1.0, "n": n} for t in tasks}

    monkeypatch.setattr(selection, "task_table", fake_table)
    test, val = task_tables(None, [a, b], 200)
    assert test == fake_table(None, [a, b], "test", 200)
    assert calls[:2] == [("test", 200), ("val", 100)]  # the validation split is smaller
    chosen = choose_tasks(val, {n: r["loss"] for n, r in val.items()}, relaxed=())
    assert chosen == {b.name: PAPER_TARGET}  # solved on validation; a's test loss plays no part
