"""Is a pruned circuit faithful? The paper's checks (App. A.5, App. E) and Drori 2026's controls.

| check | what it measures | a faithful circuit |
|---|---|---|
| sufficiency | task loss of the circuit alone (everything else ablated), test split | <= target |
| necessity | task loss with only the circuit's nodes ablated | well above the full model |
| random-init control | pruning a randomly initialised model of the same shape | fails, or needs far more nodes |
| nonsense-task control | pruning the model for the same contexts with shuffled answers | fails, or needs far more nodes |
| node agreement | per kept node, correlation of its activation in the circuit vs the full model | near 1 |
| interchange | loss when a random fraction of circuit nodes take the full model's values | stays low |

The controls train masks with the same settings and count the nodes the learned mask keeps
(``tau >= 0``) if that mask reaches the target; otherwise they report that pruning failed.
"""

import random
from typing import Any

import torch
from torch import Tensor

from hooks import flat, node_mask, record
from hooks.types import HookList
from sparse_lens.circuits.circuit import Circuit
from sparse_lens.circuits.masks import Ablation, PruneConfig, Pruner, heaviside_ste
from sparse_lens.data.tokenizer import Tokenizer
from sparse_lens.model.transformer import HookedSparseTransformer
from sparse_lens.tasks.task import (
    Task,
    TaskBatch,
    TaskExample,
    task_batch,
    task_loss,
)


def necessity(model: HookedSparseTransformer, circuit: Circuit, batch: TaskBatch) -> float:
    """Task loss with only the circuit's nodes replaced by their ablation values."""
    hooks: HookList = [
        (h, node_mask(1 - m, torch.tensor(circuit.baselines[h])))
        for h, m in circuit.masks().items()
    ]
    return task_loss(model, batch, hooks)


def node_agreement(
    model: HookedSparseTransformer, circuit: Circuit, batch: TaskBatch
) -> dict[str, Any]:
    """Pearson correlation of every kept node's activation, circuit run vs full model, over the
    task's tokens (padding excluded)."""
    hooks_wanted = [h for h, idx in circuit.nodes.items() if idx]
    valid = torch.arange(batch.tokens.shape[1])[None, :] <= batch.last[:, None]
    with torch.no_grad():
        _, full = model.run_with_cache(batch.tokens, names_filter=lambda n: n in hooks_wanted)
        store: dict[str, Tensor] = {}
        model.run_with_hooks(
            batch.tokens,
            fwd_hooks=circuit.fwd_hooks(model, batch.tokens)
            + [(h, record(store)) for h in hooks_wanted],
        )
    per_node = {}
    for h in hooks_wanted:
        size = circuit.sizes[h]
        a = flat(full[h], size)[valid].reshape(-1, size)
        b = flat(store[h], size)[valid].reshape(-1, size)
        for i in circuit.nodes[h]:
            x, y = a[:, i].double(), b[:, i].double()
            dx, dy = x - x.mean(), y - y.mean()
            denom = float(dx.norm() * dy.norm())
            if denom < 1e-12:  # a constant activation: agreement means equal values
                corr = 1.0 if torch.allclose(x, y, atol=1e-6) else 0.0
            else:
                corr = float((dx * dy).sum()) / denom
            per_node[f"{h}[{i}]"] = corr
    values = list(per_node.values())
    return {
        "mean": sum(values) / max(len(values), 1),
        "min": min(values) if values else None,
        "fraction_below_0.5": sum(v < 0.5 for v in values) / max(len(values), 1),
        "per_node": per_node,
    }


def interchange(
    model: HookedSparseTransformer,
    circuit: Circuit,
    batch: TaskBatch,
    fractions: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0),
    seed: int = 0,
) -> dict[str, float]:
    """Loss when a random ``fraction`` of the circuit's nodes take the full model's activations."""
    kept = [(h, i) for h, idx in circuit.nodes.items() for i in idx]
    hooks_wanted = sorted({h for h, _ in kept})
    with torch.no_grad():
        _, full = model.run_with_cache(batch.tokens, names_filter=lambda n: n in hooks_wanted)
    rng = random.Random(seed)
    out = {}
    for frac in fractions:
        chosen = rng.sample(kept, round(frac * len(kept)))
        by_hook: dict[str, list[int]] = {}
        for h, i in chosen:
            by_hook.setdefault(h, []).append(i)
        patches = []
        for h, idx in by_hook.items():
            keep = torch.ones(circuit.sizes[h])
            keep[idx] = 0.0  # the chosen channels take the full model's values
            patches.append((h, node_mask(keep, flat(full[h], circuit.sizes[h]))))
        out[str(frac)] = task_loss(model, batch, circuit.fwd_hooks(model, batch.tokens) + patches)
    return out


def learned_mask_size(
    model: HookedSparseTransformer,
    train: TaskBatch,
    val: TaskBatch,
    ablation: Ablation,
    pcfg: PruneConfig,
) -> dict[str, Any]:
    """Train masks; report the learned mask's size and loss, and whether it reaches the target."""
    pruner = Pruner(model, train, val, ablation, pcfg)
    taus, _ = pruner.learn_masks()
    masks = {h: heaviside_ste(t, pcfg.heaviside_temp).detach() for h, t in taus.items()}
    loss = pruner.loss_of(masks)
    n = int(sum(float(m.sum()) for m in masks.values()))
    return {
        "nodes": n,
        "loss": loss,
        "reached_target": loss <= pcfg.target_loss,
        "total_nodes": pruner.n_nodes,
    }


def nonsense_task(
    task: Task, n: int = 256, seed: int = 0, tokenizer: Tokenizer | None = None
) -> Task:
    """The task's contexts with answers assigned by a coin flip per pair (a nonsense rule).

    With ``tokenizer``, pairs whose candidates are not single tokens of it are left out (as the
    task itself drops them), so the control runs on any vocabulary (e.g. an imported model's).
    """
    rng = random.Random(f"nonsense:{seed}")
    examples: list[TaskExample] = []
    for split in ("train", "val", "test"):
        exs = task.examples(split, n, seed)
        for i in range(0, len(exs) - 1, 2):
            pair = exs[i : i + 2]
            if tokenizer is not None and not all(
                tokenizer.is_single_token(c) for e in pair for c in (e.correct, e.incorrect)
            ):
                continue
            if rng.random() < 0.5:
                pair = [TaskExample(e.context, e.incorrect, e.correct) for e in pair]
            examples += pair
    return Task(
        name=f"{task.name}_nonsense", description="answers by coin flip", fixed=tuple(examples)
    )


def faithfulness_report(
    model: HookedSparseTransformer,
    circuit: Circuit,
    task: Task,
    ablation: Ablation,
    pcfg: PruneConfig,
    pretrain_windows: Tensor,
    *,
    n: int = 128,
    controls: bool = True,
) -> dict[str, Any]:
    """All checks of the module docstring for ``circuit`` on the task's test split.

    Raises:
        ValueError: ``model`` has no tokenizer.
    """
    tok = model.tokenizer
    if tok is None:
        raise ValueError("the faithfulness report needs a model with a tokenizer")
    test = task_batch(task, tok, model.cfg.n_ctx, "test", n, pcfg.seed)
    full = task_loss(model, test, [])
    report: dict[str, Any] = {
        "full_model_loss": full,
        "sufficiency_loss": task_loss(model, test, circuit.fwd_hooks(model, test.tokens)),
        "necessity_loss": necessity(model, circuit, test),
        "node_agreement": node_agreement(model, circuit, test),
        "interchange": interchange(model, circuit, test),
        "n_nodes": circuit.n_nodes,
    }
    if controls:
        train = task_batch(task, tok, model.cfg.n_ctx, "train", n, pcfg.seed)
        val = task_batch(task, tok, model.cfg.n_ctx, "val", n, pcfg.seed)
        random_model = HookedSparseTransformer(
            model.cfg.replace(seed=pcfg.seed + 12345), tok
        ).eval()
        from sparse_lens.circuits.masks import make_ablation

        rand_abl = make_ablation(
            "zero" if ablation.kind == "zero" else "mean", random_model, pretrain_windows
        )
        report["random_init_control"] = learned_mask_size(random_model, train, val, rand_abl, pcfg)
        ns = nonsense_task(task, n, pcfg.seed, tok)
        ns_train = task_batch(ns, tok, model.cfg.n_ctx, "train", n, pcfg.seed)
        ns_val = task_batch(ns, tok, model.cfg.n_ctx, "val", n, pcfg.seed)
        report["nonsense_task_control"] = learned_mask_size(model, ns_train, ns_val, ablation, pcfg)
    return report
