"""``prune_task``: a task's smallest faithful circuit, end to end (paper §3.1-3.3).

Builds the task's train / val / test batches and the ablation values, runs ``find.find_circuit``
(search, bisection, clean-up), and returns the ``Circuit`` with its test-split loss, optionally
with the circuits of further pruning seeds and the attribution-ranked baseline.
"""

import dataclasses
from pathlib import Path
from typing import Any

from torch import Tensor

from sparse_lens.circuits.circuit import Circuit, circuit_edges
from sparse_lens.circuits.edges import edge_hooks
from sparse_lens.circuits.find import (
    Found,
    SearchMethod,
    attribution_baseline,
    edge_labels,
    find_circuit,
    seed_summary,
)
from sparse_lens.circuits.hparam_search import SearchConfig
from sparse_lens.circuits.masks import PruneConfig, Pruner, make_ablation, model_fingerprint
from sparse_lens.circuits.nodes import node_label
from sparse_lens.model.transformer import HookedSparseTransformer
from sparse_lens.tasks.task import Task, TaskBatch, concat_batches, task_batch


def prune_task(
    model: HookedSparseTransformer,
    task: Task,
    pretrain_windows: Tensor,
    pcfg: PruneConfig,
    *,
    n_train: int = 256,
    n_val: int = 128,
    n_test: int = 128,
    search: bool | SearchMethod = True,
    search_cfg: SearchConfig | None = None,
    cleanup: tuple[str, ...] = (),
    seeds: int = 1,
    attribution: bool = False,
    cleanup_evals: int = 2000,
    cache_dir: Path | None = None,
    progress: bool = False,
) -> Circuit:
    """Prune ``model`` to the smallest circuit reaching ``pcfg.target_loss`` on ``task``.

    Masks are trained on the task's train split, bisected (and cleaned up) on its validation
    split, and the circuit's loss is also reported on the test split. ``search``: ``"optuna"``
    (with ``search_cfg``, a ``search.SearchConfig``), ``"grid"`` (or True), ``"none"`` (or
    False); ``cleanup``: stages of ``circuits/cleanup.py``; ``seeds > 1`` repeats the chosen settings
    with further pruning seeds and records core, union and Jaccard (``extra["seeds"]``);
    ``attribution`` adds the attribution-ranked baseline (``extra["attribution"]``);
    ``cleanup_evals`` caps the validation evaluations of each clean-up stage.

    Raises:
        ValueError: the model has no tokenizer or lacks the task's tokens, or even the full model
            (every node kept) does not reach the target loss.
    """
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds!r}")
    method: SearchMethod = "grid" if search is True else "none" if search is False else search
    pruner, test = _task_pruner(
        model, task, pretrain_windows, pcfg, (n_train, n_val, n_test), cache_dir
    )
    study = (
        f"{task.name}-{model_fingerprint(model)}-target{pcfg.target_loss}-{pcfg.ablation}"
        f"{'-frozen' if pcfg.freeze_norms else ''}-seed{pcfg.seed}-n{n_train}"
    )
    found = find_circuit(
        pruner,
        method,
        search_cfg,
        cleanup,
        study_name=study,
        max_evals=cleanup_evals,
        test=test,
        progress=progress,
    )
    pruner.pcfg = found.cfg
    try:
        circuit = _circuit_of(pruner, found, task.name, len(test))
        if seeds > 1:
            circuit.extra["seeds"] = _other_seeds(
                pruner, found.cfg, found, seeds, cleanup, cleanup_evals
            )
        if attribution:  # both arms bisected, neither cleaned up: like against like
            base = attribution_baseline(pruner)
            learned = found.stages[0]  # the learned ranking's bisection, before any clean-up
            base["learned_nodes"], base["learned_edges"] = learned.nodes, learned.edges
            base["learned_over_attribution_nodes"] = learned.nodes / max(base["nodes"], 1)
            base["learned_over_attribution_edges"] = learned.edges / max(base["edges"], 1)
            base["compared"] = "both bisected on the validation pairs, neither cleaned up"
            circuit.extra["attribution"] = base
    finally:
        pruner.pcfg = pcfg
    return circuit


def _task_pruner(
    model: HookedSparseTransformer,
    task: Task,
    pretrain_windows: Tensor,
    pcfg: PruneConfig,
    sizes: tuple[int, int, int],
    cache_dir: Path | None,
) -> tuple[Pruner, TaskBatch]:
    """A pruner on the task's train and val splits, and its test split."""
    tok = model.tokenizer
    if tok is None:
        raise ValueError("pruning needs a model with a tokenizer")
    n_ctx = model.cfg.n_ctx
    train, val, test = (
        task_batch(task, tok, n_ctx, split, n, pcfg.seed)
        for split, n in zip(("train", "val", "test"), sizes, strict=True)
    )
    ablation = make_ablation(
        pcfg.ablation,
        model,
        pretrain_windows,
        concat_batches(train, val, tok.eot_id),
        cache_dir,
        pcfg.seed,
        pcfg.mean_excludes_separators,
    )
    return Pruner(model, train, val, ablation, pcfg), test


def _circuit_of(pruner: Pruner, found: Found, task_name: str, n_test: int) -> Circuit:
    """The ``Circuit`` of ``find_circuit``'s result, calibrated if the config asks."""
    cfg, ablation = pruner.pcfg, pruner.ablation
    circuit = Circuit.from_nodes(
        pruner.model,
        found.kept,
        {} if cfg.ablation == "resample" else ablation.values,
        task=task_name,
        ablation=cfg.ablation,
        freeze_norms=cfg.freeze_norms,
        target_loss=cfg.target_loss,
        loss=found.loss,
        full_loss=found.full_loss,
        curve=found.curve,
        removed_edges=edge_labels(pruner, found.removed_edges),
        hparams={"chosen": _chosen(cfg), "search": found.search},
        extra={
            "n_train": len(pruner.train),
            "n_val": len(pruner.val),
            "n_test": n_test,
            "total_nodes": pruner.n_nodes,
            "bisected_nodes": found.bisected_k,
            "stages": [dataclasses.asdict(st) for st in found.stages],
            "ablation_source": ablation.source,
        },
    )
    circuit.test_loss = found.stages[-1].test_loss
    if cfg.calibrate:
        removed = found.removed_edges
        hooks = edge_hooks(pruner.model, removed, ablation.values) if removed else None
        circuit.calibration, circuit.calibrated_loss = pruner.calibrate(circuit.masks(), hooks)
    return circuit


def _chosen(cfg: PruneConfig) -> dict[str, Any]:
    names = ("k_coef", "lr", "weight_decay", "beta2", "warmup_frac", "heaviside_temp")
    names += ("init_noise_scale", "init_noise_bias", "steps", "epochs", "batch_pairs", "tie_qk")
    return {n: getattr(cfg, n) for n in names}


def _other_seeds(
    pruner: Pruner,
    cfg: PruneConfig,
    found: Found,
    seeds: int,
    cleanup: tuple[str, ...],
    max_evals: int,
) -> dict[str, Any]:
    """Circuits of the chosen settings with pruning seeds ``seed + 1 .. seed + seeds - 1``."""
    locs = {loc.hook: loc for loc in pruner.locs}
    cfg_model = pruner.model.cfg

    def labels(kept: dict[str, list[int]]) -> set[str]:
        return {node_label(locs[h], c, cfg_model) for h, chans in kept.items() for c in chans}

    sets = {cfg.seed: labels(found.kept)}
    per_seed = [
        {
            "seed": cfg.seed,
            "nodes": found.stages[-1].nodes,
            "edges": found.stages[-1].edges,
            "loss": found.loss,
        }
    ]
    for extra in range(1, seeds):
        pruner.pcfg = dataclasses.replace(cfg, seed=cfg.seed + extra)
        other = find_circuit(pruner, "none", None, cleanup, max_evals=max_evals)
        sets[cfg.seed + extra] = labels(other.kept)
        n_edges = len(circuit_edges(pruner.model, other.kept)) - len(other.removed_edges)
        per_seed.append(
            {
                "seed": cfg.seed + extra,
                "nodes": len(sets[cfg.seed + extra]),
                "edges": n_edges,
                "loss": other.loss,
            }
        )
    pruner.pcfg = cfg
    return seed_summary(sets) | {"per_seed": per_seed}
