"""Which tasks to prune, and at what target loss.

The paper prunes each task to a target task loss of 0.15 (arXiv 2511.13653,
App. A.5). A small model may solve a task only partly; :func:`relaxed_target` gives such a task
a target that still asks the circuit for most of what the model does, and :func:`choose_tasks`
picks the tasks to prune from the selection table (:func:`task_tables`: the ``val`` split).

Two example sets of the ``val`` split are easy to confuse, so they are named by what they are
for: the *selection* table (:func:`task_tables_record`, ``tasks.json``'s ``"selection"``:
:func:`val_examples` examples a task, seed 0) chooses which tasks the demo prunes and their
targets; a circuit's own validation examples (``PruneRequest.n_val``, a circuit file's
``extra.n_val``, at the pruning seed) are what the pruner bisects and cleans up on.
"""

import math
from collections.abc import Mapping, Sequence
from typing import Any

from sparse_lens.tasks.task import TASK_NAMES, Task, get_task, task_table
from sparse_lens.vocab import PAPER_TARGET, TaskSplit

SELECTION = "selection"
"""``tasks.json``'s key of the table that chooses the tasks pruned (``val`` split)."""
LEGACY_SELECTION = "validation"
"""The same table's key in ``tasks.json`` files written before it was named by its use."""
TABLE_USES = {
    "test": "reports the full model's task loss (never chooses a task or a target)",
    SELECTION: "chooses the tasks pruned and their target losses (not a circuit's own "
    "validation examples: those are its file's n_val, at the pruning seed)",
}
"""What each table of :func:`task_tables_record` is for, as ``tasks.json`` says."""

RELAXED_TASKS = ("single_double_quote", "bracket_counting")
"""Tasks pruned at a relaxed target when the model does not reach :data:`PAPER_TARGET`: the
paper's worked circuits of closing a string's quote and counting bracket depth."""


def is_solved(loss: float, target: float = PAPER_TARGET) -> bool:
    """Whether a task loss reaches ``target``: ``loss <= target`` (both in nats per sequence),
    the test :func:`choose_tasks` prunes a task at ``target`` by."""
    return loss <= target


def relaxed_target(loss: float) -> float:
    """Target for a task the model solves only partly: ``1.25 * loss``, at most halfway from
    ``loss`` to chance (``ln 2`` nats, the binary task loss of a coin flip), rounded to 3 places.

    Args:
        loss: the full model's task loss in nats on the validation split.
    """
    return round(min(1.25 * loss, (loss + math.log(2)) / 2), 3)


def choose_tasks(
    table: Mapping[str, Mapping[str, float]],
    val_loss: Mapping[str, float],
    *,
    relaxed: Sequence[str] = RELAXED_TASKS,
    min_accuracy: float = 0.65,
    target: float = PAPER_TARGET,
) -> dict[str, float]:
    """Task name -> target loss of the tasks to prune.

    Every task whose ``table`` loss is at most ``target`` is pruned to ``target``; each task of
    ``relaxed`` not among them is pruned at ``relaxed_target(val_loss[name])`` when its
    accuracy is at least ``min_accuracy``; failing all that, the task of least loss is.

    Args:
        table: task name -> at least ``{"loss": nats, "accuracy": fraction}`` (``task_table``).
        val_loss: task name -> the full model's validation loss, which a relaxed target
            starts from (nats).

    Raises:
        KeyError: a task of ``relaxed`` (or the best task) is missing from ``table`` or
            ``val_loss``.
    """
    chosen = {n: target for n, r in table.items() if is_solved(r["loss"], target)}
    for name in relaxed:
        if name not in chosen and table[name]["accuracy"] >= min_accuracy:
            chosen[name] = relaxed_target(val_loss[name])
    if not chosen and table:
        best = min(table, key=lambda n: table[n]["loss"])
        chosen[best] = relaxed_target(val_loss[best])
    return chosen


def val_examples(n: int) -> int:
    """Examples a task of the selection table of :func:`task_tables` (``val`` split) asks for
    beside ``n`` test examples: ``max(n // 2, 16)`` (the ``val`` split is smaller)."""
    return max(n // 2, 16)


def task_tables(
    model: Any, tasks: Sequence[Task], n: int
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """The test-split (``n`` examples a task) and selection (``val`` split,
    :func:`val_examples`: the split is smaller) task tables of ``model``. Tasks and relaxed
    targets are chosen on the selection table only
    (``choose_tasks(val, {name: val[name]["loss"]})``); the test table reports, so the split a
    circuit's loss is reported on never picked its task or target.

    Raises:
        ValueError: a task has no example that fits the model's tokenizer and context.
    """
    return task_table(model, tasks, "test", n), task_table(model, tasks, "val", val_examples(n))


def table_record(
    rows: Mapping[str, Mapping[str, Any]],
    *,
    split: TaskSplit,
    n: int,
    seed: int = 0,
    target: float = PAPER_TARGET,
) -> dict[str, Any]:
    """One task table as JSON (``sparse-lens tasks --json``, each table of ``tasks.json``):
    its ``split``, ``n`` (examples asked per task; a row's own ``n`` is what its task kept,
    ``dropped`` the examples lost at token boundaries), ``seed``, ``target_loss`` (nats) and
    ``losses``: ``rows`` (``task_table``'s) each with ``solved`` (:func:`is_solved`).

    Raises:
        KeyError: a row has no ``"loss"``.
    """
    losses = {name: dict(r) | {"solved": is_solved(r["loss"], target)} for name, r in rows.items()}
    return {"split": split, "n": n, "seed": seed, "target_loss": target, "losses": losses}


def task_tables_record(
    test: Mapping[str, Mapping[str, Any]],
    selection: Mapping[str, Mapping[str, Any]],
    n: int,
    target: float = PAPER_TARGET,
) -> dict[str, dict[str, Any]]:
    """``tasks.json``: the test table (``n`` examples asked per task) and the selection table
    (``val`` split, :func:`val_examples` of ``n``) of :func:`task_tables` (seed 0), each a
    :func:`table_record` with its ``use`` (:data:`TABLE_USES`).

    Raises:
        KeyError: a row has no ``"loss"``.
    """
    tables = {
        "test": table_record(test, split="test", n=n, target=target),
        SELECTION: table_record(selection, split="val", n=val_examples(n), target=target),
    }
    return {key: table | {"use": TABLE_USES[key]} for key, table in tables.items()}


def selection_table(record: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The selection table's rows (task -> loss, accuracy, ...) of a ``tasks.json`` record:
    :data:`SELECTION`'s, or :data:`LEGACY_SELECTION`'s in a file written before the rename.

    Raises:
        KeyError: ``record`` has neither table (both keys named).
    """
    for key in (SELECTION, LEGACY_SELECTION):
        table = record.get(key)
        if isinstance(table, Mapping) and isinstance(table.get("losses"), Mapping):
            return dict(table["losses"])
    raise KeyError(
        f"no task selection table: a tasks.json record has {SELECTION!r} (or, written before "
        f"the rename, {LEGACY_SELECTION!r}) with 'losses'; keys here: {sorted(record)}"
    )


def other_task(model: Any, name: str, n: int = 32) -> Task | None:
    """The suite task other than ``name`` that ``model`` solves best on the validation split
    (``n`` examples each; tasks without an example that fits the model are passed over), for
    a circuit's specificity check; None if there is none."""

    best: tuple[float, Task] | None = None
    for other in (get_task(t) for t in TASK_NAMES if t != name):
        try:
            loss = task_table(model, [other], "val", n)[other.name]["loss"]
        except ValueError:
            continue
        if best is None or loss < best[0]:
            best = (loss, other)
    return None if best is None else best[1]
