"""The circuit page, rendered from its data alone (``CircuitPageData``; no model, no tensors).

Sections: a banner naming failed faithfulness checks, the circuit's summary, the circuit card
(the explain card's summary and its stages with generated captions, one collapsible block per
stage), the graph (the core view, and the full graph one click away:
``sparse_lens.circuits.graph_view``), task loss against circuit size from the bisection, the search
record, the faithfulness report, the heads (attention patterns on task examples with their sink
mass) and a panel per important node (top pretraining contexts, values on the task). The data
comes from ``analyses.report.circuit_page_data``.
"""

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from analyses.html import Page, RawHTML, esc, table
from analyses.page_data import CircuitFacts, CircuitPageData, HeadsData, NodePanelData
from analyses.plots import Series, chart_html, line_chart
from sparse_lens.circuits.graph_view.card_html import card_html
from sparse_lens.circuits.graph_view.sections import graph_section
from sparse_lens.circuits.graph_view.svg import GRAPH_SCRIPT, KIND_COLOUR


def render_circuit_page(
    data: CircuitPageData, *, dot_name: str | None = None, back_link: str | None = None
) -> str:
    """The HTML page of ``data``; ``dot_name`` links the Graphviz export beside the page,
    ``back_link`` the index page."""
    facts = data.facts
    page = Page(title=f"Circuit for {facts.task}")
    if back_link:
        page.add(f'<nav><a href="{esc(back_link)}">← index</a></nav>')
    page.add(failed_banner(facts.failed_checks) + unchecked_banner(facts.unchecked))
    page.add(table(["", ""], _summary_rows(facts)))
    _card_section(page, data)
    _graph_section(page, data, dot_name)
    page.h2("Task loss vs circuit size", "curve")
    page.add(curve_plot(facts))
    page.h2("Search, clean-up, seeds", "search")
    page.add(search_section(facts))
    page.h2("Faithfulness", "faithfulness")
    if facts.faithfulness is not None:
        page.add(faithfulness_section(facts.faithfulness))
    else:
        page.p("No faithfulness report in this circuit file (prune with --faithfulness).", "note")
    _heads_section(page, data.heads)
    page.h2("Nodes", "nodes")
    corpus = data.windows_sample or f"{data.n_windows} pretraining windows"
    page.p(
        f"The {len(data.panels)} nodes with the largest knockout effect, of {facts.n_nodes}. "
        f"Corpus contexts come from {corpus}; values are the full model's.",
        "note",
    )
    for panel in data.panels:
        page.add(_node_panel(page, panel))
    return page.render()


def unchecked_banner(unchecked: tuple[str, ...]) -> str:
    """A warning that the circuit file lacked the digests ``unchecked`` (so its numbers there
    may have been edited by hand), for the top of a circuit page ("" if none)."""
    if not unchecked:
        return ""
    return (
        '<p class="warn"><strong>Unchecked file:</strong> this circuit file carries no digest '
        f"of its {esc(', '.join(unchecked))}, so those numbers could not be checked against its "
        "nodes on load (an older file, or one edited by hand). Prune again to trust them.</p>"
    )


def failed_banner(failed: tuple[str, ...] | list[str]) -> str:
    """A warning naming the ``failed`` faithfulness checks, for the top of a circuit page (""
    if none failed)."""
    if not failed:
        return ""
    return (
        f'<p class="warn"><strong>This circuit fails {len(failed)} faithfulness check'
        f"{'s' if len(failed) > 1 else ''}: {esc(', '.join(failed))}.</strong> "
        '<a href="#faithfulness">Why</a></p>'
    )


def _split(name: str, n: Any) -> str:
    """``validation split, n = 128`` (without the n when the file does not record it)."""
    return f"{name} split" + (f", n = {n}" if n is not None else "")


def _summary_rows(facts: CircuitFacts) -> list[list[Any]]:
    rows = [
        ["task", facts.task],
        ["description", re.sub(r"``(.+?)``", r"\1", facts.description) or "-"],
        ["nodes / total", f"{facts.n_nodes} / {facts.n_total}"],
        ["edges", facts.n_edges],
        ["target loss", facts.target_loss],
        [
            f"circuit loss (the pruner's validation examples: {_split('val', facts.n_val)})",
            facts.loss,
        ],
        [
            f"full-model loss (the pruner's validation examples: {_split('val', facts.n_val)})",
            facts.full_loss,
        ],
        [
            f"circuit loss ({_split('test', facts.n_test)})",
            facts.test_loss if facts.test_loss is not None else "-",
        ],
        ["ablation", facts.ablation + (", frozen norms" if facts.freeze_norms else "")],
        ["model fingerprint", facts.model_fingerprint],
    ]
    faith = facts.faithfulness or {}
    if faith.get("full_model_loss") is not None:
        on = faith.get("computed_on", {})
        split = _split(on.get("split", "test"), on.get("n"))
        rows.append(
            [f"full-model loss ({split}, as the faithfulness checks)", faith["full_model_loss"]]
        )
    if facts.calibrated_loss is not None:  # only when asked for (PruneConfig.calibrate)
        rows.append(["logit-calibrated loss (not a faithfulness measure)", facts.calibrated_loss])
    if facts.prune_seconds is not None:
        rows.append(["pruning time (s)", round(facts.prune_seconds, 1)])
    if facts.chosen_hparams:
        rows.append(["chosen hyperparameters", settings_text(facts.chosen_hparams)])
    return rows


def _card_section(page: Page, data: CircuitPageData) -> None:
    page.h2("Circuit card", "card")
    if data.card is None:
        page.p(f"No circuit card: {data.card_note}", "note")
        return
    page.add(card_html(data.card))
    page.p(
        "Generated by explain (sparse-lens explain writes the whole card, with every node's "
        "numbers and the role rules, as JSON and Markdown).",
        "note",
    )


def _graph_section(page: Page, data: CircuitPageData, dot_name: str | None) -> None:
    page.h2("Graph", "graph")
    legend = " ".join(f'<span style="color:{c}">■</span> {esc(k)}' for k, c in KIND_COLOUR.items())
    page.add(
        '<p class="note">Left to right: the forward pass, one column per layer and site '
        "(residual reads, q/k/v, writes, MLP neurons). Box outline: the node's site. Hover a box "
        "for its label, role and knockout effect (task-loss increase when the node is also "
        f"removed; circuit loss {data.circuit_loss:.3f} on {data.n_test} test examples; exact "
        f"for the {data.n_exact} nodes with the largest attribution-patching estimate, the "
        f"estimate for the rest) and to isolate its edges.<br>{legend}</p>"
    )
    if dot_name:
        page.add(f'<p><a href="{esc(dot_name)}">Graphviz export ({esc(dot_name)})</a></p>')
    page.add(graph_section(data.graph, data.node_info) + GRAPH_SCRIPT)


def curve_plot(facts: CircuitFacts, png_dir: Path | None = None) -> str:
    """Task loss of the top-k nodes (by learned mask) against k, from the bisection."""
    pts = [(float(k), v) for k, v in facts.curve if k > 0]
    title = f"{facts.task}: task loss vs circuit size"
    fig = line_chart(
        [Series(name="bisection", points=sorted(pts), markers=True)],
        title=title,
        xlabel="nodes kept (log)",
        ylabel="task loss (log)",
        xlog=True,
        ylog=True,
        hlines=[(facts.target_loss, "target"), (facts.full_loss, "full model")],
        vlines=[(float(facts.n_nodes), f"{facts.n_nodes} nodes")],
    )
    note = (
        '<p class="note">Each point: the validation loss with the k nodes of largest learned '
        "mask kept and every other node ablated, as the bisection tried them (one mask, so the "
        "curve need not fall as k grows: nodes the mask ranks low were trained to be ablated, "
        "and keeping them can raise the loss).</p>"
    )
    return chart_html(fig, f"curve-{facts.task}", title, png_dir) + note


def search_section(facts: CircuitFacts) -> str:
    """How the circuit was found: the search, nodes and edges after bisection and each
    clean-up stage (validation and test loss), the attribution baseline, and the seeds' core,
    union and Jaccard similarity."""
    parts = []
    search = facts.search or {}
    if search:
        keys = ("method", "trials", "complete", "pruned", "best_trial", "study")
        rows = [[label(k), search[k]] for k in keys if k in search]
        parts.append(table(["search", "value"], rows))
    if facts.stages:
        rows = [
            [st["stage"], st["nodes"], st["edges"], st["val_loss"], st.get("test_loss", "-")]
            for st in facts.stages
        ]
        parts.append(table(["after", "nodes", "edges", "val loss", "test loss"], rows))
    if facts.attribution:
        parts.append(_attribution_table(facts.attribution))
    if facts.seeds:
        parts.append(_seeds_tables(facts.seeds))
    return "".join(parts) or '<p class="note">No search record in this circuit file.</p>'


def _attribution_table(attr: Mapping[str, Any]) -> str:
    return table(
        ["attribution-ranked baseline", "value"],
        [
            ["nodes / edges", f"{attr['nodes']} / {attr['edges']}"],
            ["loss (val)", attr["loss"]],
            ["learned / attribution nodes", attr["learned_over_attribution_nodes"]],
            ["learned / attribution edges", attr["learned_over_attribution_edges"]],
        ],
    )


def _seeds_tables(seeds: Mapping[str, Any]) -> str:
    rows = [[f"seed {r['seed']}", r["nodes"], r["edges"], r["loss"]] for r in seeds["per_seed"]]
    return table(["circuit", "nodes", "edges", "val loss"], rows) + table(
        ["seeds", "value"],
        [
            ["core (nodes in every circuit)", seeds["n_core"]],
            ["union", seeds["n_union"]],
            ["mean pairwise Jaccard", seeds["mean_jaccard"]],
            *[[f"Jaccard {k}", v] for k, v in seeds["jaccard"].items()],
            ["core nodes", ", ".join(seeds["core"]) or "-"],
        ],
    )


def settings_text(settings: Mapping[str, Any]) -> str:
    """``name value, name value`` of a flat settings dict, numbers to 3 significant digits."""
    return ", ".join(
        f"{k} {format(v, '.3g') if isinstance(v, float) else v}" for k, v in settings.items()
    )


def ablation_source_text(source: Any) -> str:  # noqa: ANN401 - a JSON value from the file
    """Where the ablation values came from, in words: the windows' data, split, count and seed,
    the idiom share of the training mix, and the windows' digest; anything else as JSON."""
    if not isinstance(source, Mapping):
        return f"source: {json.dumps(source)}"
    win = source.get("windows")
    if not isinstance(win, Mapping):
        return f"source: {json.dumps(source)}"
    idioms = win.get("idioms") if isinstance(win.get("idioms"), Mapping) else {}
    kinds = ", ".join(idioms.get("kinds", [])) if idioms else ""
    mix = f", {win['idiom_frac']:.0%} idioms ({kinds})" if win.get("idiom_frac") else ""
    return (
        f"means over {source.get('n_windows', '?')} {source.get('data', 'windows')} of "
        f"{win.get('n_ctx', '?')} tokens ({source.get('n_tokens', '?')} tokens counted): "
        f"{win.get('distribution', '?')}{mix}, {win.get('split', '?')} split, seed "
        f"{win.get('seed', '?')}, sha256 {win.get('sha256', '?')}"
    )


def faithfulness_section(report: Mapping[str, Any]) -> str:
    """The verdict table (check, status, value, threshold, reason), what it was computed on,
    then the measurements behind it."""
    on = report.get("computed_on", {})
    where = (
        f"Computed on the {on.get('split', '?')} split, n = {on.get('n', '?')} examples, "
        f"{on.get('ablation', '?')} ablation ({ablation_source_text(on.get('ablation_source'))}), "
        f"seed {on.get('seed', '?')}."
    )
    colour = {"pass": "good", "fail": "bad", "not run": "note"}
    rows = [
        [
            v["check"],
            RawHTML(f'<span class="{colour[v["status"]]}">{esc(v["status"].upper())}</span>'),
            "-" if v["status"] == "not run" else v["value"],  # no verdict rests on it
            v["threshold"],
            _why(v, report),
        ]
        for v in report.get("verdicts", [])
    ]
    parts = [f'<p class="note">{esc(where)}</p>']
    if rows:
        parts.append(table(["check", "verdict", "value", "threshold", "why"], rows, "verdicts"))
    else:
        parts.append('<p class="note">This report predates verdicts (prune again).</p>')
    parts.append(table(["measurement", "value"], _measurements(report)))
    return "".join(parts)


def _why(v: Mapping[str, Any], report: Mapping[str, Any]) -> str:
    """A verdict's reason; specificity's with the split and n of the other task's pairs it ran
    on (the section's split and n are the circuit's own task's)."""
    spec = report.get("specificity")
    if v["check"] != "specificity" or v["status"] == "not run" or not isinstance(spec, Mapping):
        return v["reason"]
    if "split" not in spec:
        return f"{v['reason']} (its split and n are not recorded: a file from before they were)"
    return f"{v['reason']} ({_split(spec['split'], spec.get('n'))})"


# Every key of a circuit file the page shows, in words: the faithfulness report's checks,
# measurements and the parts of a measured run (sparse_lens.circuits.faithfulness, .checks),
# and the search record (sparse_lens.circuits.find). A key missing here shows with spaces for
# its underscores.
LABELS: dict[str, str] = {
    "full_model_loss": "full-model loss",
    "n_nodes": "nodes kept",
    "sufficiency": "circuit alone",
    "frozen_norms": "circuit with norm scales frozen at the full model's",
    "norm_scale": "final-norm scale check",
    "logit_diff": "logit-difference check",
    "node_agreement": "node agreement",
    "interchange": "interchange",
    "partial_complement_random": "partial complement, random parts",
    "partial_complement_adversarial": "partial complement, adversarial parts",
    "loss": "task loss",
    "delta_loss": "task loss minus the full model's",
    "kl": "KL(full model, circuit) on the two candidates (nats)",
    "logit_diff_ratio": "logit difference, circuit / full model",
    "norm_scale_ratio": "final-norm scale, circuit / full model",
    "mean": "mean correlation with the full model",
    "min": "lowest correlation",
    "fraction_below_0.5": "fraction of nodes with correlation below 0.5",
    "fvu_median": "median FVU (fraction of variance unexplained)",
    "fvu_max": "largest FVU",
    "fraction_fvu_above_0.5": "fraction of nodes with FVU above 0.5",
    "method": "method",
    "trials": "trials in the study",
    "complete": "trials completed",
    "pruned": "trials stopped early (pruned)",
    "best_trial": "number of the best trial",
    "study": "study name",
}


def label(key: str) -> str:
    """``key`` of a circuit file in words (:data:`LABELS`)."""
    return LABELS.get(key, key.replace("_", " "))


def _measurements(report: Mapping[str, Any]) -> list[list[Any]]:
    """The faithfulness report's numbers, one ``[name, value]`` row each; the rows of a check
    whose verdict is "not run" give way to one line saying so."""
    not_run = {v["check"] for v in report.get("verdicts", []) if v.get("status") == "not run"}
    rows: list[list[Any]] = []
    said: set[str] = set()
    for check, name, value in _measured(report):
        if check is None or check not in not_run:
            rows.append([name, value])
        elif check not in said:
            said.add(check)
            rows.append([label(check), f"not run (see the {check} verdict above)"])
    mib = report.get("mib")
    if isinstance(mib, Mapping) and "not_run" in mib:
        rows.append(["MIB faithfulness curve", f"not run: {mib['not_run']}"])
    return rows


# the check whose verdict a measured number backs, where it is not its group's own
_CHECK_OF = {"logit_diff_ratio": "logit_diff", "norm_scale_ratio": "norm_scale"}


def _measured(report: Mapping[str, Any]) -> list[tuple[str | None, str, Any]]:
    """``(check, name, value)`` of each number of the faithfulness report the page shows;
    ``check``: the verdict it backs (None: no verdict's alone)."""
    out: list[tuple[str | None, str, Any]] = []
    for key in ("full_model_loss", "n_nodes"):
        if key in report:
            out.append((None, label(key), report[key]))
    for group in ("sufficiency", "frozen_norms"):
        if isinstance(report.get(group), Mapping):
            for k, v in report[group].items():
                check = _CHECK_OF.get(k, group) if group == "sufficiency" else group
                out.append((check, f"{label(group)}: {label(k)}", v))
    agree = report.get("node_agreement")
    if isinstance(agree, Mapping):
        out += [("node_agreement", f"{label('node_agreement')}: {label(k)}", v)
                for k, v in agree.items() if _number(v)]  # fmt: skip
    inter = report.get("interchange")
    if isinstance(inter, Mapping) and isinstance(inter.get("fractions"), Mapping):
        for k, v in inter["fractions"].items():
            name = f"interchange at fraction {k} (loss, KL)"
            out.append(("interchange", name, f"{v['loss']:.4g}, {v['kl']:.4g}"))
    part = report.get("partial_complement")
    if isinstance(part, Mapping):
        adv = ", ".join(f"{x:.4g}" for x in part["adversarial_losses"]) or "-"
        out += [
            ("partial_complement_random", "partial complement: worst loss", part["worst"]["loss"]),
            ("partial_complement_random", "partial complement: median random loss",
             part["random_median"]),
            ("partial_complement_adversarial", "partial complement: adversarial losses", adv),
        ]  # fmt: skip
    mib = report.get("mib")
    if isinstance(mib, Mapping) and "cpr" in mib:
        out += [(None, "MIB CPR (higher is better)", mib["cpr"]),
                (None, "MIB CMD (lower is better)", mib["cmd"]),
                (None, "MIB f of this circuit", mib["circuit_f"])]  # fmt: skip
    return out


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _heads_section(page: Page, heads: HeadsData) -> None:
    page.h2("Attention heads", "heads")
    if not heads.n_heads:
        page.p("The circuit keeps no q/k/v channel: no attention head takes part.", "note")
        return
    rows = [[h.head, h.sink_mass_last, h.sink_mass_mean] for h in heads.sinks]
    page.add(
        table(["head", "sink mass at answer position", "sink mass, all positions"], rows)
        + '<p class="note">Patterns as run by the circuit (removed nodes ablated). Sink mass is '
        "the attention a query gives to the sink (nothing); rows of a pattern sum to 1 minus it.</p>"
    )
    if heads.n_shown < heads.n_heads:
        page.p(
            f"Showing the {heads.n_shown} heads (of {heads.n_heads}) whose q/k/v nodes have the "
            "largest summed knockout effect.",
            "note",
        )
    for example in heads.examples:
        page.add(f"<h3>Example answering {esc(repr(example.answer))}</h3>")
        page.add(page.panel(example.view))


def _node_panel(page: Page, panel: NodePanelData) -> str:
    parts = [
        f'<div class="node-panel" data-node="{esc(panel.label)}"><h3>{esc(panel.label)}</h3>'
        f'<p class="note"><code>{esc(panel.hook)}</code> · knockout effect {panel.effect:+.4f} '
        f"(attribution estimate {panel.attribution:+.4f}) · "
        f"ablation value {panel.ablation_value:.4g} · {panel.n_in} edges in, {panel.n_out} out</p>"
    ]
    parts.append(
        "<b>Top pretraining contexts</b> (colour: the node's value; each context ends 3 tokens "
        "after the token where |value| peaks, fewer where its window ends)"
    )
    parts.append(page.panel(panel.contexts))
    parts.append("<b>On the task</b>")
    for example in panel.on_task:
        parts.append(f'<p class="note">answer {esc(repr(example.answer))}</p>')
        parts.append(page.panel(example.view))
    parts.append("</div>")
    return "".join(parts)
