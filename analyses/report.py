"""Offline HTML circuit reports: one page per circuit, an index page, and a ``.dot`` per circuit.

A circuit page shows the layered graph (``analyses/circuit_graph.py``), the task loss against circuit size
from the bisection, the faithfulness report, the circuit's heads (attention patterns on task
examples with their sink mass, circuitsvis ``attention_heads``) and a panel per important node
(ranked by knockout effect): its top-activating pretraining contexts (``topk_samples``) and its
values on one example of each answer (``colored_tokens``). The index page shows the training
curves, the task-loss table and every circuit. All pages are self-contained (``analyses/html.py``).
"""

import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import circuitsvis.attention
import circuitsvis.tokens
import circuitsvis.topk_samples
import torch
from tqdm.auto import tqdm

from analyses.circuit_graph import GRAPH_SCRIPT, KIND_COLOUR, circuit_svg
from analyses.html import Page, RawHTML, esc, table
from analyses.node_panels import (
    attribution_effects,
    circuit_patterns,
    knockout_effects,
    node_values,
    top_contexts,
)
from analyses.plots import Series, bar_chart, chart_html, line_chart
from sparse_lens.circuits.circuit import Circuit
from sparse_lens.model.transformer import HookedSparseTransformer
from sparse_lens.tasks.task import Task, TaskBatch, task_batch
from sparse_lens.training.sparse import recorded_idiom_frac
from sparse_lens.validation import require_min

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ReportConfig:
    """How much a report computes: task examples, corpus windows, node panels, heads shown."""

    n_examples: int = 64
    n_windows: int = 32
    max_node_panels: int = 24
    n_contexts: int = 5
    max_heads: int = 12
    n_exact_knockouts: int = 48
    seed: int = 0
    contexts_exclude_separators: bool = True  # no top context peaks at <|endoftext|>

    def __post_init__(self) -> None:
        require_min(
            self, ("n_examples", "n_windows", "n_contexts", "max_heads", "n_exact_knockouts"), 1
        )
        require_min(self, ("max_node_panels",), 0)


def _class_examples(batch: TaskBatch) -> list[int]:
    """One example per answer token (up to two), so a page contrasts the two answers."""
    seen: dict[int, int] = {}
    for i, c in enumerate(batch.correct.tolist()):
        seen.setdefault(c, i)
    return list(seen.values())[:2] or [0]


def _tokens_of(model: HookedSparseTransformer, batch: TaskBatch, i: int) -> list[str]:
    return [
        model.require_tokenizer().token_str(t)
        for t in batch.tokens[i, : int(batch.last[i]) + 1].tolist()
    ]


def _summary_rows(circuit: Circuit, task: Task) -> list[list[Any]]:
    rows = [
        ["task", circuit.task],
        ["description", re.sub(r"``(.+?)``", r"\1", task.description) or "-"],
        ["nodes / total", f"{circuit.n_nodes} / {sum(circuit.sizes.values())}"],
        ["edges", circuit.n_edges],
        ["target loss", circuit.target_loss],
        ["circuit loss (val)", circuit.loss],
        ["circuit loss (test)", circuit.test_loss if circuit.test_loss is not None else "-"],
        ["full-model loss", circuit.full_loss],
        ["ablation", circuit.ablation + (", frozen norms" if circuit.freeze_norms else "")],
        ["model fingerprint", circuit.model_fingerprint],
    ]
    if circuit.calibrated_loss is not None:  # only when asked for (PruneConfig.calibrate)
        rows.append(["logit-calibrated loss (not a faithfulness measure)", circuit.calibrated_loss])
    if "prune_seconds" in circuit.extra:
        rows.append(["pruning time (s)", round(circuit.extra["prune_seconds"], 1)])
    if circuit.hparams.get("chosen"):
        rows.append(["chosen hyperparameters", json.dumps(circuit.hparams["chosen"])])
    return rows


def curve_plot(circuit: Circuit, png_dir: Path | None = None) -> str:
    """Task loss of the top-k nodes (by learned mask) against k, from the bisection."""
    pts = [(float(k), v) for k, v in circuit.curve if k > 0]
    title = f"{circuit.task}: task loss vs circuit size"
    fig = line_chart(
        [Series(name="bisection", points=sorted(pts), markers=True)],
        title=title,
        xlabel="nodes kept (log)",
        ylabel="task loss (log)",
        xlog=True,
        ylog=True,
        hlines=[(circuit.target_loss, "target"), (circuit.full_loss, "full model")],
        vlines=[(float(circuit.n_nodes), f"{circuit.n_nodes} nodes")],
    )
    return chart_html(fig, f"curve-{circuit.task}", title, png_dir)


def search_section(circuit: Circuit) -> str:
    """How the circuit was found: the search, nodes and edges after bisection and each
    clean-up stage (validation and test loss), the attribution baseline, and the seeds' core,
    union and Jaccard similarity."""
    parts = []
    search = circuit.hparams.get("search") or {}
    if search:
        keys = ("method", "trials", "complete", "pruned", "best_trial", "study")
        parts.append(table(["search", "value"], [[k, search[k]] for k in keys if k in search]))
    stages = circuit.extra.get("stages") or []
    if stages:
        rows = [
            [st["stage"], st["nodes"], st["edges"], st["val_loss"], st.get("test_loss", "-")]
            for st in stages
        ]
        parts.append(table(["after", "nodes", "edges", "val loss", "test loss"], rows))
    attr = circuit.extra.get("attribution")
    if attr:
        parts.append(
            table(
                ["attribution-ranked baseline", "value"],
                [
                    ["nodes / edges", f"{attr['nodes']} / {attr['edges']}"],
                    ["loss (val)", attr["loss"]],
                    ["learned / attribution nodes", attr["learned_over_attribution_nodes"]],
                    ["learned / attribution edges", attr["learned_over_attribution_edges"]],
                ],
            )
        )
    seeds = circuit.extra.get("seeds")
    if seeds:
        rows = [[f"seed {r['seed']}", r["nodes"], r["edges"], r["loss"]] for r in seeds["per_seed"]]
        parts.append(table(["circuit", "nodes", "edges", "val loss"], rows))
        parts.append(
            table(
                ["seeds", "value"],
                [
                    ["core (nodes in every circuit)", seeds["n_core"]],
                    ["union", seeds["n_union"]],
                    ["mean pairwise Jaccard", seeds["mean_jaccard"]],
                    *[[f"Jaccard {k}", v] for k, v in seeds["jaccard"].items()],
                    ["core nodes", ", ".join(seeds["core"]) or "-"],
                ],
            )
        )
    return "".join(parts) or '<p class="note">No search record in this circuit file.</p>'


def _faithfulness(report: dict[str, Any]) -> str:
    """The verdict table (check, status, value, threshold, reason), what it was computed on,
    then the measurements behind it."""
    on = report.get("computed_on", {})
    where = (
        f"Computed on the {on.get('split', '?')} split, n = {on.get('n', '?')} examples, "
        f"{on.get('ablation', '?')} ablation (source: {json.dumps(on.get('ablation_source'))}), "
        f"seed {on.get('seed', '?')}."
    )
    verdicts = report.get("verdicts", [])
    colour = {"pass": "good", "fail": "bad", "not run": "note"}
    rows = [
        [
            v["check"],
            RawHTML(f'<span class="{colour[v["status"]]}">{esc(v["status"].upper())}</span>'),
            v["value"],
            v["threshold"],
            v["reason"],
        ]
        for v in verdicts
    ]
    parts = [f'<p class="note">{esc(where)}</p>']
    if rows:
        parts.append(table(["check", "verdict", "value", "threshold", "why"], rows, "verdicts"))
    else:
        parts.append('<p class="note">This report predates verdicts (prune again).</p>')
    measured: list[list[Any]] = []
    for key in ("full_model_loss", "n_nodes"):
        if key in report:
            measured.append([key.replace("_", " "), report[key]])
    for key in ("sufficiency", "frozen_norms"):
        if isinstance(report.get(key), dict):
            measured += [[f"{key} {k}", v] for k, v in report[key].items()]
    agree = report.get("node_agreement")
    if isinstance(agree, dict):
        measured += [[f"node agreement {k}", v] for k, v in agree.items() if _number(v)]
    inter = report.get("interchange")
    if isinstance(inter, dict) and isinstance(inter.get("fractions"), dict):
        for k, v in inter["fractions"].items():
            measured.append(
                [f"interchange at fraction {k} (loss, KL)", f"{v['loss']:.4g}, {v['kl']:.4g}"]
            )
    part = report.get("partial_complement")
    if isinstance(part, dict):
        measured.append(["partial complement: worst loss", part["worst"]["loss"]])
        measured.append(["partial complement: median random loss", part["random_median"]])
        adv = ", ".join(f"{x:.4g}" for x in part["adversarial_losses"]) or "-"
        measured.append(["partial complement: adversarial losses", adv])
    mib = report.get("mib")
    if isinstance(mib, dict) and "cpr" in mib:
        measured += [["MIB CPR (higher is better)", mib["cpr"]], ["MIB CMD (lower is better)", mib["cmd"]]]  # fmt: skip
        measured.append(["MIB f of this circuit", mib["circuit_f"]])
    parts.append(table(["measurement", "value"], measured))
    return "".join(parts)


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def failed_banner(circuit: Circuit) -> str:
    """A warning naming the failed faithfulness checks, for the top of a circuit page ("" if
    none failed or there is no report)."""
    failed = circuit.extra.get("faithfulness", {}).get("failed", [])
    if not failed:
        return ""
    return (
        f'<p class="warn"><strong>This circuit fails {len(failed)} faithfulness check'
        f"{'s' if len(failed) > 1 else ''}: {esc(', '.join(failed))}.</strong> "
        '<a href="#faithfulness">Why</a></p>'
    )


def circuit_page(
    model: HookedSparseTransformer,
    circuit: Circuit,
    task: Task,
    windows: torch.Tensor,
    rcfg: ReportConfig | None = None,
    *,
    dot_name: str | None = None,
    back_link: str | None = None,
    progress: bool = False,
) -> tuple[str, dict[str, Any]]:
    """The HTML page of ``circuit`` and the numbers it shows (knockouts, sink mass).

    Raises:
        ValueError: ``model`` has no tokenizer.
    """
    rcfg = rcfg or ReportConfig()
    if model.tokenizer is None:
        raise ValueError("a circuit report needs a model with a tokenizer")
    tok = model.tokenizer
    batch = task_batch(task, tok, model.cfg.n_ctx, "test", rcfg.n_examples, rcfg.seed)
    page = Page(title=f"Circuit for {circuit.task}")
    if back_link:
        page.add(f'<nav><a href="{esc(back_link)}">← index</a></nav>')
    page.add(failed_banner(circuit))
    page.add(table(["", ""], _summary_rows(circuit, task)))

    attribution = attribution_effects(model, circuit, batch)
    refs = circuit.node_refs(model.cfg)
    by_estimate = sorted(refs, key=lambda r: -abs(attribution[r.label]))
    exact = [r.label for r in by_estimate[: rcfg.n_exact_knockouts]]
    loss, knockouts = knockout_effects(model, circuit, batch, exact)
    ranked = sorted(refs, key=lambda r: -abs(knockouts.get(r.label, attribution[r.label])))
    effects = {r.label: knockouts.get(r.label, attribution[r.label]) for r in refs}
    info = {r.label: {"effect": effects[r.label]} for r in refs}
    for r in refs:
        info[r.label]["ablation value"] = circuit.baselines[r.hook][r.channel]
        info[r.label]["attribution estimate"] = attribution[r.label]

    page.h2("Graph", "graph")
    legend = " ".join(f'<span style="color:{c}">●</span> {esc(k)}' for k, c in KIND_COLOUR.items())
    page.add(
        f'<p class="note">Bottom: layer 0; top: the final residual read. Node size: knockout '
        f"effect (task-loss increase when the node is also removed; circuit loss {loss:.3f} on "
        f"{len(batch)} test examples): exact for the {len(exact)} nodes with the largest "
        f"attribution-patching estimate, the estimate for the rest. Edges: blue positive, red negative weights, width "
        f"|w|; dashed: residual identity paths (not counted). Hover a node to isolate its edges."
        f"<br>{legend}</p>"
    )
    if dot_name:
        page.add(f'<p><a href="{esc(dot_name)}">Graphviz export ({esc(dot_name)})</a></p>')
    page.add(f'<div class="graph">{circuit_svg(circuit, model.cfg, info)}</div>{GRAPH_SCRIPT}')

    page.h2("Task loss vs circuit size", "curve")
    page.add(curve_plot(circuit))

    page.h2("Search, clean-up, seeds", "search")
    page.add(search_section(circuit))

    page.h2("Faithfulness", "faithfulness")
    if "faithfulness" in circuit.extra:
        page.add(_faithfulness(circuit.extra["faithfulness"]))
    else:
        page.p("No faithfulness report in this circuit file (prune with --faithfulness).", "note")

    examples = _class_examples(batch)
    sub = batch.subset(examples)
    heads_data = _heads_section(page, model, circuit, sub, rcfg, effects)

    page.h2("Nodes", "nodes")
    shown = ranked[: rcfg.max_node_panels]
    page.p(
        f"The {len(shown)} nodes with the largest knockout effect, of {len(refs)}. Corpus contexts "
        f"are {rcfg.n_windows} pretraining windows; values are the full model's.",
        "note",
    )
    corpus_vals = node_values(model, shown, windows)
    task_vals = node_values(model, shown, sub.tokens)
    for r in tqdm(shown, desc="node panels", disable=not progress):
        page.add(
            _node_panel(
                page,
                model,
                r.label,
                r.hook,
                effects[r.label],
                info,
                circuit,
                corpus_vals[r.label],
                windows,
                task_vals[r.label],
                sub,
                rcfg,
            )
        )
    data = {
        "task": circuit.task,
        "circuit_loss": loss,
        "knockout_effects": knockouts,
        "attribution_effects": attribution,
        "heads": heads_data,
        "n_panels": page.n_panels,
    }
    return page.render(), data


def _heads_section(
    page: Page,
    model: HookedSparseTransformer,
    circuit: Circuit,
    sub: TaskBatch,
    rcfg: ReportConfig,
    effects: dict[str, float],
) -> list[dict[str, Any]]:
    page.h2("Attention heads", "heads")
    patterns, sinks = circuit_patterns(model, circuit, sub.tokens)
    if not patterns:
        page.p("The circuit keeps no q/k/v channel: no attention head takes part.", "note")
        return []
    rows, data = [], []
    for (layer, head), sink in sinks.items():
        last = sink[torch.arange(len(sub)), sub.last]
        entry = {
            "head": f"L{layer}H{head}",
            "sink_mass_last": float(last.mean()),
            "sink_mass_mean": float(sink.mean()),
        }
        data.append(entry)
        rows.append([entry["head"], entry["sink_mass_last"], entry["sink_mass_mean"]])
    page.add(
        table(["head", "sink mass at answer position", "sink mass, all positions"], rows)
        + '<p class="note">Patterns as run by the circuit (removed nodes ablated). Sink mass is '
        "the attention a query gives to the sink (nothing); rows of a pattern sum to 1 minus it.</p>"
    )
    weight = {h: 0.0 for h in patterns}
    for r in circuit.node_refs(model.cfg):
        if r.head is not None:
            weight[(r.layer, r.head)] += abs(effects[r.label])
    chosen = sorted(sorted(patterns, key=lambda h: -weight[h])[: rcfg.max_heads])
    if len(chosen) < len(patterns):
        page.p(
            f"Showing the {len(chosen)} heads (of {len(patterns)}) whose q/k/v nodes have the "
            "largest summed knockout effect.",
            "note",
        )
    for i in range(len(sub)):
        n = int(sub.last[i]) + 1
        attn = torch.stack([patterns[h][i, :n, :n] for h in chosen])
        names = [
            f"L{layer}H{head} (sink {float(sinks[(layer, head)][i, n - 1]):.2f})"
            for layer, head in chosen
        ]
        page.add(
            f"<h3>Example answering {esc(repr(model.require_tokenizer().token_str(int(sub.correct[i]))))}</h3>"
        )
        page.add(
            page.circuitsvis(
                circuitsvis.attention.attention_heads,
                attention=attn,
                tokens=_tokens_of(model, sub, i),
                attention_head_names=names,
            )
        )
    return data


def _node_panel(
    page: Page,
    model: HookedSparseTransformer,
    label: str,
    hook: str,
    effect: float,
    info: dict[str, dict[str, float]],
    circuit: Circuit,
    corpus: torch.Tensor,
    windows: torch.Tensor,
    task_vals: torch.Tensor,
    sub: TaskBatch,
    rcfg: ReportConfig,
) -> str:
    tok = model.require_tokenizer()
    n_in = sum(1 for _, d, _ in circuit.edges if d == label)
    n_out = sum(1 for s, _, _ in circuit.edges if s == label)
    parts = [
        f'<div class="node-panel" data-node="{esc(label)}"><h3>{esc(label)}</h3>'
        f'<p class="note"><code>{esc(hook)}</code> · knockout effect {effect:+.4f} '
        f"(attribution estimate {info[label]['attribution estimate']:+.4f}) · "
        f"ablation value {info[label]['ablation value']:.4g} · {n_in} edges in, {n_out} out</p>"
    ]
    skip = (tok.eot_id,) if rcfg.contexts_exclude_separators else ()
    ctx = top_contexts(
        corpus, windows, lambda ids: tok.token_str(ids[0]), k=rcfg.n_contexts, exclude_ids=skip
    )
    parts.append("<b>Top pretraining contexts</b> (|value|, peak at the last but three tokens)")
    parts.append(
        page.circuitsvis(
            circuitsvis.topk_samples.topk_samples,
            tokens=[[[c.tokens for c in ctx]]],
            activations=[[[c.values for c in ctx]]],
            zeroth_dimension_name="Node",
            first_dimension_name="Channel",
            zeroth_dimension_labels=[label],
            first_dimension_labels=[hook],
        )
    )
    parts.append("<b>On the task</b>")
    for i in range(len(sub)):
        n = int(sub.last[i]) + 1
        answer = tok.token_str(int(sub.correct[i]))
        parts.append(f'<p class="note">answer {esc(repr(answer))}</p>')
        parts.append(
            page.circuitsvis(
                circuitsvis.tokens.colored_tokens,
                tokens=_tokens_of(model, sub, i),
                values=task_vals[i, :n].tolist(),
            )
        )
    parts.append("</div>")
    return "".join(parts)


# -- index page and training curves -----------------------------------------------------------


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a run's ``metrics.jsonl`` (malformed lines raise, naming the line).

    Raises:
        ValueError: a line is not JSON (``path:line`` named).
    """
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: not JSON ({e})") from e
    return out


def training_plots(records: list[dict[str, Any]], png_dir: Path | None = None) -> str:
    """Loss, L0 and learning-rate curves of a run (PNGs into ``png_dir`` when given)."""
    if not records:
        return '<p class="note">no metrics recorded</p>'

    def pts(key: str) -> list[tuple[float, float]]:
        return [(float(r["step"]), float(r[key])) for r in records if key in r]

    loss = line_chart(
        [
            Series(name="train", points=pts("train_loss")),
            Series(name="val", points=pts("val_loss")),
        ],
        title="Loss",
        xlabel="step",
        ylabel="cross-entropy (nats)",
    )
    l0 = line_chart(
        [Series(name="L0 total", points=pts("l0_total"))],
        title="Nonzero parameters",
        xlabel="step",
        ylabel="L0",
        ylog=True,
    )
    lr = line_chart(
        [Series(name="lr", points=pts("lr"))], title="Learning rate", xlabel="step", ylabel="lr"
    )
    return (
        chart_html(loss, "training-loss", "Loss", png_dir)
        + chart_html(l0, "training-l0", "Nonzero parameters", png_dir)
        + chart_html(lr, "training-lr", "Learning rate", png_dir)
    )


def task_section(task_table: dict[str, dict[str, Any]], png_dir: Path | None = None) -> str:
    rows = sorted(task_table.items(), key=lambda kv: kv[1]["loss"])
    title = "Task loss of the full model (test split)"
    fig = bar_chart(
        [(name, r["loss"]) for name, r in rows],
        title=title,
        xlabel="binary cross-entropy (ln 2 = chance)",
        reference=(math.log(2), "chance"),
    )
    chart = chart_html(fig, "task-loss", title, png_dir)
    body = table(
        ["task", "loss", "accuracy", "n"],
        [[name, r["loss"], r["accuracy"], r.get("n", "-")] for name, r in rows],
    )
    return chart + body


def index_page(
    *,
    title: str,
    run_info: dict[str, Any] | None,
    metrics: list[dict[str, Any]] | None,
    task_table: dict[str, dict[str, Any]] | None,
    circuits: list[tuple[Circuit, str]],
    notes: Sequence[str] = (),
    png_dir: Path | None = None,
) -> str:
    """The summary page: run facts, training curves, task table, circuits (with page links);
    every chart is inline SVG, and a PNG in ``png_dir`` when given."""
    page = Page(title=title)
    for note in notes:
        page.p(note, "note")
    if run_info:
        cfg = run_info.get("model_config", {})
        facts = [
            [k, cfg[k]]
            for k in (
                "n_layers",
                "d_model",
                "n_heads",
                "d_head",
                "d_mlp",
                "n_ctx",
                "d_vocab",
                "weight_density",
                "embed_density",
                "afrac",
                "act_sparse_sites",
                "attn_sinks",
            )
            if k in cfg
        ]
        facts = [[k, ", ".join(v) if isinstance(v, list) else v] for k, v in facts]
        facts += [["preset", run_info.get("preset", "-")]]
        corpus = run_info.get("corpus", {})
        facts += [["corpus", f"{corpus.get('source', '-')} ({corpus.get('fingerprint', '-')})"]]
        tcfg = run_info.get("train_config", {})
        if tcfg:
            tokens = tcfg["steps"] * tcfg["batch_size"] * cfg.get("n_ctx", 0)
            facts += [["training", f"{tcfg['steps']} steps x {tcfg['batch_size']} windows"]]
            facts += [["tokens", f"{tokens:,}"]]
            share = recorded_idiom_frac(run_info)
            facts += [["idiom share", f"{share:.0%} of each batch"]]
        page.h2("Model", "model")
        page.add(table(["", ""], facts))
    if metrics is not None:
        page.h2("Training", "training")
        page.add(training_plots(metrics, png_dir))
    if task_table:
        page.h2("Tasks", "tasks")
        page.add(task_section(task_table, png_dir))
    page.h2("Circuits", "circuits")
    if not circuits:
        page.p("No circuits.", "note")
    rows = [
        [
            RawHTML(f'<a href="{esc(link)}">{esc(c.task)}</a>'),
            c.n_nodes,
            c.n_edges,
            c.target_loss,
            c.loss,
            c.test_loss if c.test_loss is not None else "-",
            c.full_loss,
        ]
        for c, link in circuits
    ]
    page.add(
        table(["task", "nodes", "edges", "target", "loss (val)", "loss (test)", "full model"], rows)
    )
    if circuits:
        series = [
            Series(name=c.task, points=sorted((float(k), v) for k, v in c.curve if k > 0))
            for c, _ in circuits
        ]
        fig = line_chart(
            series,
            title="Task loss vs circuit size",
            xlabel="nodes kept (log)",
            ylabel="task loss (log)",
            xlog=True,
            ylog=True,
        )
        page.add(chart_html(fig, "circuit-sizes", "Task loss vs circuit size", png_dir))
    return page.render()
