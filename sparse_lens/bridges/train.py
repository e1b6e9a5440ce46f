"""Training bridges: fitted to a trained sparse model, or jointly with the sparse model.

* ``fit_bridges``: the sparse and dense models frozen; Adam on the bridges only, the loss the
  bridge terms of ``bridges.maps.bridge_losses`` (CE is constant and left out).
* ``train_bridged``: the sparse model trained from scratch with its own recipe
  (``training.sparse.train_step``: unit-RMS gradient, sharkfin LR, top-k projection, decoupled decay), its
  loss being CE plus the bridge terms; the bridges take an Adam step on the same backward pass.

Both are step functions run by ``training.loop`` and log per-step losses as dicts; the CLI saves
the results. Given a ``Checkpointing``, each saves its whole state (models, optimizers, data
generator, records) every ``every`` steps in one trainer-state file (``training.loop``) and
resumes from it to the same result as an uninterrupted run.
"""

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sparse_lens.bridges.maps import Bridges, bridge_losses, check_pair, run_sites
from sparse_lens.model.transformer import HookedSparseTransformer
from sparse_lens.training.loop import (
    Loop,
    MetricsLog,
    Stateful,
    TrainerState,
    load_trainer_state,
    refuse_fresh_start,
    save_trainer_state,
    set_lr,
)
from sparse_lens.training.schedules import warmup_linear_decay
from sparse_lens.training.sparse import TrainConfig, make_optimizer, sparsity_hooks, train_step
from sparse_lens.validation import require_min

log = logging.getLogger(__name__)


def _record(out: dict[str, Any]) -> dict[str, Any]:
    return {k: float(out[k].detach()) for k in ("total", "ce", "nmse", "kl_d2s", "kl_s2d")}


def _inputs_record(data: Any, sparse: Any) -> dict[str, Any]:
    """The data and tokenizer a loop trains on, for its settings: resuming on others is
    refused (``training.loop.load_trainer_state``)."""
    tok = getattr(sparse, "tokenizer", None)
    return {
        "data": data.metadata() if hasattr(data, "metadata") else None,
        "tokenizer_sha256": None if tok is None else tok.sha256(),
    }


@dataclass(frozen=True, kw_only=True)
class Checkpointing:
    """Where a bridge loop keeps its trainer state (``training.loop``), how often, and whether to
    continue from it. ``halt_after`` stops after that many steps of this call as if killed."""

    path: Path
    every: int = 50
    resume: bool = False
    halt_after: int | None = None

    def __post_init__(self) -> None:
        require_min(self, ("every",), 1)


def _restore(
    ckpt: Checkpointing | None, settings: dict[str, Any], objects: dict[str, Stateful]
) -> tuple[int, MetricsLog, torch.Generator | None]:
    """Load ``objects``' states (models, optimizers) from ``ckpt`` if resuming from one; returns
    the step reached, the records so far, and the saved data generator (``None`` if fresh)."""
    if ckpt is None:
        return 0, MetricsLog(), None
    refuse_fresh_start(ckpt.path.exists(), ckpt.resume, str(ckpt.path.parent))
    if not (ckpt.resume and ckpt.path.exists()):
        return 0, MetricsLog(), None
    state = load_trainer_state(ckpt.path, settings=settings)
    gen = torch.Generator()
    state.restore(gen, objects)
    metrics = MetricsLog()
    metrics.start(state.step, state.records)
    log.info("resuming from %s at step %d", ckpt.path, state.step)
    return state.step, metrics, gen


def _loop(ckpt: Checkpointing | None, steps: int, progress: bool, desc: str) -> Loop:
    return Loop(
        total=steps,
        checkpoint_every=None if ckpt is None else ckpt.every,
        halt_after=None if ckpt is None else ckpt.halt_after,
        progress=progress,
        desc=desc,
    )


def _saver(
    ckpt: Checkpointing | None,
    settings: dict[str, Any],
    objects: dict[str, Stateful],
    gen: torch.Generator,
    metrics: MetricsLog,
) -> Callable[[int], None] | None:
    """The loop's checkpoint writer: the whole state to ``ckpt.path`` (``None``: none)."""
    if ckpt is None:
        return None

    def save(done: int) -> None:
        state = TrainerState.capture(done, gen, objects, records=metrics.records, settings=settings)
        save_trainer_state(ckpt.path, state)

    return save


def fit_bridges(
    dense: Any,
    sparse: HookedSparseTransformer,
    bridges: Bridges,
    data: Any,
    *,
    steps: int,
    batch_size: int,
    lr: float = 3e-3,
    hybrid: bool = True,
    init_windows: int = 32,
    seed: int = 0,
    progress: bool = True,
    checkpoint: Checkpointing | None = None,
) -> list[dict[str, Any]]:
    """Fit ``bridges`` between two frozen models; returns per-step loss records. With
    ``init_windows`` > 0 the bridges start from the least-squares fit on that many windows.
    With ``checkpoint`` the loop's state is saved every ``checkpoint.every`` steps and a resumed
    run reaches the same bridges as an uninterrupted one.

    Raises:
        ValueError: ``steps`` or ``batch_size`` is below 1 (named), or the models and bridges
            do not fit together (``check_pair``).
    """
    check_pair(dense, sparse, bridges)
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps}, {batch_size}")
    opt = torch.optim.Adam(bridges.parameters(), lr=lr)
    settings = {
        "loop": "fit_bridges",
        "inputs": _inputs_record(data, sparse),
        "bridges": asdict(bridges.cfg),
        "sparse": sparse.cfg.to_dict(),
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "hybrid": hybrid,
        "init_windows": init_windows,
        "seed": seed,
    }
    objects: dict[str, Stateful] = {"bridges": bridges, "optimizer": opt}
    start, metrics, gen = _restore(checkpoint, settings, objects)
    if gen is None:
        gen = torch.Generator().manual_seed(seed)
        if init_windows > 0:
            tokens = data.sample(init_windows, sparse.cfg.n_ctx, gen)
            with torch.no_grad():
                _, d_resid = run_sites(dense, tokens, bridges.sites)
                _, s_resid = run_sites(sparse, tokens, bridges.sites)
            bridges.init_least_squares(d_resid, s_resid)

    def step(i: int, _log: bool) -> dict[str, Any]:
        set_lr(opt, warmup_linear_decay(i, steps, lr, max(1, steps // 20)))
        tokens = data.sample(batch_size, sparse.cfg.n_ctx, gen)
        out = bridge_losses(dense, sparse, bridges, tokens, hybrid=hybrid)
        loss = out["total"] - bridges.cfg.ce_coef * out["ce"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return _record(out)

    frozen = [p for p in sparse.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        _loop(checkpoint, steps, progress, "bridges").run(
            step,
            start=start,
            metrics=metrics,
            checkpoint=_saver(checkpoint, settings, objects, gen, metrics),
            postfix=lambda r: {"nmse": f"{r['nmse']:.3f}", "kl": f"{r['kl_d2s']:.3f}"},
        )
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return metrics.records


def train_bridged(
    dense: Any,
    sparse: HookedSparseTransformer,
    bridges: Bridges,
    data: Any,
    tcfg: TrainConfig,
    *,
    bridge_lr: float = 3e-3,
    hybrid: bool = True,
    progress: bool = True,
    checkpoint: Checkpointing | None = None,
) -> list[dict[str, Any]]:
    """Train ``sparse`` with its recipe and ``bridges`` jointly; returns per-step records (resumable
    with ``checkpoint``, as ``fit_bridges``)."""
    check_pair(dense, sparse, bridges)
    opt = make_optimizer(sparse, tcfg)
    bopt = torch.optim.Adam(bridges.parameters(), lr=bridge_lr)
    settings = {
        "loop": "train_bridged",
        "inputs": _inputs_record(data, sparse),
        "bridges": asdict(bridges.cfg),
        "sparse": sparse.cfg.to_dict(),
        "train": tcfg.to_dict(),
        "bridge_lr": bridge_lr,
        "hybrid": hybrid,
    }
    objects: dict[str, Stateful] = {
        "sparse": sparse,
        "bridges": bridges,
        "optimizer": opt,
        "bridge_optimizer": bopt,
    }
    start, metrics, gen = _restore(checkpoint, settings, objects)
    gen = gen if gen is not None else torch.Generator().manual_seed(tcfg.seed)
    last: dict[str, Any] = {}

    def loss_fn(tokens: Tensor) -> Tensor:
        out = bridge_losses(dense, sparse, bridges, tokens, hybrid=hybrid)
        last.clear()
        last.update(out)
        return out["total"]

    sparse.train()
    with sparsity_hooks(sparse, opt, tcfg, step=start) as sparsity:

        def step(i: int, _log: bool) -> dict[str, Any]:
            tokens = data.sample(tcfg.batch_size, sparse.cfg.n_ctx, gen)
            bopt.zero_grad(set_to_none=True)
            stats = train_step(
                sparse, sparse, opt, tokens, i, tcfg, loss_fn=loss_fn, sparsity=sparsity
            )
            set_lr(bopt, bridge_lr * stats.lr / tcfg.lr)
            bopt.step()
            return _record(last) | {"lr": stats.lr}

        _loop(checkpoint, tcfg.steps, progress, "train-bridged").run(
            step,
            start=start,
            metrics=metrics,
            checkpoint=_saver(checkpoint, settings, objects, gen, metrics),
            postfix=lambda r: {"ce": f"{r['ce']:.3f}", "nmse": f"{r['nmse']:.3f}"},
        )
    sparse.eval()
    return metrics.records


@torch.no_grad()
def evaluate_bridges(
    dense: Any,
    sparse: HookedSparseTransformer,
    bridges: Bridges,
    windows: Tensor,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Per-site NMSE and hybrid KL, and the CE terms, averaged over ``windows``."""
    totals: dict[str, float] = {}
    per: dict[str, dict[str, float]] = {}
    n = 0
    for i in range(0, len(windows), batch_size):
        batch = windows[i : i + batch_size]
        out = bridge_losses(dense, sparse, bridges, batch)
        w = len(batch)
        for k in ("ce", "nmse", "kl_d2s", "kl_s2d"):
            totals[k] = totals.get(k, 0.0) + float(out[k].detach()) * w
        for site, vals in out["per_site"].items():
            slot = per.setdefault(site, {})
            for k, v in vals.items():
                slot[k] = slot.get(k, 0.0) + v * w
        dense_ce = dense(batch, return_type="loss")
        totals["dense_ce"] = totals.get("dense_ce", 0.0) + float(dense_ce) * w
        n += w
    return {k: v / n for k, v in totals.items()} | {
        "per_site": {s: {k: v / n for k, v in vals.items()} for s, vals in per.items()}
    }
