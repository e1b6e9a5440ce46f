"""Ablation values: what a removed node is replaced by (arXiv 2511.13653, App. A.5).

* ``mean``: the node's mean over the pretraining distribution (post AbsTopK; computed once per
  model and cached on disk under the model's fingerprint and the windows' hash), leaving out
  the ``<|endoftext|>`` separator positions by default.
* ``zero``: zero.
* ``resample``: the node's value on another pretraining window, one window per task example
  (``[batch pos channels]`` values, so they apply only to the batch they were drawn for).

``Ablation`` holds the values and answers every question that depends on the kind: the rows of
a batch (``rows``), the values at one hook for a batch (``for_batch``), and the per-channel
values that edges and circuit files need (``channel_values``, refused for a per-example kind).
``norm_scale_hooks`` freezes the RMSNorm scales at the full model's (the "LayerNorm cheating"
control of Drori 2026, "Weight-Sparse Circuits May Be Interpretable Yet Unfaithful").
"""

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from hooks import flat, replace
from hooks.types import HookList
from sparse_lens.circuits.nodes import Location, node_locations
from sparse_lens.files.atomic import atomic_write
from sparse_lens.files.outputs import cache_entry
from sparse_lens.model.transformer import HookedSparseTransformer
from sparse_lens.tasks.task import TaskBatch
from sparse_lens.vocab import ABLATIONS, AblationKind

logger = logging.getLogger(__name__)

PER_EXAMPLE: frozenset[AblationKind] = frozenset({"resample"})
"""Kinds whose values are per task example (``[batch pos channels]``), not per channel."""


def model_fingerprint(model: HookedSparseTransformer) -> str:
    """SHA-256 prefix of the model's config and weights."""
    h = hashlib.sha256(repr(sorted(model.cfg.to_dict().items())).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def separator_ids(
    model: HookedSparseTransformer, exclude_separators: bool = True
) -> tuple[int, ...]:
    """Token ids whose positions statistics leave out: the tokenizer's ``<|endoftext|>`` (the
    document separator of the pretraining stream), or none without a tokenizer or if off."""
    if not exclude_separators or model.tokenizer is None:
        return ()
    return (model.tokenizer.eot_id,)


def _kept_positions(windows: Tensor, exclude_ids: tuple[int, ...]) -> Tensor:
    if not exclude_ids:
        return torch.ones(windows.shape, dtype=torch.bool)
    return ~torch.isin(windows, torch.tensor(exclude_ids, dtype=windows.dtype))


def mean_source(windows: Tensor, exclude_ids: tuple[int, ...]) -> dict[str, Any]:
    """Where an ablation mean comes from, as recorded in the circuit file."""
    return {
        "data": "pretraining windows",
        "n_windows": int(windows.shape[0]),
        "n_tokens": int(_kept_positions(windows, exclude_ids).sum()),
        "excluded_token_ids": list(exclude_ids),
    }


@torch.no_grad()
def ablation_means(
    model: HookedSparseTransformer,
    windows: Tensor,
    cache_dir: Path | None = None,
    batch_size: int = 16,
    exclude_ids: tuple[int, ...] | None = None,
) -> dict[str, Tensor]:
    """Mean of every node location's (post-AbsTopK) activation over pretraining ``windows``,
    cached in ``cache_dir`` under the model fingerprint and the windows' hash.

    Positions holding a token of ``exclude_ids`` are left out (default ``separator_ids``: the
    ``<|endoftext|>`` separators, which are many in a corpus of short documents and move the
    means). ``mean_source`` describes the result.

    Raises:
        ValueError: if every position is excluded.
    """
    exclude_ids = separator_ids(model) if exclude_ids is None else tuple(exclude_ids)
    locs = node_locations(model.cfg)
    digest = hashlib.sha256(windows.numpy().tobytes() + repr(exclude_ids).encode())
    key = digest.hexdigest()[:10]
    if cache_dir is None:
        return _means(model, windows, locs, batch_size, exclude_ids)
    path = Path(cache_dir) / f"means-{model_fingerprint(model)}-{key}.safetensors"
    with cache_entry(path):
        if path.is_file():
            try:
                means = load_file(str(path))
                if set(means) == {loc.hook for loc in locs}:
                    return means
                logger.warning("rebuilding the cache entry %s: other hooks", path)
            except (SafetensorError, OSError, ValueError, RuntimeError) as e:
                logger.warning("rebuilding the cache entry %s: it is corrupt (%s)", path, e)
        means = _means(model, windows, locs, batch_size, exclude_ids)
        atomic_write(path, lambda p: save_file(means, str(p)))
    return means


def _means(
    model: HookedSparseTransformer,
    windows: Tensor,
    locs: list[Location],
    batch_size: int,
    exclude_ids: tuple[int, ...],
) -> dict[str, Tensor]:
    kept = _kept_positions(windows, exclude_ids)
    if not bool(kept.any()):
        raise ValueError(f"every position of the windows is one of the excluded ids {exclude_ids}")
    hooks = [loc.hook for loc in locs]
    sums = {loc.hook: torch.zeros(loc.size, dtype=torch.float64) for loc in locs}
    for i in range(0, len(windows), batch_size):
        batch = windows[i : i + batch_size].to(model.W_E.device)
        weight = kept[i : i + batch_size, :, None].double()
        _, cache = model.run_with_cache(batch, names_filter=hooks)
        for loc in locs:
            act = flat(cache[loc.hook], loc.size).double().cpu()
            sums[loc.hook] += (act * weight).sum(dim=(0, 1))
    count = int(kept.sum())
    return {h: (s / count).float() for h, s in sums.items()}


@dataclass
class Ablation:
    """What removed nodes are replaced by, per hook: a ``[channels]`` vector (mean, zero) or,
    for a per-example kind (resample), a ``[batch pos channels]`` tensor whose rows are the
    pruner's training then validation examples."""

    kind: AblationKind
    values: dict[str, Tensor]
    source: dict[str, Any] = field(default_factory=dict)  # recorded in the circuit file

    @property
    def per_example(self) -> bool:
        """True when the values are per task example, so they apply only to the batches they
        were drawn for (not to a test split, an edge or a circuit file)."""
        return self.kind in PER_EXAMPLE

    def for_batch(self, hook: str, batch_idx: Tensor | None, width: int) -> Tensor:
        """The values at ``hook`` for rows ``batch_idx`` of a batch ``width`` positions wide
        (per-channel values need neither)."""
        v = self.values[hook]
        if v.ndim == 1:
            return v
        v = v if batch_idx is None else v[batch_idx]
        return v[:, :width]

    def rows(
        self, batch: TaskBatch, train: TaskBatch, val: TaskBatch
    ) -> Int[Tensor, " batch"] | None:
        """The value rows of ``batch`` (one of ``train`` and ``val``, whose examples the
        per-example values hold in that order); None for per-channel values.

        Raises:
            ValueError: per-example values and a batch other than ``train`` or ``val``.
        """
        if not self.per_example:
            return None
        if batch is not train and batch is not val:
            raise ValueError(
                f"a {self.kind} ablation only covers the pruner's train and val batches"
            )
        offset = 0 if batch is train else len(train)
        return torch.arange(offset, offset + len(batch))

    def channel_values(self, what: str) -> dict[str, Tensor]:
        """The per-channel values (hook -> ``[channels]``) that ``what`` needs.

        Raises:
            ValueError: a per-example kind (``what`` named).
        """
        if self.per_example:
            raise ValueError(f"{what} needs a mean or zero ablation (per-channel fill values)")
        return self.values


def _zero(
    model: HookedSparseTransformer, windows: Tensor, batch: TaskBatch | None, how: "_How"
) -> Ablation:
    locs = node_locations(model.cfg)
    return Ablation("zero", {loc.hook: torch.zeros(loc.size) for loc in locs}, {"data": None})


def _mean(
    model: HookedSparseTransformer, windows: Tensor, batch: TaskBatch | None, how: "_How"
) -> Ablation:
    ids = separator_ids(model, how.exclude_separators)
    means = ablation_means(model, windows, how.cache_dir, exclude_ids=ids)
    return Ablation("mean", means, mean_source(windows, ids))


def _resample(
    model: HookedSparseTransformer, windows: Tensor, batch: TaskBatch | None, how: "_How"
) -> Ablation:
    if batch is None:
        raise ValueError("resample ablation needs the task batch it will be applied to")
    g = torch.Generator().manual_seed(how.seed)
    width = batch.tokens.shape[1]
    if windows.shape[1] < width:
        raise ValueError("pretraining windows are shorter than the task contexts")
    pick = torch.randint(0, len(windows), (len(batch),), generator=g)
    src = windows[pick, :width]
    locs = node_locations(model.cfg)
    hooks = [loc.hook for loc in locs]
    with torch.no_grad():
        _, cache = model.run_with_cache(src.to(model.W_E.device), names_filter=hooks)
    values = {loc.hook: flat(cache[loc.hook], loc.size).cpu() for loc in locs}
    source = {"data": "pretraining windows", "n_windows": len(batch), "width": width}
    return Ablation("resample", values, source)


@dataclass(frozen=True, kw_only=True)
class _How:
    cache_dir: Path | None
    seed: int
    exclude_separators: bool


_BUILDERS: dict[
    AblationKind,
    Callable[[HookedSparseTransformer, Tensor, TaskBatch | None, _How], Ablation],
] = {"mean": _mean, "zero": _zero, "resample": _resample}


def make_ablation(
    kind: AblationKind,
    model: HookedSparseTransformer,
    pretrain_windows: Tensor,
    batch: TaskBatch | None = None,
    cache_dir: Path | None = None,
    seed: int = 0,
    exclude_separators: bool = True,
) -> Ablation:
    """Build the ablation values for ``kind`` (mean, zero or resample); a mean leaves out
    separator positions unless ``exclude_separators`` is False (``ablation_means``).

    Raises:
        ValueError: an unknown ``kind`` (named); ``resample`` without ``batch``, or with
            pretraining windows shorter than the task contexts.
    """
    if kind not in _BUILDERS:
        raise ValueError(f"ablation must be one of {ABLATIONS}, got {kind!r}")
    how = _How(cache_dir=cache_dir, seed=seed, exclude_separators=exclude_separators)
    return _BUILDERS[kind](model, pretrain_windows, batch, how)


def norm_scale_hooks(model: HookedSparseTransformer, tokens: Tensor) -> HookList:
    """Hooks that freeze every RMSNorm scale at the full model's value on ``tokens``."""
    names = [n for n in model.hook_dict if n.endswith("hook_scale")]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=names)

    # ``replace`` checks shapes: a scale saved before e.g. split-QKV was switched on never
    # broadcasts
    return [(n, replace(cache[n])) for n in names]
