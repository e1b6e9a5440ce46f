"""The forward passes ``explain`` reads on the task batch: a run's node values and attention,
single-node knockouts in the circuit and the full model, and direct effects through the
unembedding; ``measure`` runs them all for one circuit (with the pretraining sample's
``corpus`` values when windows are given).

Every run uses the circuit's norm regime: with ``circuit.freeze_norms`` the RMSNorm scales are
the full model's on the same tokens (``norm_scale_hooks``), in the circuit, its knockouts and the
full model's knockouts alike. Removed nodes take the circuit's ablation values
(``circuit.baselines``), in the full model too.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from hooks import flat, node_mask, record
from hooks.types import HookList
from sparse_lens.circuits.ablation import norm_scale_hooks, separator_ids
from sparse_lens.circuits.explain.card import Attention, CorpusProfile
from sparse_lens.circuits.explain.corpus import corpus_profile, corpus_values
from sparse_lens.circuits.explain.positions import (
    INVALID,
    TaskView,
    class_shares,
    source_positions,
)
from sparse_lens.circuits.explain.protocols import CircuitLike, NodeRefLike
from sparse_lens.circuits.explain.roles import ExplainConfig
from sparse_lens.model.transformer import HookedSparseTransformer
from sparse_lens.tasks.task import TaskBatch, task_loss

SCALE_HOOK = "ln_final.hook_scale"


@dataclass(frozen=True)
class Run:
    """One forward pass: ``values[label]`` ``[batch pos]`` per node, ``pattern[(layer, head)]``
    ``[batch key]`` and ``sink[(layer, head)]`` ``[batch]`` from each row's answer position."""

    values: dict[str, Tensor]
    pattern: dict[tuple[int, int], Tensor]
    sink: dict[tuple[int, int], Tensor]
    final_scale: Tensor  # [batch] ln_final's scale at the answer position


@torch.no_grad()
def record_run(
    model: HookedSparseTransformer,
    batch: TaskBatch,
    refs: Sequence[NodeRefLike],
    heads: Sequence[tuple[int, int]],
    fwd_hooks: HookList,
    sizes: dict[str, int],
) -> Run:
    """Run ``batch`` under ``fwd_hooks`` and read the nodes, heads and final norm scale."""
    layers = sorted({layer for layer, _ in heads})
    names = {r.hook for r in refs} | {SCALE_HOOK}
    names |= {f"blocks.{layer}.attn.hook_pattern" for layer in layers}
    if model.cfg.attn_sinks:
        names |= {f"blocks.{layer}.attn.hook_sink_prob" for layer in layers}
    cache: dict[str, Tensor] = {}
    hooks = list(fwd_hooks) + [(n, record(cache)) for n in sorted(names)]
    model.run_with_hooks(batch.tokens.to(model.W_E.device), fwd_hooks=hooks)
    rows = torch.arange(len(batch))
    values = {
        r.label: flat(cache[r.hook], sizes[r.hook])[..., r.channel].float().cpu() for r in refs
    }
    pattern, sink = {}, {}
    for layer, head in heads:
        p = cache[f"blocks.{layer}.attn.hook_pattern"][:, head].float().cpu()
        pattern[(layer, head)] = p[rows, batch.last]
        if model.cfg.attn_sinks:
            s = cache[f"blocks.{layer}.attn.hook_sink_prob"][:, head].float().cpu()
            sink[(layer, head)] = s[rows, batch.last]
        else:
            sink[(layer, head)] = torch.zeros(len(batch))
    scale = cache[SCALE_HOOK].float().cpu()[rows, batch.last, 0]
    return Run(values=values, pattern=pattern, sink=sink, final_scale=scale)


def norm_hooks(model: HookedSparseTransformer, circuit: CircuitLike, batch: TaskBatch) -> HookList:
    """The circuit's norm regime for a run on ``batch`` (none with live norms)."""
    if not circuit.freeze_norms:
        return []
    return norm_scale_hooks(model, batch.tokens.to(model.W_E.device))


def _bar(items: list[Any], desc: str, progress: bool) -> Any:
    """``items`` with a tqdm progress bar when ``progress``."""
    return tqdm(items, desc=desc, disable=not progress, leave=False)


@torch.no_grad()
def circuit_knockouts(
    model: HookedSparseTransformer,
    circuit: CircuitLike,
    batch: TaskBatch,
    labels: Sequence[str] | None = None,
    *,
    progress: bool = False,
) -> tuple[float, dict[str, float]]:
    """``(circuit loss, label -> loss increase)``: each kept node (all, or those of ``labels``)
    alone removed from the circuit (set to its ablation value), the rest of the circuit kept;
    exact, one forward pass of ``batch`` per node, in nats.

    Raises:
        KeyError: a label of ``labels`` is not a kept node's.
    """
    tokens = batch.tokens.to(model.W_E.device)
    base_hooks = circuit.fwd_hooks(model, tokens)
    masks = circuit.masks()
    index: dict[str, int] = {}
    for i, (name, _) in enumerate(base_hooks):  # a node mask comes before any edge hook there
        if isinstance(name, str) and name in masks:
            index.setdefault(name, i)
    refs = list(circuit.node_refs(model.cfg))
    if labels is not None:
        by_label = {r.label: r for r in refs}
        missing = [x for x in labels if x not in by_label]
        if missing:
            raise KeyError(f"not kept nodes of the circuit: {missing[:4]}")
        refs = [by_label[x] for x in labels]
    base = task_loss(model, batch, base_hooks)
    effects = {}
    for ref in _bar(refs, "knockouts (circuit)", progress):
        mask = masks[ref.hook].clone()
        mask[ref.channel] = 0.0
        hooks = list(base_hooks)
        hooks[index[ref.hook]] = (
            ref.hook,
            node_mask(mask, torch.tensor(circuit.baselines[ref.hook])),
        )
        effects[ref.label] = task_loss(model, batch, hooks) - base
    return base, effects


@torch.no_grad()
def empty_circuit_loss(
    model: HookedSparseTransformer, circuit: CircuitLike, batch: TaskBatch
) -> float:
    """Task loss (nats) with every node at its ablation value, in the circuit's norm regime."""
    tokens = batch.tokens.to(model.W_E.device)
    zeros = {h: torch.zeros_like(m) for h, m in circuit.masks().items()}
    return task_loss(model, batch, circuit.fwd_hooks(model, tokens, masks=zeros))


@torch.no_grad()
def full_knockouts(
    model: HookedSparseTransformer,
    circuit: CircuitLike,
    batch: TaskBatch,
    *,
    progress: bool = False,
) -> tuple[float, dict[str, float]]:
    """``(full-model loss, label -> loss increase)``: each kept node alone set to its ablation
    value in the full model (nats)."""
    norms = norm_hooks(model, circuit, batch)
    base = task_loss(model, batch, norms)
    effects = {}
    for ref in _bar(list(circuit.node_refs(model.cfg)), "knockouts (full model)", progress):
        mask = torch.ones(circuit.sizes[ref.hook])
        mask[ref.channel] = 0.0
        baseline = torch.tensor(circuit.baselines[ref.hook])
        effects[ref.label] = (
            task_loss(model, batch, norms + [(ref.hook, node_mask(mask, baseline))]) - base
        )
    return base, effects


def logit_diff_directions(
    model: HookedSparseTransformer, batch: TaskBatch
) -> Float[Tensor, "batch d_model"]:
    """``(W_U[:, correct] - W_U[:, incorrect]) * ln_final.w`` per row: what one unit of a final
    residual channel adds to the logit difference, before dividing by the final norm's scale."""
    W_U = model.W_U.detach().float().cpu()
    w = model.ln_final.w.detach().float().cpu()
    return (W_U[:, batch.correct] - W_U[:, batch.incorrect]).T * w


def direct_effect(
    values: Float[Tensor, "batch pos"],
    baseline: float,
    direction: Float[Tensor, " batch"],
    scale: Float[Tensor, " batch"],
    last: Int[Tensor, " batch"],
) -> float:
    """Mean over rows of ``(value - baseline) * direction / scale`` at the answer position: the
    logit difference (correct - incorrect) a residual channel adds directly against its ablation
    value, through the final norm frozen at ``scale``."""
    at = values[torch.arange(len(values)), last]
    return float(((at - baseline) * direction / scale).mean())


def attention_of(run: Run, key: tuple[int, int], codes: Tensor) -> Attention:
    """Head ``key``'s attention from the answer position in ``run``, by position class."""
    shares = class_shares(run.pattern[key], codes)
    valid = (codes != INVALID).float()
    uniform = class_shares(valid / valid.sum(dim=1, keepdim=True), codes)
    sink = float(run.sink[key].mean())
    top, share = max([*shares.items(), ("sink", sink)], key=lambda kv: kv[1])
    lift = share / uniform[top] if top != "sink" and uniform[top] > 0 else 1.0
    return Attention(shares=shares, sink=sink, top_class=top, top_share=share, lift=lift)


def sources(full: Run, heads: list[tuple[int, int]], codes: Tensor) -> dict[Any, Tensor]:
    """Source positions per head and (key ``None``) for the circuit's heads together."""
    out: dict[Any, Tensor] = {h: source_positions(full.pattern[h], codes) for h in heads}
    if heads:
        together = torch.stack([full.pattern[h] for h in heads]).sum(dim=0)
        out[None] = source_positions(together, codes)
    return out


@dataclass(frozen=True)
class Measured:
    """The runs and per-node numbers every node reads."""

    full: Run
    circuit: Run
    knockout_circuit: dict[str, float]
    knockout_full: dict[str, float]
    directions: Tensor  # [batch d_model]
    sources: dict[Any, Tensor]
    attention: dict[tuple[int, int], Attention]  # circuit run
    profiles: dict[str, CorpusProfile] | None
    baselines: dict[str, list[float]]
    kept_final: frozenset[int]


def measure(
    model: HookedSparseTransformer,
    circuit: CircuitLike,
    refs: list[NodeRefLike],
    s: TaskView,
    windows: Tensor | None,
    cfg: ExplainConfig,
    *,
    progress: bool = False,
) -> tuple[Measured, dict[str, float]]:
    """Every forward pass: full and circuit runs, knockouts, and the pretraining sample."""
    heads = sorted({(r.layer, r.head) for r in refs if r.head is not None})
    tokens = s.batch.tokens.to(model.W_E.device)
    norms = norm_hooks(model, circuit, s.batch)
    full = record_run(model, s.batch, refs, heads, norms, circuit.sizes)
    circ = record_run(model, s.batch, refs, heads, circuit.fwd_hooks(model, tokens), circuit.sizes)
    loss_c, ko_c = circuit_knockouts(model, circuit, s.batch, progress=progress)
    loss_e = empty_circuit_loss(model, circuit, s.batch)
    loss_f, ko_f = full_knockouts(model, circuit, s.batch, progress=progress)
    profiles = None
    if windows is not None:
        data = corpus_values(model, refs, circuit.sizes, windows, separator_ids(model))
        profiles = {
            r.label: corpus_profile(
                data.values[r.label],
                data,
                s.decode,
                n_contexts=cfg.n_contexts,
                width=cfg.context_width,
                n_top=cfg.n_top_activations,
            )
            for r in refs
        }
    final_hook = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    m = Measured(
        full=full,
        circuit=circ,
        knockout_circuit=ko_c,
        knockout_full=ko_f,
        directions=logit_diff_directions(model, s.batch),
        sources=sources(full, heads, s.codes),
        attention={h: attention_of(circ, h, s.codes) for h in heads},
        profiles=profiles,
        baselines=circuit.baselines,
        kept_final=frozenset(circuit.nodes.get(final_hook, [])),
    )
    return m, {"circuit": loss_c, "full": loss_f, "empty": loss_e}
