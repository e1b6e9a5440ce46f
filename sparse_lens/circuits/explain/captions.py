"""The card's sentences: node names, one caption per node and head, and a summary, generated
from the measurements (every number with what it was measured on)."""

from sparse_lens.circuits.explain.card import Attention, CorpusProfile, Role
from sparse_lens.circuits.explain.protocols import NodeRefLike
from sparse_lens.circuits.explain.stats import Contrast

_KIND_NAMES = {
    "attn_in": "attention input channel",
    "q": "query channel",
    "k": "key channel",
    "v": "value channel",
    "attn_out": "attention output channel",
    "mlp_in": "MLP input channel",
    "neuron": "MLP neuron",
    "mlp_out": "MLP output channel",
}
CLASS_PHRASES = {
    "answer": "the answer position",
    "marked": "the marked token",
    "candidate": "a candidate token",
    "first": "the first token",
    "other": "other tokens",
    "sink": "the sink",
}


def node_name(ref: NodeRefLike, d_head: int) -> str:
    """E.g. ``Layer 0 MLP neuron 17``, ``Layer 1 head 2 value channel 0``."""
    if ref.kind == "final":
        return f"Final residual channel {ref.channel}"
    if ref.head is not None:
        return f"Layer {ref.layer} head {ref.head} {_KIND_NAMES[ref.kind]} {ref.channel % d_head}"
    return f"Layer {ref.layer} {_KIND_NAMES[ref.kind]} {ref.channel}"


def p_text(c: Contrast) -> str:
    """``p<=0.001`` at the smallest p-value the permutations can give, else ``p=0.012``."""
    if c.p_value <= 1 / (c.n_permutations + 1) + 1e-12:
        return f"p<={c.p_value:.2g}"
    return f"p={c.p_value:.2g}"


def contrast_text(c: Contrast) -> str:
    """E.g. ``contrast +3.1 sd, Welch t 9.8, p<=0.001, n=32/32``."""
    size = "inf" if abs(c.contrast_sd) == float("inf") else f"{c.contrast_sd:+.1f}"
    t = "inf" if abs(c.t) == float("inf") else f"{c.t:.1f}"
    test = "Welch t" if c.test == "classes" else "paired t"
    n = f"n={c.n_a}/{c.n_b}" if c.test == "classes" else f"n={c.n_a}"
    q = f", q={c.q_value:.2g}" if c.q_value is not None else ""
    return f"contrast {size} sd, {test} {t}, {p_text(c)}{q}, {n}"


def attention_text(att: Attention, marked: str = "the marked token") -> str:
    """E.g. ``67% on the marked token, sink 0%`` (``marked`` names the marked token)."""
    where = marked if att.top_class == "marked" else CLASS_PHRASES[att.top_class]
    return f"{att.top_share:.0%} on {where}, sink {att.sink:.0%}"


def corpus_text(profile: CorpusProfile | None) -> str:
    if profile is None or not profile.top_tokens:
        return ""
    token, count = profile.top_tokens[0]
    return (
        f" On pretraining text it is largest on `{token}` ({count} of its top "
        f"{profile.n_ranked} positions, selectivity {profile.selectivity:.0%})."
    )


def node_caption(
    name: str,
    role: Role,
    *,
    evidence: str,
    knockouts: tuple[float, float],
    corpus: CorpusProfile | None,
) -> str:
    """``Name (role): evidence; knockout ... .`` plus the pretraining tokens."""
    ko = f"knockout {knockouts[0]:+.3f} nats in the circuit, {knockouts[1]:+.3f} in the full model"
    return f"{name} ({role}): {evidence}; {ko}.{corpus_text(corpus)}"


def role_evidence(
    role: Role,
    where: str | None,
    contrasts: dict[str, Contrast],
    position: Contrast | None,
    direct: tuple[float | None, float | None],
    attention: Attention | None,
    classes: tuple[str, str],
    where_text: dict[str, str],
) -> str:
    """The numbers behind ``role`` (read at position kind ``where``), in words; ``classes``
    are the two classes' answers as Markdown (``TaskView.class_text``)."""
    tell = f"tells {classes[0]} from {classes[1]}"
    c = contrasts.get(where) if where is not None else None
    if role == "mover" and attention is not None:
        moved = f"; at its source it {tell} ({contrast_text(c)})" if c is not None else ""
        text = attention_text(attention, where_text["marked"])
        return f"its head attends from the answer position {text}{moved}"
    if role == "output" and direct[0] is not None:
        full = f", {direct[1]:+.2f} in the full model" if direct[1] is not None else ""
        return (
            f"adds {direct[0]:+.2f} to the logit difference (correct - incorrect) directly "
            f"through the unembedding in the circuit{full}"
        )
    if role == "detector" and position is not None:
        return f"fires at {where_text['marked']} whatever the answer ({contrast_text(position)})"
    if role in ("classifier", "amplifier") and c is not None and where is not None:
        return f"{tell} at {where_text[where]} ({contrast_text(c)})"
    if role == "suppressor":
        return "knocking it out lowers the task loss (it works against the answer); no contrast, attention or direct-effect rule holds"
    return "no contrast, attention or direct-effect rule holds"


def head_caption(
    label: str,
    roles: tuple[str, str],
    circuit: Attention,
    full: Attention,
    marked: str = "the marked token",
) -> str:
    """E.g. ``Head 0.0 (mover): from the answer position, 67% on the marked token ...``;
    ``roles`` is ``(in the circuit, in the full model)``, and a head whose roles differ says
    that pruning changed where it attends."""
    agree = "as in" if full.top_class == circuit.top_class else "unlike"
    text = (
        f"Head {label} ({roles[0]}): from the answer position, {attention_text(circuit, marked)} "
        f"in the circuit; {agree} the full model ({attention_text(full, marked)})."
    )
    if roles[0] != roles[1]:
        text += (
            f" In the full model it is {roles[1]}: the pruned circuit changed where it attends, "
            "so read its circuit attention as an artefact of pruning, not the head's behaviour."
        )
    return text
