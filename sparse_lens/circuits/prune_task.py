"""A task's smallest faithful circuit, end to end (arXiv 2511.13653 §3.1-3.3, App. A.5).

* ``PruneRequest``: everything that decides a circuit: the mask-training settings
  (``PruneConfig``), the search and its settings, the clean-up, the seeds, the attribution
  baseline, the faithfulness report and the task pairs per split. ``sparse-lens prune``, the
  sweep and the demo each build one and hand it here.
* ``prune_task``: builds the task's train / val / test batches and the ablation values, runs
  ``find.find_circuit`` (search, bisection, clean-up), and returns the ``Circuit`` with its
  test-split loss, optionally with the circuits of further pruning seeds and the
  attribution-ranked baseline.
* ``prune_to_file``: ``prune_task``, then the circuit file with what it records of the run
  (seconds, model folder, pretraining windows, faithfulness report), and its summary row.
* ``ablation_windows``: the pretraining windows of a model folder's own training mix that the
  ablation means are taken over, and their record.
"""

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from sparse_lens.circuits.ablation import make_ablation, model_fingerprint
from sparse_lens.circuits.circuit import Circuit, circuit_edges
from sparse_lens.circuits.cleanup import CLEANUP_STAGES, CleanupStage, check_stages
from sparse_lens.circuits.edges import edge_hooks
from sparse_lens.circuits.faithfulness import faithfulness_report
from sparse_lens.circuits.find import (
    SEARCH_METHODS,
    Found,
    SearchMethod,
    attribution_baseline,
    edge_labels,
    find_circuit,
    seed_summary,
)
from sparse_lens.circuits.hparam_search import SearchConfig
from sparse_lens.circuits.masks import PruneConfig, Pruner
from sparse_lens.circuits.nodes import node_label
from sparse_lens.circuits.summary import summary_row
from sparse_lens.data.token_data import (
    model_token_data,
    run_info_beside,
    training_mix,
    windows_digest,
)
from sparse_lens.model.transformer import HookedSparseTransformer
from sparse_lens.tasks.selection import other_task
from sparse_lens.tasks.task import Task, TaskBatch, concat_batches, get_task, task_batch
from sparse_lens.validation import require_min
from sparse_lens.vocab import PAPER_TARGET


@dataclass(frozen=True, kw_only=True)
class PruneRequest:
    """One pruning request (module docstring).

    ``prune``: the mask-training settings (target loss, ablation, frozen norms, steps, q/k
    tying, seed); ``search``: ``"optuna"`` (with ``search_cfg``: trials, wall-clock budget,
    epochs range, storage), ``"grid"`` or ``"none"``; ``cleanup``: stages of
    ``circuits/cleanup.py``, at most ``cleanup_evals`` validation evaluations each;
    ``seeds > 1`` repeats the chosen settings with further pruning seeds and records core, union
    and Jaccard (``extra["seeds"]``); ``attribution`` adds the attribution-ranked baseline
    (``extra["attribution"]``); ``faithfulness`` adds the faithfulness report
    (``extra["faithfulness"]``, ``prune_to_file`` only); ``n_train``, ``n_val``, ``n_test``:
    task pairs of each split.
    """

    prune: PruneConfig = field(default_factory=PruneConfig)
    search: SearchMethod = "optuna"
    search_cfg: SearchConfig = field(default_factory=SearchConfig)
    cleanup: tuple[CleanupStage, ...] = CLEANUP_STAGES
    cleanup_evals: int = 2000
    seeds: int = 1
    attribution: bool = False
    faithfulness: bool = False
    n_train: int = 256
    n_val: int = 128
    n_test: int = 128

    def __post_init__(self) -> None:
        if self.search not in SEARCH_METHODS:
            raise ValueError(f"search must be one of {SEARCH_METHODS}, got {self.search!r}")
        check_stages(self.cleanup)
        require_min(self, ("cleanup_evals", "seeds", "n_train", "n_val", "n_test"), 1)


def prune_task(
    model: HookedSparseTransformer,
    task: Task,
    pretrain_windows: Int[Tensor, "batch pos"],
    request: PruneRequest,
    *,
    cache_dir: Path | None = None,
    progress: bool = False,
) -> Circuit:
    """Prune ``model`` to the smallest circuit reaching ``request.prune.target_loss`` on
    ``task``: masks are trained on the task's train split, bisected (and cleaned up) on its
    validation split, and the circuit's loss is also reported on the test split.
    ``pretrain_windows`` are the windows of the ablation means (``cache_dir`` caches them).

    Raises:
        ValueError: the model has no tokenizer or lacks the task's tokens, or even the full model
            (every node kept) does not reach the target loss.
    """
    pcfg = request.prune
    pruner, test = _task_pruner(model, task, pretrain_windows, request, cache_dir)
    study = (
        f"{task.name}-{model_fingerprint(model)}-target{pcfg.target_loss}-{pcfg.ablation}"
        f"{'-frozen' if pcfg.freeze_norms else ''}-seed{pcfg.seed}-n{request.n_train}"
    )
    found = find_circuit(
        pruner,
        request.search,
        request.search_cfg,
        request.cleanup,
        study_name=study,
        max_evals=request.cleanup_evals,
        test=test,
        progress=progress,
    )
    chosen = pruner.with_config(found.cfg)
    circuit = _circuit_of(chosen, found, task.name, len(test))
    if request.seeds > 1:
        circuit.extra["seeds"] = _other_seeds(chosen, found, request)
    if request.attribution:  # both arms bisected, neither cleaned up: like against like
        base = attribution_baseline(chosen)
        learned = found.stages[0]  # the learned ranking's bisection, before any clean-up
        base["learned_nodes"], base["learned_edges"] = learned.nodes, learned.edges
        base["learned_over_attribution_nodes"] = learned.nodes / max(base["nodes"], 1)
        base["learned_over_attribution_edges"] = learned.edges / max(base["edges"], 1)
        base["compared"] = "both bisected on the validation pairs, neither cleaned up"
        circuit.extra["attribution"] = base
    return circuit


def _task_pruner(
    model: HookedSparseTransformer,
    task: Task,
    pretrain_windows: Tensor,
    request: PruneRequest,
    cache_dir: Path | None,
) -> tuple[Pruner, TaskBatch]:
    """A pruner on the task's train and val splits, and its test split."""
    tok = model.tokenizer
    if tok is None:
        raise ValueError("pruning needs a model with a tokenizer")
    pcfg, n_ctx = request.prune, model.cfg.n_ctx
    sizes = (request.n_train, request.n_val, request.n_test)
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
    """The ``Circuit`` of ``find_circuit``'s result (``pruner``: under the chosen settings),
    calibrated if the config asks."""
    cfg, ablation = pruner.pcfg, pruner.ablation
    circuit = Circuit.from_nodes(
        pruner.model,
        found.kept,
        ablation.values,  # per-example values are not recorded (``from_nodes``)
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
        values = ablation.channel_values("an edge ablation") if removed else {}
        hooks = edge_hooks(pruner.model, removed, values) if removed else None
        circuit.calibration, circuit.calibrated_loss = pruner.calibrate(circuit.masks(), hooks)
    return circuit


def _chosen(cfg: PruneConfig) -> dict[str, Any]:
    names = ("k_coef", "lr", "weight_decay", "beta2", "warmup_frac", "heaviside_temp")
    names += ("init_noise_scale", "init_noise_bias", "steps", "epochs", "batch_pairs", "tie_qk")
    return {n: getattr(cfg, n) for n in names}


def _other_seeds(pruner: Pruner, found: Found, request: PruneRequest) -> dict[str, Any]:
    """Circuits of the chosen settings (``pruner.pcfg``) with pruning seeds ``seed + 1 ..
    seed + seeds - 1``."""
    cfg, cfg_model = pruner.pcfg, pruner.model.cfg
    locs = {loc.hook: loc for loc in pruner.locs}

    def labels(kept: dict[str, list[int]]) -> set[str]:
        return {node_label(locs[h], c, cfg_model) for h, chans in kept.items() for c in chans}

    sets = {cfg.seed: labels(found.kept)}
    last = found.stages[-1]
    per_seed = [{"seed": cfg.seed, "nodes": last.nodes, "edges": last.edges, "loss": found.loss}]
    for extra in range(1, request.seeds):
        seed = cfg.seed + extra
        other_pruner = pruner.with_config(dataclasses.replace(cfg, seed=seed))
        other = find_circuit(
            other_pruner, "none", None, request.cleanup, max_evals=request.cleanup_evals
        )
        sets[seed] = labels(other.kept)
        n_edges = len(circuit_edges(pruner.model, other.kept)) - len(other.removed_edges)
        per_seed.append(
            {"seed": seed, "nodes": len(sets[seed]), "edges": n_edges, "loss": other.loss}
        )
    return seed_summary(sets) | {"per_seed": per_seed}


def windows_record(windows: Int[Tensor, "batch pos"], seed: int) -> dict[str, Any]:
    """What a circuit file records of the pretraining windows behind its ablation means."""
    return {
        "split": "train",
        "n_windows": int(windows.shape[0]),
        "n_ctx": int(windows.shape[1]),
        "seed": seed,
        "sha256": windows_digest(windows),
    }


def ablation_windows(
    model: HookedSparseTransformer,
    model_dir: Path | None,
    corpus: str | Path | None,
    cache_dir: Path,
    seed: int,
) -> tuple[Int[Tensor, "batch pos"], dict[str, Any]]:
    """64 pretraining windows of ``n_ctx`` tokens drawn with ``seed`` from the model's own
    training mix (its corpus with the idiom stream its ``run.json`` records, ``corpus`` if
    given), and their record (distribution and ``windows_record``). Without ``model_dir`` (a
    model built in memory) the corpus alone, and the record says so.

    Raises:
        ValueError: the model has no tokenizer, its tokenizer is not the corpus's, or its
            ``run.json`` is unreadable or records an idiom stream this package cannot rebuild.
        FileNotFoundError: the corpus does not exist.
    """
    if model.tokenizer is None:
        raise ValueError(f"{model_dir} has no tokenizer.json")
    data = model_token_data(model, corpus, cache_dir)
    info = run_info_beside(model_dir) if model_dir is not None else None
    data, provenance = training_mix(data, model.tokenizer, info, cache_dir)
    windows = data.sample(64, model.cfg.n_ctx, torch.Generator().manual_seed(seed))
    return windows, provenance | windows_record(windows, seed)


def prune_to_file(
    model: HookedSparseTransformer,
    task: Task,
    windows: tuple[Int[Tensor, "batch pos"], dict[str, Any]],
    request: PruneRequest,
    path: Path,
    *,
    model_dir: Path,
    cache_dir: Path | None = None,
    progress: bool = False,
) -> tuple[Circuit, dict[str, Any]]:
    """``prune_task``, then write the circuit to ``path`` (the caller holds it) with the
    seconds it took, the resolved ``model_dir``, the pretraining windows' record (``windows``:
    the tokens and their record, ``ablation_windows``) and, with ``request.faithfulness``, the
    faithfulness report; returns the circuit and its summary row (``summary_row``).

    Raises:
        ValueError: as ``prune_task`` (no circuit reaches the target, ...).
        FloatingPointError: the pruned circuit's loss is not finite.
    """
    tokens, record = windows
    start = time.perf_counter()
    circuit = prune_task(model, task, tokens, request, cache_dir=cache_dir, progress=progress)
    circuit.extra["prune_seconds"] = time.perf_counter() - start
    circuit.extra["model_dir"] = str(model_dir.resolve())
    circuit.extra["ablation_source"] = circuit.extra.get("ablation_source", {}) | {
        "windows": record
    }
    if request.faithfulness:
        circuit.extra["faithfulness"] = _faithfulness(
            model, circuit, task, tokens, request, cache_dir
        )
    circuit.save(path)
    return circuit, summary_row(circuit, str(path))


def _faithfulness(
    model: HookedSparseTransformer,
    circuit: Circuit,
    task: Task,
    windows: Tensor,
    request: PruneRequest,
    cache_dir: Path | None,
) -> dict[str, Any]:
    """The faithfulness report of ``circuit`` under its chosen settings, with the suite task
    the model solves best beside it for specificity."""
    pcfg = request.prune
    abl = make_ablation(pcfg.ablation, model, windows, cache_dir=cache_dir)
    chosen = dataclasses.replace(pcfg, **circuit.hparams["chosen"])
    other = other_task(model, task.name)
    return faithfulness_report(model, circuit, task, abl, chosen, windows, other_task=other)


def prune(
    model: HookedSparseTransformer | str | Path,
    task: Task | str,
    *,
    target_loss: float = PAPER_TARGET,
    request: PruneRequest | None = None,
    model_dir: str | Path | None = None,
    corpus: str | Path | None = None,
    cache_dir: Path | None = None,
    seed: int = 0,
    progress: bool = False,
) -> Circuit:
    """The notebook entry point: the circuit of ``task`` (a ``Task`` or a suite name) in
    ``model`` (a model, or its folder) at ``target_loss`` (the paper's 0.15 by default, §2),
    found as ``sparse-lens prune`` finds it: ``request`` (default: the Optuna search and the
    clean-up, frozen norms, mean ablation), means over 64 windows of the model's training mix
    (its ``run.json`` beside ``model_dir``, the folder it was loaded from when given as a path;
    a model object without ``model_dir`` falls back to the corpus alone, and the circuit's
    ``extra["ablation_source"]`` says which). Does not write a file (``prune_to_file`` does).

    Raises:
        ValueError: an unknown task name, a model without a tokenizer, or no circuit reaches
            ``target_loss`` (even the full model misses it).
        FileNotFoundError: ``model`` or ``corpus`` names a missing folder.
    """

    if isinstance(model, str | Path):
        model_dir = Path(model) if model_dir is None else model_dir
        model = HookedSparseTransformer.from_pretrained(model).eval()
    task = get_task(task) if isinstance(task, str) else task
    if request is None:
        request = PruneRequest(prune=PruneConfig(target_loss=target_loss, seed=seed))
    elif request.prune.target_loss != target_loss:
        request = dataclasses.replace(
            request, prune=dataclasses.replace(request.prune, target_loss=target_loss)
        )
    where = Path(model_dir) if model_dir is not None else None
    tokens, record = ablation_windows(model, where, corpus, cache_dir or _default_cache(), seed)
    circuit = prune_task(model, task, tokens, request, cache_dir=cache_dir, progress=progress)
    circuit.extra["ablation_source"] = circuit.extra.get("ablation_source", {}) | {
        "windows": record
    }
    return circuit


def _default_cache() -> Path:
    return Path("~/.cache/sparse_lens").expanduser()
