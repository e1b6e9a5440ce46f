"""The paper's schedules as pure functions of the step (arXiv 2511.13653, App. A).

| schedule | value at step i of T |
|---|---|
| anneal progress ``a(i)`` | 0 before ``anneal_start*T``, linear to 1 at ``anneal_end*T``, then 1 |
| block-matrix density | ``1 + (weight_density - 1) * a(i)`` (L0 linear from dense) |
| embedding / bias density, ``"linear"`` | ``1 + (embed_density - 1) * a(i)`` |
| embedding / bias density, ``"paper_bug"`` | ``min(1, embed_density * D(i) / weight_density)`` |
| base LR | ``lr * (i+1)/W`` for ``i < W = warmup*T``, then ``lr * (1 - (i-W)/(T-W))`` |
| LR (sharkfin) | ``base(i) * sqrt(weight_density / D(i))`` with ``D`` the block density |

Choices where the paper and OpenAI's ``training/sparse.py`` disagree:

* Annealing starts at 1% (after warmup) and ends at 50%, as the script does; the paper's
  "first 50%" does not say when it starts. Both ends are configurable.
* Embedding, unembedding and bias density anneal *linearly* by default, as the released script
  does (the fix of the paper's "bug"); ``"paper_bug"`` reproduces the paper's behaviour, where
  those densities stay dense and collapse to their target shortly before the anneal ends.
* Warmup counts from ``i + 1`` so the first step is not a zero-LR step (the script uses ``i``).
"""

import math
from typing import Literal, get_args

from hooks.weight_sparsity import anneal_progress, annealed_density

EmbedAnneal = Literal["linear", "paper_bug"]

__all__ = [
    "EmbedAnneal",
    "anneal_progress",
    "base_lr",
    "block_density",
    "embed_density_at",
    "sharkfin_lr",
    "warmup_linear_decay",
]


def block_density(progress: float, weight_density: float) -> float:
    """Nonzero fraction of block matrices: linear from 1 to ``weight_density``."""
    return annealed_density(progress, weight_density)


def embed_density_at(
    progress: float, weight_density: float, embed_density: float, mode: EmbedAnneal = "linear"
) -> float:
    """Nonzero fraction of embeddings, unembedding and biases at anneal ``progress``.

    Raises:
        ValueError: an unknown anneal ``mode`` (named).
    """
    if mode == "linear":
        return annealed_density(progress, embed_density)
    if mode == "paper_bug":
        return min(1.0, embed_density * block_density(progress, weight_density) / weight_density)
    raise ValueError(f"embed anneal mode must be one of {get_args(EmbedAnneal)}, got {mode!r}")


def warmup_linear_decay(step: int, total: int, lr: float, warmup: float | int) -> float:
    """``lr * (step+1)/warmup`` for ``step < warmup``, then linear decay to 0 at ``total``
    (``warmup`` in steps; the LR schedule of every trainer and of mask training)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if total <= warmup:
        return lr
    return lr * max(0.0, 1.0 - (step - warmup) / (total - warmup))


def base_lr(step: int, total: int, lr: float, warmup_frac: float) -> float:
    """Linear warmup over ``warmup_frac*total`` steps, then linear decay to 0 at ``total``."""
    return warmup_linear_decay(step, total, lr, warmup_frac * total)


def sharkfin_lr(
    step: int,
    total: int,
    lr: float,
    warmup_frac: float,
    weight_density: float,
    anneal_start: float,
    anneal_end: float,
    scale_with_l0: bool = True,
) -> float:
    """Base LR times ``sqrt(L0_final / L0_now)`` (1/sqrt(L0), normalised to 1 after annealing)."""
    base = base_lr(step, total, lr, warmup_frac)
    if not scale_with_l0:
        return base
    density = block_density(anneal_progress(step, total, anneal_start, anneal_end), weight_density)
    return base * math.sqrt(weight_density / density)
