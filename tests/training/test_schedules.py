import math

import pytest
from jaxtyping import TypeCheckError

from sparse_lens.training.schedules import (
    anneal_progress,
    base_lr,
    block_density,
    embed_density_at,
    sharkfin_lr,
)

T = 1000


def test_anneal_progress_linear_between_1_and_50_percent():
    assert anneal_progress(0, T, 0.01, 0.5) == 0.0
    assert anneal_progress(10, T, 0.01, 0.5) == 0.0
    assert anneal_progress(255, T, 0.01, 0.5) == pytest.approx(0.5)
    assert anneal_progress(500, T, 0.01, 0.5) == 1.0
    assert anneal_progress(900, T, 0.01, 0.5) == 1.0


def test_block_density_linear_from_dense():
    assert block_density(0.0, 1 / 64) == 1.0
    assert block_density(1.0, 1 / 64) == 1 / 64
    assert block_density(0.5, 0.5) == pytest.approx(0.75)


def test_embed_density_modes():
    assert embed_density_at(0.5, 1 / 64, 1 / 16, "linear") == pytest.approx(1 - 0.5 * 15 / 16)
    # paper_bug: dense until the block density falls below weight/embed = 1/4, then collapses.
    assert embed_density_at(0.5, 1 / 64, 1 / 16, "paper_bug") == 1.0
    assert embed_density_at(1.0, 1 / 64, 1 / 16, "paper_bug") == pytest.approx(1 / 16)
    # ValueError from the library; the test run's type checker refuses the Literal argument first
    with pytest.raises((ValueError, TypeCheckError), match="embed anneal|mode"):
        embed_density_at(0.5, 0.1, 0.2, "nope")


def test_base_lr_warmup_then_linear_decay():
    assert base_lr(0, T, 1.0, 0.01) == pytest.approx(0.1)
    assert base_lr(9, T, 1.0, 0.01) == pytest.approx(1.0)
    assert base_lr(10, T, 1.0, 0.01) == pytest.approx(1.0)
    assert base_lr(505, T, 1.0, 0.01) == pytest.approx(0.5)
    assert base_lr(T, T, 1.0, 0.01) == 0.0


def test_sharkfin_matches_papers_numbers():
    # ef=4, pfrac=1/4: block density 1/64. Relative LR 0.125 after warmup, ~0.505 at 50%.
    def rel(step):
        return sharkfin_lr(step, T, 1.0, 0.01, 1 / 64, 0.01, 0.5)

    assert rel(10) == pytest.approx(0.125, rel=1e-3)
    assert rel(500) == pytest.approx(0.505, rel=1e-2)
    assert rel(750) == pytest.approx(0.2525, rel=1e-2)
    peak_step = max(range(T), key=rel)
    assert 490 <= peak_step <= 510
    assert sharkfin_lr(500, T, 1.0, 0.01, 1 / 64, 0.01, 0.5, scale_with_l0=False) == base_lr(
        500, T, 1.0, 0.01
    )
    assert math.isclose(rel(T - 1), base_lr(T - 1, T, 1.0, 0.01))
