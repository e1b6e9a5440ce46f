"""Circuit reports: graph, panels, plots, offline-ness, and a headless-Chromium rendering test."""

import copy
import dataclasses
import math
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import circuitsvis.tokens
import pytest
import torch

from analyses.circuit_graph import circuit_dot, circuit_view_graph
from analyses.circuit_view import failed_banner, render_circuit_page
from analyses.frontier import frontier_page
from analyses.html import circuitsvis_bundle, esc
from analyses.node_panels import attribution_effects, circuit_patterns
from analyses.plots import Series, bar_chart, embed, heatmap, line_chart
from analyses.report import (
    ReportConfig,
    circuit_facts,
    circuit_page_data,
    index_page,
    training_plots,
)
from hooks import node_mask
from sparse_lens import HookedSparseTransformer
from sparse_lens.circuits.ablation import ablation_means
from sparse_lens.circuits.circuit import Circuit
from sparse_lens.circuits.explain import circuit_knockouts
from sparse_lens.circuits.faithfulness import circuit_checks, model_verdicts
from sparse_lens.circuits.graph_view.graph import residual_paths
from sparse_lens.circuits.nodes import node_locations
from sparse_lens.sweep.grid import SweepConfig
from sparse_lens.sweep.table import match_dense
from sparse_lens.tasks.task import binary_logits, binary_task_loss, get_task, task_batch
from tests.helpers import build_cfg, tiny_tokenizer

TASK = "single_double_quote"


@pytest.fixture(scope="module")
def setup():
    tok = tiny_tokenizer()
    model = HookedSparseTransformer(build_cfg(d_vocab=tok.vocab_size, n_ctx=64), tokenizer=tok)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("sinks") or name.rsplit(".", 1)[-1].startswith("b_"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    model.eval()
    windows = torch.randint(0, tok.vocab_size, (8, 64), generator=gen)
    nodes = {loc.hook: list(range(0, loc.size, 3)) for loc in node_locations(model.cfg)}
    total = sum(loc.size for loc in node_locations(model.cfg))
    circuit = Circuit.from_nodes(
        model,
        nodes,
        ablation_means(model, windows),
        task=TASK,
        target_loss=0.7,
        loss=0.69,
        full_loss=0.68,
        curve=[(0, 0.9), (20, 0.75), (40, 0.69), (total, 0.68)],
    )
    test = task_batch(get_task(TASK), tok, 64, "test", 8)
    report = circuit_checks(model, circuit, test, seed=0)
    report["verdicts"] = model_verdicts(report, circuit.target_loss)
    report["failed"] = [v["check"] for v in report["verdicts"] if v["status"] == "fail"]
    report["computed_on"] = {"split": "test", "n": len(test), "ablation": "mean", "seed": 0}
    circuit.extra["faithfulness"] = report
    rcfg = ReportConfig(n_examples=8, n_windows=8, max_node_panels=3, n_exact_knockouts=6)
    page = circuit_page_data(model, circuit, get_task(TASK), windows, rcfg)
    return model, circuit, render_circuit_page(page, dot_name="c.dot"), page.numbers()


def _view(html: str, view: str) -> str:
    start = html.index(f'<svg class="circuit-graph" data-view="{view}"')
    return html[start : html.index("</svg>", start)]


def test_graph_has_every_node_and_edge(setup):
    _, circuit, html, _ = setup
    full = _view(html, "full")
    labels = re.findall(r'<g class="node" data-label="([^"]+)"', full)
    assert sorted(labels) == sorted(circuit.node_labels(setup[0].cfg))
    weights = re.findall(r'<path class="edge" data-src', full)
    assert len(weights) == circuit.n_edges > 0


def test_card_and_core_statement(setup):
    """The card sits above the graph; this untrained model's circuit is no better than the
    empty circuit, so the page says no gap defines a core and opens the full graph
    (the core view itself: test_views.py, tests/circuits/test_graph_view.py)."""
    _, _, html, _ = setup
    assert html.index('id="card"') < html.index('id="graph"')
    assert '<section class="circuit-card">' in html and '<details class="stage">' in html
    assert '<details class="stage" open>' not in html  # no stage has a node with a role
    assert "no knockout gap defines a core" in html
    assert 'data-view="core"' not in html and '<details class="full-graph" open>' in html


def test_view_graph_columns_heads_and_residual_paths(setup):
    model, circuit, _, _ = setup
    graph = circuit_view_graph(circuit, model.cfg)
    assert sorted(n.label for n in graph.nodes) == sorted(circuit.node_labels(model.cfg))
    columns = [n.column for n in graph.nodes]
    assert columns == sorted(columns) and columns[-1][1] == 6  # forward order, final last
    qkv = [n for n in graph.nodes if n.kind in ("q", "k", "v")]
    assert all(n.head == n.channel // model.cfg.d_head for n in qkv)
    assert all(n.name.startswith(f"L{n.layer} H{n.head} {n.kind} ") for n in qkv)
    paths = residual_paths(graph.nodes)
    assert paths and all(w.channel == r.channel and r.column > w.column for w, r in paths)


def test_dot_export(setup):
    model, circuit, _, _ = setup
    dot = circuit_dot(circuit, model.cfg)
    assert dot.startswith("digraph single_double_quote {") and dot.rstrip().endswith("}")
    solid = [line for line in dot.splitlines() if "->" in line and "dashed" not in line]
    assert len(solid) == circuit.n_edges
    for label in circuit.node_labels(model.cfg):
        assert f'"{label}" [label=' in dot


def test_one_bundle_and_every_panel(setup):
    _, _, html, data = setup
    assert html.count(circuitsvis_bundle()[:200]) == 1
    renders = re.findall(
        r"CircuitsVis\.render\(\s*\"(circuits-vis-[^\"]+)\",\s*CircuitsVis\.(\w+)", html
    )
    assert len(renders) == data["n_panels"] > 0
    kinds = {k for _, k in renders}
    assert kinds == {"AttentionHeads", "TopkSamples", "ColoredTokens"}
    for panel_id, _ in renders:
        assert f'<div id="{panel_id}" class="cv-panel"' in html
    assert html.count('class="node-panel"') == 3


def test_page_sections_and_numbers(setup):
    _, circuit, html, data = setup
    for anchor in ("graph", "curve", "faithfulness", "heads", "nodes"):
        assert f'id="{anchor}"' in html
    assert 'href="c.dot"' in html
    for check in ("sufficiency", "frozen_norms", "necessity", "partial_complement_random"):
        assert f"<td>{check}</td>" in html  # a verdict row per check
    assert "Computed on the test split, n = " in html
    failed = circuit.extra["faithfulness"]["failed"]
    assert ("This circuit fails" in html) == bool(failed)
    assert set(data["attribution_effects"]) == set(circuit.node_labels(setup[0].cfg))
    # the card's exact knockouts of every node (same examples), not a top-6 recomputation
    assert set(data["knockout_effects"]) == set(circuit.node_labels(setup[0].cfg))
    assert all(0 <= h["sink_mass_last"] <= 1 for h in data["heads"])
    description = get_task(TASK).description
    assert "``" in description and esc(description) not in html  # RST literals shown plain
    assert esc(re.sub(r"``(.+?)``", r"\1", description)) in html


def test_a_page_without_a_card_computes_its_own_top_knockouts(setup, monkeypatch):
    """When ``explain`` refuses a circuit (e.g. one answer class in the examples) the page has
    no card, says why, and computes exact knockouts for the ``n_exact_knockouts`` nodes of
    largest attribution estimate."""
    import analyses.report

    def refuse(*args, **kwargs):
        raise ValueError("the batch gives one answer class")

    monkeypatch.setattr(analyses.report, "explain", refuse)
    model, circuit, _, _ = setup
    windows = torch.randint(0, model.cfg.d_vocab, (8, 64), generator=torch.Generator())
    rcfg = ReportConfig(n_examples=8, n_windows=8, max_node_panels=1, n_exact_knockouts=6)
    page = circuit_page_data(model, circuit, get_task(TASK), windows, rcfg)
    assert page.card is None and "one answer class" in page.card_note
    assert len(page.knockout_effects) == 6 and page.n_exact == 6


class _ResourceFinder(HTMLParser):
    """Every network resource an HTML document would load."""

    ATTRS = {"src", "href", "data", "poster", "srcset", "action", "background", "formaction"}

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self._in_script = tag == "script"
        for key, value in attrs:
            if key in self.ATTRS and value and re.match(r"\s*(https?:)?//", value):
                self.found.append(f"<{tag} {key}={value}>")
            if key == "style" and value and re.search(r"url\(\s*['\"]?(https?:)?//", value):
                self.found.append(f"<{tag} style={value}>")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        pattern = (
            r"(import\s*(\(|[^;]*?from)\s*['\"](https?:)?//|fetch\(\s*['\"]https?:"
            r"|url\(\s*['\"]?https?:|@import\s+['\"]?https?:)"
        )
        for m in re.finditer(pattern, data):
            self.found.append(data[max(0, m.start() - 40) : m.end() + 60])


def network_loads(html: str) -> list[str]:
    finder = _ResourceFinder()
    finder.feed(html)
    return finder.found


def test_no_network_resource_loads(setup):
    _, _, html, _ = setup
    assert network_loads(html) == []


def test_resource_check_catches_cdn_pages():
    cdn = circuitsvis.tokens.colored_tokens(tokens=["a"], values=[1.0]).cdn_src
    assert network_loads(cdn)  # the CDN version imports from unpkg.com
    assert network_loads('<link rel="stylesheet" href="https://x.org/a.css">')
    assert network_loads('<img src="//x.org/a.png">')


def test_attribution_is_the_derivative_of_the_masked_loss(setup):
    model, circuit, _, _ = setup
    batch = task_batch(get_task(TASK), model.tokenizer, 64, "test", 8)
    attr = attribution_effects(model, circuit, batch)
    ref = max(circuit.node_refs(model.cfg), key=lambda r: abs(attr[r.label]))
    base, exact = circuit_knockouts(model, circuit, batch, [ref.label])
    assert set(exact) == {ref.label}

    @torch.no_grad()
    def loss_at(m: float) -> float:  # the node's mask set to m, the circuit's otherwise
        masks = circuit.masks()
        masks[ref.hook][ref.channel] = m
        hooks = [(h, node_mask(v, torch.tensor(circuit.baselines[h]))) for h, v in masks.items()]
        logits = model.run_with_hooks(batch.tokens, fwd_hooks=hooks)
        return float(binary_task_loss(binary_logits(logits, batch)).mean())

    assert loss_at(1.0) == pytest.approx(base, abs=1e-6)
    assert loss_at(0.0) - base == pytest.approx(exact[ref.label], abs=1e-6)
    eps = 1e-3
    derivative = (loss_at(1 + eps) - loss_at(1 - eps)) / (2 * eps)  # dL/dm = -attribution
    assert derivative == pytest.approx(-attr[ref.label], rel=0.05, abs=1e-4)


def test_circuit_patterns_are_the_circuit_runs_attention(setup):
    model, circuit, _, data = setup
    batch = task_batch(get_task(TASK), model.tokenizer, 64, "test", 8)
    patterns, sinks = circuit_patterns(model, circuit, batch.tokens)
    # heads: every (layer, head) with a kept q, k or v channel, read off the node lists
    d_head = model.cfg.d_head
    heads = {
        (layer, c // d_head)
        for layer in range(model.cfg.n_layers)
        for kind in "qkv"
        for c in circuit.nodes.get(f"blocks.{layer}.attn.hook_{kind}", [])
    }
    assert set(patterns) == set(sinks) == heads and heads
    # reference: the model under plain node-mask hooks, its attention cached
    masks = circuit.masks()
    hooks = [(h, node_mask(m, torch.tensor(circuit.baselines[h]))) for h, m in masks.items()]
    seen = {}
    names = [f"blocks.{i}.attn.hook_{n}" for i in range(2) for n in ("pattern", "sink_prob")]
    hooks += [(n, lambda a, hook: seen.__setitem__(hook.name, a.clone())) for n in names]
    with torch.no_grad():
        model.run_with_hooks(batch.tokens, fwd_hooks=hooks)
        _, plain = model.run_with_cache(batch.tokens)
    for layer, head in heads:
        ref_pattern = seen[f"blocks.{layer}.attn.hook_pattern"][:, head]
        torch.testing.assert_close(patterns[layer, head], ref_pattern)
        torch.testing.assert_close(
            sinks[layer, head], seen[f"blocks.{layer}.attn.hook_sink_prob"][:, head]
        )
        torch.testing.assert_close(
            ref_pattern.sum(-1) + sinks[layer, head], torch.ones_like(sinks[layer, head])
        )
    # the circuit's attention is not the full model's (the masks reach the patterns)
    assert any(
        (patterns[i, h] - plain[f"blocks.{i}.attn.hook_pattern"][:, h]).abs().max() > 1e-3
        for i, h in heads
    )


def test_plots(tmp_path):
    fig = line_chart(
        [Series(name="a", points=[(1, 1.0), (10, 0.1), (100, 0.01)])],
        title="t",
        xlabel="x",
        ylabel="y",
        xlog=True,
        ylog=True,
        hlines=[(0.05, "target")],
    )
    svg = embed(fig, "one", png_dir=tmp_path)
    assert svg.startswith('<svg class="figure" data-name="one"') and svg.rstrip().endswith("</svg>")
    assert ">target<" in svg and "<?xml" not in svg  # text stays text; no prolog inline
    assert (tmp_path / "one.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # clip-path ids are salted by the figure's name: two figures on a page never collide
    other = embed(line_chart([Series(name="a", points=[(1, 1.0)])], title="t", xlabel="x",
                             ylabel="y"), "two")  # fmt: skip
    ids = lambda text: set(re.findall(r'<clipPath id="([^"]+)"', text))  # noqa: E731
    assert ids(svg) and ids(other) and not ids(svg) & ids(other)
    assert (
        line_chart(
            [Series(name="a", points=[(0, 0.0)])], title="t", xlabel="x", ylabel="y", xlog=True
        )
        is None
    )
    bars = embed(
        bar_chart([("a", 0.5), ("b", math.nan)], title="t", xlabel="x", references=[(0.69, "c")]),
        "b",
    )
    assert ">a<" in bars and ">nan<" in bars and ">c<" in bars
    assert bar_chart([], title="t", xlabel="x") is None
    assert "<svg" in embed(
        heatmap([[1.0, -2.0]], title="h", row_labels=["r"], col_labels=["a", "b"]), "h"
    )
    with pytest.raises(ValueError, match="plain file stem"):
        embed(fig, "../x")
    records = [
        {"step": 1, "train_loss": 5.0, "lr": 0.1, "l0_total": 100},
        {"step": 2, "train_loss": 4.0, "val_loss": 4.5, "lr": 0.05, "l0_total": 50},
    ]
    assert training_plots(records, tmp_path).count('<svg class="figure"') == 3
    assert (tmp_path / "training-l0.png").is_file()


def test_log_axis_tick_labels_do_not_run_into_each_other():
    """The loss-vs-size chart's log axes: plain numbers, powers of ten on a wide axis (minor
    ticks unlabelled), 2x and 5x too on an axis under a decade; no two labels overlap."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    pts = [(12, 0.69), (50, 0.55), (183, 0.527), (400, 0.47), (3000, 0.42)]
    fig = line_chart([Series(name="b", points=pts, markers=True)], title="t", xlabel="x",
                     ylabel="y", xlog=True, ylog=True, vlines=[(183.0, "183 nodes")])  # fmt: skip
    assert fig is not None
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    ax = fig.axes[0]
    for axis in (ax.xaxis, ax.yaxis):
        labels = [t for t in axis.get_ticklabels(which="both") if t.get_text() and t.get_visible()]
        lo, hi = sorted(axis.get_view_interval())
        shown = {t.get_text() for t in labels if lo <= t.get_position()[axis is ax.yaxis] <= hi}
        assert len(shown) >= 2, shown
        assert not any("times" in t or "^" in t or "e" in t for t in shown), shown
        boxes = [t.get_window_extent(renderer) for t in labels if t.get_text() in shown]
        distinct = {(round(b.x0), round(b.y0)): b for b in boxes}.values()  # major = minor
        assert not any(a.overlaps(b) for a in distinct for b in distinct if a is not b)
    xs = {t.get_text() for t in ax.xaxis.get_ticklabels(which="minor") if t.get_text()}
    assert xs == set()  # 12..3000 spans decades: minor ticks unlabelled


def test_index_page_links_circuits(setup):
    _, circuit, _, _ = setup
    html = index_page(
        title="r",
        run_info={"model_config": {"n_layers": 2}, "preset": "tiny", "corpus": {}},
        metrics=[{"step": 1, "train_loss": 5.0, "lr": 0.1, "l0_total": 10}],
        task_table={TASK: {"loss": 0.6, "accuracy": 0.7, "n": 8}},
        circuits=[(circuit, "circuits/x.html")],
    )
    assert 'href="circuits/x.html"' in html and "CircuitsVis" not in html
    assert network_loads(html) == []
    # the circuits table states each circuit's faithfulness verdicts, not only its page
    assert "faithfulness checks failed" in html
    failing = dataclasses.replace(
        circuit,
        extra=circuit.extra | {"faithfulness": {"verdicts": [], "failed": ["logit_diff"]}},
    )
    passing = dataclasses.replace(
        circuit, extra=circuit.extra | {"faithfulness": {"verdicts": [], "failed": []}}
    )
    bare = dataclasses.replace(
        circuit, extra={k: v for k, v in circuit.extra.items() if k != "faithfulness"}
    )
    for c, expected in (
        (failing, '<span class="bad">logit_diff</span>'),
        (passing, '<span class="good">none</span>'),
        (bare, "not run"),
    ):
        page = index_page(title="r", run_info=None, metrics=None, task_table={},
                          circuits=[(c, "c.html")])  # fmt: skip
        assert expected in page


def _chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.environ.get("SPARSE_LENS_REQUIRE_BROWSER"):
        pytest.fail("SPARSE_LENS_REQUIRE_BROWSER is set but chromium is not installed")
    return found


def test_browser_renders_the_report_offline(setup, tmp_path):
    chromium = _chromium()
    if chromium is None:
        pytest.skip("chromium not installed (scripts/test.sh installs it)")
    _, circuit, html, data = setup
    page = tmp_path / "circuit.html"
    page.write_text(html)
    offline = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--proxy-server=127.0.0.1:9",  # network off: every http(s) load fails
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--virtual-time-budget=15000",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run(
        [chromium, *offline, "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    labels = re.findall(r'<g class="node" data-label="([^"]+)"', dom)
    assert len(labels) == circuit.n_nodes
    panels = re.findall(r'<div id="circuits-vis-[^"]+" class="cv-panel"[^>]*>(.{0,80})', dom)
    assert len(panels) == data["n_panels"]
    assert all(p and not p.startswith("</div>") for p in panels), "a circuitsvis panel is empty"
    assert "Head Selector" in dom  # rendered by AttentionHeads
    artefacts = Path(os.environ.get("SPARSE_LENS_ARTIFACTS", "test-artifacts"))
    artefacts.mkdir(parents=True, exist_ok=True)
    shot = artefacts / "circuit_report.png"
    subprocess.run(
        [chromium, *offline, "--window-size=1300,2400", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.stat().st_size > 10_000


PROBE = """<script>
window.addEventListener('load', function () {
  var out = Array.prototype.map.call(document.querySelectorAll('svg.figure'), function (s) {
    var b = s.getBBox();
    return s.dataset.name + ':' + Math.round(b.width) + 'x' + Math.round(b.height) + ':' +
      s.querySelectorAll('text').length;
  });
  var pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = out.join(';');
  document.body.appendChild(pre);
});
</script>"""


def _sweep_rows():
    def row(name, kind, width, l0, loss, edges):
        circuits = {t: {"edges": e, "nodes": e // 2, "loss": 0.1} for t, e in edges.items()}
        return {
            "name": name, "kind": kind, "d_model": width, "l0": l0, "afrac": 0.25,
            "l0_total": l0 or 10**6, "val_loss": loss, "target_loss": 0.15,
            "solved": sorted(edges), "circuits": circuits, "n_circuits": len(edges),
            "geometric_mean_edges": math.exp(sum(math.log(e) for e in edges.values()) / len(edges)),
        }  # fmt: skip

    return match_dense([
        row("w64-l0_1000", "sparse", 64, 1000, 4.2, {"a": 30, "b": 50}),
        row("w64-l0_2000", "sparse", 64, 2000, 4.0, {"a": 60, "b": 90}),
        row("w128-l0_1000", "sparse", 128, 1000, 4.1, {"a": 20, "b": 40}),
        row("w128-l0_2000", "sparse", 128, 2000, 3.9, {"a": 45, "b": 70}),
        row("w64-dense", "dense", 64, None, 4.05, {"a": 900, "b": 2000}),
        row("w128-dense", "dense", 128, None, 3.85, {"a": 1500, "b": 3000}),
    ])  # fmt: skip


def test_browser_renders_the_figures(setup, tmp_path):
    """Every matplotlib figure of the index page and of the sweep's page is laid out as SVG
    (non-empty box, text as text) by a real browser, offline."""
    chromium = _chromium()
    if chromium is None:
        pytest.skip("chromium not installed (scripts/test.sh installs it)")
    _, circuit, _, _ = setup
    metrics = [
        {"step": s, "train_loss": 6.0 - s / 10, "val_loss": 6.1 - s / 10, "lr": 0.01, "l0_total": 900 - s}
        for s in range(1, 20)
    ]  # fmt: skip
    index = index_page(
        title="r",
        run_info=None,
        metrics=metrics,
        task_table={
            TASK: {"loss": 0.6, "accuracy": 0.7, "n": 8},
            "b": {"loss": 0.2, "accuracy": 0.9},
        },
        circuits=[(circuit, "circuits/x.html")],
    )
    scfg = SweepConfig(preset="tiny", widths=(64, 128), l0s=(1000, 2000))
    rows = _sweep_rows()
    frontier = frontier_page(scfg, rows, {r["name"]: "done" for r in rows}, tmp_path / "png")
    assert network_loads(index) == [] and network_loads(frontier) == []
    offline = ["--headless", "--no-sandbox", "--disable-gpu", "--proxy-server=127.0.0.1:9",
               "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=10000",
               f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    expected = {
        "index": {"training-loss", "training-l0", "training-lr", "task-loss", "circuit-sizes"},
        "frontier": {"frontier", "sparse_vs_dense", "edge_ratio"},
    }
    for name, html in (("index", index), ("frontier", frontier)):
        page = tmp_path / f"{name}.html"
        page.write_text(html.replace("</body>", PROBE + "</body>"))
        dom = subprocess.run(
            [chromium, *offline, "--dump-dom", page.as_uri()],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout  # fmt: skip
        probe = re.search(r'<pre id="probe">([^<]*)</pre>', dom)
        assert probe, f"{name}: the probe script did not run"
        figures = {}
        for item in probe.group(1).split(";"):
            fig, size, n_text = item.split(":")
            width, height = map(int, size.split("x"))
            figures[fig] = (width, height, int(n_text))
        assert set(figures) == expected[name]
        assert all(w > 100 and h > 100 and n > 3 for w, h, n in figures.values()), figures
    assert {p.name for p in (tmp_path / "png").iterdir()} == {
        "frontier.png", "sparse_vs_dense.png", "edge_ratio.png",
    }  # fmt: skip


def test_a_failed_check_is_named_at_the_top_of_the_page(setup):
    _, circuit, _, _ = setup
    bad = copy.deepcopy(circuit)
    bad.extra["faithfulness"] = {"failed": ["frozen_norms", "logit_diff"]}
    failed = circuit_facts(bad, get_task(TASK)).failed_checks
    assert "fails 2 faithfulness checks: frozen_norms, logit_diff" in failed_banner(failed)
    bad.extra["faithfulness"] = {"failed": []}
    assert failed_banner(circuit_facts(bad, get_task(TASK)).failed_checks) == ""
    del bad.extra["faithfulness"]
    assert circuit_facts(bad, get_task(TASK)).failed_checks == ()


def test_the_page_card_says_its_examples_are_the_test_split(setup):
    from analyses.report import _card

    model, circuit, _, _ = setup
    batch = task_batch(get_task(TASK), model.tokenizer, 64, "test", 8)
    windows = torch.randint(0, model.cfg.d_vocab, (4, 64), generator=torch.Generator())
    card, note = _card(model, circuit, batch, windows, False)
    assert note == "" and card is not None
    assert card.provenance["split"] == "test" and card.provenance["n_examples"] == 8


def test_a_page_measures_the_circuit_files_own_test_pairs_by_default(setup):
    """Without ``n_examples`` the page reads as many test pairs as the circuit file records
    (``extra["n_test"]``), so its card, knockouts and the file report one loss."""
    import dataclasses

    model, circuit, _, _ = setup
    own = dataclasses.replace(circuit, extra=circuit.extra | {"n_test": 6})
    windows = torch.randint(0, model.cfg.d_vocab, (4, 64), generator=torch.Generator())
    rcfg = ReportConfig(n_windows=4, max_node_panels=1)
    assert rcfg.n_examples is None
    page = circuit_page_data(model, own, get_task(TASK), windows, rcfg)
    assert page.n_test == 6
    with pytest.raises(ValueError, match="n_examples must be >= 1"):
        ReportConfig(n_examples=0)


def test_a_lone_point_is_drawn_with_a_marker():
    """A series of one point (the smoke circuit's curve) has no line to draw; it gets a marker,
    so the chart is not an empty frame."""
    fig = line_chart([Series(name="a", points=[(5, 0.7)])], title="t", xlabel="x", ylabel="y",
                     xlog=True, ylog=True)  # fmt: skip
    assert fig is not None
    (line,) = fig.axes[0].get_lines()
    assert line.get_marker() == "o"
    two = line_chart([Series(name="a", points=[(5, 0.7), (9, 0.5)])], title="t", xlabel="x",
                     ylabel="y")  # fmt: skip
    assert two is not None and two.axes[0].get_lines()[0].get_marker() in ("None", "", None)


def test_faithfulness_provenance_and_hyperparameters_read_as_words():
    """The page states where ablation means came from and the chosen hyperparameters in words,
    not as raw JSON; an unknown shape of source still shows, as JSON."""
    from analyses.circuit_view import ablation_source_text, settings_text

    source = {
        "data": "pretraining windows", "n_tokens": 8173, "n_windows": 64,
        "windows": {"distribution": "training mix: corpus and idiom stream", "idiom_frac": 0.35,
                    "idioms": {"kinds": ["literals"]}, "n_ctx": 128, "seed": 0,
                    "sha256": "c9fd49def92efa6a", "split": "train"},
    }  # fmt: skip
    text = ablation_source_text(source)
    assert "{" not in text and "64 pretraining windows of 128 tokens" in text
    assert "35% idioms (literals)" in text and "train split" in text and "c9fd49def92efa6a" in text
    assert ablation_source_text({"odd": 1}) == 'source: {"odd": 1}'
    assert settings_text({"lr": 0.0151234, "epochs": 17}) == "lr 0.0151, epochs 17"
