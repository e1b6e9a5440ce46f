"""Nodes on pretraining text: the windows and tokens that drive each node most.

``corpus_values`` runs the full model on a sample of pretraining windows (the caller draws and
states it); ``corpus_profile`` gives a node's top windows (the largest ``|value|``, at most one
peak per window, separator tokens never a peak), the tokens at its largest positions and their
selectivity (the share of those positions holding the single most common token).
"""

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from hooks import flat
from sparse_lens.circuits.explain.card import CorpusContext, CorpusProfile
from sparse_lens.circuits.explain.protocols import NodeRefLike
from sparse_lens.model.transformer import HookedSparseTransformer


@dataclass(frozen=True)
class CorpusValues:
    """Nodes' values on pretraining windows (full model): ``values[label]`` ``[window pos]``;
    ``valid`` is False at separator tokens."""

    tokens: Int[Tensor, "window pos"]
    values: dict[str, Tensor]
    valid: Bool[Tensor, "window pos"]


@torch.no_grad()
def corpus_values(
    model: HookedSparseTransformer,
    refs: Sequence[NodeRefLike],
    sizes: dict[str, int],
    windows: Int[Tensor, "window pos"],
    exclude_ids: tuple[int, ...],
    batch_size: int = 16,
) -> CorpusValues:
    """Every node's value at every position of ``windows`` in the full model.

    Raises:
        ValueError: every position of ``windows`` is a separator.
    """
    valid = ~torch.isin(windows.cpu(), torch.tensor(exclude_ids, dtype=windows.dtype))
    if not bool(valid.any()):
        raise ValueError(f"every position of the pretraining windows is one of {exclude_ids}")
    hooks = {r.hook for r in refs}
    parts: dict[str, list[Tensor]] = {r.label: [] for r in refs}
    for i in range(0, len(windows), batch_size):
        chunk = windows[i : i + batch_size].to(model.W_E.device)
        _, cache = model.run_with_cache(chunk, names_filter=lambda n: n in hooks)
        for r in refs:
            parts[r.label].append(flat(cache[r.hook], sizes[r.hook])[..., r.channel].float().cpu())
    return CorpusValues(windows.cpu(), {k: torch.cat(v) for k, v in parts.items()}, valid)


def corpus_profile(
    values: Float[Tensor, "window pos"],
    data: CorpusValues,
    decode: Callable[[int], str],
    *,
    n_contexts: int,
    width: int,
    n_top: int,
) -> CorpusProfile:
    """One node's ``CorpusProfile`` (see the module docstring); contexts hold ``width`` tokens
    up to the peak and 2 after it."""
    score = values.abs().masked_fill(~data.valid, -1.0)
    best = score.max(dim=1)
    contexts = []
    for w in best.values.argsort(descending=True)[:n_contexts].tolist():
        p = int(best.indices[w])
        lo, hi = max(0, p - width + 1), min(values.shape[1], p + 3)
        contexts.append(
            CorpusContext(
                tokens=tuple(decode(t) for t in data.tokens[w, lo:hi].tolist()),
                peak=p - lo,
                value=float(values[w, p]),
                window=w,
                position=p,
            )
        )
    n = min(n_top, int(data.valid.sum()))
    idx = score.flatten().argsort(descending=True)[:n]
    counts = Counter(int(t) for t in data.tokens.flatten()[idx].tolist()).most_common()
    return CorpusProfile(
        contexts=tuple(contexts),
        top_tokens=tuple((decode(t), c) for t, c in counts[:5]),
        n_ranked=n,
        selectivity=counts[0][1] / n if n else 0.0,
        sd=float(values[data.valid].double().std()) if int(data.valid.sum()) > 1 else 0.0,
    )
