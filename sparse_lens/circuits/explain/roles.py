"""The role rules of ``explain`` and their thresholds (``ExplainConfig``).

A node's role is the first rule that holds (a contrast is *significant* when its
Benjamini-Hochberg q-value over all the card's contrasts (from permutation p-values) is below
``alpha`` and its size is at least ``min_contrast_sd`` sd; the knockout
threshold is ``max(min_knockout, knockout_share * (empty-circuit loss - circuit loss))``):

1. **no measurable role**: knocking the node out changes the task loss by less than the
   threshold (either way), both in the circuit and in the full model.
2. **mover**: a value channel whose head sends at least ``attention_share`` of its attention
   (in the circuit, from the answer position) to one earlier position class (the marked token,
   a candidate token, or other tokens; not the answer position, the first token or the sink),
   at least ``min_lift`` times the share uniform attention would give that class, and whose
   value at its head's source position has a significant class contrast: it carries the class
   from there to the answer position (the paper's Fig. 4 head reading the quote type).
3. **output**: a residual write or final channel whose direct effect on the logit difference
   through the unembedding (in the circuit) is at least ``min_direct_effect`` logits.
4. **detector**: a significant position contrast (its value at the marked token against the
   same example's other tokens) without a significant class contrast there: it fires on the
   marked token whatever the answer (the paper's "quote detector").
5. **classifier**: a significant class contrast at the marked token or at the source position:
   it tells the two answers apart where the information is (the paper's "quote type
   classifier").
6. **amplifier**: a significant class contrast at the answer position, without a direct effect:
   it carries or strengthens the class at the answer position for later nodes.
7. **mover** (query or key channel): a q/k channel of a head whose attention meets rule 2: it
   steers the head to its source.
8. **contributor**: knocking it out raises the task loss by at least the threshold (in the
   circuit or in the full model), none of the rules above.
9. **suppressor**: its measurable knockouts all *lower* the task loss: it works against the
   answer, none of the rules above.

Heads (``head_role``): ``mover`` when rule 2's attention condition holds and the head keeps a
value channel, ``local`` when it puts ``attention_share`` on the answer position, ``sink`` on
the sink, ``diffuse`` otherwise; the rule is applied to the circuit's attention (``role``) and
to the full model's (``full_role``), so a head whose pruned attention differs is visible.
"""

from dataclasses import dataclass

from sparse_lens.circuits.explain.card import Attention, HeadRole, NodeExplanation, Role, Stage
from sparse_lens.circuits.explain.stats import Contrast
from sparse_lens.circuits.nodes import NodeKind
from sparse_lens.tasks.task import SPLITS, TaskSplit

RULES: tuple[str, ...] = (
    "1. no measurable role: |knockout| below the threshold in the circuit and in the full model",
    "2. mover: a value channel whose head sends >= attention_share of its attention from the "
    "answer position to one earlier position class (>= min_lift x uniform), with a class "
    "contrast at its source",
    "3. output: a residual write or final channel with |direct effect| >= min_direct_effect",
    "4. detector: a position contrast at the marked token, no class contrast there",
    "5. classifier: a class contrast at the marked token or at the source position",
    "6. amplifier: a class contrast at the answer position",
    "7. mover: a query/key channel of a head that meets rule 2's attention condition",
    "8. contributor: knockout raises the loss by >= the threshold (circuit or full model), "
    "no other rule",
    "9. suppressor: measurable knockouts only lower the loss (it works against the answer), "
    "no other rule",
)
MOVE_CLASSES = ("marked", "candidate", "other")  # earlier positions a head can move from
WRITES: tuple[NodeKind, ...] = ("attn_out", "mlp_out", "final")


@dataclass(frozen=True, kw_only=True)
class ExplainConfig:
    """What ``explain`` measures on and the thresholds of its role rules (module docstring).

    Args:
        split: task split of the examples (when ``explain`` builds the batch).
        n_examples: task examples (when ``explain`` builds the batch).
        seed: seed of the task examples and of the permutations.
        n_permutations: permutations per significance test.
        alpha: a contrast is significant when its p-value is below this.
        min_contrast_sd: ... and its size is at least this many sd.
        knockout_share: share of the gap (empty-circuit loss - circuit loss) a knockout must
            cost to be measurable.
        min_knockout: smallest measurable knockout, nats.
        attention_share: share of a head's attention that makes a position class its source.
        min_lift: ... and how many times uniform attention's share of that class it must be.
        min_direct_effect: smallest direct effect of an ``output`` node, logits.
        n_contexts: pretraining windows shown per node.
        context_width: tokens shown up to a window's peak.
        n_top_activations: pretraining positions ranked for the selectivity.
    """

    split: TaskSplit = "test"
    n_examples: int = 64
    seed: int = 0
    n_permutations: int = 999
    alpha: float = 0.01
    min_contrast_sd: float = 1.0
    knockout_share: float = 0.02
    min_knockout: float = 0.005
    attention_share: float = 0.5
    min_lift: float = 2.0
    min_direct_effect: float = 0.1
    n_contexts: int = 3
    context_width: int = 8
    n_top_activations: int = 50

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        for name in ("n_examples", "n_permutations", "n_contexts", "context_width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.n_top_activations < 1:
            raise ValueError(f"n_top_activations must be >= 1, got {self.n_top_activations!r}")
        for name in ("alpha", "knockout_share", "attention_share"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)!r}")
        for name in ("min_contrast_sd", "min_knockout", "min_direct_effect", "min_lift"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")

    def knockout_threshold(self, circuit_loss: float, empty_loss: float) -> float:
        """The smallest measurable knockout (nats) for a circuit of these losses."""
        return max(self.min_knockout, self.knockout_share * max(0.0, empty_loss - circuit_loss))

    def significant(self, contrast: Contrast | None) -> bool:
        return contrast is not None and contrast.significant(self.alpha, self.min_contrast_sd)

    def moves(self, attention: Attention | None) -> bool:
        """Whether ``attention`` puts ``attention_share`` (and ``min_lift`` times uniform's
        share) on one earlier position class."""
        return (
            attention is not None
            and attention.top_class in MOVE_CLASSES
            and attention.top_share >= self.attention_share
            and attention.lift >= self.min_lift
        )


@dataclass(frozen=True, kw_only=True)
class NodeFacts:
    """What the rules read of one node (contrasts by position kind, circuit run)."""

    kind: NodeKind
    contrasts: dict[str, Contrast]
    position_contrast: Contrast | None
    knockout_circuit: float
    knockout_full: float
    direct_effect: float | None
    attention: Attention | None  # its head's, in the circuit (q/k/v only)


def assign_role(f: NodeFacts, cfg: ExplainConfig, ko_min: float) -> tuple[Role, str, str | None]:
    """``(role, the rule that gave it, the position kind of its contrast)`` by the rules of the
    module docstring (the position kind is None for roles not read from a class contrast)."""
    sig = cfg.significant
    if abs(f.knockout_circuit) < ko_min and abs(f.knockout_full) < ko_min:
        return "no measurable role", f"rule 1: knockout below {ko_min:.3g} nats in both", None
    if f.kind == "v" and cfg.moves(f.attention) and sig(f.contrasts.get("source")):
        return "mover", "rule 2: head attends to an earlier class, class contrast there", "source"
    direct = f.direct_effect if f.kind in WRITES else None
    if direct is not None and abs(direct) >= cfg.min_direct_effect:
        return "output", f"rule 3: direct effect >= {cfg.min_direct_effect} logits", None
    if sig(f.position_contrast) and not sig(f.contrasts.get("marked")):
        return "detector", "rule 4: position contrast at the marked token only", "marked"
    for where in ("marked", "source"):
        if sig(f.contrasts.get(where)):
            return "classifier", f"rule 5: class contrast at the {where} position", where
    if sig(f.contrasts.get("answer")):
        return "amplifier", "rule 6: class contrast at the answer position", "answer"
    if f.kind in ("q", "k") and cfg.moves(f.attention):
        return "mover", "rule 7: query/key of a head that attends to an earlier class", None
    if max(f.knockout_circuit, f.knockout_full) >= ko_min:
        return "contributor", "rule 8: knockout raises the loss, no other rule holds", None
    return "suppressor", "rule 9: knockout only lowers the loss, no other rule holds", None


def head_role(attention: Attention, has_value: bool, cfg: ExplainConfig) -> HeadRole:
    """A head's role from its circuit attention (module docstring)."""
    if cfg.moves(attention) and has_value:
        return "mover"
    if attention.top_share >= cfg.attention_share and attention.top_class in ("answer", "sink"):
        return "local" if attention.top_class == "answer" else "sink"
    return "diffuse"


_PART = {"attn_in": 0, "q": 0, "k": 0, "v": 0, "attn_out": 0, "final": 2}


def stages(nodes: tuple[NodeExplanation, ...]) -> tuple[Stage, ...]:
    """The nodes by step of the forward pass (layer, then attention, MLP, final residual)."""
    groups: dict[tuple[int, int], list[NodeExplanation]] = {}
    for n in nodes:
        groups.setdefault((n.layer, _PART.get(n.kind, 1)), []).append(n)
    out = []
    for i, (layer, part) in enumerate(sorted(groups)):
        members = groups[(layer, part)]
        name = "Final residual" if part == 2 else f"Layer {layer} " + ("attention", "MLP")[part]
        roles: dict[str, int] = {}
        for n in members:
            roles[n.role] = roles.get(n.role, 0) + 1
        out.append(Stage(index=i, name=name, nodes=tuple(n.label for n in members), roles=roles))
    return tuple(out)


def rules_table(cfg: ExplainConfig, ko_min: float) -> dict[str, object]:
    """The rules and thresholds as the card records them."""
    return {
        "rules": list(RULES),
        "alpha": cfg.alpha,
        "min_contrast_sd": cfg.min_contrast_sd,
        "knockout_threshold_nats": ko_min,
        "knockout_share": cfg.knockout_share,
        "min_knockout_nats": cfg.min_knockout,
        "attention_share": cfg.attention_share,
        "min_lift": cfg.min_lift,
        "min_direct_effect_logits": cfg.min_direct_effect,
        "n_permutations": cfg.n_permutations,
    }
