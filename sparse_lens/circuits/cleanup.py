"""Clean-up after bisection: the paper's manual pruning of its quote circuit, automated.

The paper (§5, Figure 2) shows the quote circuit after pruning *and* a manual clean-up. Here:

1. **Nodes**: kept nodes are tried for removal least important first (smallest ``tau``, or any
   score); a removal is kept while the validation loss stays at or under the target.
2. **Edges**: single weights between kept nodes (``circuits/nodes.py``'s edges) are tried for removal
   smallest estimated effect first (``|W_ij|`` times the source's mean deviation from its
   ablation value on the validation pairs); a removed edge carries the source's ablation value
   (``circuits/edges.py``). A removal is kept while the validation loss stays at or under the target.

Both stages try blocks of candidates at once, doubling the block after a success and halving it
after a failure down to single candidates, so a long run of removable candidates costs a few
evaluations; every accepted state has been evaluated and passes. ``max_evals`` bounds the
evaluations per stage. Greedy removal fits the validation pairs: callers report the test-split
loss of every stage (``circuits.prune_task.prune_task`` does).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar, get_args

import torch
from torch import Tensor

from hooks import flat, record
from hooks.types import HookList
from sparse_lens.circuits.circuit import circuit_edges, node_masks
from sparse_lens.circuits.edges import Edge, edge_hooks, edge_site
from sparse_lens.circuits.masks import Pruner
from sparse_lens.circuits.nodes import node_label

T = TypeVar("T")
CleanupStage = Literal["nodes", "edges"]
CLEANUP_STAGES: tuple[CleanupStage, ...] = get_args(CleanupStage)


def greedy_remove(
    candidates: Sequence[T], passes: Callable[[list[T]], bool], max_evals: int
) -> tuple[list[T], int]:
    """Remove candidates in order while ``passes(removed)`` holds; returns (removed, evals).

    Blocks grow by doubling after an accepted removal and shrink by halving after a rejected
    one; a single candidate whose removal fails is kept and skipped.
    """
    removed: list[T] = []
    i, size, evals = 0, 1, 0
    while i < len(candidates) and evals < max_evals:
        block = list(candidates[i : i + size])
        evals += 1
        if passes(removed + block):
            removed += block
            i += len(block)
            size *= 2
        elif size > 1:
            size //= 2
        else:
            i += 1
    return removed, evals


@dataclass
class Stage:
    """Circuit size and validation loss after one stage (bisection, nodes, edges)."""

    stage: str
    nodes: int
    edges: int
    val_loss: float
    evals: int = 0
    test_loss: float | None = None


def _masks(pruner: Pruner, kept: dict[str, list[int]]) -> dict[str, Tensor]:
    return node_masks({loc.hook: loc.size for loc in pruner.locs}, kept)


def circuit_loss(pruner: Pruner, kept: dict[str, list[int]], removed: list[Edge]) -> float:
    """Validation loss of the circuit keeping ``kept`` with ``removed`` edges ablated."""
    values = pruner.ablation.channel_values("an edge ablation") if removed else {}
    hooks = edge_hooks(pruner.model, removed, values) if removed else []
    return pruner.loss_of(_masks(pruner, kept), extra_hooks=hooks)


def remove_nodes(
    pruner: Pruner, kept: dict[str, list[int]], score: dict[str, Tensor], max_evals: int = 4000
) -> tuple[dict[str, list[int]], int]:
    """Stage 1: drop kept nodes, lowest ``score`` first, while the loss stays <= target."""
    order = sorted(
        ((float(score[h][c]), h, c) for h, chans in kept.items() for c in chans),
        key=lambda t: t[0],
    )
    target = pruner.pcfg.target_loss

    def without(gone: list[tuple[float, str, int]]) -> dict[str, list[int]]:
        drop = {(h, c) for _, h, c in gone}
        return {h: [c for c in chans if (h, c) not in drop] for h, chans in kept.items()}

    gone, evals = greedy_remove(
        order, lambda g: circuit_loss(pruner, without(g), []) <= target, max_evals
    )
    return without(gone), evals


@torch.no_grad()
def edge_candidates(pruner: Pruner, kept: dict[str, list[int]]) -> list[Edge]:
    """Every edge between kept nodes, smallest estimated effect first (module docstring)."""
    model, cfg = pruner.model, pruner.model.cfg
    locs = {loc.hook: loc for loc in pruner.locs}
    labels = {node_label(locs[h], c, cfg): (h, c) for h, chans in kept.items() for c in chans}
    edges = [(*labels[s], *labels[t]) for s, t, _ in circuit_edges(model, kept)]
    reads = {edge_site(model, s, t).read for s, _, t, _ in edges}
    cache = _cached_reads(pruner, _masks(pruner, kept), reads)
    scored = []
    for s, i, t, j in edges:
        site = edge_site(model, s, t)
        fill = pruner.ablation.values[s]
        read = flat(cache[site.read], fill.shape[-1])
        dev = float((read[..., i] - fill[i].to(read)).abs().mean())
        scored.append((abs(float(site.weight[i, j])) * dev, (s, i, t, j)))
    scored.sort(key=lambda x: x[0])
    return [e for _, e in scored]


def _cached_reads(pruner: Pruner, masks: dict[str, Tensor], reads: set[str]) -> dict[str, Tensor]:
    store: dict[str, Tensor] = {}
    hooks: HookList = [(r, record(store)) for r in reads]
    pruner.answer_logits(masks, pruner.val, hooks)
    return store


def remove_edges(
    pruner: Pruner, kept: dict[str, list[int]], max_evals: int = 4000
) -> tuple[list[Edge], int]:
    """Stage 2: drop single edges between kept nodes while the loss stays <= target.

    Raises:
        ValueError: the pruner's ablation is ``resample`` (edges need per-channel fill values).
    """
    pruner.ablation.channel_values("edge clean-up")  # refuses per-example values
    target = pruner.pcfg.target_loss
    return greedy_remove(
        edge_candidates(pruner, kept),
        lambda gone: circuit_loss(pruner, kept, gone) <= target,
        max_evals,
    )


def parse_stages(text: str) -> tuple[CleanupStage, ...]:
    """``"nodes,edges"`` -> ("nodes", "edges"); ``""`` or ``"none"`` -> ().

    Raises:
        ValueError: an unknown stage or one out of order (edges are cleaned after nodes).
    """
    if text.strip() in ("", "none"):
        return ()
    stages = tuple(s.strip() for s in text.split(","))
    check_stages(stages)
    return tuple(s for s in CLEANUP_STAGES if s in stages)


def check_stages(stages: Sequence[str]) -> None:
    """Raise unless ``stages`` are clean-up stages in the order of ``CLEANUP_STAGES``.

    Raises:
        ValueError: an unknown stage or one out of order (edges are cleaned after nodes).
    """
    bad = [s for s in stages if s not in CLEANUP_STAGES]
    if bad:
        raise ValueError(f"unknown clean-up stage(s) {bad}; choose from {CLEANUP_STAGES}")
    if list(stages) != [s for s in CLEANUP_STAGES if s in stages]:
        raise ValueError(f"clean-up stages must be in the order {CLEANUP_STAGES}, got {stages!r}")
