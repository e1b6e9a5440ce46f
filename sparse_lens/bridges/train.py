"""Training bridges: fitted to a trained sparse model, or jointly with the sparse model.

* ``fit_bridges``: the sparse and dense models frozen; Adam on the bridges only, the loss the
  bridge terms of ``bridges.bridge_losses`` (CE is constant and left out).
* ``train_bridged``: the sparse model trained from scratch with its own recipe
  (``train.train_step``: unit-RMS gradient, sharkfin LR, top-k projection, decoupled decay), its
  loss being CE plus the bridge terms; the bridges take an Adam step on the same backward pass.

Both log per-step losses as dicts; the CLI saves the results. Given a ``Checkpointing``, each
saves its whole state (models, optimizers, data generator, records) every ``every`` steps in one
file and resumes from it to the same result as an uninterrupted run.
"""

import hashlib
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from sparse_lens.bridges.maps import Bridges, bridge_losses, check_pair
from sparse_lens.model.transformer import HookedSparseTransformer
from sparse_lens.training.loop_state import check_resumable, load_loop_state, save_loop_state
from sparse_lens.training.sparse import TrainConfig, make_optimizer, train_step
from sparse_lens.validation import require_min

log = logging.getLogger(__name__)


def _record(step: int, out: dict[str, Any]) -> dict[str, Any]:
    rec = {k: float(out[k].detach()) for k in ("total", "ce", "nmse", "kl_d2s", "kl_s2d")}
    return {"step": step} | rec


def _inputs_record(data: Any, sparse: Any) -> dict[str, Any]:
    """The data and tokenizer a loop trains on, for its settings: resuming on others is
    refused (``resume.load_loop_state``)."""
    tok = getattr(sparse, "tokenizer", None)
    return {
        "data": data.metadata() if hasattr(data, "metadata") else None,
        "tokenizer_sha256": None
        if tok is None
        else hashlib.sha256(tok.to_json().encode()).hexdigest(),
    }


@dataclass(frozen=True, kw_only=True)
class Checkpointing:
    """Where a bridge loop keeps its whole state (``resume.py``), how often, and whether to
    continue from it. ``halt_after`` stops after that many steps of this call as if killed."""

    path: Path
    every: int = 50
    resume: bool = False
    halt_after: int | None = None

    def __post_init__(self) -> None:
        require_min(self, ("every",), 1)


def _restore(
    ckpt: Checkpointing | None, settings: dict[str, Any], modules: dict[str, Any]
) -> tuple[int, list[dict[str, Any]], torch.Generator | None]:
    """Load ``modules``' states (models, optimizers) from ``ckpt`` if resuming from one; returns
    the step reached, the records so far, and the saved data generator (``None`` if fresh)."""
    if ckpt is None:
        return 0, [], None
    check_resumable(ckpt.path, False, ckpt.resume, str(ckpt.path.parent))
    state = load_loop_state(ckpt.path, settings) if ckpt.resume else None
    if state is None:
        return 0, [], None
    for name, module in modules.items():
        module.load_state_dict(state[name])
    gen = torch.Generator()
    gen.set_state(state["generator"])
    log.info("resuming from %s at step %d", ckpt.path, state["step"])
    return int(state["step"]), list(state["records"]), gen


def _save(
    ckpt: Checkpointing | None,
    settings: dict[str, Any],
    step: int,
    steps: int,
    modules: dict[str, Any],
    gen: torch.Generator,
    records: list[dict[str, Any]],
) -> None:
    if ckpt is None or step % ckpt.every or step == steps:
        return
    states = {name: m.state_dict() for name, m in modules.items()}
    save_loop_state(
        ckpt.path,
        settings=settings,
        step=step,
        generator=gen.get_state(),
        records=records,
        **states,
    )


def _end(ckpt: Checkpointing | None, start: int, steps: int) -> int:
    if ckpt is None or ckpt.halt_after is None:
        return steps
    return min(steps, start + ckpt.halt_after)


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
    run reaches the same bridges as an uninterrupted one."""
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
    modules = {"bridges": bridges, "optimizer": opt}
    start, records, gen = _restore(checkpoint, settings, modules)
    if gen is None:
        gen = torch.Generator().manual_seed(seed)
        if init_windows > 0:
            from sparse_lens.bridges.maps import run_sites

            tokens = data.sample(init_windows, sparse.cfg.n_ctx, gen)
            with torch.no_grad():
                _, d_resid = run_sites(dense, tokens, bridges.sites)
                _, s_resid = run_sites(sparse, tokens, bridges.sites)
            bridges.init_least_squares(d_resid, s_resid)
    frozen = [p for p in sparse.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        bar = tqdm(
            range(start, _end(checkpoint, start, steps)),
            initial=start,
            total=steps,
            desc="bridges",
            disable=not progress,
        )
        for step in bar:
            for group in opt.param_groups:
                group["lr"] = lr * min(1.0, (step + 1) / max(1, steps // 20)) * (1 - step / steps)
            tokens = data.sample(batch_size, sparse.cfg.n_ctx, gen)
            out = bridge_losses(dense, sparse, bridges, tokens, hybrid=hybrid)
            loss = out["total"] - bridges.cfg.ce_coef * out["ce"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            records.append(_record(step + 1, out))
            _save(checkpoint, settings, step + 1, steps, modules, gen, records)
            bar.set_postfix(
                nmse=f"{float(out['nmse'].detach()):.3f}", kl=f"{float(out['kl_d2s'].detach()):.3f}"
            )
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return records


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
    modules = {"sparse": sparse, "bridges": bridges, "optimizer": opt, "bridge_optimizer": bopt}
    start, records, gen = _restore(checkpoint, settings, modules)
    gen = gen if gen is not None else torch.Generator().manual_seed(tcfg.seed)
    last: dict[str, Any] = {}

    def loss_fn(tokens: Tensor) -> Tensor:
        out = bridge_losses(dense, sparse, bridges, tokens, hybrid=hybrid)
        last.clear()
        last.update(out)
        return out["total"]

    sparse.train()
    bar = tqdm(
        range(start, _end(checkpoint, start, tcfg.steps)),
        initial=start,
        total=tcfg.steps,
        desc="train-bridged",
        disable=not progress,
    )
    for step in bar:
        tokens = data.sample(tcfg.batch_size, sparse.cfg.n_ctx, gen)
        bopt.zero_grad(set_to_none=True)
        stats = train_step(sparse, sparse, opt, tokens, step, tcfg, loss_fn=loss_fn)
        for group in bopt.param_groups:
            group["lr"] = bridge_lr * stats.lr / tcfg.lr
        bopt.step()
        records.append(_record(step + 1, last) | {"lr": stats.lr})
        _save(checkpoint, settings, step + 1, tcfg.steps, modules, gen, records)
        bar.set_postfix(
            ce=f"{float(last['ce'].detach()):.3f}", nmse=f"{float(last['nmse'].detach()):.3f}"
        )
    sparse.eval()
    return records


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
