"""The report's index page: what its charts draw (target lines, axis limits, labels that fit),
the task tables it shows with their split and n, and what its loss curves are measured on."""

import dataclasses
import json

import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from analyses.html import esc
from analyses.page_data import TaskTable
from analyses.plots import Series, line_chart, nice_log_limits
from analyses.report import (
    circuit_curve_note,
    circuit_size_chart,
    circuit_splits_note,
    index_page,
    l0_chart,
    loss_streams,
    solved_target,
    task_chart,
    task_tables_of,
    training_plots,
)
from sparse_lens import HookedSparseTransformer
from sparse_lens.circuits.ablation import ablation_means
from sparse_lens.circuits.circuit import Circuit
from sparse_lens.circuits.nodes import node_locations
from sparse_lens.tasks.selection import SELECTION, TABLE_USES
from sparse_lens.tasks.selection import task_tables_record as selection_record
from tests.helpers import build_cfg, tiny_tokenizer

# the demo run's numbers a fresh user saw cut off or unlabelled
FINAL_L0 = 229_952
DEMO_RUN = {
    "corpus": {"source": "stdlib"},
    "data": {"idiom_frac": 0.5},
    "model_config": {"n_ctx": 64},
    "train_config": {"batch_size": 32, "val_windows": 64, "eval_every": 100},
}


def _row(loss: float, n: int) -> dict[str, float]:
    return {"loss": loss, "accuracy": 0.9, "n": n, "dropped": 0}


TEST_ROWS = {"else_elif": _row(0.021, 200), "var_if": _row(0.194, 200),
             "set_or_string_fixedvarname": _row(3.019, 200)}  # fmt: skip
VAL_ROWS = {"else_elif": _row(0.020, 100), "var_if": _row(0.141, 100),
            "set_or_string_fixedvarname": _row(3.018, 100)}  # fmt: skip


@pytest.fixture(scope="module")
def circuit() -> Circuit:
    tok = tiny_tokenizer()
    model = HookedSparseTransformer(build_cfg(d_vocab=tok.vocab_size, n_ctx=64), tokenizer=tok)
    windows = torch.randint(0, tok.vocab_size, (4, 64), generator=torch.Generator())
    nodes = {loc.hook: [0] for loc in node_locations(model.cfg)}
    c = Circuit.from_nodes(
        model.eval(), nodes, ablation_means(model, windows), task="else_elif", target_loss=0.15,
        loss=0.149, full_loss=0.02, curve=[(0, 1.78), (92, 0.33), (106, 0.136), (2944, 0.02)],
    )  # fmt: skip
    c.extra["n_val"] = 128
    return c


def _drawn(fig: Figure | None) -> Figure:
    assert fig is not None
    FigureCanvasAgg(fig).draw()
    return fig


def _texts(fig: Figure) -> list[Text]:
    """The texts a drawn ``fig`` shows: every visible text but tick labels outside the view."""
    hidden = set()
    for ax in fig.axes:
        for axis, lim, i in ((ax.xaxis, ax.get_xlim(), 0), (ax.yaxis, ax.get_ylim(), 1)):
            lo, hi = sorted(lim)
            labels = axis.get_ticklabels(which="both")
            hidden |= {id(t) for t in labels if not lo <= t.get_position()[i] <= hi}
    shown = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    return [t for t in shown if id(t) not in hidden]


# -- 1. the circuit size curve: a target line and a caption -------------------------------------


def test_the_circuit_size_chart_draws_each_circuits_target_loss(circuit):
    ax = _drawn(circuit_size_chart([circuit])).axes[0]
    flat = [ln for ln in ax.get_lines() if len(set(ln.get_ydata())) == 1]  # type: ignore[arg-type]
    assert [ln.get_ydata()[0] for ln in flat] == [0.15]  # type: ignore[index]
    assert "target 0.15" in {t.get_text() for t in ax.texts}
    relaxed = dataclasses.replace(circuit, task="var_if", target_loss=0.243)
    ax = _drawn(circuit_size_chart([circuit, relaxed])).axes[0]
    labels = {t.get_text() for t in ax.texts}
    assert labels == {"target 0.15: else_elif", "target 0.243: var_if"}


def test_the_circuit_size_chart_has_a_caption_with_units_split_and_target(circuit):
    note = circuit_curve_note([circuit])
    for words in ("nats per example", "validation split", "128 examples", "mean-ablated",
                  "target loss (0.15 nats)", "else_elif: "):  # fmt: skip
        assert words in note, words
    html = index_page(title="r", run_info=None, metrics=None, circuits=[(circuit, "c.html")])
    assert esc(note) in html
    assert html.index('data-name="circuit-sizes"') < html.index("Each line: one circuit")


def test_a_log_axis_of_under_two_decades_labels_more_than_one_tick(circuit):
    """The demo's size curve spans 0.02..0.4 nats: the y axis had one label, 0.1."""
    fig = line_chart(title="t", xlabel="x", ylabel="y", ylog=True,
                     series=[Series(name="c", points=[(1, 0.02), (2, 0.4)])])  # fmt: skip
    ax = _drawn(fig).axes[0]
    lo, hi = ax.get_ylim()
    labels = [t.get_text() for t in ax.yaxis.get_ticklabels() if t.get_text()]
    shown = [t.get_position()[1] for t in ax.yaxis.get_ticklabels() if t.get_text()]
    assert len([y for y in shown if lo <= y <= hi]) >= 3, labels
    fig = line_chart(title="t", xlabel="x", ylabel="y", ylog=True,
                     series=[Series(name="c", points=[(1, 0.005), (2, 3.0)])])  # fmt: skip
    ax = _drawn(fig).axes[0]
    lo, hi = ax.get_ylim()
    wide = [t.get_position()[1] for t in ax.yaxis.get_ticklabels() if t.get_text()]
    assert {0.01, 0.1, 1.0} <= {round(y, 6) for y in wide if lo <= y <= hi}  # powers of ten


def test_the_circuit_table_says_its_losses_are_on_the_circuit_files_own_examples(circuit):
    """The table's 'full model (val)' 0.02028 sat next to the selection table's 0.02049 for the
    same task with no n: a note now names the examples of each column."""
    note = circuit_splits_note([circuit])
    assert "the pruner's own validation examples (n = 128)" in note
    assert "test examples (n not recorded)" in note
    html = index_page(title="r", run_info=None, metrics=None, circuits=[(circuit, "c.html")])
    assert esc(note) in html


# -- 2. the L0 chart reaches its final value ----------------------------------------------------


def test_nice_log_limits_reach_a_round_tick_past_each_end():
    assert nice_log_limits(float(FINAL_L0), 898_200.0) == (200_000, 1_000_000)
    assert nice_log_limits(150_000.0, 12_000_000.0) == (100_000, 20_000_000)
    assert nice_log_limits(0.02, 0.33) == (0.02, 0.5)
    assert nice_log_limits(10.0, 10.0) == (10.0, 20.0)  # never an empty axis
    with pytest.raises(ValueError, match="0 < lo <= hi"):
        nice_log_limits(0.0, 10.0)


def test_the_l0_axis_has_a_labelled_tick_at_or_below_the_final_l0():
    """The demo's L0 falls from 898,200 to 229,952; the axis stopped labelling at 400,000, so
    the final value was below the last label. Now a tick at or below it is labelled and the
    final value is written on the chart."""
    steps = range(20, 760, 20)
    records = [{"step": s, "l0_total": max(FINAL_L0, 898_200 - 1800 * s)} for s in steps]
    ax = _drawn(l0_chart(records)).axes[0]
    lo, hi = ax.get_ylim()
    labelled = [t.get_position()[1] for t in ax.yaxis.get_ticklabels() if t.get_text()]
    shown = [y for y in labelled if lo <= y <= hi]
    assert min(shown) <= FINAL_L0 and max(shown) >= 898_200, shown
    assert f"final {FINAL_L0:,}" in {t.get_text() for t in ax.texts}
    assert l0_chart([{"step": 1, "train_loss": 3.0}]) is None


# -- 3. the task chart: the target line, and labels inside the figure ---------------------------


def test_the_task_chart_draws_the_recorded_target_and_keeps_every_label_inside():
    table = TaskTable(rows=TEST_ROWS, split="test", n=200, target_loss=0.15)
    fig = _drawn(task_chart(table, (0.15, "tasks.json")))
    ax = fig.axes[0]
    vertical = {ln.get_label(): ln.get_xdata()[0] for ln in ax.get_lines()}  # type: ignore[index]
    assert vertical["target 0.15 (tasks.json)"] == 0.15
    assert "3.02" in {t.get_text() for t in _texts(fig)}  # the longest bar's label
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    box = fig.bbox
    for t in _texts(fig):
        e = t.get_window_extent(renderer)
        inside = e.x0 >= box.x0 - 1 and e.x1 <= box.x1 + 1 and e.y0 >= box.y0 - 1
        assert inside and e.y1 <= box.y1 + 1, f"{t.get_text()!r} is clipped: {e} outside {box}"
    bar_labels = [t for t in ax.texts if t.get_text() == "3.02"]
    assert bar_labels[0].get_window_extent(renderer).x1 <= ax.bbox.x1  # inside the axes too


def test_the_solved_target_is_the_recorded_one(circuit):
    """The target line is the tasks.json table's target when it records one, else the one
    target the circuits were pruned to, else the paper's 0.15."""
    recorded = TaskTable(rows=TEST_ROWS, target_loss=0.2)
    assert solved_target([recorded], [circuit]) == (0.2, "tasks.json")
    assert solved_target([TaskTable(rows=TEST_ROWS)], [circuit]) == (0.15, "the circuit files")
    other = dataclasses.replace(circuit, target_loss=0.3)
    assert solved_target([], [circuit, other]) == (0.15, "the paper's")


# -- 4. both task tables, each with its split and n, and the one that chose ---------------------


def test_a_demo_tasks_json_gives_the_test_and_the_validation_table(tmp_path, circuit):
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(selection_record(TEST_ROWS, VAL_ROWS, 200)))
    test, val = task_tables_of(json.loads(path.read_text()))
    assert (test.split, test.n, test.chose_tasks) == ("test", 200, False)
    assert (val.split, val.n, val.chose_tasks) == ("val", 100, True)
    assert {k: {f: r[f] for f in VAL_ROWS[k]} for k, r in val.rows.items()} == VAL_ROWS
    html = index_page(title="r", run_info=None, metrics=None, task_tables=(test, val),
                      circuits=[(circuit, "c.html")])  # fmt: skip
    assert "<h3>Task loss of the full model (test split, n = 200 per task)</h3>" in html
    chose = "<h3>Task loss of the full model (validation split, n = 100 per task): chose the"
    assert chose + " pruned tasks</h3>" in html
    assert "Pruned from it: else_elif (target 0.15)." in html
    assert html.index("(test split, n = 200") < html.index("(validation split, n = 100")
    val_part = html[html.index("(validation split, n = 100") :]
    assert "<td>var_if</td><td>0.141</td>" in val_part  # the validation row, not the test one
    assert "<td>target 0.15</td>" in val_part


def test_the_tables_recorded_split_n_use_and_target_are_read():
    """tasks.json as ``sparse_lens.tasks.selection`` writes it: the choosing table named
    ``selection``, each table with its use and target; a flat table is one test table without
    a use; a non-object is refused."""
    test, val = task_tables_of(selection_record(TEST_ROWS, VAL_ROWS, 50, target=0.2))
    assert (test.split, test.n, test.target_loss, test.chose_tasks) == ("test", 50, 0.2, False)
    assert (val.split, val.n, val.target_loss, val.chose_tasks) == ("val", 25, 0.2, True)
    assert test.use == TABLE_USES["test"] and val.use == TABLE_USES[SELECTION]
    assert solved_target([test, val], []) == (0.2, "tasks.json")
    html = index_page(title="r", run_info=None, metrics=None, task_tables=(test, val), circuits=[])
    assert esc(f"Used for: {TABLE_USES[SELECTION]}. Pruned from it: no circuit on") in html
    assert "solved (loss &lt;= 0.2)" in html
    assert task_tables_of(TEST_ROWS) == (TaskTable(rows=TEST_ROWS),)
    with pytest.raises(ValueError, match="not a JSON list"):
        task_tables_of([1, 2])


# -- 5. the loss curves say what each is measured on --------------------------------------------


def test_the_loss_curves_are_named_by_their_data():
    streams = loss_streams(DEMO_RUN)
    assert streams.train == "train: batches, 50% idioms"
    assert streams.val == "val: held-out stdlib, no idioms"
    for words in ("32 windows of 64 tokens", "50% idiom windows", "64 fixed windows",
                  "held-out stdlib documents", "not a generalisation gap"):  # fmt: skip
        assert words in streams.caption, words
    plain = loss_streams({**DEMO_RUN, "data": {"idiom_frac": 0.0}})
    assert "idiom" not in plain.train + plain.val + plain.caption
    records = [
        {"step": 1, "train_loss": 3.0, "l0_total": 10},
        {"step": 2, "train_loss": 2.7, "val_loss": 4.0, "l0_total": 10},
    ]
    html = training_plots(records, run_info=DEMO_RUN)
    assert ">train: batches, 50% idioms<" in html and ">val: held-out stdlib, no idioms<" in html
    assert "not a generalisation gap" in html
