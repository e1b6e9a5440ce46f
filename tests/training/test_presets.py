"""Every preset builds a valid model; the ``study`` preset trains a few steps."""

import json
import math

import numpy as np
import pytest

from sparse_lens.data.token_data import MixedData, TokenData
from sparse_lens.model.transformer import HookedSparseTransformer
from sparse_lens.training.presets import PRESETS, get_preset
from sparse_lens.training.sparse import check_sparsity_budget, train


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_build_valid_configs(name):
    mcfg, tcfg = get_preset(name).build(2048)
    assert mcfg.d_model == mcfg.n_heads * mcfg.d_head and mcfg.d_mlp == 4 * mcfg.d_model
    assert tcfg.steps >= 1


def test_build_applies_model_overrides_before_dense():
    mcfg, _ = get_preset("tiny").build(300, model_overrides={"d_model": 64, "afrac": 0.5})
    assert (mcfg.d_model, mcfg.afrac) == (64, 0.5)
    dense, _ = get_preset("tiny").build(300, model_overrides={"weight_density": 0.1}, dense=True)
    assert dense.weight_density == 1.0


def test_study_preset_is_wider_longer_and_trains(tmp_path):
    demo_m, demo_t = get_preset("demo").build(300)
    mcfg, tcfg = get_preset("study").build(300, steps=2, batch_size=4)
    assert mcfg.d_model > demo_m.d_model
    assert get_preset("study").idiom_frac >= get_preset("demo").idiom_frac > 0
    assert get_preset("demo").idiom_kinds == ("literals", "statements")
    assert get_preset("study").idiom_kinds == ("literals", "statements")
    assert get_preset("study").model.n_layers > demo_m.n_layers
    full = get_preset("study").build(300)[1]
    assert full.steps * full.batch_size > 2 * demo_t.steps * demo_t.batch_size
    model = HookedSparseTransformer(mcfg)
    check_sparsity_budget(model)
    rng = np.random.default_rng(0)
    base = TokenData(
        train=rng.integers(0, 300, 4000, dtype=np.uint16),
        val=rng.integers(0, 300, 600, dtype=np.uint16),
    )
    data = MixedData(
        base=base,
        idioms=rng.integers(0, 300, 2000, dtype=np.uint16),
        idiom_frac=get_preset("study").idiom_frac,
        idiom_info={},
    )
    train(model, data, tcfg, tmp_path / "run", progress=False)
    records = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert (tmp_path / "run" / "final" / "config.json").is_file()
    assert math.isfinite(json.loads(records[-1])["val_loss"])
