"""What each node of a circuit does: knockout effects, top corpus contexts, task activations.

* ``attribution_effects``: the first-order estimate of every kept node's knockout effect (the
  exact one is ``sparse_lens.circuits.explain.circuit_knockouts``) from one forward/backward
  pass (attribution patching), shown beside the exact knockouts on the circuit page.
* ``top_contexts``: the pretraining windows where a node is most active (largest ``|value|``),
  with the activation on every token of a short context ending at the peak (full model).
* ``node_values``: a node's value at every position of some token sequences (full model).
* ``circuit_patterns``: attention patterns and sink mass of heads, as run by the circuit.
"""

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from hooks import flat, record
from sparse_lens.circuits.circuit import Circuit, NodeRef
from sparse_lens.circuits.nodes import node_locations
from sparse_lens.model.config import SparseTransformerConfig
from sparse_lens.model.transformer import HookedSparseTransformer
from sparse_lens.tasks.task import TaskBatch, answer_logits, mean_task_loss


def attribution_effects(
    model: HookedSparseTransformer, circuit: Circuit, batch: TaskBatch
) -> dict[str, float]:
    """First-order (attribution patching) estimate of every kept node's knockout effect:
    ``sum over positions of dL/dx * (ablation value - x)``, from one forward and backward pass
    of the circuit on ``batch`` (L the mean task loss)."""
    acts: dict[str, Tensor] = {}
    masks = circuit.masks()
    keep = record(acts, detach=False)
    hooks = circuit.fwd_hooks(model, batch.tokens) + [(h, keep) for h in masks]
    with torch.enable_grad():
        loss = mean_task_loss(answer_logits(model, batch, hooks), batch)
        names = sorted(acts)
        grads = torch.autograd.grad(loss, [acts[n] for n in names], allow_unused=True)
    sizes = {loc.hook: loc.size for loc in node_locations(model.cfg)}
    valid = (torch.arange(batch.tokens.shape[1])[None, :] <= batch.last[:, None]).float()
    out = {}
    refs: dict[str, list[NodeRef]] = {}
    for r in circuit.node_refs(model.cfg):
        refs.setdefault(r.hook, []).append(r)
    for name, grad in zip(names, grads, strict=True):
        if name not in refs:
            continue
        x = flat(acts[name].detach(), sizes[name]).cpu()
        g = flat(grad, sizes[name]).cpu() if grad is not None else torch.zeros_like(x)
        delta = torch.tensor(circuit.baselines[name]) - x
        per = (g * delta * valid[..., None]).sum(dim=(0, 1))
        for r in refs[name]:
            out[r.label] = float(per[r.channel])
    return out


@torch.no_grad()
def node_values(
    model: HookedSparseTransformer,
    refs: list[NodeRef],
    tokens: Int[Tensor, "batch pos"],
    batch_size: int = 32,
) -> dict[str, Float[Tensor, "batch pos"]]:
    """Each node's value at every position of ``tokens`` in the full model."""
    sizes = {loc.hook: loc.size for loc in node_locations(model.cfg)}
    hooks = {r.hook for r in refs}
    parts: dict[str, list[Tensor]] = {r.label: [] for r in refs}
    for i in range(0, len(tokens), batch_size):
        batch = tokens[i : i + batch_size].to(model.W_E.device)
        _, cache = model.run_with_cache(batch, names_filter=lambda n: n in hooks)
        for r in refs:
            parts[r.label].append(flat(cache[r.hook], sizes[r.hook])[..., r.channel].float().cpu())
    return {k: torch.cat(v) for k, v in parts.items()}


@dataclass(frozen=True)
class Context:
    """A corpus context ending at a node's peak: tokens (as strings) and the node's values."""

    tokens: list[str]
    values: list[float]
    peak: float


def top_contexts(
    values: Float[Tensor, "batch pos"],
    tokens: Int[Tensor, "batch pos"],
    decode: Any,
    k: int = 5,
    width: int = 16,
    after: int = 3,
    exclude_ids: tuple[int, ...] = (),
) -> list[Context]:
    """The ``k`` positions with the largest ``|value|`` (at most one per window), each with the
    ``width`` tokens up to it and ``after`` tokens past it. Positions holding a token of
    ``exclude_ids`` (e.g. the ``<|endoftext|>`` separator) are never a peak."""
    score = values.abs()
    if exclude_ids:
        score = score.masked_fill(torch.isin(tokens, torch.tensor(exclude_ids)), -1.0)
    best = score.max(dim=1)
    order = best.values.argsort(descending=True)[:k]
    out = []
    for w in order.tolist():
        p = int(best.indices[w])
        lo, hi = max(0, p - width + 1), min(tokens.shape[1], p + after + 1)
        out.append(
            Context(
                tokens=[decode([t]) for t in tokens[w, lo:hi].tolist()],
                values=[round(float(v), 4) for v in values[w, lo:hi]],
                peak=float(values[w, p]),
            )
        )
    return out


@torch.no_grad()
def circuit_patterns(
    model: HookedSparseTransformer, circuit: Circuit, tokens: Int[Tensor, "batch pos"]
) -> tuple[dict[tuple[int, int], Tensor], dict[tuple[int, int], Tensor]]:
    """``(patterns, sink_prob)`` of every head with a kept q/k/v node, under the circuit's
    hooks: ``[batch query key]`` and ``[batch query]`` per ``(layer, head)``."""
    heads = circuit_heads(circuit, model.cfg)
    names = {f"blocks.{layer}.attn.hook_pattern" for layer, _ in heads}
    if model.cfg.attn_sinks:
        names |= {f"blocks.{layer}.attn.hook_sink_prob" for layer, _ in heads}
    cache: dict[str, Tensor] = {}
    hooks = circuit.fwd_hooks(model, tokens) + [(n, record(cache)) for n in sorted(names)]
    model.run_with_hooks(tokens.to(model.W_E.device), fwd_hooks=hooks)
    patterns, sinks = {}, {}
    for layer, head in heads:
        patterns[(layer, head)] = cache[f"blocks.{layer}.attn.hook_pattern"][:, head].cpu()
        if model.cfg.attn_sinks:
            sinks[(layer, head)] = cache[f"blocks.{layer}.attn.hook_sink_prob"][:, head].cpu()
        else:
            sinks[(layer, head)] = torch.zeros(patterns[(layer, head)].shape[:2])
    return patterns, sinks


def circuit_heads(circuit: Circuit, cfg: SparseTransformerConfig) -> list[tuple[int, int]]:
    """``(layer, head)`` of every head with at least one kept q, k or v channel."""
    return sorted({(r.layer, r.head) for r in circuit.node_refs(cfg) if r.head is not None})
