"""``explain``: measure every kept node of a circuit on its task and give it a role.

Measured on one task batch (``ExplainConfig.split`` / ``n_examples`` / ``seed``, or the caller's
batch): each node's value in the circuit and in the full model at the answer position, the
marked token and the source position (``positions``), as class and position contrasts with
permutation p-values (``stats``); each head's attention from the answer position by position
class and its sink mass, in the circuit and in the full model; single-node knockouts in both;
direct effects of residual writes through the unembedding (``measure``); and, given a sample of
pretraining windows, each node's top windows and tokens (``corpus``). Roles follow the stated
rules of ``roles`` (arXiv 2511.13653, Fig. 4's detector, classifier and mover).
"""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from sparse_lens.circuits.explain.captions import (
    head_caption,
    node_caption,
    node_name,
    role_evidence,
)
from sparse_lens.circuits.explain.card import CircuitCard, HeadExplanation, NodeExplanation
from sparse_lens.circuits.explain.measure import Measured, attention_of, direct_effect, measure
from sparse_lens.circuits.explain.positions import (
    INVALID,
    POSITION_CLASSES,
    TaskView,
    is_paired,
    task_view,
)
from sparse_lens.circuits.explain.protocols import CircuitLike, NodeRefLike
from sparse_lens.circuits.explain.roles import (
    WRITES,
    ExplainConfig,
    NodeFacts,
    assign_role,
    head_role,
    rules_table,
    stages,
)
from sparse_lens.circuits.explain.stats import (
    Contrast,
    bh_q_values,
    class_contrast,
    position_contrast,
    smallest_p_value,
)
from sparse_lens.model.transformer import HookedSparseTransformer
from sparse_lens.tasks.selection import PAPER_TARGET
from sparse_lens.tasks.task import TaskBatch, get_task, task_batch
from sparse_lens.vocab import CHANCE_LOSS


def _decoder(model: HookedSparseTransformer) -> Callable[[int], str]:
    """Token id -> its text on one line (``<id>`` without a tokenizer)."""
    tok = model.tokenizer
    if tok is None:
        return lambda t: f"<{t}>"
    return lambda t: visible(tok.decode([t]))


def visible(text: str) -> str:
    """A token's text with newlines and tabs written ``\\n`` and ``\\t`` (one line)."""
    return text.replace("\n", "\\n").replace("\t", "\\t")


def _contrasts(
    values: Tensor,
    s: TaskView,
    source: Tensor | None,
    sd: float,
    cfg: ExplainConfig,
) -> dict[str, Contrast]:
    """Class contrasts of one node's ``values`` ``[batch pos]`` at each position kind."""
    rows = torch.arange(len(values))
    where = {"answer": s.batch.last, "marked": s.marked}
    if source is not None:
        where["source"] = source
    out = {}
    for name, pos in where.items():
        ok = pos >= 0
        v = values[rows, pos.clamp(min=0)]
        a, b = v[ok & s.is_a], v[ok & ~s.is_a]
        if len(a) >= 2 and len(b) >= 2:
            out[name] = class_contrast(  # one seed per test: equal data, equal p-value
                a,
                b,
                where=name,
                sd=sd,
                n_permutations=cfg.n_permutations,
                generator=torch.Generator().manual_seed(cfg.seed),
            )
    return out


def _position_contrast(
    values: Tensor, s: TaskView, sd: float, cfg: ExplainConfig
) -> Contrast | None:
    """The value at the marked token against the mean over the example's ``other`` positions."""
    other = (s.codes == POSITION_CLASSES.index("other")).float()
    ok = (s.marked >= 0) & (other.sum(dim=1) > 0)
    if int(ok.sum()) < 2:
        return None
    at = values[torch.arange(len(values)), s.marked.clamp(min=0)][ok]
    elsewhere = ((values * other).sum(dim=1) / other.sum(dim=1).clamp(min=1))[ok]
    return position_contrast(
        at,
        elsewhere,
        where="marked",
        sd=sd,
        n_permutations=cfg.n_permutations,
        generator=torch.Generator().manual_seed(cfg.seed),
    )


def _unit_sd(ref: NodeRefLike, m: Measured, s: TaskView) -> float:
    """The node's sd on the pretraining sample, else over the task examples' valid positions."""
    if m.profiles is not None:
        return m.profiles[ref.label].sd
    v = m.full.values[ref.label][s.codes != INVALID]
    return float(v.double().std()) if len(v) > 1 else 0.0


def _direct(ref: NodeRefLike, m: Measured, s: TaskView) -> tuple[float | None, float | None]:
    if ref.kind not in WRITES:
        return None, None
    base = m.baselines[ref.hook][ref.channel]
    direction = m.directions[:, ref.channel]
    scale = m.full.final_scale  # the full model's final norm scale, in both runs
    full = direct_effect(m.full.values[ref.label], base, direction, scale, s.batch.last)
    if ref.channel not in m.kept_final:
        return 0.0, full
    circuit = direct_effect(m.circuit.values[ref.label], base, direction, scale, s.batch.last)
    return circuit, full


@dataclass(frozen=True)
class _Tests:
    """One node's significance tests: class contrasts in the circuit run and in the full
    model (by position kind), and the position contrast (circuit run)."""

    contrasts: dict[str, Contrast]
    full: dict[str, Contrast]
    position: Contrast | None


def _tests(ref: NodeRefLike, m: Measured, s: TaskView, cfg: ExplainConfig) -> _Tests:
    sd = _unit_sd(ref, m, s)
    key = (ref.layer, ref.head) if ref.head is not None else None
    source = m.sources.get(key)
    return _Tests(
        contrasts=_contrasts(m.circuit.values[ref.label], s, source, sd, cfg),
        full=_contrasts(m.full.values[ref.label], s, source, sd, cfg),
        position=_position_contrast(m.circuit.values[ref.label], s, sd, cfg),
    )


def with_q_values(tests: list[_Tests]) -> list[_Tests]:
    """Every test of the card with its Benjamini-Hochberg q-value over all of them. The q-values
    are matched by position: the flat list and the rebuilt tests read each test's contrasts,
    full-model contrasts and position contrast in the same order (keyword arguments evaluate
    left to right), so a contrast shared by two tests gets a q for each."""

    def own(t: _Tests) -> list[Contrast]:
        return [*t.contrasts.values(), *t.full.values(), *([t.position] if t.position else [])]

    q = iter(bh_q_values([c.p_value for t in tests for c in own(t)]))

    def adj(c: Contrast) -> Contrast:
        return dataclasses.replace(c, q_value=next(q))

    return [
        _Tests(
            contrasts={k: adj(c) for k, c in t.contrasts.items()},
            full={k: adj(c) for k, c in t.full.items()},
            position=adj(t.position) if t.position is not None else None,
        )
        for t in tests
    ]


def _node(
    ref: NodeRefLike,
    tests: _Tests,
    m: Measured,
    s: TaskView,
    cfg: ExplainConfig,
    ko_min: float,
    d_head: int,
) -> NodeExplanation:
    key = (ref.layer, ref.head) if ref.head is not None else None
    contrasts, full_contrasts, pos = tests.contrasts, tests.full, tests.position
    direct = _direct(ref, m, s)
    attention = m.attention[key] if key is not None else None
    kos = (m.knockout_circuit[ref.label], m.knockout_full[ref.label])
    facts = NodeFacts(
        kind=ref.kind,
        contrasts=contrasts,
        position_contrast=pos,
        knockout_circuit=kos[0],
        knockout_full=kos[1],
        direct_effect=direct[0],
        attention=attention,
    )
    role, reason, where = assign_role(facts, cfg, ko_min)
    name = node_name(ref, d_head)
    profile = m.profiles[ref.label] if m.profiles is not None else None
    evidence = role_evidence(
        role, where, contrasts, pos, direct, attention, s.class_text, s.where_text
    )
    if role == "no measurable role":
        evidence = f"knocking it out changes the task loss by less than {ko_min:.3g} nats in the circuit and in the full model"
    return NodeExplanation(
        label=ref.label,
        name=name,
        hook=ref.hook,
        channel=ref.channel,
        kind=ref.kind,
        layer=ref.layer,
        head=ref.head,
        contrasts=tuple(contrasts.values()),
        full_contrasts=tuple(full_contrasts.values()),
        position_contrast=pos,
        knockout_circuit=kos[0],
        knockout_full=kos[1],
        direct_effect_circuit=direct[0],
        direct_effect_full=direct[1],
        corpus=profile,
        role=role,
        reason=reason,
        caption=node_caption(name, role, evidence=evidence, knockouts=kos, corpus=profile),
    )


def _heads(
    refs: list[NodeRefLike], m: Measured, s: TaskView, cfg: ExplainConfig
) -> tuple[HeadExplanation, ...]:
    out = []
    for layer, head in sorted(m.attention):
        members = [r for r in refs if (r.layer, r.head) == (layer, head)]
        circuit, full = m.attention[(layer, head)], attention_of(m.full, (layer, head), s.codes)
        has_value = any(r.kind == "v" for r in members)
        roles = (head_role(circuit, has_value, cfg), head_role(full, has_value, cfg))
        label = f"{layer}.{head}"
        out.append(
            HeadExplanation(
                label=label,
                layer=layer,
                head=head,
                nodes=tuple(r.label for r in members),
                circuit=circuit,
                full=full,
                role=roles[0],
                full_role=roles[1],
                caption=head_caption(label, roles, circuit, full, s.where_text["marked"]),
            )
        )
    return tuple(out)


def _summary(
    card_nodes: tuple[NodeExplanation, ...],
    heads: tuple[HeadExplanation, ...],
    losses: dict[str, float],
    s: TaskView,
    task: str,
    sd_unit: str,
) -> str:
    flow = " -> ".join(
        f"{st.name} ({', '.join(f'{n} {r}' for r, n in st.roles.items())})"
        for st in stages(card_nodes)
    )
    movers = [h for h in heads if h.role == "mover"]
    moves = "".join(
        f" Head {h.label} moves information from "
        + (
            s.where_text["marked"]
            if h.circuit.top_class == "marked"
            else h.circuit.top_class + " tokens"
        )
        + f" to the answer position ({h.circuit.top_share:.0%} of its attention in the circuit, "
        f"{h.full.shares.get(h.circuit.top_class, 0.0):.0%} in the full model)."
        for h in movers
    )
    none = sum(n.role == "no measurable role" for n in card_nodes)
    flow_text = f" Flow: {flow}." if flow else " The circuit keeps no node."
    return (
        f"{task}: {s.class_text[0]} vs {s.class_text[1]}. Task loss {losses['circuit']:.3f} for the "
        f"circuit, {losses['full']:.3f} for the full model, {losses['empty']:.3f} with every "
        f"node ablated (n={len(s.batch)}).{flow_text}{moves} {none} of {len(card_nodes)} "
        f"nodes have no measurable role. Contrasts are in units of each node's sd over {sd_unit}."
    )


def explain(
    model: HookedSparseTransformer,
    circuit: CircuitLike,
    batch: TaskBatch | None = None,
    *,
    windows: Int[Tensor, "window pos"] | None = None,
    windows_source: dict[str, Any] | None = None,
    config: ExplainConfig | None = None,
    progress: bool = False,
    batch_split: str | None = None,
) -> CircuitCard:
    """Explain ``circuit`` (pruned from ``model``): every kept node's measurements and role.

    Args:
        model: the model the circuit was pruned from.
        circuit: a mean- or zero-ablated circuit.
        batch: task examples; default ``config.n_examples`` of ``config.split`` of the
            circuit's built-in task (seed ``config.seed``), tokenised by the model's tokenizer.
        windows: a sample of pretraining windows for the top contexts and the sd unit (none:
            no corpus profiles, the sd is over the task examples' positions).
        windows_source: how ``windows`` were drawn, recorded in the card's provenance
            (``PretrainingSample.description`` of ``draw_sample``/``load_sample``: the draw
            ``sparse-lens explain`` and the report share).
        config: thresholds and sample sizes (``ExplainConfig``).
        progress: tqdm bars over the knockouts (two forward passes per node).
        batch_split: which split the caller's ``batch`` is from, for the provenance and the
            warnings (default: "caller's batch").

    Returns:
        A ``CircuitCard`` (JSON via ``to_json()``; Markdown via ``analyses.card``).

    Raises:
        ValueError: ``model`` is not the circuit's, the circuit is resample-ablated, the batch
            does not give two answer classes, or (without ``batch``) the task is unknown or
            cannot be tokenised.
    """
    cfg = config or ExplainConfig()
    if circuit.ablation == "resample":
        raise ValueError("explain needs a mean- or zero-ablated circuit, not 'resample'")
    circuit.check_model(model)
    split = cfg.split if batch is None else batch_split or "caller's batch"
    if batch is None:
        tok = model.require_tokenizer()
        batch = task_batch(
            get_task(circuit.task), tok, model.cfg.n_ctx, cfg.split, cfg.n_examples, cfg.seed
        )
    s = task_view(batch, _decoder(model))
    refs = list(circuit.node_refs(model.cfg))
    m, losses = measure(model, circuit, refs, s, windows, cfg, progress=progress)
    ko_min = cfg.knockout_threshold(losses["circuit"], losses["empty"])
    tests = with_q_values([_tests(r, m, s, cfg) for r in refs])
    nodes = tuple(
        _node(r, t, m, s, cfg, ko_min, model.cfg.d_head) for r, t in zip(refs, tests, strict=True)
    )
    heads = _heads(refs, m, s, cfg)
    provenance = _provenance(circuit, batch, split, cfg, windows, windows_source)
    return CircuitCard(
        task=circuit.task,
        classes=s.classes,
        class_text=s.class_text,
        marked=s.where_text["marked"],
        n_nodes=circuit.n_nodes,
        n_edges=circuit.n_edges,
        provenance=provenance,
        rules=rules_table(cfg, ko_min),
        losses=losses,
        nodes=nodes,
        heads=heads,
        stages=stages(nodes),
        summary=_summary(
            nodes,
            heads,
            losses,
            s,
            circuit.task,
            "the pretraining sample"
            if windows is not None
            else "the task examples' positions "
            "(no pretraining sample given: pass windows for the pretraining sd)",
        ),
        warnings=card_warnings(losses, circuit.target_loss, split, s, cfg),
    )


def card_warnings(
    losses: dict[str, float], target: float, split: str, s: TaskView, cfg: ExplainConfig
) -> tuple[str, ...]:
    """What limits the card's reading on these examples (``CircuitCard.warnings``)."""
    out = []
    n = len(s.batch)
    if losses["full"] > PAPER_TARGET:
        out.append(
            f"The full model does not solve this task on these examples: its task loss "
            f"{losses['full']:.3f} is above the paper's target {PAPER_TARGET} ({split}, n={n}); "
            "the roles describe how it fails as much as how it works."
        )
    if target >= CHANCE_LOSS:
        out.append(
            f"The circuit's target {target:.3g} is at or above chance (ln 2 = {CHANCE_LOSS:.3f}): "
            "a circuit that knows nothing of the task reaches it, so its nodes need not do it."
        )
    if losses["circuit"] > target:
        out.append(
            f"The circuit misses its target on these examples: task loss {losses['circuit']:.3f} "
            f"> {target:.3g} ({split}, n={n}); it does less of the task than its size suggests."
        )
    n_a = int(s.is_a.sum())
    if min(n_a, n - n_a) >= 1:
        floor = smallest_p_value("classes", n_a, n - n_a, cfg.n_permutations)
        if floor >= cfg.alpha:
            out.append(
                f"With {n_a}/{n - n_a} examples per answer and {cfg.n_permutations} "
                f"permutations the smallest p-value a class contrast can reach is {floor:.2g}, "
                f"not below alpha {cfg.alpha}: no class contrast can be significant, so no node "
                "can be a detector, classifier or amplifier; use more examples or permutations."
            )
    return tuple(out)


def _provenance(
    circuit: CircuitLike,
    batch: TaskBatch,
    split: str,
    cfg: ExplainConfig,
    windows: Tensor | None,
    windows_source: dict[str, Any] | None,
) -> dict[str, Any]:
    """What every number of the card was computed on."""
    sample = None
    if windows is not None:
        sample = (windows_source or {}) | {"n_windows": len(windows), "n_ctx": windows.shape[1]}
    return {
        "task": circuit.task,
        "split": split,
        "n_examples": len(batch),
        "seed": cfg.seed,
        "classes_by": "minimal-pair side" if is_paired(batch) else "correct token",
        "ablation": circuit.ablation,
        "ablation_source": circuit.extra.get("ablation_source"),
        "norms": "frozen at the full model's scale on the same tokens"
        if circuit.freeze_norms
        else "live",
        "contrasts": "node values in the circuit run (full_contrasts: in the full model); "
        "source positions from the full model's attention",
        "sd_unit": "the node's sd over the pretraining sample (full model)"
        if windows is not None
        else "the node's sd over every position of the task examples (full model)",
        "knockouts": "one node set to its ablation value, task loss increase in nats",
        "direct_effects": "at the answer position, against the ablation value, final norm at "
        "the full model's scale; logits",
        "pretraining_sample": sample,
        "n_permutations": cfg.n_permutations,
        "multiple_testing": "Benjamini-Hochberg q-values over every contrast of the card "
        "(class contrasts in the circuit and the full model, position contrasts); a contrast "
        "is significant when its q is below alpha",
    }
