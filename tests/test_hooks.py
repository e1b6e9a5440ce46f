import pytest
import torch

from analyses.attention_sinks import sink_mass, sink_removal_effect
from hooks import force_mask, mean_ablate, node_mask, patch_from, resample_ablate, zero_ablate
from tests.helpers import build_model, random_tokens


def test_node_mask_all_ones_is_identity_and_zero_mask_gives_baseline():
    model = build_model()
    tokens = random_tokens()
    clean = model(tokens)
    ones = node_mask(torch.ones(32))
    torch.testing.assert_close(
        model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.mlp.hook_post", ones)]), clean
    )
    seen = {}
    model.run_with_hooks(
        tokens,
        fwd_hooks=[
            ("blocks.0.mlp.hook_post", node_mask(torch.zeros(32), torch.arange(32.0))),
            ("blocks.0.mlp.hook_post", lambda a, hook: seen.setdefault("x", a.clone())),
        ],
    )
    assert torch.equal(seen["x"], torch.arange(32.0).expand(2, 10, 32))


def test_per_head_channels_are_flattened():
    model = build_model()
    seen = {}
    model.run_with_hooks(
        random_tokens(),
        fwd_hooks=[
            ("blocks.0.attn.hook_v", zero_ablate([5], 16)),
            ("blocks.0.attn.hook_v", lambda a, hook: seen.setdefault("v", a.clone())),
        ],
    )
    assert (seen["v"][..., 1, 1] == 0).all()  # channel 5 = head 1, d_head index 1


def test_mean_and_resample_ablation():
    model = build_model()
    tokens = random_tokens()
    _, cache = model.run_with_cache(tokens)
    post = cache["post", 1]
    mean = post.mean(dim=(0, 1))
    got = {}
    model.run_with_hooks(
        tokens,
        fwd_hooks=[
            ("blocks.1.mlp.hook_post", mean_ablate(mean, [0, 3])),
            ("blocks.1.mlp.hook_post", lambda a, hook: got.setdefault("m", a.clone())),
        ],
    )
    assert torch.allclose(got["m"][..., 3], mean[3].expand(2, 10))
    other = torch.randn_like(post)
    model.run_with_hooks(
        tokens,
        fwd_hooks=[
            ("blocks.1.mlp.hook_post", resample_ablate(other, [2])),
            ("blocks.1.mlp.hook_post", lambda a, hook: got.setdefault("r", a.clone())),
        ],
    )
    assert torch.equal(got["r"][..., 2], other[..., 2])
    with pytest.raises(ValueError, match="resample source"):
        model.run_with_hooks(
            tokens, fwd_hooks=[("blocks.1.mlp.hook_post", resample_ablate(other[:1], [2]))]
        )
    assert all(not hp.fwd_hooks for hp in model.hook_dict.values())


def test_patching_clean_into_corrupt_restores_clean_logits():
    model = build_model()
    clean, corrupt = random_tokens(seed=1), random_tokens(seed=2)
    clean_logits, cache = model.run_with_cache(clean)
    # Patching the final residual stream everywhere gives clean logits up to the bigram table.
    patched = model.run_with_hooks(
        corrupt, fwd_hooks=[("blocks.1.hook_resid_post", patch_from(cache["resid_post", 1]))]
    )
    bigram_delta = model.bigram.W_bigram[clean] - model.bigram.W_bigram[corrupt]
    torch.testing.assert_close(patched + bigram_delta, clean_logits, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="patch source"):
        model.run_with_hooks(
            corrupt,
            fwd_hooks=[("blocks.1.hook_resid_post", patch_from(cache["resid_post", 1][:1]))],
        )


def test_force_mask_freezes_abstopk_write_channels():
    model = build_model()
    tokens = random_tokens()
    ones = torch.ones(2, 10, 16)
    _, cache = model.run_with_cache(tokens, names_filter="blocks.0.hook_attn_out")
    out = {}
    model.run_with_hooks(
        tokens,
        fwd_hooks=[
            ("blocks.0.attn.hook_out_mask", force_mask(ones)),
            ("blocks.0.hook_attn_out", lambda a, hook: out.setdefault("a", a.clone())),
        ],
    )
    assert (out["a"] != 0).sum() > (cache["attn_out", 0] != 0).sum()


def test_sink_mass_and_removal_effect():
    model = build_model()
    tokens = random_tokens()
    mass = sink_mass(model, tokens)
    assert mass.shape == (2, 4) and ((mass > 0) & (mass < 1)).all()
    effect = sink_removal_effect(model, tokens)
    assert effect.shape == (2, 4) and effect.abs().sum() > 0
    assert torch.isfinite(model.blocks[0].attn.sinks).all()
    with pytest.raises(ValueError, match="no attention sinks"):
        sink_mass(build_model(attn_sinks=False), tokens)
