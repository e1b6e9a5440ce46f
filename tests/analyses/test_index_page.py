"""The report's index page: what its charts draw (target lines, axis limits, labels that fit),
the task tables it shows with their split and n, and what its loss curves are measured on."""

import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from analyses.plots import nice_log_limits
from analyses.report import (
    l0_chart,
    loss_streams,
    training_plots,
)
from sparse_lens import HookedSparseTransformer
from sparse_lens.circuits.ablation import ablation_means
from sparse_lens.circuits.circuit import Circuit
from sparse_lens.circuits.nodes import node_locations
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
