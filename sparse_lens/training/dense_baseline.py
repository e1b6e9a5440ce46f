"""The dense comparison model: a standard HF ``GPT2LMHeadModel`` trained locally, loaded as a
TransformerLens ``TransformerBridge`` (offline, no hub access).

``train_dense_hf`` trains it on the same token data and tokenizer as the sparse model, with the
same depth and context; AdamW (β=(0.9, 0.95), weight decay 0.1), linear warmup then linear decay.
The folder holds ``config.json`` + ``model.safetensors`` (``save_pretrained``), the tokenizer
(``tokenizer.json`` + its HF files), ``metrics.jsonl`` and ``dense.json``; it is written before
any wrapping (``TransformerBridge`` modifies the wrapped model in place). Every ``checkpoint_every`` steps the whole training state (weights, AdamW moments, data
generator, metrics) is written atomically to ``checkpoint/dense_trainer.pt`` (the trainer-state
format of ``training.loop``, which runs the steps); ``resume=True`` continues a killed run from it
and reaches the same weights as an uninterrupted run.
``load_dense`` reloads the tokenizer from disk (an in-memory tokenizer fails in
``boot_transformers``) and wraps the model with compatibility mode on, so hook names match the
sparse model's (``blocks.{l}.hook_resid_pre``, ``hook_resid_mid``, ``attn.hook_pattern`` ...).
"""

import json
import logging
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import torch

from sparse_lens.data.token_data import WindowSource
from sparse_lens.data.tokenizer import Tokenizer
from sparse_lens.files.atomic import atomic_write_json, atomic_write_text, read_json
from sparse_lens.training.loop import (
    Loop,
    MetricsLog,
    TrainerState,
    load_trainer_state,
    refuse_fresh_start,
    refuse_other_settings,
    save_trainer_state,
    set_lr,
)
from sparse_lens.training.schedules import warmup_linear_decay
from sparse_lens.validation import require_min

log = logging.getLogger(__name__)
DENSE_VERSION = 1
TRAINER_STATE = Path("checkpoint") / "dense_trainer.pt"


@dataclass(frozen=True, kw_only=True)
class DenseConfig:
    """Shape and training of the dense GPT-2."""

    n_layers: int
    d_model: int
    n_heads: int
    n_ctx: int
    steps: int
    batch_size: int
    lr: float = 3e-3
    warmup_frac: float = 0.05
    weight_decay: float = 0.1
    eval_every: int = 100
    val_windows: int = 64
    checkpoint_every: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        require_min(
            self,
            ("n_layers", "d_model", "n_heads", "n_ctx", "steps", "batch_size", "checkpoint_every"),
            1,
        )
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        require_min(self, ("lr",), 0, strict=True)
        for name in ("lr", "warmup_frac", "weight_decay"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)!r}")


def gpt2_config(cfg: DenseConfig, tokenizer: Tokenizer) -> Any:
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=tokenizer.vocab_size,
        n_positions=cfg.n_ctx,
        n_embd=cfg.d_model,
        n_layer=cfg.n_layers,
        n_head=cfg.n_heads,
        bos_token_id=tokenizer.eot_id,
        eos_token_id=tokenizer.eot_id,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )


def _lr(step: int, cfg: DenseConfig) -> float:
    return warmup_linear_decay(step, cfg.steps, cfg.lr, max(1, round(cfg.warmup_frac * cfg.steps)))


@torch.no_grad()
def _val_loss(model: Any, windows: torch.Tensor, batch_size: int = 16) -> float:
    total = 0.0
    for i in range(0, len(windows), batch_size):
        batch = windows[i : i + batch_size]
        total += float(model(batch, labels=batch).loss) * len(batch)
    return total / len(windows)


def train_dense_hf(
    cfg: DenseConfig,
    data: WindowSource,
    tokenizer: Tokenizer,
    out: Path,
    *,
    metadata: dict[str, Any] | None = None,
    progress: bool = True,
    resume: bool = False,
    halt_after: int | None = None,
) -> Path:
    """Train a GPT-2 on ``data`` and save it (with the tokenizer) in ``out``.

    ``resume`` continues the run in ``out`` from its checkpoint (or returns at once if it is
    finished); ``halt_after`` stops after that many steps of this call as if killed (to test
    resuming). A folder that already holds a run is refused without ``resume``.

    Raises:
        ValueError: training diverged (the last training loss is not finite), ``out`` holds a
            run and ``resume`` is not set, or the run in ``out`` has other settings.
    """
    out = Path(out)
    state_path = out / TRAINER_STATE
    settings = asdict(cfg)
    if _finished(out, settings, resume):
        return out
    out.mkdir(parents=True, exist_ok=True)
    model, opt = _model_and_optimizer(cfg, tokenizer)
    gen = torch.Generator().manual_seed(cfg.seed)
    objects = {"model": model, "optimizer": opt}
    metrics = MetricsLog()  # written to metrics.jsonl when the run is finished
    # the run's settings also record the data and tokenizer: resuming on others is refused
    describe = getattr(data, "metadata", None)  # test fakes lack it
    loop_settings = settings | {
        "data": describe() if describe is not None else None,
        "tokenizer_sha256": tokenizer.sha256(),
    }
    start = 0
    if resume and state_path.exists():
        state = load_trainer_state(state_path, settings=loop_settings, where=str(out))
        state.restore(gen, objects)
        start = state.step
        metrics.start(start, state.records)
        log.info("resuming %s from step %d", out, start)
    val = data.val_windows(cfg.val_windows, cfg.n_ctx)
    model.train()

    def step(i: int, _log: bool) -> dict[str, Any]:
        set_lr(opt, _lr(i, cfg))
        tokens = data.sample(cfg.batch_size, cfg.n_ctx, gen)
        loss = model(tokens, labels=tokens).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return {"train_loss": float(loss.detach())}

    def evaluate(_done: int) -> dict[str, Any]:
        model.eval()
        val_loss = _val_loss(model, val)
        model.train()
        return {"val_loss": val_loss}

    def checkpoint(done: int) -> None:
        state = TrainerState.capture(
            done, gen, objects, records=metrics.records, settings=loop_settings
        )
        save_trainer_state(state_path, state)

    loop = Loop(
        total=cfg.steps, eval_every=cfg.eval_every, checkpoint_every=cfg.checkpoint_every,
        halt_after=halt_after, progress=progress, desc="dense",
    )  # fmt: skip
    end = loop.run(
        step, start=start, metrics=metrics, checkpoint=checkpoint, evaluate=evaluate,
        postfix=lambda r: {"loss": f"{r['train_loss']:.3f}"},
    )  # fmt: skip
    if end == cfg.steps:
        _finish(model, cfg, tokenizer, out, metrics.records, metadata)
    return out


def _finished(out: Path, settings: dict[str, Any], resume: bool) -> bool:
    """Whether ``out`` holds a finished run of ``settings`` (nothing to do).

    Raises:
        ValueError: ``out`` holds a run and ``resume`` is not set, or a finished run of other
            settings.
    """
    finished = (out / "dense.json").exists()
    refuse_fresh_start(finished or (out / TRAINER_STATE).exists(), resume, str(out))
    if finished:
        old = read_json(out / "dense.json", "dense run").get("config")
        refuse_other_settings(old, settings, str(out))
        log.info("%s is finished; nothing to resume", out)
    return finished


def _model_and_optimizer(cfg: DenseConfig, tokenizer: Tokenizer) -> tuple[Any, Any]:
    """A fresh GPT-2 of ``cfg`` (initialised from ``cfg.seed``) and its AdamW."""
    from transformers import GPT2LMHeadModel

    # HF initialises weights from the global generator and takes none: run it on a fork whose
    # state is an explicit generator's, so the caller's global RNG is left as it was
    with torch.random.fork_rng(devices=[]):
        torch.random.set_rng_state(torch.Generator().manual_seed(cfg.seed).get_state())
        model = GPT2LMHeadModel(gpt2_config(cfg, tokenizer))
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )
    return model, opt


def _finish(
    model: Any,
    cfg: DenseConfig,
    tokenizer: Tokenizer,
    out: Path,
    records: list[dict[str, Any]],
    metadata: dict[str, Any] | None,
) -> None:
    """Save a finished run: weights, tokenizer, metrics, then ``dense.json`` (last: it marks
    the run finished); the trainer state goes.

    Raises:
        ValueError: the last training loss is not finite (diverged).
    """
    from transformers import PreTrainedTokenizerFast

    model.eval()
    if not math.isfinite(records[-1]["train_loss"]):
        raise ValueError("dense training diverged (non-finite loss); lower --lr")
    model.save_pretrained(out)  # safetensors + config.json, before any TransformerBridge wrap
    cast(PreTrainedTokenizerFast, tokenizer.to_hf()).save_pretrained(out)
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    info = {
        "dense_version": DENSE_VERSION,
        "config": asdict(cfg),
        "val_loss": records[-1]["val_loss"],
        "tokenizer": {"vocab_size": tokenizer.vocab_size, "eot_id": tokenizer.eot_id},
    }
    atomic_write_json(out / "dense.json", info | (metadata or {}))  # written last: "finished"
    shutil.rmtree(out / TRAINER_STATE.parent, ignore_errors=True)


def _check_weights(weights: Path) -> None:
    """A missing, truncated or non-finite weight file, named, before transformers reads it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from sparse_lens.model.checkpoint import check_finite

    if not weights.is_file():
        raise FileNotFoundError(f"dense weights file {str(weights)!r} is missing")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ValueError(
            f"dense weights file {str(weights)!r} is corrupt or truncated ({e}); retrain or "
            "restore it"
        ) from e
    check_finite(state, f"dense weights file {str(weights)!r}")


def load_dense(path: str | Path, *, compatibility_mode: bool = True) -> Any:
    """The dense model in ``path`` as a ``TransformerBridge``, built offline.

    Raises:
        FileNotFoundError: ``path`` has no ``config.json`` or no ``tokenizer.json``.
        ValueError: ``config.json`` is corrupt, or the folder holds an unfinished run (a trainer
            checkpoint and no ``dense.json``).
    """
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer, GPT2LMHeadModel

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"dense model folder {str(path)!r} has no config.json")
    if not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(f"dense model folder {str(path)!r} has no tokenizer.json")
    read_json(path / "config.json", "dense model config")
    if not (path / "dense.json").is_file() and (path / TRAINER_STATE).is_file():
        raise ValueError(
            f"dense model folder {str(path)!r} holds an unfinished run (no dense.json); resume "
            "it with train --dense-hf --resume"
        )
    _check_weights(path / "model.safetensors")
    # local files only; the built model and a tokenizer reloaded from disk are handed over, so
    # boot_transformers needs neither the hub's config nor its tokenizer
    hf = GPT2LMHeadModel.from_pretrained(path, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    bridge = TransformerBridge.boot_transformers(str(path), hf_model=hf.eval(), tokenizer=tok)
    if compatibility_mode:
        bridge.enable_compatibility_mode()
    for p in bridge.parameters():  # frozen: bridges and the sparse model learn, it does not
        p.requires_grad_(False)
    return bridge.eval()
