"""The sweep's figures and page (arXiv 2511.13653, Figs. 2 and 3): the frontier, sparse vs dense circuits, and
the dense/sparse edge ratio.

* ``frontier_figure``: final pretraining (validation) loss against the geometric mean of circuit
  edges over the tasks a model solves, points coloured by L0, one line per width (and AbsTopK
  fraction), dense baselines as black crosses (paper Fig. 3).
* ``pair_figure``: task loss against circuit edges, each circuit of the sparse point with most
  tasks in common with its loss-matched dense baseline, and that baseline's (paper Fig. 2).
* ``ratio_figure``: the dense/sparse edge ratio at matched pretraining loss per sparse point, with
  the paper's 16x for reference.

``write_frontier`` writes ``frontier.html`` (figures inline as SVG, tables) and
``figures/*.png`` beside it.
"""

import math
from pathlib import Path
from typing import Any

from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from analyses.html import Page, RawHTML, esc, table
from analyses.plots import PALETTE, chart_html, new_figure
from sparse_lens.files.atomic import atomic_write_text
from sparse_lens.sweep.grid import SweepConfig
from sparse_lens.sweep.table import overall_ratio

PAPER_RATIO = 16.0
MARKERS = ("o", "s", "^", "D", "v", "P")


def _sparse(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["kind"] == "sparse" and r.get("geometric_mean_edges")]


def frontier_figure(rows: list[dict[str, Any]]) -> Figure | None:
    """Pretraining loss vs geometric-mean circuit edges (see the module docstring)."""
    sparse = [r for r in _sparse(rows) if math.isfinite(r["val_loss"])]
    dense = [r for r in rows if r["kind"] == "dense" and r.get("geometric_mean_edges")]
    if not sparse and not dense:
        return None
    fig = new_figure(6.5, 4.0)
    ax = fig.add_subplot()
    l0s = [r["l0"] for r in sparse] or [1]
    norm = LogNorm(vmin=min(l0s), vmax=max(max(l0s), min(l0s) * 1.01))
    widths = sorted({r["d_model"] for r in rows})
    afracs = sorted({r["afrac"] for r in sparse})
    for r_w, width in enumerate(widths):
        for r_a, afrac in enumerate(afracs):
            line = sorted(
                (r for r in sparse if r["d_model"] == width and r["afrac"] == afrac),
                key=lambda r: r["l0"],
            )
            if not line:
                continue
            label = f"d_model {width}" + (f", afrac {afrac:g}" if len(afracs) > 1 else "")
            xs, ys = [r["geometric_mean_edges"] for r in line], [r["val_loss"] for r in line]
            ax.plot(xs, ys, color=PALETTE[r_w % len(PALETTE)], linewidth=1, label=label)
            ax.scatter(xs, ys, c=[r["l0"] for r in line], cmap="viridis", norm=norm, zorder=3,
                       marker=MARKERS[r_a % len(MARKERS)], edgecolors="k", linewidths=0.5)  # fmt: skip
    for r in dense:
        ax.scatter([r["geometric_mean_edges"]], [r["val_loss"]], marker="x", color="k", zorder=3)
        ax.annotate(f"dense {r['d_model']}", (r["geometric_mean_edges"], r["val_loss"]), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")  # fmt: skip
    if sparse:
        fig.colorbar(ax.collections[0], ax=ax, label="L0 (nonzero parameters)")
    ax.set_xscale("log")
    ax.set(
        title="Capability vs interpretability",
        xlabel="geometric mean of circuit edges over solved tasks (log)",
        ylabel="pretraining loss (validation, nats)",
    )
    ax.grid(alpha=0.3)
    if sparse:
        ax.legend(fontsize=8)
    return fig


def best_pair(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The sparse row with most tasks in common with its matched dense row (then the lower
    pretraining loss) and that dense row; ``None`` when no sparse row shares a task."""
    by_name = {r["name"]: r for r in rows}
    matched = [r for r in rows if r.get("matched_dense") and r.get("n_common_tasks")]
    if not matched:
        return None
    best = min(matched, key=lambda r: (-r["n_common_tasks"], r["val_loss"]))
    return best, by_name[best["matched_dense"]]


def pair_figure(rows: list[dict[str, Any]]) -> Figure | None:
    """Task loss vs circuit edges, sparse vs its loss-matched dense baseline."""
    pair = best_pair(rows)
    if pair is None:
        return None
    sparse, dense = pair
    common = sorted(
        t
        for t in sparse["circuits"].keys() & dense["circuits"].keys()
        if "edges" in sparse["circuits"][t] and "edges" in dense["circuits"][t]
    )
    fig = new_figure(6.5, 4.0)
    ax = fig.add_subplot()
    for task in common:
        s, d = sparse["circuits"][task], dense["circuits"][task]
        xs = [max(s["edges"], 1), max(d["edges"], 1)]
        ax.plot(xs, [s["loss"], d["loss"]], color="#bbb", linewidth=0.8, zorder=1)
        ax.annotate(task, (xs[0], s["loss"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    for row, marker, colour in ((sparse, "o", PALETTE[0]), (dense, "s", PALETTE[3])):
        pts = [(max(row["circuits"][t]["edges"], 1), row["circuits"][t]["loss"]) for t in common]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=colour,
                   zorder=2, label=f"{row['name']} (pretraining loss {row['val_loss']:.3f})")  # fmt: skip
    ax.axhline(sparse["target_loss"], color="#555", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set(
        title="Circuits of loss-matched sparse and dense models",
        xlabel="circuit edges (log)",
        ylabel="task loss of the circuit (validation)",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def ratio_figure(rows: list[dict[str, Any]]) -> Figure | None:
    """Dense/sparse edge ratio at matched pretraining loss, one point per sparse model."""
    pts = [r for r in rows if r.get("edge_ratio") is not None]
    if not pts:
        return None
    fig = new_figure()
    ax = fig.add_subplot()
    widths = sorted({r["d_model"] for r in pts})
    for i, width in enumerate(widths):
        mine = [r for r in pts if r["d_model"] == width]
        ax.scatter([r["val_loss"] for r in mine], [r["edge_ratio"] for r in mine],
                   color=PALETTE[i % len(PALETTE)], label=f"d_model {width}")  # fmt: skip
        for r in mine:
            ax.annotate(f"L0 {r['l0']}, {r['n_common_tasks']} tasks",
                        (r["val_loss"], r["edge_ratio"]), fontsize=6, xytext=(3, 3),
                        textcoords="offset points")  # fmt: skip
    ax.axhline(PAPER_RATIO, color="#555", linestyle="--", linewidth=1)
    ax.annotate("paper: 16x", (0, PAPER_RATIO), xycoords=("axes fraction", "data"), fontsize=8)
    ax.axhline(1.0, color="#999", linestyle=":", linewidth=1)
    ax.set_yscale("log")
    ax.set(
        title="Dense/sparse circuit edges at matched pretraining loss",
        xlabel="pretraining loss of the sparse model (validation, nats)",
        ylabel="edge ratio, dense / sparse (log)",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _fmt(v: Any) -> Any:
    return "-" if v is None else v


def _rows_table(rows: list[dict[str, Any]]) -> str:
    header = ["point", "kind", "d_model", "L0 budget", "L0", "val loss", "solved", "circuits",
              "geo-mean edges", "matched dense", "loss gap", "edge ratio", "status"]  # fmt: skip
    body = [
        [r["name"], r["kind"], r["d_model"], _fmt(r["l0"]), r["l0_total"], r["val_loss"],
         ", ".join(r["solved"]) or "-", r["n_circuits"], _fmt(r["geometric_mean_edges"]),
         _fmt(r.get("matched_dense")), _fmt(r.get("loss_gap")), _fmt(r.get("edge_ratio")),
         r.get("status", "-")]
        for r in rows
    ]  # fmt: skip
    return table(header, body)


def frontier_page(
    scfg: SweepConfig, rows: list[dict[str, Any]], status: dict[str, str], png_dir: Path | None
) -> str:
    """The sweep's HTML page (figures inline; PNGs into ``png_dir`` when given)."""
    page = Page(title=f"Sweep: {scfg.preset} preset, target loss {scfg.target_loss:g}")
    ratio = overall_ratio(rows)
    page.p(
        f"{len(rows)} of {len(status)} grid points finished. Dense/sparse circuit-edge ratio at "
        f"matched pretraining loss, over all matched points: "
        + (f"{ratio:.3g}x (paper: {PAPER_RATIO:g}x)." if ratio is not None else "no match yet."),
        "note",
    )
    figures = (
        ("frontier", "Capability vs interpretability", frontier_figure(rows)),
        ("sparse_vs_dense", "Sparse vs loss-matched dense circuits", pair_figure(rows)),
        ("edge_ratio", "Dense/sparse edge ratio", ratio_figure(rows)),
    )
    for name, title, fig in figures:
        page.h2(title, name)
        page.add(chart_html(fig, name, title, png_dir))
    page.h2("Points", "points")
    page.add(_rows_table(rows))
    page.add(
        '<p class="note">Files: <a href="table.json">table.json</a>, '
        '<a href="table.csv">table.csv</a>, <a href="circuits.csv">circuits.csv</a></p>'
    )
    others = {k: v for k, v in status.items() if not v.startswith("done")}
    if others:
        page.h2("Points not finished", "unfinished")
        page.add(table(["point", "status"], [[k, RawHTML(esc(v))] for k, v in others.items()]))
    return page.render()


def write_frontier(
    out: Path, scfg: SweepConfig, rows: list[dict[str, Any]], status: dict[str, str]
) -> Path:
    """Write ``out/frontier.html`` and ``out/figures/*.png``; returns the page's path."""
    path = out / "frontier.html"
    atomic_write_text(path, frontier_page(scfg, rows, status, out / "figures"))
    return path
