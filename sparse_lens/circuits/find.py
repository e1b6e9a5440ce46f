"""From a task's batches to the smallest faithful circuit: search, bisection, clean-up, seeds,
and the attribution baseline.

* ``find_circuit``: the hyperparameter search (``"optuna"``: ``circuits/hparam_search.py``; ``"grid"``: the
  4-run grid of ``circuits.masks.search_grid``; ``"none"``: one run), bisection to the target, then the
  clean-up stages of ``circuits/cleanup.py``, with nodes, edges and validation loss after each stage.
* ``seed_summary``: circuits of several pruning seeds compared: the core (nodes kept by every
  seed), the union, per-seed sizes and pairwise Jaccard similarity (sparse models keep backup
  circuits; one seed hides them).
* ``attribution_baseline``: the paper's baseline (§3.3): rank nodes by an attribution-patching
  estimate of the loss change when each is ablated, and bisect to the same target.
"""

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from sparse_lens.circuits.circuit import circuit_edges
from sparse_lens.circuits.cleanup import Stage, circuit_loss, remove_edges, remove_nodes
from sparse_lens.circuits.edges import Edge
from sparse_lens.circuits.hparam_search import SearchConfig, run_search
from sparse_lens.circuits.masks import MaskHolder, PruneConfig, Pruner, search_grid
from sparse_lens.circuits.nodes import node_label
from sparse_lens.tasks.task import TaskBatch
from sparse_lens.vocab import SEARCH_METHODS, SearchMethod


@dataclass
class Found:
    """A circuit found by ``find_circuit``: its settings, nodes, removed edges and history."""

    cfg: PruneConfig
    kept: dict[str, list[int]]
    removed_edges: list[Edge]
    score: dict[str, Tensor]
    bisected_k: int
    loss: float
    full_loss: float
    curve: list[tuple[int, float]]
    stages: list[Stage] = field(default_factory=list)
    search: dict[str, Any] = field(default_factory=dict)


def _kept_of(pruner: Pruner, taus: dict[str, Tensor], k: int) -> dict[str, list[int]]:
    masks = pruner.masks_from_ranking(taus, k)
    return {h: m.nonzero().squeeze(-1).tolist() for h, m in masks.items()}


def _stage(
    pruner: Pruner,
    name: str,
    kept: dict,
    removed: list[Edge],
    evals: int = 0,
    test: Pruner | None = None,
) -> Stage:
    n_edges = len(circuit_edges(pruner.model, kept)) - len(removed)
    return Stage(
        name,
        sum(map(len, kept.values())),
        n_edges,
        circuit_loss(pruner, kept, removed),
        evals,
        None if test is None else circuit_loss(test, kept, removed),
    )


def edge_labels(pruner: Pruner, removed: list[Edge]) -> list[tuple[str, str]]:
    """``(source label, destination label)`` of edges given by hook and channel."""
    locs = {loc.hook: loc for loc in pruner.locs}
    cfg = pruner.model.cfg
    return [(node_label(locs[s], i, cfg), node_label(locs[t], j, cfg)) for s, i, t, j in removed]


def _run_grid(pruner: Pruner, method: SearchMethod, progress: bool) -> tuple[Found, dict]:
    full = pruner.full_loss()
    best: Found | None = None
    tried = []
    for cfg in search_grid(pruner.pcfg) if method == "grid" else [pruner.pcfg]:
        run = pruner.with_config(cfg)
        taus, _ = run.learn_masks(progress)
        k, loss, curve = run.bisect(taus, full)
        tried.append({"k_coef": cfg.k_coef, "lr": cfg.lr, "k": k, "loss": loss})
        if best is None or (k, loss) < (best.bisected_k, best.loss):
            best = Found(cfg, _kept_of(run, taus, k), [], taus, k, loss, full, curve)
    assert best is not None
    return best, {"method": method, "runs": tried}


def _run_optuna(
    pruner: Pruner, scfg: SearchConfig, study_name: str, progress: bool
) -> tuple[Found, dict]:
    study = run_search(pruner, scfg, study_name=study_name, progress=progress)
    try:
        best = study.best_trial
    except ValueError as e:
        raise ValueError(f"the search finished no trial within its budget ({scfg}): {e}") from e
    attrs = best.user_attrs
    if attrs["loss"] > pruner.pcfg.target_loss:
        raise ValueError(f"no trial of study {study.study_name!r} reached the target loss")
    cfg = _best_config(pruner.pcfg, best.params)
    # the clean-up's importance: the kept nodes' learned tau (tau is in [-1, 1])
    score = {loc.hook: torch.full((loc.size,), -2.0) for loc in pruner.locs}
    for h, vals in attrs["kept_taus"].items():
        score[h][torch.tensor(attrs["kept"][h])] = torch.tensor(vals)
    kept = {loc.hook: list(attrs["kept"].get(loc.hook, [])) for loc in pruner.locs}
    states = [t.state.name for t in study.trials]
    info = {
        "method": "optuna",
        "study": study.study_name,
        "trials": len(states),
        "complete": states.count("COMPLETE"),
        "pruned": states.count("PRUNED"),
        "best_trial": best.number,
        "best_params": best.params,
    }
    full = pruner.full_loss()
    curve = [(int(k), float(v)) for k, v in attrs["curve"]]
    return Found(cfg, kept, [], score, attrs["k"], attrs["loss"], full, curve), info


def _best_config(base: PruneConfig, params: dict[str, Any]) -> PruneConfig:
    values = dict(params)
    beta2 = 1.0 - values.pop("inv_beta2")
    return dataclasses.replace(base, **values, beta2=beta2)


def find_circuit(
    pruner: Pruner,
    method: SearchMethod = "optuna",
    scfg: SearchConfig | None = None,
    cleanup: tuple[str, ...] = ("nodes", "edges"),
    *,
    study_name: str = "sparse_lens",
    max_evals: int = 4000,
    test: TaskBatch | None = None,
    progress: bool = False,
) -> Found:
    """Search, bisect and clean up (module docstring); ``pruner.pcfg`` is the base config.
    With ``test`` pairs (and per-channel ablation values), every stage also reports its test
    loss.

    Raises:
        ValueError: an unknown method, the full model misses the target, no search trial
            reached it, or the final circuit's validation loss is above the target.
        FloatingPointError: the final loss is not finite.
    """
    if method not in SEARCH_METHODS:
        raise ValueError(f"search must be one of {SEARCH_METHODS}, got {method!r}")
    if method == "optuna":
        found, info = _run_optuna(pruner, scfg or SearchConfig(), study_name, progress)
    else:
        found, info = _run_grid(pruner, method, progress)
    found.search = info
    chosen = pruner.with_config(found.cfg)
    tp = None
    if test is not None and not pruner.ablation.per_example:
        tp = Pruner(pruner.model, test, test, pruner.ablation, found.cfg)
    found.stages = [_stage(chosen, "bisection", found.kept, [], test=tp)]
    if "nodes" in cleanup:
        found.kept, evals = remove_nodes(chosen, found.kept, found.score, max_evals)
        found.stages.append(_stage(chosen, "nodes", found.kept, [], evals, tp))
    if "edges" in cleanup:
        found.removed_edges, evals = remove_edges(chosen, found.kept, max_evals)
        found.stages.append(_stage(chosen, "edges", found.kept, found.removed_edges, evals, tp))
    found.loss = found.stages[-1].val_loss
    if not math.isfinite(found.loss):
        raise FloatingPointError("pruned loss is not finite")
    if found.loss > pruner.pcfg.target_loss:
        raise ValueError(
            f"the final circuit's validation loss {found.loss:.4f} is above its target "
            f"{pruner.pcfg.target_loss} (search {found.search.get('method')!r}); it is not "
            "reported as a circuit at that target"
        )
    return found


def seed_summary(circuits: dict[int, set[str]]) -> dict[str, Any]:
    """Core, union, per-seed sizes and pairwise Jaccard of node-label sets per seed."""
    sets = list(circuits.values())
    core = set.intersection(*sets) if sets else set()
    union = set.union(*sets) if sets else set()
    seeds = sorted(circuits)
    jaccard = {
        f"{a}-{b}": len(circuits[a] & circuits[b]) / max(len(circuits[a] | circuits[b]), 1)
        for i, a in enumerate(seeds)
        for b in seeds[i + 1 :]
    }
    return {
        "seeds": seeds,
        "sizes": {str(s): len(circuits[s]) for s in seeds},
        "core": sorted(core),
        "n_core": len(core),
        "n_union": len(union),
        "union": sorted(union),
        "jaccard": jaccard,
        "mean_jaccard": sum(jaccard.values()) / len(jaccard) if jaccard else 1.0,
    }


def attribution_scores(pruner: Pruner, batch: TaskBatch) -> dict[str, Tensor]:
    """Per node, |attribution-patching estimate| of the task-loss change when it is ablated:
    ``|sum_(examples, positions) (x - fill) dL/dx| / n_examples``, which is ``|dL/dm|`` at the
    all-ones mask ``m`` (one forward and backward).

    Raises:
        RuntimeError: the task loss does not depend on some masks (their hooks are named).
    """
    masks = {loc.hook: torch.ones(loc.size, requires_grad=True) for loc in pruner.locs}
    live = MaskHolder(pruner.locs, pruner.ablation)
    idx = torch.arange(len(batch))
    requires = [q.requires_grad for q in pruner.model.parameters()]
    for q in pruner.model.parameters():
        q.requires_grad_(False)
    try:
        with pruner.model.hooks(fwd_hooks=live.hooks()):
            loss = pruner.train_loss(live, masks, batch, idx)
        loss.backward()
    finally:
        for q, r in zip(pruner.model.parameters(), requires, strict=True):
            q.requires_grad_(r)
    grads = {h: m.grad for h, m in masks.items()}
    missing = [h for h, g in grads.items() if g is None]
    if missing:
        raise RuntimeError(f"the task loss does not depend on the masks at {missing}")
    return {h: g.abs() for h, g in grads.items() if g is not None}


def attribution_baseline(pruner: Pruner) -> dict[str, Any]:
    """Bisect the attribution ranking (scores on the training pairs) to the target on the
    validation pairs: the baseline's node and edge counts and loss."""
    scores = attribution_scores(pruner, pruner.train)
    k, loss, _ = pruner.bisect(scores)
    kept = _kept_of(pruner, scores, k)
    return {"nodes": k, "edges": len(circuit_edges(pruner.model, kept)), "loss": loss}
