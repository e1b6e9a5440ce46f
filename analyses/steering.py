"""Steering a dense model through a bridge with a sparse circuit node (arXiv 2511.13653, App. A.4).

The node is a residual read of the sparse model: ``blocks.{l}.attn.hook_in`` (post-norm read of
site ``blocks.{l}.hook_resid_pre``) or ``blocks.{l}.mlp.hook_in`` (site ``hook_resid_mid``).
For each minimal pair (presented context a, counterfactual b, same length) the per-token
difference ``act_b - act_a`` of the node is taken back to pre-norm units (times the mean RMS of
the sparse residual at the site over a reference set, divided by the norm weight of the
channel), multiplied by the decoder's column for the channel (a ``[pos, d_dense]``
perturbation) and added, times the strength ``s``, to the dense residual at the site. The
control adds a random direction of the same per-token norm. ``P(b's answer)`` at the answer
position is averaged over pairs for each ``s``.
"""

from dataclasses import dataclass, field
from typing import Any, cast

import torch
from jaxtyping import Int
from torch import Tensor, nn

from sparse_lens.bridges.maps import Bridges
from sparse_lens.model.transformer import HookedSparseTransformer
from sparse_lens.tasks.task import TaskBatch

READ_SITES = {"attn_in": "hook_resid_pre", "mlp_in": "hook_resid_mid"}


@dataclass(frozen=True)
class SteeringResult:
    node: str
    site: str
    strengths: list[float]
    p_target: list[float]
    p_target_random: list[float]
    p_presented: list[float]
    n_pairs: int
    extra: dict[str, Any] = field(default_factory=dict)


def node_site(hook: str) -> tuple[str, int, str]:
    """``(site, layer, norm name)`` of a residual-read node hook.

    Raises:
        ValueError: ``hook`` is not a residual-read node (``blocks.{l}.attn.hook_in`` or
            ``blocks.{l}.mlp.hook_in``; named).
    """
    parts = hook.split(".")
    if len(parts) != 4 or parts[0] != "blocks" or parts[3] != "hook_in":
        raise ValueError(
            f"steering needs a residual-read node (attn.hook_in/mlp.hook_in), got {hook!r}"
        )
    layer, kind = int(parts[1]), parts[2]
    if kind not in ("attn", "mlp"):
        raise ValueError(f"steering needs a residual-read node, got {hook!r}")
    site = f"blocks.{layer}.{READ_SITES[kind + '_in']}"
    return site, layer, "ln1" if kind == "attn" else "ln2"


def equal_length_pairs(batch: TaskBatch) -> list[tuple[int, int]]:
    """``(a, b)`` example indices of the batch's minimal pairs with equally long contexts."""
    return [
        (i, i + 1)
        for i in range(0, len(batch) - 1, 2)
        if int(batch.last[i]) == int(batch.last[i + 1])
    ]


def paired_batches(batch: TaskBatch) -> tuple[TaskBatch, TaskBatch]:
    """The ``a`` (presented) and ``b`` (counterfactual) sides of the equal-length pairs, as two
    aligned batches of the same width.

    Raises:
        ValueError: no minimal pair has two contexts of the same length.
    """
    pairs = equal_length_pairs(batch)
    if not pairs:
        raise ValueError("no minimal pair has two contexts of the same length")
    return batch.subset([a for a, _ in pairs]), batch.subset([b for _, b in pairs])


@torch.no_grad()
def mean_rms(model: HookedSparseTransformer, site: str, tokens: Int[Tensor, "batch pos"]) -> float:
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n == site)
    return float(cache[site].pow(2).mean(dim=-1).sqrt().mean())


@torch.no_grad()
def steering_curve(
    dense: Any,
    sparse: HookedSparseTransformer,
    bridges: Bridges,
    batch: TaskBatch,
    hook: str,
    channel: int,
    reference: Int[Tensor, "batch pos"],
    strengths: list[float] | None = None,
    seed: int = 0,
) -> SteeringResult:
    """P(counterfactual answer) of the dense model against steering strength (module doc).

    Raises:
        ValueError: ``hook`` is not a residual-read node, or ``channel`` is outside
            ``[0, d_model)`` (named).
    """
    strengths = strengths if strengths is not None else [i / 10 for i in range(11)]
    site, layer, norm = node_site(hook)
    if not 0 <= channel < sparse.cfg.d_model:
        raise ValueError(f"channel {channel} out of range for d_model {sparse.cfg.d_model}")
    a, b = paired_batches(batch)
    _, ca = sparse.run_with_cache(a.tokens, names_filter=lambda n: n == hook)
    _, cb = sparse.run_with_cache(b.tokens, names_filter=lambda n: n == hook)
    delta_post = cb[hook][..., channel] - ca[hook][..., channel]  # [pairs pos]
    weight = float(getattr(sparse.blocks[layer], norm).w[channel])
    delta_pre = delta_post * mean_rms(sparse, site, reference) / weight
    decoder = cast(nn.Linear, bridges.decoders[bridges.index(site)])
    column = decoder.weight[:, channel]  # [d_dense]
    perturb = delta_pre[..., None] * column  # [pairs pos d_dense]
    gen = torch.Generator().manual_seed(seed)
    rand = torch.randn(perturb.shape[-1], generator=gen)
    random = perturb.norm(dim=-1, keepdim=True) * rand / rand.norm()
    rows = torch.arange(len(a))

    def probs(add: Tensor, s: float) -> tuple[float, float]:
        def hook_fn(act: Tensor, hook: Any) -> Tensor:
            return act + s * add.to(act)

        logits = dense.run_with_hooks(a.tokens, fwd_hooks=[(site, hook_fn)])
        p = logits[rows, a.last].float().softmax(dim=-1)
        return float(p[rows, b.correct].mean()), float(p[rows, a.correct].mean())

    curve = [probs(perturb, s) for s in strengths]
    control = [probs(random, s)[0] for s in strengths]
    return SteeringResult(
        node=hook + f"[{channel}]",
        site=site,
        strengths=list(strengths),
        p_target=[c[0] for c in curve],
        p_target_random=control,
        p_presented=[c[1] for c in curve],
        n_pairs=len(a),
        extra={"mean_abs_delta_post": float(delta_post.abs().mean())},
    )


@torch.no_grad()
def pick_read_node(
    sparse: HookedSparseTransformer,
    batch: TaskBatch,
    candidates: dict[str, list[int]],
) -> tuple[str, int, float]:
    """The residual-read node (among ``candidates``: hook -> channels) whose value at the answer
    position best separates the two contexts of each pair: ``(hook, channel, score)`` with score
    ``|mean(b - a)| / std(b - a)``.

    Raises:
        ValueError: no candidate is a residual-read node, or no pair has contexts of equal
            length.
    """
    a, b = paired_batches(batch)
    hooks = [h for h in candidates if candidates[h] and h.endswith(("attn.hook_in", "mlp.hook_in"))]
    if not hooks:
        raise ValueError("the circuit keeps no residual-read (attn_in/mlp_in) node")
    _, ca = sparse.run_with_cache(a.tokens, names_filter=lambda n: n in hooks)
    _, cb = sparse.run_with_cache(b.tokens, names_filter=lambda n: n in hooks)
    rows = torch.arange(len(a))
    best = ("", -1, -1.0)
    for h in hooks:
        diff = (cb[h][rows, b.last] - ca[h][rows, a.last])[:, candidates[h]]
        score = diff.mean(0).abs() / (diff.std(0) + 1e-6)
        i = int(score.argmax())
        if float(score[i]) > best[2]:
            best = (h, candidates[h][i], float(score[i]))
    return best
