"""An explain card as an HTML section (torch-free): the summary, then one collapsible block per
stage in the order information flows, each with its nodes' generated captions (nodes with no
measurable role in one line), then the heads' captions.

``CardView`` holds what the section shows as plain strings; ``card_view`` takes it from a
``CircuitCard`` (``sparse_lens.circuits.explain``), read by attribute so this module does not
import the card's measurement code.
"""

import html
import re
from dataclasses import dataclass
from typing import Any

from sparse_lens.circuits.graph_view.graph import NO_ROLE


@dataclass(frozen=True, kw_only=True)
class StageView:
    """One stage: its name, the captions of its nodes with a role, the labels of the rest."""

    name: str
    roles: tuple[tuple[str, int], ...]  # (role, nodes)
    captions: tuple[str, ...]
    quiet: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class CardView:
    """What the card section shows: the summary, the stages, the heads' captions and what the
    numbers were computed on."""

    summary: str
    computed_on: str
    stages: tuple[StageView, ...]
    heads: tuple[str, ...]
    warnings: tuple[str, ...] = ()


def card_view(card: Any, *, examples: str | None = None, sample: str | None = None) -> CardView:
    """The section's strings of ``card`` (a ``CircuitCard``, read by attribute: naming its type
    here would make an import cycle with ``CircuitCard._repr_html_``); ``examples`` says which
    examples it ran on (default: its provenance's split, or ``caller's batch``); ``sample``
    names the pretraining sample its node statistics come from
    (``sparse_lens.circuits.explain.sample_text``; this module stays torch-free)."""
    nodes = {n.label: n for n in card.nodes}
    stages = tuple(
        StageView(
            name=st.name,
            roles=tuple(st.roles.items()),
            captions=tuple(nodes[lab].caption for lab in st.nodes if nodes[lab].role != NO_ROLE),
            quiet=tuple(lab for lab in st.nodes if nodes[lab].role == NO_ROLE),
        )
        for st in card.stages
    )
    p = card.provenance
    computed_on = (
        f"{p['n_examples']} examples of {card.task} ({examples or p['split']}), "
        f"{p['ablation']} ablation, "
        f"{p['n_permutations']} permutations per test; knockouts: {p['knockouts']}."
    )
    if sample is not None:
        computed_on += f" Node statistics and top contexts: {sample}."
    heads = tuple(h.caption for h in card.heads)
    return CardView(
        summary=card.summary,
        computed_on=computed_on,
        stages=stages,
        heads=heads,
        warnings=tuple(card.warnings),
    )


def _text(text: str) -> str:
    """``text`` escaped, Markdown ``code`` spans as ``<code>``."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text, quote=True))


def _caption(text: str) -> str:
    """A caption with its name (before the first ``: ``) in bold."""
    name, sep, rest = text.partition(": ")
    return f"<b>{_text(name)}</b>{sep}{_text(rest)}" if sep else _text(text)


def card_html(card: CardView) -> str:
    """The ``<section class="circuit-card">`` of ``card`` (module docstring); a stage with a
    node of some role is open, one with none is closed."""
    out = ['<section class="circuit-card">']
    out += [f'<p class="card-warning"><b>Warning:</b> {_text(w)}</p>' for w in card.warnings]
    out += [
        f'<p class="summary">{_text(card.summary)}</p>',
        f'<p class="note">Computed on {_text(card.computed_on)}</p>',
    ]
    for i, st in enumerate(card.stages):
        counts = ", ".join(f"{n} {role}" for role, n in st.roles)
        items = [f"<li>{_caption(c)}</li>" for c in st.captions]
        if st.quiet:
            labels = ", ".join(f"<code>{html.escape(q)}</code>" for q in st.quiet)
            items.append(f"<li>{len(st.quiet)} node(s) with {NO_ROLE}: {labels}</li>")
        out.append(
            f'<details class="stage"{" open" if st.captions else ""}><summary><b>{i + 1}. '
            f"{html.escape(st.name)}</b> ({html.escape(counts)})</summary>"
            f"<ul>{''.join(items)}</ul></details>"
        )
    if card.heads:
        heads = "".join(f"<li>{_caption(h)}</li>" for h in card.heads)
        out.append(
            f'<details class="stage"><summary><b>Heads</b></summary><ul>{heads}</ul></details>'
        )
    out.append("</section>")
    return "".join(out)
