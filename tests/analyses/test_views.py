"""Snapshot tests of the page renderers: hand-made page data in, HTML out, no model.

Each test builds a small ``CircuitPageData`` or ``BridgePageData`` by hand, renders it, and
compares the page with a checked-in snapshot under ``tests/analyses/snapshots/``. Two parts are
replaced by placeholders before comparing, since they are not this package's markup: the
inlined circuitsvis bundle (1.3 MB) and the matplotlib figures (their SVG changes with the
matplotlib version; ``test_report.py`` tests the figures). After an intended change to a page,
regenerate the snapshots and review their diff:

    SPARSE_LENS_UPDATE_SNAPSHOTS=1 python -m pytest tests/analyses/test_views.py
"""

import ast
import dataclasses
import os
import re
from pathlib import Path

import pytest

from analyses.bridge_view import render_bridge_page
from analyses.circuit_view import render_circuit_page
from analyses.html import CircuitsvisHTML, circuitsvis_bundle
from analyses.page_data import (
    BridgePageData,
    CircuitFacts,
    CircuitPageData,
    ExampleView,
    HeadPairView,
    HeadsData,
    HeadSink,
    ModelFacts,
    NodePanelData,
    PatchingGrids,
    SinkGrids,
    SteeringView,
)
from sparse_lens.circuits.graph_view.card_html import CardView, StageView
from sparse_lens.circuits.graph_view.graph import ViewGraph, ViewNode

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOTS = Path(__file__).parent / "snapshots"
UPDATE = os.environ.get("SPARSE_LENS_UPDATE_SNAPSHOTS") == "1"


def _view(name: str) -> CircuitsvisHTML:
    return CircuitsvisHTML(f'<div id="circuits-vis-{name}" class="cv-panel"></div>')


def _normalised(html: str) -> str:
    """``html`` with the circuitsvis bundle and each matplotlib figure as placeholders."""
    html = re.sub(r"<head>(.*?)<script>.*?</script></head>", r"<head>\1<script>BUNDLE</script></head>", html, flags=re.S)  # fmt: skip
    return re.sub(
        r'<svg class="figure" data-name="([^"]+)".*?</svg>',
        r'<svg class="figure" data-name="\1">FIGURE</svg>',
        html,
        flags=re.S,
    )


def _check_snapshot(name: str, html: str) -> None:
    path = SNAPSHOTS / name
    got = _normalised(html)
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(got, encoding="utf-8")
    assert path.is_file(), f"no snapshot {path}; run with SPARSE_LENS_UPDATE_SNAPSHOTS=1"
    assert got == path.read_text(encoding="utf-8"), (
        f"{name} differs from its snapshot; if the change is intended, regenerate it (see the "
        "module docstring) and review the diff"
    )


def _graph() -> ViewGraph:
    def node(label, kind, knockout, role, head=None):  # noqa: ANN001, ANN202
        return ViewNode(label=label, kind=kind, layer=0, channel=1, head=head,
                        role=role, knockout=knockout)  # fmt: skip

    return ViewGraph(
        task="quotes",
        nodes=(
            node("0.attn.attn_in.1", "attn_in", 0.001, "no measurable role"),
            node("0.attn.v.h0.c1", "v", 0.2, "mover", head=0),
            node("0.attn.attn_out.1", "attn_out", 0.05, "output"),
        ),
        edges=(
            ("0.attn.attn_in.1", "0.attn.v.h0.c1", 0.5),
            ("0.attn.v.h0.c1", "0.attn.attn_out.1", -0.25),
        ),
        circuit_loss=0.61,
        empty_loss=0.9,
    )


def _card() -> CardView:
    return CardView(
        summary="quotes: `\"` vs `'`. Head 0.0 moves information from the opening quote.",
        computed_on="8 examples of quotes (test), mean ablation",
        stages=(
            StageView(
                name="Layer 0 attention",
                roles=(("mover", 1), ("output", 1), ("no measurable role", 1)),
                captions=("Layer 0 head 0 value channel 1 (mover): its head attends <there>",),
                quiet=("0.attn.attn_in.1",),
            ),
        ),
        heads=("Head 0.0 (mover): from the answer position, 90% on the opening quote.",),
    )


def _run(loss: float) -> dict[str, float]:
    """A run measured against the full model (``checks.compare``)."""
    return {"loss": loss, "delta_loss": loss - 0.5, "kl": 0.25, "logit_diff_ratio": 0.75,
            "norm_scale_ratio": 1.0}  # fmt: skip


def _circuit_data(failed: tuple[str, ...] = ("necessity",)) -> CircuitPageData:
    verdicts = [
        {"check": "sufficiency", "status": "pass", "value": 0.61, "threshold": 0.7, "reason": "ok"},
        {"check": "frozen_norms", "status": "not run", "value": 0.61, "threshold": "-",
         "reason": "pruned with frozen norms"},
        {"check": "norm_scale", "status": "not run", "value": 1.0, "threshold": "-",
         "reason": "pruned with frozen norms"},
        {"check": "necessity", "status": "fail", "value": 0.65, "threshold": 0.69, "reason": "low"},
        {"check": "node_agreement", "status": "pass", "value": 0.0, "threshold": "<= 0.2",
         "reason": "kept nodes"},
        {"check": "specificity", "status": "pass", "value": 0.01, "threshold": "<= 0.05",
         "reason": "loss increase of task 'other' when only the circuit is ablated"},
    ]  # fmt: skip
    agreement = {"mean": 0.875, "min": 0.5, "fraction_below_0.5": 0.0, "fvu_median": 0.125,
                 "fvu_max": 0.25, "fraction_fvu_above_0.5": 0.0, "per_node": {"x[1]": 0.875}}  # fmt: skip
    faithfulness = {
        "computed_on": {"split": "test", "n": 8, "ablation": "mean", "seed": 0},
        "verdicts": verdicts,
        "failed": list(failed),
        "full_model_loss": 0.5,
        "sufficiency": _run(0.61),
        "frozen_norms": _run(0.61),
        "node_agreement": agreement,
        "specificity": {
            "task": "other",
            "full_loss": 0.3,
            "ablated_loss": 0.31,
            "increase": 0.01,
            "split": "test",
            "n": 6,
        },  # fmt: skip
    }
    facts = CircuitFacts(
        task="quotes",
        description="Close a string with its ``quote``.",
        n_nodes=3,
        n_total=100,
        n_edges=2,
        target_loss=0.7,
        loss=0.61,
        test_loss=None,
        full_loss=0.5,
        ablation="mean",
        freeze_norms=True,
        model_fingerprint="abc123",
        prune_seconds=12.345,
        chosen_hparams={"lr": 0.01},
        curve=((0, 0.9), (3, 0.61), (100, 0.5)),
        search={"method": "optuna", "trials": 4, "complete": 3, "pruned": 1, "best_trial": 2},
        stages=({"stage": "bisection", "nodes": 4, "edges": 3, "val_loss": 0.6},),
        faithfulness=faithfulness,
        failed_checks=failed,
    )
    info = {"0.attn.v.h0.c1": {"effect": 0.2, "ablation value": 0.1, "attribution estimate": 0.15}}
    panel = NodePanelData(
        label="0.attn.v.h0.c1",
        hook="blocks.0.attn.hook_v",
        effect=0.2,
        attribution=0.15,
        ablation_value=0.1,
        n_in=1,
        n_out=1,
        contexts=_view("contexts"),
        on_task=(ExampleView(answer='"', view=_view("task")),),
    )
    heads = HeadsData(
        sinks=(HeadSink(head="L0H0", sink_mass_last=0.25, sink_mass_mean=0.5),),
        n_heads=2,
        n_shown=1,
        examples=(ExampleView(answer="'", view=_view("heads")),),
    )
    return CircuitPageData(
        facts=facts,
        graph=_graph(),
        card=_card(),
        card_note="",
        node_info=info,
        circuit_loss=0.61,
        n_test=8,
        n_exact=1,
        knockout_effects={"0.attn.v.h0.c1": 0.2},
        attribution_effects={
            "0.attn.v.h0.c1": 0.15,
            "0.attn.attn_in.1": 0.01,
            "0.attn.attn_out.1": -0.02,
        },
        heads=heads,
        n_windows=4,
        panels=(panel,),
    )


def test_circuit_page_snapshot():
    data = _circuit_data()
    html = render_circuit_page(data, dot_name="quotes.dot", back_link="../index.html")
    _check_snapshot("circuit_page.html", html)
    assert 'class="warn"' in html and "fails 1 faithfulness check: necessity." in html
    assert '<span class="bad">FAIL</span>' in html and '<span class="good">PASS</span>' in html
    assert html.count(circuitsvis_bundle()[:200]) == 1  # three views, one bundle
    assert data.n_panels == 3 and html.count('class="cv-panel"') == 3
    assert "Close a string with its quote." in html  # RST literals shown plain
    assert 'data-name="curve-quotes"' in html  # the bisection curve is drawn
    # the card on top, the core view (2 of 3 nodes over 5% of the 0.29 gap), the full graph
    assert html.index('id="card"') < html.index('id="graph"') < html.index('id="curve"')
    assert "<code>&quot;</code> vs <code>&#x27;</code>" in html
    assert "<b>Layer 0 head 0 value channel 1 (mover)</b>: its head attends &lt;there&gt;" in html
    assert html.count('<details class="stage" open>') == 1
    assert 'data-view="core"' in html and 'data-view="full"' in html
    core = html[html.index('data-view="core"') : html.index('data-view="full"')]
    assert "L0 H0 v 1 · mover" in core and ">1 more node<" in core
    assert "at least 5% of the gap" in html
    numbers = data.numbers()
    assert numbers["core"] == ["0.attn.v.h0.c1", "0.attn.attn_out.1"]
    assert numbers["n_panels"] == 3 and numbers["heads"][0]["head"] == "L0H0"


def _faithfulness(html: str) -> str:
    return html[html.index('id="faithfulness"') : html.index('id="heads"')]


def test_faithfulness_measurements_are_in_words():
    """Measurement and search labels showed raw keys (``fraction_below_0.5``, ``best_trial``);
    each is words, from one mapping."""
    html = render_circuit_page(_circuit_data())
    measured = re.findall(r"<tr><td>([^<]*)</td>", html[html.index("<th>measurement</th>") :])
    searched = re.findall(r"<tr><td>([^<]*)</td>", html[html.index("<th>search</th>") :])
    assert measured and not [name for name in measured if "_" in name]
    assert searched[:5] and not [name for name in searched[:5] if "_" in name]
    assert "node agreement: fraction of nodes with correlation below 0.5" in measured
    assert "circuit alone: logit difference, circuit / full model" in measured
    assert "number of the best trial" in searched


def test_a_check_not_run_shows_no_measurements_but_one_line():
    """The frozen-norm check is "not run" on a frozen-norm circuit: its measurements (and the
    norm-scale check's) are one line each saying so, not numbers that look checked."""
    section = _faithfulness(render_circuit_page(_circuit_data()))
    assert "circuit with norm scales frozen at the full model&#x27;s:" not in section
    assert "not run (see the frozen_norms verdict above)" in section
    assert "not run (see the norm_scale verdict above)" in section
    assert "circuit alone: final-norm scale" not in section
    assert "circuit alone: task loss" in section  # the sufficiency check ran: its numbers stay
    # the verdict rows too: a check that did not run shows no value (it showed 0.61 and 1)
    for check in ("frozen_norms", "norm_scale"):
        row = section[section.index(f"<tr><td>{check}</td>") :].split("</tr>")[0]
        assert "<td>0.61</td>" not in row and "<td>1</td>" not in row and "<td>-</td>" in row


def test_the_specificity_row_names_its_split_and_n():
    """Specificity runs on another task's pairs: its row says their split and n, as the rows of
    the circuit's own task do (an older file, without them, says they are not recorded)."""
    data = _circuit_data()
    section = _faithfulness(render_circuit_page(data))
    assert "when only the circuit is ablated (test split, n = 6)" in section
    faith = dict(data.facts.faithfulness or {})
    faith["specificity"] = {
        k: v for k, v in faith["specificity"].items() if k not in ("split", "n")
    }
    older = dataclasses.replace(data, facts=dataclasses.replace(data.facts, faithfulness=faith))
    assert "its split and n are not recorded" in _faithfulness(render_circuit_page(older))


def test_circuit_page_without_failures_reports_or_heads():
    data = _circuit_data(failed=())
    html = _normalised(render_circuit_page(data))
    assert 'class="warn"' not in html and "<nav>" not in html and ".dot" not in html
    bare = dataclasses.replace(
        data,
        card=None,
        card_note="explain needs a mean- or zero-ablated circuit, not 'resample'",
        graph=dataclasses.replace(data.graph, circuit_loss=None, empty_loss=None),
        facts=dataclasses.replace(data.facts, faithfulness=None, search=None, stages=()),
        heads=HeadsData(),
        panels=(),
    )
    html = render_circuit_page(bare)
    assert "No faithfulness report in this circuit file" in html
    assert "No search record in this circuit file" in html
    assert "no attention head takes part" in html
    assert "CircuitsVis" not in html  # no view, no bundle
    assert "No circuit card: explain needs a mean- or zero-ablated circuit" in html
    assert 'data-view="core"' not in html and '<details class="full-graph" open>' in html


def _bridge_data() -> BridgePageData:
    grid = ((0.0, 0.5), (1.0, -0.25))
    sinks = SinkGrids(
        corpus_sink_mass=grid, task_sink_mass=grid, removal_effect=grid, threshold_score=grid
    )
    patching = PatchingGrids(resid_pre=grid, head_out=grid, tokens=("x", "="))
    shape = {"n_layers": 2, "d_model": 16, "n_heads": 2}
    return BridgePageData(
        task="quotes",
        sparse=ModelFacts(class_name="HookedSparseTransformer", **shape, ce=3.5),
        dense=ModelFacts(class_name="TransformerBridge", **shape, ce=3.25),
        bridges={
            "per_site": {
                "blocks.0.hook_resid_pre": {
                    "nmse_d2s": 0.5,
                    "nmse_s2d": 0.25,
                    "kl_d2s": 0.125,
                    "kl_s2d": 1.0,
                }
            }
        },  # fmt: skip
        steering=SteeringView(
            node="0.attn_in.1",
            site="blocks.0.hook_resid_pre",
            node_score=1.5,
            target="'",
            presented='"',
            strengths=(0.0, 1.0),
            p_target=(0.1, 0.6),
            p_target_random=(0.1, 0.12),
            p_presented=(0.9, 0.4),
            n_pairs=4,
        ),
        patching={"sparse": patching, "dense": patching},
        sinks={"sparse": sinks, "dense": sinks},
        heads=(HeadPairView(sparse=(0, 1), dense=(1, 0), similarity=0.75, view=_view("pair")),),
    )


def test_bridge_page_snapshot():
    html = render_bridge_page(_bridge_data())
    _check_snapshot("bridge_page.html", html)
    figures = re.findall(r'<svg class="figure" data-name="([^"]+)"', html)
    assert figures[0] == "steering" and len(figures) == 1 + 2 * 2 + 4 * 2
    assert "sparse L0H1 ↔ dense L1H0 (similarity 0.75)" in html
    assert "<td>TransformerBridge</td>" in html and "<td>blocks.0.hook_resid_pre</td>" in html
    assert html.count(circuitsvis_bundle()[:200]) == 1


@pytest.mark.parametrize("module", ["circuit_view", "bridge_view", "page_data"])
def test_views_import_no_model_no_torch_no_analysis(module):
    """A view module imports neither torch, nor the model, nor the analyses that run it."""
    tree = ast.parse((ROOT / "analyses" / f"{module}.py").read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    allowed = {"analyses.html", "analyses.plots", "analyses.page_data"}
    allowed |= {
        f"sparse_lens.circuits.graph_view.{m}" for m in ("card_html", "graph", "sections", "svg")
    }
    assert {m for m in names if m.split(".")[0] in ("analyses", "sparse_lens", "hooks")} <= allowed
    assert not {m for m in names if m.split(".")[0] in ("torch", "transformer_lens", "circuitsvis")}


def test_every_loss_in_the_circuit_summary_names_its_split_and_n():
    """A reader saw four full-model losses (0.028, 0.032, 0.029, 0.0294) and could not tell
    them apart: each now says its split and number of pairs."""
    import dataclasses

    from analyses.circuit_view import _summary_rows

    facts = dataclasses.replace(
        _circuit_data().facts, n_val=128, n_test=128, faithfulness={"full_model_loss": 0.0294,
        "computed_on": {"split": "test", "n": 128}}, failed_checks=()
    )  # fmt: skip
    labels = [row[0] for row in _summary_rows(facts)]
    assert "circuit loss (the pruner's validation examples: val split, n = 128)" in labels
    assert "full-model loss (the pruner's validation examples: val split, n = 128)" in labels
    assert "circuit loss (test split, n = 128)" in labels
    assert "full-model loss (test split, n = 128, as the faithfulness checks)" in labels
