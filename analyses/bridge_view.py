"""The bridge page, rendered from its data alone (``BridgePageData``; no model, no tensors):
bridge quality per site, steering through a bridge, activation patching and attention sinks of
the sparse and the dense model side by side, and corresponding heads. The data comes from
``analyses.bridge_report.bridge_page_data``."""

from analyses.html import Page, table
from analyses.page_data import BridgePageData, Grid, SteeringView
from analyses.plots import Series, chart_html, embed, heatmap, line_chart

MODELS = ("sparse", "dense")
SIDE_BY_SIDE = '<div style="display:flex;gap:24px;flex-wrap:wrap">{}</div>'


def render_bridge_page(data: BridgePageData) -> str:
    """The HTML page of ``data``."""
    page = Page(title=f"Sparse ↔ dense bridge: {data.task}")
    s, d = data.sparse, data.dense
    page.add(
        table(
            ["", "sparse", "dense"],
            [
                ["class", s.class_name, d.class_name],
                ["n_layers", s.n_layers, d.n_layers],
                ["d_model", s.d_model, d.d_model],
                ["n_heads", s.n_heads, d.n_heads],
                ["next-token loss (bridge windows)", s.ce, d.ce],
            ],
        )
    )
    _quality_section(page, data)
    _steering_section(page, data.steering)
    _patching_section(page, data)
    _sinks_section(page, data)
    _heads_section(page, data)
    return page.render()


def _quality_section(page: Page, data: BridgePageData) -> None:
    page.h2("Bridge quality per site", "bridges")
    rows = [
        [site, v["nmse_d2s"], v["nmse_s2d"], v["kl_d2s"], v["kl_s2d"]]
        for site, v in data.bridges["per_site"].items()
    ]
    page.add(
        table(["site", "NMSE enc (d→s)", "NMSE dec (s→d)", "KL d→s hybrid", "KL s→d hybrid"], rows)
    )
    page.p(
        "NMSE: fraction of variance unexplained. KL(p_dense ‖ p_hybrid) in nats per token, where "
        "the hybrid runs one model up to the site, crosses the bridge and finishes in the other.",
        "note",
    )


def steering_plot(s: SteeringView) -> str:
    """Probabilities against steering strength: the target steered and under the random
    control, and the presented answer."""
    title = f"Steering the dense model with {s.node} via {s.site}"
    target, presented = repr(s.target), repr(s.presented)
    lines = [
        (f"P({target}) steered", s.p_target),
        (f"P({target}) random", s.p_target_random),
        (f"P({presented})", s.p_presented),
    ]
    fig = line_chart(
        [Series(name=n, points=list(zip(s.strengths, p, strict=True))) for n, p in lines],
        title=title,
        xlabel="steering strength s",
        ylabel="probability (log)",
        ylog=True,
    )
    return chart_html(fig, "steering", title)


def _steering_section(page: Page, s: SteeringView) -> None:
    page.h2("Steering through the bridge", "steering")
    page.p(
        f"Node {s.node} (separation score {s.node_score:.2f}) steered from the "
        f"presented context toward its counterfactual over {s.n_pairs} pairs; the control adds a "
        "random direction with the same per-token norm.",
        "note",
    )
    page.add(steering_plot(s))
    rows = zip(s.strengths, s.p_target, s.p_target_random, s.p_presented, strict=True)
    page.add(
        table(
            ["s", "P(target) steered", "P(target) random", "P(presented answer)"],
            [list(r) for r in rows],
        )
    )


def _heatmap(grid: Grid, title: str, name: str, cols: list[str], symmetric: bool = True) -> str:
    rows = [f"L{i}" for i in range(len(grid))]
    fig = heatmap(grid, title=title, row_labels=rows, col_labels=cols, symmetric=symmetric)
    return embed(fig, name)


def _patching_section(page: Page, data: BridgePageData) -> None:
    page.h2("Activation patching, side by side", "patching")
    for kind, title in (
        ("resid_pre", "residual stream (layer × position)"),
        ("head_out", "head outputs (layer × head)"),
    ):
        cells = []
        for name in MODELS:
            res = data.patching[name]
            grid = res.resid_pre if kind == "resid_pre" else res.head_out
            cols = list(res.tokens) if kind == "resid_pre" else _heads(grid)
            cells.append(_heatmap(grid, f"{name}: {title}", f"patching-{kind}-{name}", cols))
        page.add(SIDE_BY_SIDE.format("".join(cells)))
    page.p(
        "Metric: logit difference (answer − alternative) of the clean context, normalised so 1 is "
        "the clean run and 0 the corrupted (other context of the pair) run.",
        "note",
    )


def _heads(grid: Grid) -> list[str]:
    return [f"H{h}" for h in range(len(grid[0]))]


def _sinks_section(page: Page, data: BridgePageData) -> None:
    page.h2("Attention sinks, side by side", "sinks")
    page.p(
        "Sparse model: its learned sink. Dense GPT-2: attention to the first token (it has no "
        "sink). Removal effect: change in task loss when the head's sink is removed. Threshold "
        "score: |correlation| of the head's sink mass at the answer position with the answer.",
        "note",
    )
    for key, title, sym in (
        ("corpus_sink_mass", "sink mass, corpus", False),
        ("task_sink_mass", "sink mass, task answer position", False),
        ("removal_effect", "task-loss change without the sink", True),
        ("threshold_score", "threshold score", False),
    ):
        cells = []
        for name in MODELS:
            grid: Grid = getattr(data.sinks[name], key)
            cells.append(
                _heatmap(grid, f"{name}: {title}", f"sinks-{key}-{name}", _heads(grid), sym)
            )
        page.add(SIDE_BY_SIDE.format("".join(cells)))


def _heads_section(page: Page, data: BridgePageData) -> None:
    page.h2("Corresponding heads", "heads")
    page.p(
        "Each sparse head shown next to the dense head whose attention pattern on the task "
        "contexts is most similar (cosine similarity of the patterns).",
        "note",
    )
    for pair in data.heads:
        (sl, sh), (dl, dh) = pair.sparse, pair.dense
        page.add(
            f"<h3>sparse L{sl}H{sh} ↔ dense L{dl}H{dh} (similarity {pair.similarity:.2f})</h3>"
        )
        page.add(page.panel(pair.view))
