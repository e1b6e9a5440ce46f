"""Two-sample contrasts with their significance, for ``explain``'s role rules.

``class_contrast``: a node's value on the task's two answer classes at one position: the
difference of class means in units of the node's standard deviation, Welch's t, and a two-sided
permutation p-value (class labels shuffled). ``position_contrast``: the same example's value at
one position against its mean over other positions: the mean paired difference in sd units,
the paired t, and a two-sided sign-flip permutation p-value. Permutations are drawn from an
explicit ``torch.Generator``, so a result is a function of its seed. The smallest p-value a test
of ``n_permutations`` can give is ``1 / (n_permutations + 1)``.
"""

import math
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

ContrastTest = Literal["classes", "positions"]


@dataclass(frozen=True, kw_only=True)
class Contrast:
    """One contrast: ``a`` against ``b`` at ``where``.

    ``test``: ``classes`` (``a``/``b`` are the two answer classes, Welch's t, labels permuted)
    or ``positions`` (``a`` the value at ``where``, ``b`` the same example's mean over the
    other positions; paired t, signs flipped). ``contrast_sd`` is ``(mean_a - mean_b) / sd``;
    ``t`` and ``contrast_sd`` are infinite when the spread they divide by is zero and the means
    differ. ``p_value`` is two-sided, from ``n_permutations`` permutations.
    """

    where: str
    test: ContrastTest
    mean_a: float
    mean_b: float
    sd: float
    contrast_sd: float
    t: float
    p_value: float
    n_a: int
    n_b: int
    n_permutations: int
    q_value: float | None = None  # Benjamini-Hochberg over the card's tests (``bh_q_values``)

    def significant(self, alpha: float, min_contrast_sd: float) -> bool:
        """``q_value`` (else ``p_value``) below ``alpha`` and ``|contrast_sd| >=
        min_contrast_sd``."""
        p = self.q_value if self.q_value is not None else self.p_value
        return p < alpha and abs(self.contrast_sd) >= min_contrast_sd


def _ratio(num: float, den: float) -> float:
    if den > 0:
        return num / den
    return 0.0 if num == 0 else math.copysign(math.inf, num)


def _p_value(null: Float[Tensor, " n_permutations"], observed: float) -> float:
    # a tolerance so that ties (e.g. a constant node: every permuted difference is 0) count
    tol = 1e-9 * max(1.0, abs(observed))
    extreme = int((null.abs() >= abs(observed) - tol).sum())
    return (1 + extreme) / (len(null) + 1)


def class_contrast(
    a: Float[Tensor, " n_a"],
    b: Float[Tensor, " n_b"],
    *,
    where: str,
    sd: float,
    n_permutations: int,
    generator: torch.Generator,
) -> Contrast:
    """Class ``a`` against class ``b`` (values of one node at one position kind).

    Raises:
        ValueError: a class has fewer than 2 values, or ``n_permutations`` < 1 (named).
    """
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"each class needs at least 2 values, got {len(a)} and {len(b)}")
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
    a, b = a.double(), b.double()
    diff = float(a.mean() - b.mean())
    se = math.sqrt(float(a.var() / len(a) + b.var() / len(b)))
    pooled = torch.cat([a, b])
    order = torch.rand(n_permutations, len(pooled), generator=generator).argsort(dim=1)
    shuffled = pooled[order]
    null = shuffled[:, : len(a)].mean(dim=1) - shuffled[:, len(a) :].mean(dim=1)
    return Contrast(
        where=where,
        test="classes",
        mean_a=float(a.mean()),
        mean_b=float(b.mean()),
        sd=sd,
        contrast_sd=_ratio(diff, sd),
        t=_ratio(diff, se),
        p_value=_p_value(null, diff),
        n_a=len(a),
        n_b=len(b),
        n_permutations=n_permutations,
    )


def position_contrast(
    at: Float[Tensor, " n"],
    elsewhere: Float[Tensor, " n"],
    *,
    where: str,
    sd: float,
    n_permutations: int,
    generator: torch.Generator,
) -> Contrast:
    """Each example's value ``at`` one position against its mean ``elsewhere`` (paired).

    Raises:
        ValueError: fewer than 2 pairs, lengths that differ, or ``n_permutations`` < 1.
    """
    if len(at) != len(elsewhere) or len(at) < 2:
        raise ValueError(f"need 2+ paired values, got {len(at)} and {len(elsewhere)}")
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
    d = at.double() - elsewhere.double()
    diff = float(d.mean())
    se = float(d.std()) / math.sqrt(len(d))
    signs = torch.randint(0, 2, (n_permutations, len(d)), generator=generator).double() * 2 - 1
    null = (signs * d).mean(dim=1)
    return Contrast(
        where=where,
        test="positions",
        mean_a=float(at.double().mean()),
        mean_b=float(elsewhere.double().mean()),
        sd=sd,
        contrast_sd=_ratio(diff, sd),
        t=_ratio(diff, se),
        p_value=_p_value(null, diff),
        n_a=len(at),
        n_b=len(elsewhere),
        n_permutations=n_permutations,
    )


def smallest_p_value(test: ContrastTest, n_a: int, n_b: int, n_permutations: int) -> float:
    """About the smallest p-value a contrast of ``test`` on ``n_a``/``n_b`` values can reach:
    the larger of ``1 / (n_permutations + 1)`` (the Monte Carlo floor) and the share of the
    distinct rearrangements that are as extreme as the observed one at best
    (``1 / C(n_a + n_b, n_a)`` label splits for ``classes``; ``2 / 2**n_a`` sign flips for
    ``positions``, the flip of every sign being as extreme). When it is not below ``alpha`` no
    contrast of that size can be significant, whatever the node does.

    Raises:
        ValueError: ``n_a`` or ``n_b`` below 1, or ``n_permutations`` below 1.
    """
    if min(n_a, n_b, n_permutations) < 1:
        raise ValueError(f"need n_a, n_b, n_permutations >= 1, got {n_a}, {n_b}, {n_permutations}")
    if test == "classes":
        exact = 1 / math.comb(n_a + n_b, n_a)
    else:
        exact = 2 / 2.0**n_a
    return max(1 / (n_permutations + 1), exact)


def bh_q_values(p_values: list[float]) -> list[float]:
    """Benjamini-Hochberg q-values of ``p_values`` (same order): ``q_i = min over j with
    p_j >= p_i of p_j * m / rank_j``, capped at 1. Calling a test significant when its q is
    below ``alpha`` keeps the expected share of false discoveries among the significant ones at
    most ``alpha`` (Benjamini & Hochberg 1995), however many nodes a card tests."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    q = [1.0] * m
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, p_values[i] * m / rank)
        q[i] = min(1.0, running)
    return q
