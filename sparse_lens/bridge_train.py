"""Training bridges: fitted to a trained sparse model, or jointly with the sparse model.

* ``fit_bridges``: the sparse and dense models frozen; Adam on the bridges only, the loss the
  bridge terms of ``bridges.bridge_losses`` (CE is constant and left out).
* ``train_bridged``: the sparse model trained from scratch with its own recipe
  (``train.train_step``: unit-RMS gradient, sharkfin LR, top-k projection, decoupled decay), its
  loss being CE plus the bridge terms; the bridges take an Adam step on the same backward pass.

Both log per-step losses as dicts and write nothing themselves; the CLI saves the results.
"""

import logging
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from sparse_lens.bridges import Bridges, bridge_losses, check_pair
from sparse_lens.model import HookedSparseTransformer
from sparse_lens.train import TrainConfig, make_optimizer, train_step

log = logging.getLogger(__name__)


def _record(step: int, out: dict[str, Any]) -> dict[str, Any]:
    rec = {k: float(out[k].detach()) for k in ("total", "ce", "nmse", "kl_d2s", "kl_s2d")}
    return {"step": step} | rec


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
) -> list[dict[str, Any]]:
    """Fit ``bridges`` between two frozen models; returns per-step loss records. With
    ``init_windows`` > 0 the bridges start from the least-squares fit on that many windows."""
    check_pair(dense, sparse, bridges)
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps}, {batch_size}")
    gen = torch.Generator().manual_seed(seed)
    if init_windows > 0:
        from sparse_lens.bridges import run_sites

        tokens = data.sample(init_windows, sparse.cfg.n_ctx, gen)
        with torch.no_grad():
            _, d_resid = run_sites(dense, tokens, bridges.sites)
            _, s_resid = run_sites(sparse, tokens, bridges.sites)
        bridges.init_least_squares(d_resid, s_resid)
    opt = torch.optim.Adam(bridges.parameters(), lr=lr)
    frozen = [p for p in sparse.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    records = []
    try:
        bar = tqdm(range(steps), desc="bridges", disable=not progress)
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
) -> list[dict[str, Any]]:
    """Train ``sparse`` with its recipe and ``bridges`` jointly; returns per-step records."""
    check_pair(dense, sparse, bridges)
    torch.manual_seed(tcfg.seed)
    opt = make_optimizer(sparse, tcfg)
    bopt = torch.optim.Adam(bridges.parameters(), lr=bridge_lr)
    gen = torch.Generator().manual_seed(tcfg.seed)
    records: list[dict[str, Any]] = []
    last: dict[str, Any] = {}

    def loss_fn(tokens: Tensor) -> Tensor:
        out = bridge_losses(dense, sparse, bridges, tokens, hybrid=hybrid)
        last.clear()
        last.update(out)
        return out["total"]

    sparse.train()
    bar = tqdm(range(tcfg.steps), desc="train-bridged", disable=not progress)
    for step in bar:
        tokens = data.sample(tcfg.batch_size, sparse.cfg.n_ctx, gen)
        bopt.zero_grad(set_to_none=True)
        stats = train_step(sparse, sparse, opt, tokens, step, tcfg, loss_fn=loss_fn)
        for group in bopt.param_groups:
            group["lr"] = bridge_lr * stats.lr / tcfg.lr
        bopt.step()
        records.append(_record(step + 1, last) | {"lr": stats.lr})
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
