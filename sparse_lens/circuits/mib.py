"""The field's yardstick: MIB's circuit faithfulness curve, CPR and CMD (Mueller et al. 2025,
"MIB: A Mechanistic Interpretability Benchmark", §4), for a node circuit of a sparse model.

For a circuit ``C`` with metric ``m`` (here the mean logit difference, correct minus incorrect
candidate, over the task's test pairs):

    f(C) = (m(C) - m(empty)) / (m(model) - m(empty))

where ``empty`` ablates every node and ``model`` ablates none. MIB evaluates a method's
circuits at 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50 and 100% of the model's edges and reports

    CPR = area under f         (higher is better: the circuits carry the behaviour)
    CMD = area under |1 - f|   (lower is better: the circuits reproduce it, no more, no less)

with the trapezoid rule over the edge fraction. Our circuits are node sets, so a circuit of a
given edge budget is the smallest prefix of a node ranking whose induced edges (nonzero weights
between kept nodes, ``circuits/nodes.py``) reach the budget. The ranking puts the pruned
circuit's nodes first, then every other node; within each group, nodes are ordered by the
attribution-patching estimate of their effect (``find.attribution_scores``) on the training
pairs, so nothing is chosen on the test pairs that the curve is measured on. Every circuit runs
under the pruned circuit's norm regime (the full model's RMSNorm scales for a frozen-norm
circuit), and the circuit's own ``f`` with its removed edges, as the faithfulness checks run it.
"""

import math
from typing import Any

import torch
from torch import Tensor

from hooks.types import HookList
from sparse_lens.circuits.ablation import norm_scale_hooks
from sparse_lens.circuits.circuit import Circuit, node_masks
from sparse_lens.circuits.nodes import node_locations
from sparse_lens.model.transformer import HookedSparseTransformer
from sparse_lens.tasks.task import TaskBatch, answer_logits, binary_logits

EDGE_PERCENTS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)


@torch.no_grad()
def count_edges(model: HookedSparseTransformer, keep: dict[str, Tensor]) -> int:
    """Edges between kept nodes (``keep``: hook -> ``[channels]`` 0/1), as ``circuit_edges``
    counts them, without listing them."""
    cfg = model.cfg
    hd = cfg.n_heads * cfg.d_head
    total = 0

    def add(src: str, dst: str, weight: Tensor) -> int:
        rows, cols = keep[src].bool(), keep[dst].bool()
        return int((weight[rows][:, cols] != 0).sum())

    for layer, block in enumerate(model.blocks):
        b = f"blocks.{layer}"
        for kind, W in (("q", block.attn.W_Q), ("k", block.attn.W_K), ("v", block.attn.W_V)):
            total += add(
                f"{b}.attn.hook_in", f"{b}.attn.hook_{kind}", W.permute(1, 0, 2).reshape(-1, hd)
            )
        total += add(f"{b}.attn.hook_v", f"{b}.hook_attn_out", block.attn.W_O.reshape(hd, -1))
        total += add(f"{b}.mlp.hook_in", f"{b}.mlp.hook_post", block.mlp.W_in)
        total += add(f"{b}.mlp.hook_post", f"{b}.hook_mlp_out", block.mlp.W_out)
    return total


def ranking(circuit: Circuit, scores: dict[str, Tensor]) -> list[tuple[str, int]]:
    """Every node, the circuit's first, each group by decreasing ``scores`` (module docstring)."""
    kept = {(h, c) for h, chans in circuit.nodes.items() for c in chans}
    nodes = [(h, c) for h, size in circuit.sizes.items() for c in range(size)]
    return sorted(nodes, key=lambda n: ((n not in kept), -float(scores[n[0]][n[1]])))


def _keep_of(order: list[tuple[str, int]], k: int, sizes: dict[str, int]) -> dict[str, Tensor]:
    """Masks keeping the first ``k`` nodes of ``order``."""
    kept: dict[str, list[int]] = {}
    for h, c in order[:k]:
        kept.setdefault(h, []).append(c)
    return node_masks(sizes, kept)


def _prefix_for(
    model: HookedSparseTransformer, order: list[tuple[str, int]], sizes: dict[str, int], budget: int
) -> int:
    """Smallest prefix length whose induced edges reach ``budget`` (bisection; edges grow with
    the prefix)."""
    lo, hi = 0, len(order)
    while lo < hi:
        mid = (lo + hi) // 2
        if count_edges(model, _keep_of(order, mid, sizes)) >= budget:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _logit_diff(model: HookedSparseTransformer, batch: TaskBatch, hooks: HookList) -> float:
    with torch.no_grad():
        two = binary_logits(answer_logits(model, batch, hooks), batch)
    return float((two[:, 0] - two[:, 1]).mean())


def _hooks(circuit: Circuit, keep: dict[str, Tensor], norms: HookList) -> HookList:
    """Node masks keeping ``keep``, under the circuit's norm regime ``norms`` (the full model's
    scales for a frozen-norm circuit, none for a live-norm one)."""
    return norms + circuit.mask_hooks(keep)


def area(xs: list[float], ys: list[float]) -> float:
    """Trapezoid area under ``ys`` over ``xs`` (increasing)."""
    return sum((xs[i + 1] - xs[i]) * (ys[i] + ys[i + 1]) / 2 for i in range(len(xs) - 1))


def faithfulness_curve(
    model: HookedSparseTransformer,
    circuit: Circuit,
    scores: dict[str, Tensor],
    test: TaskBatch,
    percents: tuple[float, ...] = EDGE_PERCENTS,
) -> dict[str, Any]:
    """f at each edge percentage, with CPR and CMD (module docstring), the circuit's own f and
    its share of the edges. ``scores``: hook -> ``[channels]`` node scores for the ranking.

    Raises:
        ValueError: the full and the empty model have the same logit difference (f undefined).
    """
    sizes = {loc.hook: loc.size for loc in node_locations(model.cfg)}
    order = ranking(circuit, scores)
    total = count_edges(model, {h: torch.ones(s) for h, s in sizes.items()})
    tokens = test.tokens.to(model.W_E.device)
    norms = norm_scale_hooks(model, tokens) if circuit.freeze_norms else []
    full = _logit_diff(model, test, [])
    empty = _logit_diff(
        model, test, _hooks(circuit, {h: torch.zeros(s) for h, s in sizes.items()}, norms)
    )
    if abs(full - empty) < 1e-9:
        raise ValueError(f"the full and the empty circuit both give logit difference {full:.4g}")

    def f(keep: dict[str, Tensor]) -> float:
        return (_logit_diff(model, test, _hooks(circuit, keep, norms)) - empty) / (full - empty)

    points = []
    for pct in percents:
        k = _prefix_for(model, order, sizes, max(1, math.ceil(pct / 100 * total)))
        keep = _keep_of(order, k, sizes)
        points.append({"percent": pct, "nodes": k, "edges": count_edges(model, keep), "f": f(keep)})
    xs = [p["percent"] / 100 for p in points]
    ys = [p["f"] for p in points]
    return {
        "metric": "mean logit difference (correct - incorrect), test pairs",
        "full_logit_diff": full,
        "empty_logit_diff": empty,
        "total_edges": total,
        "points": points,
        "cpr": area(xs, ys),
        "cmd": area(xs, [abs(1 - y) for y in ys]),
        # the circuit itself as the checks run it: its norms and its removed edges
        "circuit_f": (_logit_diff(model, test, circuit.fwd_hooks(model, tokens)) - empty)
        / (full - empty),
        "circuit_edge_percent": 100 * circuit.n_edges / max(total, 1),
        "ranking": "circuit nodes first, then the rest; each by attribution on the train pairs",
    }
