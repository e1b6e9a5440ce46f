"""The bridge page: bridge quality per site, steering through a bridge, and activation patching
and attention sinks side by side on the sparse and the dense model, with circuitsvis views of
corresponding heads. ``bridge_analyses`` returns the data; ``bridge_page`` renders it."""

from typing import Any

import circuitsvis.attention
import torch

from analyses.html import Page, table
from analyses.plots import Series, chart_html, embed, heatmap, line_chart
from analyses.side_by_side import corresponding_heads, patching_pair, sink_profile
from analyses.steering import SteeringResult, paired_batches, pick_read_node, steering_curve
from sparse_lens.bridges.maps import Bridges, check_pair
from sparse_lens.bridges.train import evaluate_bridges
from sparse_lens.circuits.circuit import Circuit
from sparse_lens.model.transformer import HookedSparseTransformer
from sparse_lens.tasks.task import Task, task_batch


def bridge_analyses(
    dense: Any,
    sparse: HookedSparseTransformer,
    bridges: Bridges,
    task: Task,
    windows: torch.Tensor,
    *,
    circuit: Circuit | None = None,
    n: int = 64,
    seed: int = 0,
) -> dict[str, Any]:
    """Every number the bridge page shows."""
    check_pair(dense, sparse, bridges)
    batch = task_batch(task, sparse.require_tokenizer(), sparse.cfg.n_ctx, "test", n, seed)
    reads = {
        f"blocks.{i}.{k}.hook_in": list(range(sparse.cfg.d_model))
        for i in range(sparse.cfg.n_layers)
        for k in ("attn", "mlp")
    }
    if circuit is not None:
        circuit.check_model(sparse)
        reads = {h: circuit.nodes.get(h, []) for h in reads}
    hook, channel, score = pick_read_node(sparse, batch, reads)
    steer = steering_curve(dense, sparse, bridges, batch, hook, channel, windows, seed=seed)
    return {
        "bridges": evaluate_bridges(dense, sparse, bridges, windows),
        "steering": steer,
        "steering_node_score": score,
        "patching": {"sparse": patching_pair(sparse, batch), "dense": patching_pair(dense, batch)},
        "sinks": {
            "sparse": sink_profile(sparse, batch, windows, learned=bool(sparse.cfg.attn_sinks)),
            "dense": sink_profile(dense, batch, windows, learned=False),
        },
        "corresponding": corresponding_heads(sparse, dense, batch),
        "batch": batch,
    }


def steering_plot(s: SteeringResult, target: str, presented: str) -> str:
    title = f"Steering the dense model with {s.node} via {s.site}"
    fig = line_chart(
        [
            Series(
                name=f"P({target}) steered", points=list(zip(s.strengths, s.p_target, strict=True))
            ),
            Series(
                name=f"P({target}) random",
                points=list(zip(s.strengths, s.p_target_random, strict=True)),
            ),
            Series(
                name=f"P({presented})", points=list(zip(s.strengths, s.p_presented, strict=True))
            ),
        ],
        title=title,
        xlabel="steering strength s",
        ylabel="probability (log)",
        ylog=True,
    )
    return chart_html(fig, "steering", title)


def _grid(t: torch.Tensor) -> list[list[float]]:
    return [[float(v) for v in row] for row in t]


def bridge_page(
    dense: Any,
    sparse: HookedSparseTransformer,
    data: dict[str, Any],
    task: Task,
    *,
    max_heads: int = 4,
) -> str:
    tok = sparse.require_tokenizer()
    page = Page(title=f"Sparse ↔ dense bridge: {task.name}")
    page.add(
        table(
            ["", "sparse", "dense"],
            [
                ["class", type(sparse).__name__, type(dense).__name__],
                ["n_layers", sparse.cfg.n_layers, dense.cfg.n_layers],
                ["d_model", sparse.cfg.d_model, dense.cfg.d_model],
                ["n_heads", sparse.cfg.n_heads, dense.cfg.n_heads],
                [
                    "next-token loss (bridge windows)",
                    data["bridges"]["ce"],
                    data["bridges"]["dense_ce"],
                ],
            ],
        )
    )
    page.h2("Bridge quality per site", "bridges")
    rows = [
        [site, v["nmse_d2s"], v["nmse_s2d"], v["kl_d2s"], v["kl_s2d"]]
        for site, v in data["bridges"]["per_site"].items()
    ]
    page.add(
        table(["site", "NMSE enc (d→s)", "NMSE dec (s→d)", "KL d→s hybrid", "KL s→d hybrid"], rows)
    )
    page.p(
        "NMSE: fraction of variance unexplained. KL(p_dense ‖ p_hybrid) in nats per token, where "
        "the hybrid runs one model up to the site, crosses the bridge and finishes in the other.",
        "note",
    )

    page.h2("Steering through the bridge", "steering")
    s: SteeringResult = data["steering"]
    batch = data["batch"]
    shown, counterfactual = paired_batches(batch)  # the pairs the steering curve is over
    target = repr(tok.token_str(int(counterfactual.correct[0])))
    presented = repr(tok.token_str(int(shown.correct[0])))
    page.p(
        f"Node {s.node} (separation score {data['steering_node_score']:.2f}) steered from the "
        f"presented context toward its counterfactual over {s.n_pairs} pairs; the control adds a "
        "random direction with the same per-token norm.",
        "note",
    )
    page.add(steering_plot(s, target, presented))
    page.add(
        table(
            ["s", "P(target) steered", "P(target) random", "P(presented answer)"],
            [
                [a, b, c, d]
                for a, b, c, d in zip(
                    s.strengths, s.p_target, s.p_target_random, s.p_presented, strict=True
                )
            ],
        )
    )

    page.h2("Activation patching, side by side", "patching")
    for kind, title, cols in (
        ("resid_pre", "residual stream (layer × position)", None),
        ("head_out", "head outputs (layer × head)", None),
    ):
        cells = []
        for name in ("sparse", "dense"):
            res = data["patching"][name]
            grid = _grid(res[kind])
            labels = cols or (
                [tok.token_str(t) for t in res["tokens"]][: len(grid[0])]
                if kind == "resid_pre"
                else [f"H{h}" for h in range(len(grid[0]))]
            )
            fig = heatmap(
                grid,
                title=f"{name}: {title}",
                row_labels=[f"L{i}" for i in range(len(grid))],
                col_labels=labels,
            )
            cells.append(embed(fig, f"patching-{kind}-{name}"))
        page.add('<div style="display:flex;gap:24px;flex-wrap:wrap">' + "".join(cells) + "</div>")
    page.p(
        "Metric: logit difference (answer − alternative) of the clean context, normalised so 1 is "
        "the clean run and 0 the corrupted (other context of the pair) run.",
        "note",
    )

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
        for name in ("sparse", "dense"):
            grid = _grid(data["sinks"][name][key])
            fig = heatmap(
                grid,
                title=f"{name}: {title}",
                row_labels=[f"L{i}" for i in range(len(grid))],
                col_labels=[f"H{h}" for h in range(len(grid[0]))],
                symmetric=sym,
            )
            cells.append(embed(fig, f"sinks-{key}-{name}"))
        page.add('<div style="display:flex;gap:24px;flex-wrap:wrap">' + "".join(cells) + "</div>")

    page.h2("Corresponding heads", "heads")
    page.p(
        "Each sparse head shown next to the dense head whose attention pattern on the task "
        "contexts is most similar (cosine similarity of the patterns).",
        "note",
    )
    n = int(shown.last[0]) + 1
    tokens = [tok.token_str(t) for t in shown.tokens[0, :n].tolist()]
    one = shown.tokens[:1, :n]
    _, s_cache = sparse.run_with_cache(one)
    _, d_cache = dense.run_with_cache(one)
    for (sl, sh), (dl, dh), sim in data["corresponding"][:max_heads]:
        attn = torch.stack(
            [
                s_cache[f"blocks.{sl}.attn.hook_pattern"][0, sh],
                d_cache[f"blocks.{dl}.attn.hook_pattern"][0, dh],
            ]
        )
        names = [f"sparse L{sl}H{sh}", f"dense L{dl}H{dh}"]
        page.add(f"<h3>sparse L{sl}H{sh} ↔ dense L{dl}H{dh} (similarity {sim:.2f})</h3>")
        page.add(
            page.circuitsvis(
                circuitsvis.attention.attention_heads,
                attention=attn,
                tokens=tokens,
                attention_head_names=names,
            )
        )
    return page.render()
