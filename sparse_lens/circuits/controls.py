"""Controls for a pruned circuit: does the same pruning find as small a circuit where there is
nothing to find? (Drori 2026, "Weight-Sparse Circuits May Be Interpretable Yet Unfaithful":
pruning reaches low loss on nonsensical tasks and on random-weight models.)

* **Nonsense task** (``nonsense_batch``): the task's own contexts and candidates, with the
  answer given by a consistent rule unrelated to the task: the first candidate (lower token id)
  is right where the context's last token has an even id, the other where it is odd. The two
  contexts of a minimal pair differ at the token the task reads and usually share their last
  token, so they get one nonsense answer while the task gives them opposite ones. The rule is a
  fixed function of the context that any model can learn (the last token is at the answer
  position; no position embedding needed), unlike answers flipped by a coin, which no circuit
  of any model can predict on held-out pairs and so make the control pass by construction.
* **Random weights** (``permuted_model``): every parameter tensor's nonzero values permuted
  among its nonzero positions: the trained model's value distribution (scale) and sparsity
  pattern, with the learned function destroyed. A model at initialisation scale instead
  collapses to an empty circuit at ln 2 whatever the method, which says nothing.
* ``control_run``: learns masks on the control with the real circuit's settings and data
  sizes, reports its loss at the real circuit's size and, where the control reaches the target
  at all, the nodes and edges bisection needs there.
"""

from typing import Any

import torch
from torch import Tensor

from sparse_lens.circuits.ablation import Ablation
from sparse_lens.circuits.circuit import circuit_edges
from sparse_lens.circuits.masks import PruneConfig, Pruner
from sparse_lens.model.transformer import HookedSparseTransformer
from sparse_lens.tasks.task import TaskBatch


def _even_last(batch: TaskBatch) -> Tensor:
    rows = torch.arange(len(batch))
    return batch.tokens[rows, batch.last] % 2 == 0


def nonsense_batch(batch: TaskBatch) -> TaskBatch:
    """``batch`` with each example's answer set by the nonsense rule (module docstring): the
    lower-id candidate is correct where the context's last token has an even id."""
    low = torch.minimum(batch.correct, batch.incorrect)
    high = torch.maximum(batch.correct, batch.incorrect)
    even = _even_last(batch)
    return TaskBatch(
        tokens=batch.tokens,
        last=batch.last,
        correct=torch.where(even, low, high),
        incorrect=torch.where(even, high, low),
        contexts=list(batch.contexts),
        n_dropped=batch.n_dropped,
    )


def rule_balance(batch: TaskBatch) -> float:
    """Share of the examples in the nonsense rule's smaller class (0.5 is balanced; 0 means
    every example has the same answer, which a constant solves)."""
    even = float(_even_last(batch).float().mean())
    return min(even, 1 - even)


@torch.no_grad()
def permuted_model(model: HookedSparseTransformer, seed: int = 0) -> HookedSparseTransformer:
    """A copy of ``model`` with each parameter's nonzero values permuted among its nonzero
    positions (module docstring); the tokenizer is shared."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, value in model.state_dict().items():
        value = value.detach().clone()
        if value.is_floating_point():
            nz = value != 0
            vals = value[nz]
            value[nz] = vals[torch.randperm(len(vals), generator=g).to(vals.device)]
        state[name] = value
    new = HookedSparseTransformer(model.cfg, model.tokenizer)
    new.load_state_dict(state)
    return new.to(model.W_E.device).eval()


def control_run(
    model: HookedSparseTransformer,
    train: TaskBatch,
    val: TaskBatch,
    ablation: Ablation,
    pcfg: PruneConfig,
    real_nodes: int,
) -> dict[str, Any]:
    """Masks learned on a control (``pcfg``: the real circuit's chosen settings), then:
    ``loss_at_real_size`` (the top ``real_nodes`` nodes by learned ``tau``, validation pairs),
    ``full_loss`` (every node kept) and, if that reaches the target, the bisected ``nodes``,
    ``edges`` and ``loss``; else those are None (``reached_target`` False)."""
    pruner = Pruner(model, train, val, ablation, pcfg)
    taus, _ = pruner.learn_masks()
    at_real = pruner.loss_of(pruner.masks_from_ranking(taus, real_nodes))
    full = pruner.loss_of(pruner.masks_from_ranking(taus, pruner.n_nodes))
    out: dict[str, Any] = {
        "loss_at_real_size": at_real,
        "real_nodes": real_nodes,
        "full_loss": full,
        "reached_target": False,
        "nodes": None,
        "edges": None,
        "loss": None,
        "total_nodes": pruner.n_nodes,
    }
    if full <= pcfg.target_loss:
        k, loss, _ = pruner.bisect(taus, full)
        masks = pruner.masks_from_ranking(taus, k)
        kept = {h: m.nonzero().squeeze(-1).tolist() for h, m in masks.items()}
        out |= {
            "reached_target": True,
            "nodes": k,
            "edges": len(circuit_edges(model, kept)),
            "loss": loss,
        }
    return out
