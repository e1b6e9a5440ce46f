"""The pruner: circuit extraction by learned node masks (arXiv 2511.13653, App. A.5).

* One parameter ``tau`` per node (``circuits/nodes.py``), clamped to [-1, 1] after every step. The forward
  pass keeps a node where ``tau >= 0`` (Heaviside); the backward pass uses the derivative of a
  sigmoid of temperature ``heaviside_temp`` (a straight-through estimator).
* Removed nodes take their ablation value (``circuits/ablation.py``: mean, zero or resample).
  ``freeze_norms`` patches every RMSNorm scale with the full model's on the same input (the
  "LayerNorm cheating" control of Drori 2026, "Weight-Sparse Circuits May Be Interpretable Yet
  Unfaithful").
* Objective: task loss + ``k_coef`` x (number of kept nodes); AdamW with warmup and linear decay.
* Discretisation: nodes ranked by ``tau``; bisection finds the smallest k whose circuit reaches
  the target loss on held-out (validation) pairs. Optional calibration fits a scale and shift on
  the final logits with 16 LBFGS steps and is reported separately (a shift added to all logits
  cancels in the two-way softmax, so in effect it fits a temperature).

All interventions are TL hooks: evaluation runs ``hooks/``'s ``node_mask`` through
``run_with_hooks``; mask training installs its hooks once per run (``MaskHolder``) and updates
the masks they read each step. A ``Pruner`` is configured by its constructor and never changed:
``Pruner.with_config`` gives the same task and model under other settings. The search over these
settings, the clean-up after bisection, seeds and the attribution baseline are in
``circuits/find.py``.
"""

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from hooks import blend, flat, node_mask, replace
from hooks.types import HookList
from sparse_lens.circuits.ablation import ABLATIONS, Ablation, AblationKind
from sparse_lens.circuits.nodes import Location, node_locations
from sparse_lens.model.transformer import HookedSparseTransformer
from sparse_lens.tasks.task import (
    TaskBatch,
    answer_logits,
    binary_logits,
    binary_task_loss,
    mean_task_loss,
)
from sparse_lens.training.loop import set_lr
from sparse_lens.training.schedules import warmup_linear_decay
from sparse_lens.validation import require_min
from sparse_lens.vocab import PAPER_TARGET


@dataclass(frozen=True, kw_only=True)
class PruneConfig:
    """Pruning settings; defaults are the paper's CARBS centres (Table 2) where it gives them.

    ``epochs > 0`` trains for that many passes over the fixed training pairs (shuffled each
    epoch, ``batch_pairs`` per step) instead of ``steps`` random draws, as the paper does;
    ``tie_qk`` shares one mask parameter between each query channel and the key channel of the
    same head and index (the paper's hindsight suggestion, §3). The learning rate warms up
    linearly over ``warmup_frac`` of the steps, then decays linearly to 0.

    ``freeze_norms`` (on by default) holds every RMSNorm scale at the full model's on the same
    tokens. With live norms, mean-ablating most of the model shrinks the final residual's RMS
    and ``ln_final`` amplifies the few surviving writes ("norm cheating", Drori 2026): on the
    demo model's ``else_elif`` the live-norm circuit (89 nodes / 187 edges) has a final-norm
    scale 0.36 of the full model's and a frozen-norm loss of 0.33 against its target 0.15; the
    frozen-norm circuit (122 / 271) reaches 0.146 with the full model's scale (README).

    ``calibrate`` (off by default) fits a logit scale and shift to the pruned circuit (§3.6).
    The paper itself doubts it is principled: the scale rescales the logits as the final norm
    does in "norm cheating", so a calibrated circuit can score far below its own full model
    (0.000 against 0.032 on the demo model's ``else_elif``), a number that says nothing about
    faithfulness. It is kept only to compare with the paper's logit-scaled sweeps.
    """

    target_loss: float = PAPER_TARGET
    ablation: AblationKind = "mean"
    freeze_norms: bool = True
    k_coef: float = 1e-4
    lr: float = 3e-3
    weight_decay: float = 1e-3
    beta2: float = 0.95
    warmup_frac: float = 0.05
    heaviside_temp: float = 1.0
    init_noise_scale: float = 1e-2
    init_noise_bias: float = 0.1
    steps: int = 200
    epochs: int = 0
    batch_pairs: int = 32
    tie_qk: bool = False
    calibrate: bool = False
    seed: int = 0
    mean_excludes_separators: bool = True  # leave <|endoftext|> positions out of ablation means

    def __post_init__(self) -> None:
        if self.ablation not in ABLATIONS:
            raise ValueError(f"ablation must be one of {ABLATIONS}, got {self.ablation!r}")
        if not self.target_loss > 0:
            raise ValueError(f"target_loss must be > 0, got {self.target_loss!r}")
        require_min(self, ("steps", "batch_pairs"), 1)
        require_min(self, ("epochs",), 0)
        if not 0 <= self.warmup_frac < 1:
            raise ValueError(f"warmup_frac must be in [0, 1), got {self.warmup_frac!r}")
        require_min(self, ("k_coef", "lr", "heaviside_temp"), 0, strict=True)


class _HeavisideSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tau: Tensor, temp: float) -> Tensor:
        ctx.save_for_backward(tau)
        ctx.temp = temp
        return (tau >= 0).to(tau.dtype)

    @staticmethod
    # torch declares backward(ctx, *grad_outputs); one output, one gradient: the documented form
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # pyright: ignore[reportIncompatibleMethodOverride]
        (tau,) = ctx.saved_tensors
        s = torch.sigmoid(tau / ctx.temp)
        return grad * s * (1 - s) / ctx.temp, None


def heaviside_ste(tau: Float[Tensor, " n"], temp: float = 1.0) -> Float[Tensor, " n"]:
    """``1[tau >= 0]`` forward; ``sigmoid'(tau / temp) / temp`` backward."""
    return _HeavisideSTE.apply(tau, temp)


def mask_hooks(
    masks: dict[str, Tensor],
    ablation: Ablation,
    batch_idx: Tensor | None = None,
    width: int | None = None,
) -> HookList:
    """``node_mask`` hooks for every location in ``masks`` (1 keeps a node)."""
    return [
        (hook, node_mask(m, ablation.for_batch(hook, batch_idx, width or 0)))
        for hook, m in masks.items()
    ]


class MaskHolder:
    """Node-mask hooks installed once, reading masks and ablation values set per step.

    Each hook returns ``hooks.blend(x, m, baseline)`` (the value of ``hooks.node_mask``), so
    training does not rebuild hooks every step.
    """

    def __init__(self, locs: list[Location], ablation: Ablation) -> None:
        self.locs = locs
        self.ablation = ablation
        self.masks: dict[str, Tensor] = {}
        self.baselines: dict[str, Tensor] = {}

    def set(self, masks: dict[str, Tensor], batch_idx: Tensor | None, width: int) -> None:
        self.masks = dict(masks)
        self.baselines = {
            loc.hook: self.ablation.for_batch(loc.hook, batch_idx, width) for loc in self.locs
        }

    def hooks(self) -> HookList:
        def make(name: str, size: int) -> Callable:
            def hook(act: Tensor, hook: Any) -> Tensor:
                if not self.masks:  # cleared: the full model
                    return act
                x = flat(act, size)
                return blend(x, self.masks[name], self.baselines[name]).reshape(act.shape)

            return hook

        return [(loc.hook, make(loc.hook, loc.size)) for loc in self.locs]


@dataclass
class PruneResult:
    """Learned ``tau`` per location, the bisected circuit and its curve."""

    taus: dict[str, Tensor]
    kept: dict[str, list[int]]
    k: int
    loss: float
    full_loss: float
    curve: list[tuple[int, float]]
    train_losses: list[float] = field(default_factory=list)
    calibration: dict[str, float] | None = None
    calibrated_loss: float | None = None


class Pruner:
    """Learns node masks for one task on one model under one ``PruneConfig`` (read-only
    ``pcfg``; ``with_config`` gives a pruner of other settings on the same batches)."""

    def __init__(
        self,
        model: HookedSparseTransformer,
        train: TaskBatch,
        val: TaskBatch,
        ablation: Ablation,
        pcfg: PruneConfig,
    ) -> None:
        self.model = model.eval()
        self.train = train
        self.val = val
        self.ablation = ablation
        self._pcfg = pcfg
        self.locs: list[Location] = node_locations(model.cfg)
        self.n_nodes = sum(loc.size for loc in self.locs)
        self._scales: dict[int, tuple[TaskBatch, dict[str, Tensor]]] = {}

    @property
    def pcfg(self) -> PruneConfig:
        """The pruning settings this pruner was built with."""
        return self._pcfg

    def with_config(self, pcfg: PruneConfig) -> "Pruner":
        """A pruner of the same model, batches and ablation under ``pcfg``; it shares this
        one's frozen norm scales (they depend on the batches only)."""
        other = Pruner(self.model, self.train, self.val, self.ablation, pcfg)
        other._scales = self._scales
        return other

    def frozen_scales(self, batch: TaskBatch) -> dict[str, Tensor]:
        """The full model's RMSNorm scales on ``batch`` (hook name -> ``[batch pos ...]``),
        computed once per batch, so frozen-norm pruning costs one forward pass per batch, not
        one per step. Call it with no mask hooks installed (``learn_masks`` does)."""
        if id(batch) not in self._scales:
            names = [n for n in self.model.hook_dict if n.endswith("hook_scale")]
            with torch.no_grad():
                _, cache = self.model.run_with_cache(
                    batch.tokens.to(self.model.W_E.device), names_filter=names
                )
            self._scales[id(batch)] = (batch, {n: cache[n] for n in names})
        return self._scales[id(batch)][1]

    def _norm_hooks(self, batch: TaskBatch, idx: Tensor | None = None) -> HookList:
        """Frozen-norm hooks for ``batch``, or for ``self.train.subset(idx)`` with ``idx``."""
        if not self.pcfg.freeze_norms:
            return []
        if idx is None:
            return [(n, replace(s)) for n, s in self.frozen_scales(batch).items()]
        width = batch.tokens.shape[1]
        rows = idx.to(self.model.W_E.device)
        return [(n, replace(s[rows, :width])) for n, s in self.frozen_scales(self.train).items()]

    # -- evaluation ------------------------------------------------------------------------
    def _hooks(self, masks: dict[str, Tensor], batch: TaskBatch, idx: Tensor | None) -> list:
        return self._norm_hooks(batch) + mask_hooks(
            masks, self.ablation, idx, batch.tokens.shape[1]
        )

    def answer_logits(
        self, masks: dict[str, Tensor], batch: TaskBatch, extra_hooks: HookList | None = None
    ) -> Float[Tensor, "batch d_vocab"]:
        """Logits at each answer position of ``batch`` (the train or val pairs for a per-example
        ablation) under ``masks``, then ``extra_hooks``."""
        idx = self.ablation.rows(batch, self.train, self.val)
        return answer_logits(
            self.model, batch, self._hooks(masks, batch, idx) + (extra_hooks or [])
        )

    @torch.no_grad()
    def loss_of(
        self,
        masks: dict[str, Tensor],
        batch: TaskBatch | None = None,
        extra_hooks: list | None = None,
    ) -> float:
        """Mean task loss under ``masks`` (validation pairs by default); ``extra_hooks`` run
        after the mask hooks (e.g. ``edges.edge_hooks``)."""
        batch = self.val if batch is None else batch
        return float(mean_task_loss(self.answer_logits(masks, batch, extra_hooks), batch))

    def masks_from_ranking(self, taus: dict[str, Tensor], k: int) -> dict[str, Tensor]:
        """Binary masks keeping the ``k`` nodes with the largest ``tau`` (with ``tie_qk``, a
        query channel and its key channel are kept together if either is, so a few more)."""
        flat = torch.cat([taus[loc.hook] for loc in self.locs])
        keep = torch.zeros_like(flat)
        if k > 0:
            keep[flat.argsort(descending=True, stable=True)[:k]] = 1.0
        out, i = {}, 0
        for loc in self.locs:
            out[loc.hook] = keep[i : i + loc.size]
            i += loc.size
        if self.pcfg.tie_qk:
            for loc in self.locs:
                if loc.kind == "k":
                    q = loc.hook.replace("hook_k", "hook_q")
                    out[q] = out[loc.hook] = torch.maximum(out[q], out[loc.hook])
        return out

    # -- training --------------------------------------------------------------------------
    def init_taus(self, generator: torch.Generator) -> dict[str, Tensor]:
        """Initial ``tau`` per location: ``bias + scale * N(0, 1)`` clamped to [-1, 1]."""
        p = self.pcfg
        return {
            loc.hook: (
                p.init_noise_bias + p.init_noise_scale * torch.randn(loc.size, generator=generator)
            ).clamp(-1, 1)
            for loc in self.locs
            if not (p.tie_qk and loc.kind == "k")
        }

    def masks_of(self, taus: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Straight-through 0/1 masks per location (a tied key location uses its query's)."""
        masks = {h: heaviside_ste(t, self.pcfg.heaviside_temp) for h, t in taus.items()}
        if self.pcfg.tie_qk:
            for loc in self.locs:
                if loc.kind == "k":
                    masks[loc.hook] = masks[loc.hook.replace("hook_k", "hook_q")]
        return {loc.hook: masks[loc.hook] for loc in self.locs}

    def n_steps(self) -> int:
        """Optimiser steps: ``steps``, or ``epochs`` passes over the training pairs."""
        p = self.pcfg
        if p.epochs == 0:
            return p.steps
        n_pairs = len(self.train) // 2
        return p.epochs * math.ceil(n_pairs / min(p.batch_pairs, n_pairs))

    def _pair_batches(self, generator: torch.Generator) -> Iterator[Tensor]:
        """Row indices of each step's pairs: random draws, or shuffled epochs."""
        p = self.pcfg
        n_pairs = len(self.train) // 2
        size = min(p.batch_pairs, n_pairs)
        for _ in range(p.steps if p.epochs == 0 else 0):
            pairs = torch.randint(0, n_pairs, (size,), generator=generator)
            yield torch.stack([2 * pairs, 2 * pairs + 1], dim=1).reshape(-1)
        for _ in range(p.epochs):
            order = torch.randperm(n_pairs, generator=generator)
            for i in range(0, n_pairs, size):
                pairs = order[i : i + size]
                yield torch.stack([2 * pairs, 2 * pairs + 1], dim=1).reshape(-1)

    def _lr_at(self, step: int, n_steps: int) -> float:
        """The trainers' schedule: linear warmup, then linear decay to 0."""
        warm = max(1, int(self.pcfg.warmup_frac * n_steps))
        return warmup_linear_decay(step, n_steps, self.pcfg.lr, warm)

    def learn_masks(
        self, progress: bool = False, report: Callable[[int, int, float], None] | None = None
    ) -> tuple[dict[str, Tensor], list[float]]:
        """Train ``tau`` (paper §3.2) for ``n_steps()`` AdamW steps under the trainers'
        learning-rate schedule. The node-mask hooks are installed once for the whole run and
        read the current step's masks from a shared holder.

        ``report(checkpoint, n_kept, task_loss)`` is called at 10 evenly spaced checkpoints
        (0-9) with the learned mask's size and the mean training task loss since the last one;
        it may raise to stop training (an Optuna pruner does).
        """
        p = self.pcfg
        g = torch.Generator().manual_seed(p.seed)
        taus = {h: torch.nn.Parameter(t) for h, t in self.init_taus(g).items()}
        opt = torch.optim.AdamW(
            list(taus.values()), lr=p.lr, betas=(0.9, p.beta2), weight_decay=p.weight_decay
        )
        n_steps = self.n_steps()
        marks = {((i + 1) * n_steps) // 10 - 1: i for i in range(10)}
        losses: list[float] = []
        live = MaskHolder(self.locs, self.ablation)
        if p.freeze_norms:
            self.frozen_scales(self.train)  # before any mask hook is installed
        requires = [q.requires_grad for q in self.model.parameters()]
        for q in self.model.parameters():
            q.requires_grad_(False)
        try:
            with self.model.hooks(fwd_hooks=live.hooks()):
                batches = self._pair_batches(g)
                bar = tqdm(range(n_steps), disable=not progress, desc="prune", unit="step")
                for i in bar:
                    set_lr(opt, self._lr_at(i, n_steps))
                    idx = next(batches)
                    masks = self.masks_of(taus)
                    task = self.train_loss(live, masks, self.train.subset(idx), idx)
                    loss = task + p.k_coef * torch.cat(list(masks.values())).sum()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    with torch.no_grad():
                        for t in taus.values():
                            t.clamp_(-1.0, 1.0)
                    losses.append(float(task.detach()))
                    if report is not None and i in marks:
                        since = losses[-max(1, n_steps // 10) :]
                        kept = int(sum(int((t >= 0).sum()) for t in self.masks_of(taus).values()))
                        report(marks[i], kept, sum(since) / len(since))
        finally:
            for q, r in zip(self.model.parameters(), requires, strict=True):
                q.requires_grad_(r)
        return self.full_taus({h: t.detach().clone() for h, t in taus.items()}), losses

    def full_taus(self, taus: dict[str, Tensor]) -> dict[str, Tensor]:
        """``taus`` with a tied key location given its query location's values."""
        return {
            loc.hook: taus[loc.hook]
            if loc.hook in taus
            else taus[loc.hook.replace("hook_k", "hook_q")]
            for loc in self.locs
        }

    def train_loss(
        self, live: "MaskHolder", masks: dict[str, Tensor], sub: TaskBatch, idx: Tensor
    ) -> Tensor:
        """Mean task loss of one training batch ``sub`` (``self.train.subset(idx)``) under
        ``masks``, with ``live``'s hooks already installed on the model (one mask-training
        forward pass); with frozen norms, the full model's scales of those rows."""
        live.set(masks, idx, sub.tokens.shape[1])  # per-channel values ignore the rows
        # run_with_hooks removes only the hooks it adds (TL's context levels): live's stay
        return mean_task_loss(answer_logits(self.model, sub, self._norm_hooks(sub, idx)), sub)

    # -- discretisation ----------------------------------------------------------------------
    def full_loss(self) -> float:
        """Validation loss with every node kept; raises if it misses the target.

        Raises:
            ValueError: the loss with every node kept is above ``target_loss`` (both named).
        """
        full = self.loss_of({loc.hook: torch.ones(loc.size) for loc in self.locs})
        if full > self.pcfg.target_loss:
            raise ValueError(
                f"even keeping every node the task loss is {full:.3f}, above the target "
                f"{self.pcfg.target_loss}; the model cannot reach the target under this ablation"
            )
        return full

    def bisect(
        self, taus: dict[str, Tensor], full_loss: float | None = None
    ) -> tuple[int, float, list[tuple[int, float]]]:
        """Smallest k (nodes ranked by tau) with validation loss <= target, by bisection.

        ``full_loss`` is the loss with every node kept, if already known (``full_loss()``).
        """
        target = self.pcfg.target_loss
        hi_loss = self.full_loss() if full_loss is None else full_loss
        curve: list[tuple[int, float]] = [(self.n_nodes, hi_loss)]

        def loss_at(k: int) -> float:
            value = self.loss_of(self.masks_from_ranking(taus, k))
            curve.append((k, value))
            return value

        lo, hi = 0, self.n_nodes
        if loss_at(lo) <= target:
            return 0, curve[-1][1], sorted(curve)
        best_loss = hi_loss
        while hi - lo > 1:
            mid = (lo + hi) // 2
            value = loss_at(mid)
            if value <= target:
                hi, best_loss = mid, value
            else:
                lo = mid
        return hi, best_loss, sorted(curve)

    def calibrate(
        self, masks: dict[str, Tensor], extra_hooks: list | None = None
    ) -> tuple[dict[str, float], float]:
        """Fit ``logits * scale + shift`` with 16 LBFGS steps on the training pairs."""
        with torch.no_grad():
            two_train = binary_logits(
                self.answer_logits(masks, self.train, extra_hooks), self.train
            )
            two_val = binary_logits(self.answer_logits(masks, self.val, extra_hooks), self.val)
        scale = torch.ones((), requires_grad=True)
        shift = torch.zeros((), requires_grad=True)
        opt = torch.optim.LBFGS([scale, shift], max_iter=16, line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            opt.zero_grad()
            loss = binary_task_loss(two_train * scale + shift).mean()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            val_loss = float(binary_task_loss(two_val * scale + shift).mean())
        return {"scale": float(scale.detach()), "shift": float(shift.detach())}, val_loss

    def run(self, progress: bool = False) -> PruneResult:
        """Learn masks, bisect to the smallest circuit reaching the target loss and, with
        ``calibrate``, fit its logit calibration.

        Raises:
            FloatingPointError: the pruned circuit's loss is not finite.
            ValueError: even keeping every node the task loss is above ``target_loss`` (checked
                before any mask is learned).
        """
        full = self.full_loss()  # fails before any time is spent on masks
        taus, losses = self.learn_masks(progress)
        k, loss, curve = self.bisect(taus, full)
        masks = self.masks_from_ranking(taus, k)
        kept = {h: m.nonzero().squeeze(-1).tolist() for h, m in masks.items()}
        if not math.isfinite(loss):
            raise FloatingPointError("pruned loss is not finite")
        result = PruneResult(taus, kept, k, loss, full, curve, losses)
        if self.pcfg.calibrate:
            result.calibration, result.calibrated_loss = self.calibrate(masks)
        return result


def search_grid(pcfg: PruneConfig) -> list[PruneConfig]:
    """The hyperparameter search: ``k_coef`` x {1/3, 1, 3} at the base LR, and 3 x LR at the
    base ``k_coef`` (4 runs). The paper re-tunes 8 hyperparameters with 256+ CARBS runs; on
    two CPU cores this small grid is what fits the 2-minute budget per task."""
    return [
        pcfg,
        dataclasses.replace(pcfg, k_coef=pcfg.k_coef / 3),
        dataclasses.replace(pcfg, k_coef=pcfg.k_coef * 3),
        dataclasses.replace(pcfg, lr=pcfg.lr * 3),
    ]
