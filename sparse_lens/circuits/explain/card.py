"""What ``explain`` returns: a ``CircuitCard`` of frozen dataclasses, JSON-serialisable.

``CircuitCard.to_json()`` is a plain dict (``dataclasses.asdict``) whose non-finite floats
(an infinite t where a spread is zero) are written as ``null``; ``json.dumps`` takes it as is.
"""

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

from sparse_lens.circuits.explain.stats import Contrast
from sparse_lens.circuits.nodes import NodeKind

Role = Literal[
    "detector",
    "classifier",
    "mover",
    "amplifier",
    "output",
    "contributor",
    "suppressor",
    "no measurable role",
]
ROLES: tuple[Role, ...] = get_args(Role)
HeadRole = Literal["mover", "local", "sink", "diffuse"]


@dataclass(frozen=True, kw_only=True)
class CorpusContext:
    """A pretraining window where a node is largest: ``tokens`` (decoded, newlines and tabs
    written ``\\n``, ``\\t``) around the peak at
    ``tokens[peak]``, the node's ``value`` there, and where it is in the sample."""

    tokens: tuple[str, ...]
    peak: int
    value: float
    window: int
    position: int


@dataclass(frozen=True, kw_only=True)
class CorpusProfile:
    """A node on the pretraining sample (full model): its top windows, the tokens at its
    ``n_ranked`` largest ``|value|`` positions (most common first) and ``selectivity``, the
    share of those positions holding the most common token; ``sd`` its standard deviation over
    every non-separator position of the sample."""

    contexts: tuple[CorpusContext, ...]
    top_tokens: tuple[tuple[str, int], ...]
    n_ranked: int
    selectivity: float
    sd: float


@dataclass(frozen=True, kw_only=True)
class Attention:
    """Where a head's attention goes from the answer position: the mean share on each position
    class (``positions.POSITION_CLASSES``), the sink mass, the largest share's class, and its
    ``lift``: that share over the share uniform attention would give the class (the class's
    share of the positions; 1.0 for the sink)."""

    shares: dict[str, float]
    sink: float
    top_class: str
    top_share: float
    lift: float


@dataclass(frozen=True, kw_only=True)
class HeadExplanation:
    """A head with kept q/k/v nodes: its attention in the circuit and the full model, and a
    role by the same rule in each (``mover``: most attention on one earlier position class,
    with kept value channels; ``local``: on the answer position; ``sink``: on the sink;
    ``diffuse``: none of these). ``role != full_role`` says that pruning changed where the head
    attends (e.g. ``diffuse`` in the circuit, ``mover`` in the full model)."""

    label: str
    layer: int
    head: int
    nodes: tuple[str, ...]
    circuit: Attention
    full: Attention
    role: HeadRole
    full_role: HeadRole
    caption: str


@dataclass(frozen=True, kw_only=True)
class NodeExplanation:
    """One kept node: its measurements, its role by the card's rules, and a caption.

    ``contrasts``: class contrasts at each position kind (``answer``, ``marked``, ``source``) in
    the circuit run; ``full_contrasts``: the same in the full model; ``position_contrast``: the
    value at the marked position against the example's other positions (circuit run).
    ``knockout_*``: task-loss increase (nats) when this node alone takes its ablation value.
    ``direct_effect_*``: for residual writes and final channels, the mean logit difference
    (correct - incorrect) it adds through the unembedding against its ablation value, with the
    final norm at the full model's scale (None for other kinds; 0 in the circuit when the
    channel's final node is not kept).
    """

    label: str
    name: str
    hook: str
    channel: int
    kind: NodeKind
    layer: int
    head: int | None
    contrasts: tuple[Contrast, ...]
    full_contrasts: tuple[Contrast, ...]
    position_contrast: Contrast | None
    knockout_circuit: float
    knockout_full: float
    direct_effect_circuit: float | None
    direct_effect_full: float | None
    corpus: CorpusProfile | None
    role: Role
    reason: str
    caption: str


@dataclass(frozen=True, kw_only=True)
class Stage:
    """Nodes of one step of the forward pass (a layer's attention or MLP, or the final
    residual), in the order information flows."""

    index: int
    name: str
    nodes: tuple[str, ...]
    roles: dict[str, int]


@dataclass(frozen=True, kw_only=True)
class CircuitCard:
    """A circuit explained: what it was computed on (``provenance``), the rules and thresholds
    (``rules``), the losses, every node and head, the stages and a summary paragraph.
    ``warnings``: what limits the reading (the circuit misses its target or the full model does
    not solve the task on these examples; too few examples or permutations for any contrast to
    be significant), shown first wherever the card is."""

    task: str
    classes: tuple[str, str]  # each class's most common answer token
    marked: str | None
    n_nodes: int
    n_edges: int
    provenance: dict[str, Any]
    rules: dict[str, Any]
    losses: dict[str, float]
    nodes: tuple[NodeExplanation, ...]
    heads: tuple[HeadExplanation, ...]
    stages: tuple[Stage, ...]
    summary: str
    warnings: tuple[str, ...] = ()
    class_text: tuple[str, str] = ("", "")  # each class's answer tokens, Markdown

    def node(self, label: str) -> NodeExplanation:
        """The node of ``label``.

        Raises:
            KeyError: no kept node has that label (a few labels are named).
        """
        for n in self.nodes:
            if n.label == label:
                return n
        raise KeyError(
            f"no node {label!r} in the card (it has {[n.label for n in self.nodes[:4]]}...)"
        )

    def head(self, layer: int, head: int) -> HeadExplanation:
        """The head ``layer.head``.

        Raises:
            KeyError: the circuit keeps no q/k/v node of that head.
        """
        for h in self.heads:
            if (h.layer, h.head) == (layer, head):
                return h
        raise KeyError(f"the circuit keeps no q/k/v node of head {layer}.{head}")

    def to_json(self) -> dict[str, Any]:
        """The card as plain JSON values (non-finite floats as None)."""
        return _finite(asdict(self))

    def __repr__(self) -> str:
        """One line (the fields run to hundreds of thousands of characters): the task, the
        size, the nodes per role and the number of warnings."""
        roles: dict[str, int] = {}
        for n in self.nodes:
            roles[n.role] = roles.get(n.role, 0) + 1
        return (
            f"CircuitCard(task={self.task!r}, n_nodes={self.n_nodes}, n_edges={self.n_edges}, "
            f"roles={roles}, warnings={len(self.warnings)})"
        )

    def _repr_html_(self) -> str:
        """The card section of the circuit page (warnings, summary, stages, heads), so a
        notebook shows the card itself; ``analyses.card_markdown`` gives all of it."""
        from sparse_lens.circuits.explain.sample import sample_text
        from sparse_lens.circuits.graph_view.card_html import card_html, card_view

        sample = sample_text(self.provenance.get("pretraining_sample"))
        return card_html(card_view(self, sample=sample))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
