"""Pure tensor maths of weight and activation sparsity (``paper.md`` §1.4, §2.3).

* ``abs_topk`` keeps the k largest-magnitude entries of the last dimension (AbsTopK).
* ``topk_weight_mask`` picks the k largest-magnitude entries of a whole weight tensor, after
  first guaranteeing ``min_per_neuron`` entries along each neuron's fan-in or fan-out (the
  paper's "j = 4" rule). ``project_weights_`` applies it in place to every sparse parameter.
* ``param_role`` classifies parameters by name; every other function keys off it.

Everything here is a function of tensors; the ``nn.Module``s only call these.
"""

import math
from typing import Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

ParamRole = Literal["matrix", "embed", "unembed", "bias", "dense"]

# Fan dimension (TL layout) along which each sparse matrix guarantees min nonzeros per neuron:
# W_Q/W_K/W_V [n_heads d_model d_head]: each q/k/v channel keeps fan-in over d_model (dim 1);
# W_O [n_heads d_head d_model]: each value channel keeps fan-out over d_model (dim 2);
# W_in [d_model d_mlp]: each neuron keeps fan-in (dim 0); W_out [d_mlp d_model]: fan-out (dim 1).
NEURON_FAN_DIM: dict[str, int] = {"W_Q": 1, "W_K": 1, "W_V": 1, "W_O": 2, "W_in": 0, "W_out": 1}


def abs_topk_mask(x: Float[Tensor, "... d"], k: int) -> Bool[Tensor, "... d"]:
    """Boolean mask of the ``k`` largest-|x| entries along the last dimension."""
    d = x.shape[-1]
    if k >= d:
        return torch.ones_like(x, dtype=torch.bool)
    if k <= 0:
        return torch.zeros_like(x, dtype=torch.bool)
    idx = x.detach().abs().topk(k, dim=-1, sorted=False).indices
    return torch.zeros_like(x, dtype=torch.bool).scatter_(-1, idx, True)


def abs_topk(x: Float[Tensor, "... d"], k: int) -> Float[Tensor, "... d"]:
    """AbsTopK: zero all but the ``k`` largest-magnitude entries of the last dimension.

    The gradient flows to the kept entries only (the mask is treated as a constant).

    >>> abs_topk(torch.tensor([1.0, -3.0, 2.0, 0.5]), 2)
    tensor([ 0., -3.,  2.,  0.])
    """
    if k >= x.shape[-1]:
        return x
    return x * abs_topk_mask(x, k)


def param_role(name: str) -> ParamRole:
    """Sparsity role of a ``HookedSparseTransformer`` parameter, from its name.

    | role | parameters | projected to |
    |---|---|---|
    | ``matrix`` | ``W_Q W_K W_V W_O W_in W_out`` in every block | ``weight_density`` |
    | ``embed`` | ``embed.W_E``, ``pos_embed.W_pos`` | ``embed_density`` |
    | ``unembed`` | ``unembed.W_U`` | ``embed_density`` |
    | ``bias`` | every ``b_*`` | ``embed_density`` |
    | ``dense`` | norm gains ``w``, attention ``sinks``, the bigram table | never |
    """
    leaf = name.rsplit(".", 1)[-1]
    if leaf in NEURON_FAN_DIM:
        return "matrix"
    if leaf in ("W_E", "W_pos"):
        return "embed"
    if leaf == "W_U":
        return "unembed"
    if leaf.startswith("b_"):
        return "bias"
    if leaf in ("w", "sinks", "W_bigram"):
        return "dense"
    raise ValueError(f"no sparsity role known for parameter {name!r}")


def density_for(role: ParamRole, weight_density: float, embed_density: float) -> float:
    """Target nonzero fraction of a parameter with ``role`` (1.0 for dense roles)."""
    if role == "matrix":
        return weight_density
    if role in ("embed", "unembed", "bias"):
        return embed_density
    return 1.0


def n_keep(numel: int, density: float) -> int:
    """Nonzeros a tensor of ``numel`` entries keeps at ``density`` (``int(density*numel)``, >=1)."""
    return max(1, min(numel, int(density * numel)))


_SAMPLE = 65536


def _kth_largest_threshold(scores: Float[Tensor, " n"], k: int) -> Float[Tensor, ""]:
    """The exact k-th largest value of a flat tensor.

    A strided sample estimates a value safely below the answer; the exact answer is then the
    k-th largest of the (few) entries above that estimate. If the estimate overshoots, fall back
    to ``kthvalue`` over everything. About 6x faster than ``kthvalue`` on a 4M-entry matrix.
    """
    n = scores.numel()
    if n <= 4 * _SAMPLE or k > n // 8:
        return scores.kthvalue(n - k + 1).values
    sample = scores[:: n // _SAMPLE]
    # Rank of the estimate inside the sample: 1.5x the expected count above it, plus slack.
    above = min(len(sample) - 1, int(1.5 * k * len(sample) / n) + 64)
    estimate = sample.kthvalue(len(sample) - above).values
    candidates = scores[scores >= estimate]
    if candidates.numel() < k:
        return scores.kthvalue(n - k + 1).values
    return candidates.kthvalue(candidates.numel() - k + 1).values


def topk_weight_mask(
    w: Float[Tensor, "..."],
    k: int,
    *,
    fan_dim: int | None = None,
    min_per_neuron: int = 0,
) -> Bool[Tensor, "..."]:
    """Mask of exactly ``k`` entries of ``w`` with the largest magnitude.

    If ``fan_dim`` is given, the ``min_per_neuron`` largest entries along ``fan_dim`` of every
    neuron (every index of the other dimensions) are kept first, then the rest of the budget
    goes to the largest remaining entries.

    Raises:
        ValueError: if ``k`` cannot hold the per-neuron minimum.
    """
    numel = w.numel()
    if k >= numel:
        return torch.ones_like(w, dtype=torch.bool)
    scores = w.detach().abs()
    if fan_dim is not None and min_per_neuron > 0:
        # Fast path: if the plain top-k already gives every neuron its minimum, each neuron's
        # top entries are inside it, so it equals the guaranteed mask (exactly).
        # Tried only where a neuron expects >= 4x its minimum, so it rarely fails.
        per = min(min_per_neuron, w.shape[fan_dim])
        if k * w.shape[fan_dim] >= 4 * per * numel:
            plain = _topk_flat_mask(scores.reshape(-1), k).reshape(w.shape)
            if int(plain.sum(dim=fan_dim, dtype=torch.int32).min()) >= per:
                return plain
        fan = w.shape[fan_dim]
        per = min(min_per_neuron, fan)
        n_neurons = numel // fan
        if per * n_neurons > k:
            raise ValueError(
                f"k={k} nonzeros cannot keep {per} per neuron for {n_neurons} neurons "
                f"(shape {tuple(w.shape)}); raise the density or lower min_nonzero_per_neuron"
            )
        idx = scores.topk(per, dim=fan_dim, sorted=False).indices
        scores = scores.scatter(fan_dim, idx, math.inf)
    return _topk_flat_mask(scores.reshape(-1), k).reshape(w.shape)


def _topk_flat_mask(flat: Float[Tensor, " n"], k: int) -> Bool[Tensor, " n"]:
    """Exactly ``k`` largest entries of ``flat``; ties at the threshold go to the lowest index."""
    threshold = _kth_largest_threshold(flat, k)
    mask = flat > threshold
    n_above = int(mask.count_nonzero())
    if n_above < k:
        ties = (flat == threshold).nonzero().squeeze(-1)[: k - n_above]
        mask[ties] = True
    return mask


def naive_topk_weight_mask(w: Float[Tensor, "..."], k: int) -> Bool[Tensor, "..."]:
    """Reference: the same mask as ``topk_weight_mask`` without minimums, via ``torch.topk``."""
    idx = w.detach().abs().reshape(-1).topk(k, sorted=False).indices
    mask = torch.zeros(w.numel(), dtype=torch.bool, device=w.device)
    mask[idx] = True
    return mask.reshape(w.shape)


@torch.no_grad()
def project_weights_(
    model: nn.Module,
    *,
    weight_density: float,
    embed_density: float,
    min_per_neuron: int,
) -> dict[str, int]:
    """Zero, in place, all but the top-k entries of every sparse parameter of ``model``.

    Densities at 1.0 leave a role untouched; ``dense`` parameters are never touched.

    Returns:
        Nonzeros kept per projected parameter name.
    """
    kept: dict[str, int] = {}
    for name, p in model.named_parameters():
        role = param_role(name)
        density = density_for(role, weight_density, embed_density)
        if density >= 1.0:
            continue
        k = n_keep(p.numel(), density)
        leaf = name.rsplit(".", 1)[-1]
        fan_dim = NEURON_FAN_DIM.get(leaf) if role == "matrix" else None
        mask = topk_weight_mask(p, k, fan_dim=fan_dim, min_per_neuron=min_per_neuron)
        p.mul_(mask)
        kept[name] = k
    return kept
