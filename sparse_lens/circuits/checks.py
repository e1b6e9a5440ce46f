"""Faithfulness measurements of a circuit against its full model on the same task pairs.

Each function runs the circuit (``Circuit.fwd_hooks``) and the full model on one ``TaskBatch``
and reports distances from the full model, never the circuit's loss alone: a circuit can reach
a low loss for the wrong reason (paper §6.1 defines sufficiency and necessity; Drori 2026,
"Weight-Sparse Circuits May Be Interpretable Yet Unfaithful", shows the final RMSNorm amplifying
a few surviving writes once most of the model is mean-ablated: "norm cheating").

| function | measures |
|---|---|
| ``readout`` / ``compare`` | loss, KL(full, run) on the two candidates (nats), logit-difference ratio run/full, final-norm scale ratio run/full (< 1: the norm amplifies) |
| ``frozen_norm_hooks`` | every RMSNorm scale frozen at the full model's on the same tokens |
| ``necessity_baseline`` | loss with only the circuit ablated, against random node sets of the same size per location |
| ``specificity`` | the same ablation on another task's pairs: what the circuit costs a task it is not for |
| ``node_agreement`` | per kept node: Pearson correlation and FVU (fraction of variance unexplained) circuit vs full |
| ``interchange`` | random fractions of the circuit's nodes given the full model's values (frozen norms; final nodes apart) |
| ``partial_complement`` | random and adversarial subsets of the non-circuit nodes ablated, one pattern per batch |
"""

import random
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from hooks import flat, node_mask, record
from hooks.types import HookList
from sparse_lens.circuits.ablation import norm_scale_hooks
from sparse_lens.circuits.circuit import Circuit, node_masks
from sparse_lens.model.transformer import HookedSparseTransformer
from sparse_lens.tasks.task import TaskBatch, answer_logits, binary_logits, binary_task_loss

FINAL_SCALE = "ln_final.hook_scale"


@dataclass(frozen=True, kw_only=True)
class Readout:
    """One forward pass seen from the task: ``[correct, incorrect]`` logits and the final
    RMSNorm scale (the RMS it divides by) at each example's answer position."""

    two: Float[Tensor, "batch 2"]
    scale: Float[Tensor, " batch"]


def readout(model: HookedSparseTransformer, batch: TaskBatch, hooks: HookList) -> Readout:
    """Run ``model`` on ``batch`` under ``hooks`` (no gradient) and read the ``Readout``."""
    store: dict[str, Tensor] = {}
    with torch.no_grad():
        logits = answer_logits(model, batch, [*hooks, (FINAL_SCALE, record(store))])
    rows = torch.arange(len(batch))
    scale = store[FINAL_SCALE].reshape(len(batch), -1)[rows, batch.last.to(rows.device)]
    return Readout(two=binary_logits(logits, batch).float().cpu(), scale=scale.float().cpu())


def compare(full: Readout, run: Readout) -> dict[str, float]:
    """Distances of ``run`` from ``full`` on the same pairs: ``loss`` (mean task loss),
    ``delta_loss`` (run - full), ``kl`` (mean KL(full, run) over the two candidates, nats),
    ``logit_diff_ratio`` (mean logit difference run / full) and ``norm_scale_ratio`` (mean of
    run / full final-norm scale; below 1 the final norm amplifies the run's writes)."""
    loss, full_loss = binary_task_loss(run.two).mean(), binary_task_loss(full.two).mean()
    p, q = full.two.log_softmax(-1), run.two.log_softmax(-1)
    kl = (p.exp() * (p - q)).sum(-1).mean()
    ld_run = (run.two[:, 0] - run.two[:, 1]).mean()
    ld_full = (full.two[:, 0] - full.two[:, 1]).mean()
    return {
        "loss": float(loss),
        "delta_loss": float(loss - full_loss),
        "kl": float(kl),
        "logit_diff_ratio": float(ld_run / ld_full) if float(ld_full) != 0 else float("nan"),
        "norm_scale_ratio": float((run.scale / full.scale).mean()),
    }


def frozen_norm_hooks(model: HookedSparseTransformer, circuit: Circuit, tokens: Tensor) -> HookList:
    """Hooks freezing every RMSNorm scale at the full model's on ``tokens`` (none if the
    circuit already freezes them: its own ``fwd_hooks`` do)."""
    return [] if circuit.freeze_norms else norm_scale_hooks(model, tokens.to(model.W_E.device))


def necessity(model: HookedSparseTransformer, circuit: Circuit, batch: TaskBatch) -> float:
    """Task loss with only the circuit's nodes replaced by their ablation values (paper §6.1,
    "inverse pruning"); every other node keeps its value."""
    return _ablated_loss(model, circuit, batch, circuit.nodes)


def _ablated_loss(
    model: HookedSparseTransformer,
    circuit: Circuit,
    batch: TaskBatch,
    nodes: dict[str, list[int]],
) -> float:
    ablated = node_masks(circuit.sizes, nodes)  # 1 where ablated: keep the complement
    hooks = circuit.mask_hooks({h: 1 - m for h, m in ablated.items()})
    return float(binary_task_loss(readout(model, batch, hooks).two).mean())


def necessity_baseline(
    model: HookedSparseTransformer,
    circuit: Circuit,
    batch: TaskBatch,
    *,
    sets: int = 8,
    seed: int = 0,
) -> dict[str, Any]:
    """The circuit's necessity loss beside ``sets`` random node sets of the same location mix
    (as many channels of each hook as the circuit keeps there, drawn uniformly);
    ``random_below`` is the share of random sets whose ablation costs less than the circuit's."""
    rng = random.Random(f"necessity:{seed}")
    losses = []
    for _ in range(sets):
        drawn = {h: rng.sample(range(circuit.sizes[h]), len(c)) for h, c in circuit.nodes.items()}
        losses.append(_ablated_loss(model, circuit, batch, drawn))
    own = necessity(model, circuit, batch)
    return {
        "loss": own,
        "random_below": sum(x < own for x in losses) / len(losses),
        "random_losses": losses,
        "random_max": max(losses),
        "random_mean": sum(losses) / len(losses),
        "sets": sets,
    }


def specificity(
    model: HookedSparseTransformer, circuit: Circuit, other: TaskBatch, task: str
) -> dict[str, Any]:
    """Ablating only the circuit's nodes on another task's pairs (``other``, of task
    ``task``): that task's loss with and without the ablation. A circuit specific to its own
    task costs another task little."""
    full = float(binary_task_loss(readout(model, other, []).two).mean())
    ablated = _ablated_loss(model, circuit, other, circuit.nodes)
    return {"task": task, "full_loss": full, "ablated_loss": ablated, "increase": ablated - full}


def _fvu(a: Tensor, b: Tensor) -> float:
    """Fraction of ``a``'s variance that ``b`` leaves unexplained: sum (b - a)^2 / sum (a -
    mean a)^2; for a constant ``a``, 0 if ``b`` equals it, else 1."""
    var = float(((a - a.mean()) ** 2).sum())
    err = float(((b - a) ** 2).sum())
    if var < 1e-12:
        return 0.0 if err < 1e-10 * max(len(a), 1) else 1.0
    return err / var


def _pearson(a: Tensor, b: Tensor) -> float:
    dx, dy = a - a.mean(), b - b.mean()
    denom = float(dx.norm() * dy.norm())
    if denom < 1e-12:  # a constant activation: agreement means equal values
        return 1.0 if torch.allclose(a, b, atol=1e-6) else 0.0
    return float((dx * dy).sum()) / denom


def node_agreement(
    model: HookedSparseTransformer, circuit: Circuit, batch: TaskBatch
) -> dict[str, Any]:
    """Per kept node, its activation in the circuit against the full model over the task's
    tokens (padding excluded): Pearson correlation (blind to a rescaling) and FVU, the
    critique's metric (sees one). Summaries: mean/min correlation, median/max FVU and the
    fractions of nodes below 0.5 correlation / above 0.5 FVU."""
    wanted = [h for h, idx in circuit.nodes.items() if idx]
    valid = torch.arange(batch.tokens.shape[1])[None, :] <= batch.last[:, None]
    tokens = batch.tokens.to(model.W_E.device)
    store: dict[str, Tensor] = {}
    with torch.no_grad():
        _, full = model.run_with_cache(tokens, names_filter=wanted)
        model.run_with_hooks(
            tokens,
            fwd_hooks=circuit.fwd_hooks(model, tokens) + [(h, record(store)) for h in wanted],
        )
    corr, fvu = {}, {}
    for h in wanted:
        size = circuit.sizes[h]
        a = flat(full[h], size).cpu()[valid].reshape(-1, size).double()
        b = flat(store[h], size).cpu()[valid].reshape(-1, size).double()
        for i in circuit.nodes[h]:
            key = f"{h}[{i}]"
            corr[key], fvu[key] = _pearson(a[:, i], b[:, i]), _fvu(a[:, i], b[:, i])
    c, f = list(corr.values()), sorted(fvu.values())
    n = max(len(c), 1)
    return {
        "mean": sum(c) / n,
        "min": min(c) if c else None,
        "fraction_below_0.5": sum(v < 0.5 for v in c) / n,
        "fvu_median": f[len(f) // 2] if f else None,
        "fvu_max": f[-1] if f else None,
        "fraction_fvu_above_0.5": sum(v > 0.5 for v in f) / n,
        "per_node": corr,
        "per_node_fvu": fvu,
    }


def _patches(circuit: Circuit, chosen: list[tuple[str, int]], full: Any) -> HookList:
    by_hook: dict[str, list[int]] = {}
    for h, i in chosen:
        by_hook.setdefault(h, []).append(i)
    out: HookList = []
    for h, idx in sorted(by_hook.items()):
        keep = torch.ones(circuit.sizes[h])
        keep[idx] = 0.0  # the chosen channels take the full model's values
        out.append((h, node_mask(keep, flat(full[h], circuit.sizes[h]))))
    return out


def interchange(
    model: HookedSparseTransformer,
    circuit: Circuit,
    batch: TaskBatch,
    fractions: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0),
    *,
    draws: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Distances from the full model when a random ``fraction`` of the circuit's non-final
    nodes take the full model's values (``draws`` draws each; the worst is kept), all RMSNorm
    scales frozen at the full model's so a rescaled stream cannot pass for a faithful one.

    The patches act before the removed edges' hooks (a removed edge never carries a patch).
    Final residual nodes feed the unembedding directly, so patching them bypasses the whole
    circuit: they are patched apart (``final_only``) and never among the fractions.
    """
    kept = [(h, i) for h, idx in circuit.nodes.items() for i in idx]
    final = {circuit_final_hook(circuit)}
    inner = [(h, i) for h, i in kept if h not in final]
    tokens = batch.tokens.to(model.W_E.device)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=list(circuit.nodes))
    ref = readout(model, batch, [])
    frozen = frozen_norm_hooks(model, circuit, tokens)
    rng = random.Random(f"interchange:{seed}")

    def run(chosen: list[tuple[str, int]]) -> dict[str, float]:
        hooks = circuit.fwd_hooks(model, tokens, patches=_patches(circuit, chosen, cache))
        return compare(ref, readout(model, batch, frozen + hooks))

    out: dict[str, Any] = {}
    for frac in fractions:
        n = round(frac * len(inner))
        runs = [run(rng.sample(inner, n)) for _ in range(draws if 0 < n < len(inner) else 1)]
        out[str(frac)] = max(runs, key=lambda r: r["kl"])
    finals = [(h, i) for h, i in kept if h in final]
    return {
        "fractions": out,
        "final_only": run(finals) if finals else None,
        "n_inner_nodes": len(inner),
        "n_final_nodes": len(finals),
        "frozen_norms": True,
        "draws": draws,
    }


def circuit_final_hook(circuit: Circuit) -> str:
    """The hook of the final residual nodes (the last ``hook_resid_post``)."""
    return max((h for h in circuit.sizes if h.endswith("hook_resid_post")), key=_layer)


def _layer(hook: str) -> int:
    return int(hook.split(".")[1])


def _complement_masks(circuit: Circuit, ablate: dict[str, Tensor]) -> dict[str, Tensor]:
    """Masks keeping the circuit and every complement node not in ``ablate`` (1 = ablate)."""
    own = circuit.masks()
    return {h: own[h] + (1 - own[h]) * (1 - ablate[h]) for h in own}


def partial_complement(
    model: HookedSparseTransformer,
    circuit: Circuit,
    batch: TaskBatch,
    *,
    probabilities: tuple[float, ...] = (0.25, 0.5, 0.75),
    patterns: int = 12,
    adversarial: int = 2,
    steps: int = 30,
    seed: int = 0,
) -> dict[str, Any]:
    """Loss when only part of the circuit's complement is ablated (Drori 2026, comments):
    ``patterns`` random patterns (each non-circuit node ablated with one of ``probabilities``)
    and ``adversarial`` patterns chosen by gradient ascent on the task loss over a relaxed
    complement mask (``steps`` Adam steps, then rounded), one pattern for the whole batch.
    Norms are live: a circuit that leans on the final norm's amplification loses it when part
    of the complement comes back. A faithful circuit keeps its loss under every pattern."""
    g = torch.Generator().manual_seed(seed)
    ref = readout(model, batch, [])
    tokens = batch.tokens.to(model.W_E.device)

    def evaluate(ablate: dict[str, Tensor]) -> dict[str, float]:
        hooks = circuit.fwd_hooks(model, tokens, masks=_complement_masks(circuit, ablate))
        return compare(ref, readout(model, batch, hooks))

    rand = []
    for n in range(patterns):
        p = probabilities[n % len(probabilities)]
        rand.append(
            evaluate(
                {h: (torch.rand(s, generator=g) < p).float() for h, s in circuit.sizes.items()}
            )
        )
    adv = [evaluate(_adversary(model, circuit, batch, steps, g)) for _ in range(adversarial)]
    losses = sorted(r["loss"] for r in rand)
    worst = max(rand + adv, key=lambda r: r["loss"])
    return {
        "worst": worst,
        "worst_random": max(rand, key=lambda r: r["loss"]),
        "worst_adversarial": max(adv, key=lambda r: r["loss"]) if adv else None,
        "random_losses": losses,
        "random_median": losses[len(losses) // 2],
        "adversarial_losses": [r["loss"] for r in adv],
        "probabilities": list(probabilities),
        "patterns": patterns,
        "adversarial": adversarial,
    }


def _adversary(
    model: HookedSparseTransformer,
    circuit: Circuit,
    batch: TaskBatch,
    steps: int,
    g: torch.Generator,
) -> dict[str, Tensor]:
    """A complement pattern (1 = ablate) that raises the task loss: ``steps`` of Adam ascent on
    sigmoid-relaxed ablation probabilities from a random start, rounded at 0.5."""
    logits = {h: (torch.randn(s, generator=g)).requires_grad_() for h, s in circuit.sizes.items()}
    opt = torch.optim.Adam(list(logits.values()), lr=0.3)
    tokens = batch.tokens.to(model.W_E.device)
    for _ in range(steps):
        ablate = {h: torch.sigmoid(t) for h, t in logits.items()}
        hooks = circuit.fwd_hooks(model, tokens, masks=_complement_masks(circuit, ablate))
        loss = -binary_task_loss(binary_logits(answer_logits(model, batch, hooks), batch)).mean()
        grads = torch.autograd.grad(loss, list(logits.values()), allow_unused=True)
        for t, grad in zip(logits.values(), grads, strict=True):
            t.grad = grad
        opt.step()
    return {h: (t.detach() > 0).float() for h, t in logits.items()}
