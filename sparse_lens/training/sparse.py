"""Sparse pretraining with the paper's recipe (arXiv 2511.13653, App. A), resumable and DDP-ready.

One step, in the order of OpenAI's ``training/sparse.py`` (§2.5):

1. zero the gradients; 2. forward and next-token cross-entropy; 3. backward;
4. normalise the gradient to unit RMS over all parameters: ``g <- g / (rms(g) + 1e-5)``
   (every step, not min(1, .) clipping: the script normalises, the paper says "clip");
5. Adam (beta 0.9/0.95, eps 0.1, dense moments) at the sharkfin LR (``training/schedules.py``);
6. top-k projection of every sparse parameter to the density of this step, keeping at least
   ``min_nonzero_per_neuron`` entries per MLP neuron and per q/k/v/o channel.

Steps 4 and 6 (and a finite-weight check after 5) are the optimizer hooks of
``hooks.weight_sparsity`` (``sparsity_hooks`` attaches them for a ``HookedSparseTransformer``):
a pre-step hook and post-step hooks around ``optimizer.step()``. Then:

7. decoupled weight decay ``p <- p - wd * lr_t * p`` on every matrix (``ndim > 1``) except the
   bigram table, after the projection, as the script does.

Choices where the paper (App. A) and OpenAI's released training script differ: biases *are* sparsified, at the embedding density, as the paper says
(the script skips them); there are no positional embeddings unless the model config asks (the
script trains a ``wpe`` from zero by accident); annealing runs from 1% to 50% of training.

Speed, not maths: before each forward, matrices of at least ``sparse_matmul_min_numel`` entries
whose density is at most ``sparse_matmul_max_density`` get CSR copies, and their forward and
input-gradient products run as sparse kernels on CPU (``model/sparse_matmul.py``; the weight gradient
stays dense). Results equal the dense products up to float summation order; runs stay
bit-reproducible. ``sparse_matmul_max_density=0`` keeps every product dense.

``train`` is this step run by the one training loop (``training.loop``: cadence, metrics,
checkpoints, the trainer-state format). A run folder holds ``run.json`` (configs, corpus and data
metadata), ``metrics.jsonl``, ``checkpoints/step-NNNNNNN/`` (model folder + ``trainer.pt``, each
built in a temporary folder and renamed, so complete or absent; ``checkpoints/latest.json``
switched after it), and ``final/`` (written the same way), loadable with
``HookedSparseTransformer.from_pretrained``.
``resume=True`` continues from the latest checkpoint and reaches the same weights as an
uninterrupted run: the optimizer state and the data generator's state are saved with the
weights. It refuses a run of other configs, corpus, tokenizer or data, and drops a
``metrics.jsonl`` line cut by a kill. A non-finite loss or weight stops training at once, before
anything else is written.

Distributed: under ``torchrun`` each rank draws the same global batch from the same generator and
trains on its slice; DDP averages the gradients, so every rank applies the same update and the
same top-k projection.
"""

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import torch
from jaxtyping import Int
from torch import Tensor, nn

from hooks.weight_sparsity import Sparsified, WeightProjection, attach, budget_shortfalls
from sparse_lens.data.token_data import MixedData, TokenData
from sparse_lens.files.atomic import atomic_write_json, read_json, remove_stale_temps
from sparse_lens.model.checkpoint import MODEL_FILES, write_model_files
from sparse_lens.model.config import SparseTransformerConfig
from sparse_lens.model.sparse_matmul import (
    DEFAULT_MAX_DENSITY,
    DEFAULT_MIN_NUMEL,
    refresh_csr_weights,
)
from sparse_lens.model.sparsity import param_role, sparse_params
from sparse_lens.model.transformer import HookedSparseTransformer
from sparse_lens.training.loop import (
    CheckpointFolders,
    DistInfo,
    Loop,
    MetricsLog,
    TrainerState,
    first_difference,
    refuse_fresh_start,
)
from sparse_lens.training.schedules import (
    EmbedAnneal,
    anneal_progress,
    block_density,
    embed_density_at,
    sharkfin_lr,
)
from sparse_lens.validation import require_min

logger = logging.getLogger(__name__)

RUN_FILES = ("run.json", "metrics.jsonl", "checkpoints", "final")  # what a run folder holds
# run.json entries a resumed run must match (besides the configs): data, corpus, tokenizer
_RESUME_KEYS = ("data", "corpus", "tokenizer", "preset")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Optimisation settings. Densities are targets in the model config."""

    steps: int
    batch_size: int
    lr: float = 1.28e-2
    warmup_frac: float = 0.01
    anneal_start: float = 0.01
    anneal_end: float = 0.5
    embed_anneal: EmbedAnneal = "linear"
    scale_lr_with_l0: bool = True
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    adam_eps: float = 0.1
    grad_rms_eps: float = 1e-5
    eval_every: int = 50
    val_windows: int = 64
    log_every: int = 10
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    seed: int = 0
    # sparse kernels for projected matrices this sparse and this large (sparse_matmul.py); 0 = off
    sparse_matmul_max_density: float = DEFAULT_MAX_DENSITY
    sparse_matmul_min_numel: int = DEFAULT_MIN_NUMEL

    def __post_init__(self) -> None:
        require_min(self, ("steps", "batch_size", "eval_every", "log_every", "checkpoint_every"), 1)
        require_min(self, ("lr",), 0, strict=True)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name} must be finite, got {value!r}")
        for name in ("warmup_frac", "anneal_start", "anneal_end"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.anneal_end < self.anneal_start:
            raise ValueError(
                f"anneal_end ({self.anneal_end}) must be >= anneal_start ({self.anneal_start})"
            )
        if self.embed_anneal not in get_args(EmbedAnneal):
            raise ValueError(
                f"embed_anneal must be one of {get_args(EmbedAnneal)}, got {self.embed_anneal!r}"
            )
        if not 0.0 <= self.sparse_matmul_max_density <= 1.0:
            raise ValueError(
                "sparse_matmul_max_density must be in [0, 1], "
                f"got {self.sparse_matmul_max_density!r}"
            )
        require_min(self, ("sparse_matmul_min_numel",), 0)
        if self.keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints must be >= 1, got {self.keep_checkpoints!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def with_defaults(cls, saved: dict[str, Any]) -> dict[str, Any]:
        """A stored ``to_dict()`` with the settings it lacks (written by an older version, before
        the setting existed) read as their field defaults, and without settings that moved
        elsewhere (``MOVED_SETTINGS``)."""
        defaults = {
            f.name: f.default
            for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING
        }
        return defaults | {k: v for k, v in saved.items() if k not in MOVED_SETTINGS}


# Settings older ``run.json`` files hold in ``train_config`` that live elsewhere now:
# ``idiom_frac`` is the training data's own (``MixedData.idiom_frac``, ``run.json``'s ``data``).
MOVED_SETTINGS = ("idiom_frac",)


def recorded_idiom_frac(run_info: dict[str, Any]) -> float:
    """The share of idiom windows per batch a ``run.json`` records: its data's (0 for data
    without idioms); a ``run.json`` written before the share moved to the data holds it in
    ``train_config`` (0 if it predates idioms)."""
    data = run_info.get("data")
    if isinstance(data, dict) and "idiom_frac" in data:
        return float(data["idiom_frac"])
    return float(run_info.get("train_config", {}).get("idiom_frac", 0.0))


@dataclass(frozen=True)
class StepStats:
    loss: float
    lr: float
    weight_density: float
    embed_density: float


def densities_at(
    step: int, tcfg: TrainConfig, mcfg: SparseTransformerConfig
) -> tuple[float, float]:
    """(block density, embedding/bias density) after ``step``."""
    progress = anneal_progress(step, tcfg.steps, tcfg.anneal_start, tcfg.anneal_end)
    mode: EmbedAnneal = "paper_bug" if tcfg.embed_anneal == "paper_bug" else "linear"
    return (
        block_density(progress, mcfg.weight_density),
        embed_density_at(progress, mcfg.weight_density, mcfg.embed_density, mode),
    )


def lr_at(step: int, tcfg: TrainConfig, mcfg: SparseTransformerConfig) -> float:
    return sharkfin_lr(
        step,
        tcfg.steps,
        tcfg.lr,
        tcfg.warmup_frac,
        mcfg.weight_density,
        tcfg.anneal_start,
        tcfg.anneal_end,
        tcfg.scale_lr_with_l0,
    )


def check_sparsity_budget(model: HookedSparseTransformer) -> None:
    """Raise before training if the final density cannot keep the per-neuron minimum.

    Raises:
        ValueError: the final density keeps fewer entries of a weight than
            ``min_nonzero_per_neuron`` per neuron (the first such weight is named).
    """
    cfg = model.cfg
    densities = {"matrix": cfg.weight_density, "embed": cfg.embed_density}
    short = budget_shortfalls(sparse_params(model), densities, cfg.min_nonzero_per_neuron)
    if short:
        name, k, need = short[0]
        raise ValueError(
            f"weight_density={cfg.weight_density} keeps {k} entries of {name}, fewer than "
            f"min_nonzero_per_neuron x neurons = {need}"
        )


def sparsity_hooks(
    core: HookedSparseTransformer,
    optimizer: torch.optim.Optimizer,
    tcfg: TrainConfig,
    *,
    step: int = 0,
) -> Sparsified:
    """Attach the recipe's optimizer hooks (``hooks.weight_sparsity``) for ``core``: unit-RMS
    gradients of ``core``'s parameters before each step; after it, a finite-weight check and
    the top-k projection at ``densities_at`` of the step (``step`` steps already taken).
    ``remove()`` on the result detaches them."""
    mcfg = core.cfg

    def schedule(i: int) -> dict[str, float]:
        w_density, e_density = densities_at(i, tcfg, mcfg)
        return {"matrix": w_density, "embed": e_density}

    projection = WeightProjection(
        sparse_params(core), schedule, min_per_neuron=mcfg.min_nonzero_per_neuron, step=step
    )
    params = list(core.parameters())
    return attach(
        optimizer,
        projection,
        grad_params=params,
        grad_rms_eps=tcfg.grad_rms_eps,
        finite_params=params,
    )


def make_optimizer(model: nn.Module, tcfg: TrainConfig) -> torch.optim.Adam:
    return torch.optim.Adam(
        model.parameters(), lr=tcfg.lr, betas=(tcfg.beta1, tcfg.beta2), eps=tcfg.adam_eps
    )


def train_step(
    model: nn.Module,
    core: HookedSparseTransformer,
    optimizer: torch.optim.Optimizer,
    tokens: Int[Tensor, "batch pos"],
    step: int,
    tcfg: TrainConfig,
    loss_fn: Callable[[Tensor], Tensor] | None = None,
    sparsity: Sparsified | None = None,
) -> StepStats:
    """One optimisation step (see the module docstring for the order).

    ``model`` is what runs the forward (``core`` itself or a DDP wrapper of it); ``core`` is the
    ``HookedSparseTransformer`` whose parameters are projected and decayed. ``loss_fn(tokens)``
    replaces the next-token loss (bridged training adds its bridge losses there; parameters
    outside ``core`` get their gradients from the same backward pass and are the caller's).
    ``sparsity`` is the handle of ``sparsity_hooks`` already on ``optimizer`` (its counter is
    set to ``step``); without it the hooks are attached for this step only.

    Raises:
        FloatingPointError: the loss is not finite (before the backward pass; its value is
            named).
    """
    mcfg = core.cfg
    max_density = tcfg.sparse_matmul_max_density
    if max_density > 0 and min(mcfg.weight_density, mcfg.embed_density) <= max_density:
        refresh_csr_weights(core, max_density=max_density, min_numel=tcfg.sparse_matmul_min_numel)
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(tokens) if loss_fn is not None else model(tokens, return_type="loss")
    if not bool(torch.isfinite(loss)):
        raise FloatingPointError(f"the loss is {float(loss.detach())}")
    loss.backward()
    lr = lr_at(step, tcfg, mcfg)
    for group in optimizer.param_groups:
        group["lr"] = lr
    if sparsity is None:
        with sparsity_hooks(core, optimizer, tcfg, step=step):
            optimizer.step()  # normalise gradients, step, check, project
    else:
        sparsity.step = step
        optimizer.step()
    w_density, e_density = densities_at(step, tcfg, mcfg)
    if tcfg.weight_decay > 0:
        with torch.no_grad():
            for name, p in core.named_parameters():
                if p.ndim > 1 and param_role(name) != "dense":
                    p.mul_(1.0 - tcfg.weight_decay * lr)
    return StepStats(float(loss.detach()), lr, w_density, e_density)


@torch.no_grad()
def evaluate(model: HookedSparseTransformer, windows: Tensor, batch_size: int = 16) -> float:
    """Mean next-token loss over the validation windows."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(windows), batch_size):
        batch = windows[i : i + batch_size].to(model.W_E.device)
        total += float(model(batch, return_type="loss")) * len(batch)
        count += len(batch)
    model.train(was_training)
    return total / count


def l0_stats(model: HookedSparseTransformer) -> dict[str, Any]:
    per = {n: int((p != 0).sum()) for n, p in model.named_parameters() if param_role(n) != "dense"}
    return {"l0_total": sum(per.values()), "l0": per}


def _check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"output folder {str(run_dir)!r} is not writable: {e}") from e


def train(
    model: HookedSparseTransformer,
    data: TokenData | MixedData,
    tcfg: TrainConfig,
    run_dir: Path,
    *,
    metadata: dict[str, Any] | None = None,
    resume: bool = False,
    dist_info: DistInfo | None = None,
    halt_after: int | None = None,
    progress: bool = True,
    on_step: Callable[[int, StepStats], None] | None = None,
) -> HookedSparseTransformer:
    """Train ``model`` in place and write the run folder.

    Args:
        model: a freshly initialised model (its config holds the target densities).
        data: token data; ``batch_size`` windows of ``model.cfg.n_ctx`` are drawn per step, a
            share of them from generated idioms for ``MixedData`` (``data.token_data.with_idioms``).
        tcfg: optimisation settings.
        run_dir: the run folder.
        metadata: extra facts for ``run.json`` (corpus, tokenizer ...).
        resume: continue from the latest checkpoint in ``run_dir``.
        dist_info: rank and world size when running under ``torchrun``.
        halt_after: stop after this many steps without writing ``final/`` (as if killed).
        progress: show a tqdm bar (rank 0 only).
        on_step: called after every step.

    Raises:
        ValueError: bad settings, an unwritable folder, a run folder that already holds a run
            (without ``resume``) or holds a different one (with it).
    """
    dist_info = dist_info or DistInfo()
    run_dir = Path(run_dir)
    mcfg = model.cfg
    _check_inputs(model, data, tcfg, dist_info)
    folders = CheckpointFolders(run_dir, tcfg.keep_checkpoints)
    generator = torch.Generator().manual_seed(tcfg.seed)
    optimizer = make_optimizer(model, tcfg)
    start = _open_run(model, data, tcfg, folders, optimizer, generator, dist_info, metadata, resume)
    metrics = MetricsLog(run_dir / "metrics.jsonl", write=dist_info.is_main)
    metrics.start(start)

    model.train()
    with sparsity_hooks(model, optimizer, tcfg, step=start) as sparsity:
        step = _step_fn(
            model, data, tcfg, optimizer, sparsity, generator, folders, dist_info, on_step
        )
        val = data.val_windows(tcfg.val_windows, mcfg.n_ctx)

        def eval_record(done: int) -> dict[str, Any]:
            tokens = done * tcfg.batch_size * mcfg.n_ctx
            record = {"tokens": tokens, "val_loss": evaluate(model, val)}
            model.train()
            return record

        def checkpoint(done: int) -> None:
            state = TrainerState.capture(done, generator, {"optimizer": optimizer})
            folders.save(state, lambda tmp, name: write_model_files(model, tmp, name), MODEL_FILES)

        loop = Loop(
            total=tcfg.steps, log_every=tcfg.log_every, eval_every=tcfg.eval_every,
            checkpoint_every=tcfg.checkpoint_every, checkpoint_at_end=True,
            halt_after=halt_after, progress=progress, desc="train",
        )  # fmt: skip
        end = loop.run(
            step, start=start, metrics=metrics, checkpoint=checkpoint, evaluate=eval_record,
            postfix=_postfix, dist_info=dist_info,
        )  # fmt: skip
    if end == tcfg.steps and dist_info.is_main:
        model.eval()
        if not math.isfinite(evaluate(model, val[:4])):
            raise FloatingPointError("training diverged: the final model's loss is not finite")
        model.save_pretrained(run_dir / "final")
    dist_info.barrier()
    return model


def _open_run(
    model: HookedSparseTransformer,
    data: TokenData | MixedData,
    tcfg: TrainConfig,
    folders: CheckpointFolders,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    dist_info: DistInfo,
    metadata: dict[str, Any] | None,
    resume: bool,
) -> int:
    """Check the run folder, write its ``run.json`` (a fresh run) or restore the latest
    checkpoint into ``model``, ``optimizer`` and ``generator`` (``resume``); the steps done.

    Raises:
        ValueError: an unwritable folder, a run there without ``resume``, or another run there.
    """
    run_dir = folders.run_dir
    if dist_info.is_main:
        _check_writable(run_dir)
    run_info = {
        "model_config": model.cfg.to_dict(),
        "train_config": tcfg.to_dict(),
        "data": data.metadata(),
        "world_size": dist_info.world_size,
        "torch": torch.__version__,
    } | (metadata or {})
    existing = run_dir / "run.json"
    if dist_info.is_main:
        remove_stale_temps(folders.root)
    ckpt = folders.latest() if existing.exists() else None
    refuse_fresh_start(ckpt is not None, resume, str(run_dir))
    if resume and existing.exists():
        _check_same_run(read_json(existing, "run"), run_info, run_dir)
    if resume and ckpt is not None:
        return _restore(folders, ckpt, model, optimizer, generator)
    if dist_info.is_main:
        atomic_write_json(existing, run_info)
    return 0


def _check_inputs(
    model: HookedSparseTransformer,
    data: TokenData | MixedData,
    tcfg: TrainConfig,
    dist_info: DistInfo,
) -> None:
    """Raise ``ValueError`` before any work for settings that cannot train."""
    if tcfg.batch_size % dist_info.world_size:
        raise ValueError(
            f"batch_size {tcfg.batch_size} is not divisible by world size {dist_info.world_size}"
        )
    idiom_frac = data.idiom_frac if isinstance(data, MixedData) else 0.0
    if idiom_frac > 0 and round(idiom_frac * tcfg.batch_size) == 0:
        raise ValueError(
            f"idiom_frac={idiom_frac} of batch_size {tcfg.batch_size} rounds to no idiom "
            "window a batch; raise one of them"
        )
    data.check_fits(model.cfg.n_ctx)
    check_sparsity_budget(model)


def _restore(
    folders: CheckpointFolders,
    ckpt: Path,
    model: HookedSparseTransformer,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> int:
    """Load checkpoint ``ckpt`` (weights, optimizer, data generator); returns its step."""
    state = folders.load(ckpt)
    try:
        saved = HookedSparseTransformer.from_pretrained(ckpt, device=model.W_E.device)
    except (FileNotFoundError, ValueError) as e:
        raise ValueError(f"{e} (checkpoint {ckpt}: delete it to resume from an earlier one)") from e
    _check_same_tokenizer(saved, model, ckpt)
    model.load_state_dict(saved.state_dict())
    state.restore(generator, {"optimizer": optimizer})
    logger.info("resuming %s from step %d", folders.run_dir, state.step)
    return state.step


def _postfix(record: dict[str, Any]) -> dict[str, str]:
    if "train_loss" not in record:
        return {}
    loss, tok_s = record["train_loss"], record["tokens_per_s"]
    return {"loss": f"{loss:.3f}", "L0": str(record["l0_total"]), "tok_s": f"{tok_s:.0f}"}


def _step_fn(
    model: HookedSparseTransformer,
    data: TokenData | MixedData,
    tcfg: TrainConfig,
    optimizer: torch.optim.Optimizer,
    sparsity: Sparsified,
    generator: torch.Generator,
    folders: CheckpointFolders,
    dist_info: DistInfo,
    on_step: Callable[[int, StepStats], None] | None,
) -> Callable[[int, bool], dict[str, Any]]:
    """The sparse trainer's step for ``Loop.run``: this rank's slice of the global batch,
    ``train_step``, and on log steps the record (loss, LR, densities, throughput, L0)."""
    runner: nn.Module = model
    if dist_info.world_size > 1:
        runner = nn.parallel.DistributedDataParallel(model)
    n_ctx = model.cfg.n_ctx
    local = tcfg.batch_size // dist_info.world_size
    tokens_per_step = tcfg.batch_size * n_ctx
    clock = {"t": time.perf_counter(), "steps": 0}

    def step(i: int, log: bool) -> dict[str, Any]:
        batch = data.sample(tcfg.batch_size, n_ctx, generator)
        tokens = batch[dist_info.rank * local : (dist_info.rank + 1) * local].to(model.W_E.device)
        try:
            stats = train_step(runner, model, optimizer, tokens, i, tcfg, sparsity=sparsity)
        except FloatingPointError as e:
            last = folders.latest()
            kept = f"the last good checkpoint {last} is kept" if last else "no checkpoint"
            raise FloatingPointError(
                f"training stopped at step {i + 1}: {e}; {kept} and nothing after it was "
                "written (lower --lr, or check the data)"
            ) from e
        clock["steps"] += 1
        if on_step is not None:
            on_step(i, stats)
        if not log:
            return {}
        now = time.perf_counter()
        tok_s = clock["steps"] * tokens_per_step / max(now - clock["t"], 1e-9)
        clock["t"], clock["steps"] = now, 0
        return {
            "tokens": (i + 1) * tokens_per_step,
            "train_loss": stats.loss,
            "lr": stats.lr,
            "tokens_per_s": tok_s,
            "weight_density": stats.weight_density,
            "embed_density": stats.embed_density,
        } | l0_stats(model)

    return step


def _check_same_run(old: dict[str, Any], new: dict[str, Any], run_dir: Path) -> None:
    """Refuse to resume a run with other configs, data, corpus, tokenizer or preset (a key
    missing from an older ``run.json`` is not compared; train settings it lacks read as their
    defaults)."""
    if not isinstance(old, dict):
        raise ValueError(f"{run_dir / 'run.json'} is not a JSON object; it is not a run's record")
    share, new_share = recorded_idiom_frac(old), recorded_idiom_frac(new)
    if share != new_share:  # compared apart: an older record keeps it in train_config
        raise ValueError(
            f"cannot resume {run_dir}: its data mixes in idioms at idiom_frac={share}, this "
            f"data at {new_share}; resume with the run's own --preset, --idiom-frac and "
            "--idiom-kinds, or pick a new --out"
        )
    old = dict(old)
    old["train_config"] = TrainConfig.with_defaults(old.get("train_config", {}))
    for key in ("model_config", "train_config", *_RESUME_KEYS):
        if key not in old and key not in ("model_config", "train_config"):
            continue
        mine, theirs = new.get(key), old.get(key)
        if key == "corpus" and isinstance(mine, dict) and isinstance(theirs, dict):
            # the same corpus may be named by another path: compare its content
            mine = {k: v for k, v in mine.items() if k != "source"}
            theirs = {k: v for k, v in theirs.items() if k != "source"}
        if isinstance(mine, dict) and isinstance(theirs, dict) and key in _RESUME_KEYS:
            mine = {k: v for k, v in mine.items() if k in theirs}  # older records: fewer keys
        if mine != theirs:
            diff = first_difference(theirs, mine)
            raise ValueError(
                f"cannot resume {run_dir}: its {key} differs from this one ({diff}); resume "
                "with the run's own settings (--preset, --corpus, --idiom-frac, --idiom-kinds, "
                "--steps, --batch-size, --lr, --seed) or pick a new --out"
            )


def _check_same_tokenizer(
    saved: HookedSparseTransformer, model: HookedSparseTransformer, ckpt: Path
) -> None:
    if saved.tokenizer is None or model.tokenizer is None:
        return
    if saved.tokenizer.to_json() != model.tokenizer.to_json():
        raise ValueError(
            f"cannot resume from {ckpt}: its tokenizer differs from this run's (another corpus "
            "or tokenizer); resume with the run's own --corpus or pick a new --out"
        )
