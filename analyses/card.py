"""A circuit card as Markdown: ``card_markdown(card)`` renders a ``CircuitCard``
(``sparse_lens.circuits.explain``) like a figure caption, then its evidence.

Sections: the summary; what every number was computed on; the stages in the order information
flows, one generated caption per node (nodes with no measurable role collapsed into one line
per stage); the heads; a table of every node's numbers; the top pretraining contexts of the
nodes with a role; the role rules and their thresholds (arXiv 2511.13653, Fig. 4 roles).
"""

from typing import Any

from sparse_lens.circuits.explain import (
    Attention,
    CircuitCard,
    Contrast,
    NodeExplanation,
    sample_text,
)

NONE = "no measurable role"
MAX_CONTEXT_NODES = 12


def cell(text: str) -> str:
    """``text`` safe inside a Markdown table cell (pipes escaped)."""
    return text.replace("|", "\\|")


def code(text: str) -> str:
    """``text`` as inline code (doubled backticks when it holds one)."""
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _num(value: float | None, fmt: str = "+.3f") -> str:
    if value is None:
        return "-"
    if value != value or abs(value) == float("inf"):
        return "inf" if value == float("inf") else "-inf" if value < 0 else "nan"
    return format(value, fmt)


def _provenance(card: CircuitCard) -> str:
    p = card.provenance
    source = p.get("ablation_source") or {}
    ablation = f"{p['ablation']} ablation" + (
        f" (means over {source.get('data')}, {source.get('n_tokens')} tokens)"
        if source.get("data")
        else ""
    )
    return "\n".join(
        [
            f"- **Task examples:** `{card.task}`, split {p['split']}, n={p['n_examples']} "
            f"(classes by {p['classes_by']}: {card.class_text[0] or code(card.classes[0])} vs "
            f"{card.class_text[1] or code(card.classes[1])}); "
            f"seed {p['seed']}.",
            f"- **Circuit:** {card.n_nodes} nodes, {card.n_edges} edges; {ablation}; norms "
            f"{p['norms']}. Task loss: circuit {card.losses['circuit']:.3f}, full model "
            f"{card.losses['full']:.3f}, empty circuit {card.losses['empty']:.3f}.",
            f"- **Contrasts:** {p['contrasts']}; in units of {p['sd_unit']}; "
            f"{p['n_permutations']} permutations per test.",
            f"- **Knockouts:** {p['knockouts']}. **Direct effects:** {p['direct_effects']}.",
            f"- **Pretraining sample:** {sample_text(p.get('pretraining_sample'))}.",
        ]
    )


def _bold_name(caption: str) -> str:
    name, sep, rest = caption.partition(": ")
    return f"**{name}**{sep}{rest}" if sep else caption


def _stages(card: CircuitCard) -> str:
    nodes = {n.label: n for n in card.nodes}
    out = []
    for st in card.stages:
        out.append(f"### {st.index + 1}. {st.name}\n")
        quiet = [nodes[lab] for lab in st.nodes if nodes[lab].role == NONE]
        out += [
            f"- {_bold_name(nodes[lab].caption)}" for lab in st.nodes if nodes[lab].role != NONE
        ]
        if quiet:
            names = ", ".join(code(n.label) for n in quiet)
            out.append(f"- {len(quiet)} node(s) with {NONE}: {names}.")
        out.append("")
    return "\n".join(out)


def _attention_cell(att: Attention) -> str:
    return f"{att.top_class} {att.top_share:.0%} (x{att.lift:.1f} uniform), sink {att.sink:.0%}"


def _heads(card: CircuitCard) -> str:
    if not card.heads:
        return "The circuit keeps no query, key or value channel.\n"
    rows = [
        "| head | role | kept nodes | circuit: from the answer position | full model |",
        "|---|---|---|---|---|",
    ]
    for h in card.heads:
        rows.append(
            f"| {h.label} | {h.role} | {', '.join(h.nodes)} | {_attention_cell(h.circuit)} | "
            f"{_attention_cell(h.full)} |"
        )
    captions = "\n".join(f"- {_bold_name(h.caption)}" for h in card.heads)
    return "\n".join(rows) + "\n\n" + captions + "\n"


def _best(contrasts: tuple[Contrast, ...]) -> str:
    if not contrasts:
        return "-"
    c = min(contrasts, key=lambda c: (c.p_value, -abs(c.contrast_sd)))
    return f"{c.where}: {_num(c.contrast_sd, '+.1f')} sd, p={c.p_value:.2g}"


def _row(n: NodeExplanation) -> str:
    pos = n.position_contrast
    position = f"{_num(pos.contrast_sd, '+.1f')} sd, p={pos.p_value:.2g}" if pos else "-"
    direct = (
        "-"
        if n.direct_effect_circuit is None
        else f"{_num(n.direct_effect_circuit, '+.2f')} / {_num(n.direct_effect_full, '+.2f')}"
    )
    top = "-"
    if n.corpus is not None and n.corpus.top_tokens:
        top = f"{code(n.corpus.top_tokens[0][0])} ({n.corpus.selectivity:.0%})"
    cells = [
        code(n.label),
        n.role,
        _num(n.knockout_circuit),
        _num(n.knockout_full),
        _best(n.contrasts),
        _best(n.full_contrasts),
        position,
        direct,
        top,
    ]
    return "| " + " | ".join(cell(c) for c in cells) + " |"


def _nodes(card: CircuitCard) -> str:
    head = (
        "| node | role | knockout (circuit) | knockout (full) | class contrast (circuit) | "
        "class contrast (full) | position contrast | direct effect (circuit / full) | "
        "top pretraining token (selectivity) |\n|---|---|---|---|---|---|---|---|---|"
    )
    return head + "\n" + "\n".join(_row(n) for n in card.nodes) + "\n"


def _contexts(card: CircuitCard) -> str:
    shown = [n for n in card.nodes if n.role != NONE and n.corpus is not None]
    if not shown:
        return "No pretraining sample was given, or no node has a role.\n"
    shown = sorted(shown, key=lambda n: -abs(n.knockout_circuit))[:MAX_CONTEXT_NODES]
    out = []
    for n in shown:
        contexts = n.corpus.contexts if n.corpus is not None else ()
        out.append(f"- **{n.name}** ({n.role}):")
        for c in contexts:
            text = "".join(f"[[{t}]]" if i == c.peak else t for i, t in enumerate(c.tokens))
            out.append(f"  - {code(text)} (value {c.value:+.2f}, window {c.window})")
    return "\n".join(out) + "\n"


def _rules(card: CircuitCard) -> str:
    r: dict[str, Any] = card.rules
    lines = [f"{i}" for i in r["rules"]]
    thresholds = (
        f"Significant: Benjamini-Hochberg q (over every contrast of the card, from permutation "
        f"p-values) < {r['alpha']} and |contrast| >= {r['min_contrast_sd']} sd. "
        f"Measurable knockout: >= {r['knockout_threshold_nats']:.3g} nats (the larger of "
        f"{r['min_knockout_nats']} and {r['knockout_share']:.0%} of the empty-circuit gap). "
        f"Source: >= {r['attention_share']:.0%} of a head's attention, >= {r['min_lift']}x "
        f"uniform. Output: |direct effect| >= {r['min_direct_effect_logits']} logits."
    )
    return "First rule that holds:\n\n" + "\n".join(lines) + "\n\n" + thresholds + "\n"


def card_markdown(card: CircuitCard) -> str:
    """The card as one Markdown document (module docstring)."""
    parts = [f"# Circuit card: `{card.task}`\n"]
    parts += [f"> **Warning:** {w}\n" for w in card.warnings]
    parts += [
        card.summary + "\n",
        "## Computed on\n",
        _provenance(card) + "\n",
        "## Stages (in the order information flows)\n",
        _stages(card),
        "## Heads\n",
        _heads(card),
        "## Every node\n",
        _nodes(card),
        "## Pretraining contexts (peak token in [[ ]])\n",
        _contexts(card),
        "## Role rules\n",
        _rules(card),
    ]
    return "\n".join(parts)
