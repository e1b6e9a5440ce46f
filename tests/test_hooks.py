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
    tokens = random_tokens()
    _, cache = model.run_with_cache(tokens)
    v = cache["v", 0]  # [batch pos head_index d_head], AbsTopK'd: most entries are 0
    # the channel of heads 1-3 that is most often nonzero, so zeroing it is visible
    c = 4 + int((v.flatten(-2)[..., 4:] != 0).sum(dim=(0, 1)).argmax())
    head, d = divmod(c, 4)
    assert (v[..., head, d] != 0).any()
    seen = {}
    model.run_with_hooks(
        tokens,
        fwd_hooks=[
            ("blocks.0.attn.hook_v", zero_ablate([c], 16)),
            ("blocks.0.attn.hook_v", lambda a, hook: seen.setdefault("v", a.clone())),
        ],
    )
    ref = v.clone()
    ref[..., head, d] = 0  # channel c = head c // d_head, index c % d_head; nothing else changes
    assert torch.equal(seen["v"], ref)


def test_mean_and_resample_ablation():
    model = build_model()
    tokens = random_tokens()
    _, cache = model.run_with_cache(tokens)
    post = cache["post", 1]
    mean = post.mean(dim=(0, 1))
    chosen = mean.abs().argsort(descending=True)[:2].tolist()  # AbsTopK leaves most means 0
    assert (mean[chosen] != 0).all()
    got = {}
    model.run_with_hooks(
        tokens,
        fwd_hooks=[
            ("blocks.1.mlp.hook_post", mean_ablate(mean, chosen)),
            ("blocks.1.mlp.hook_post", lambda a, hook: got.setdefault("m", a.clone())),
        ],
    )
    ref = post.clone()
    ref[..., chosen] = mean[chosen]  # the chosen channels replaced, the rest untouched
    torch.testing.assert_close(got["m"], ref)
    other = torch.randn_like(post)
    model.run_with_hooks(
        tokens,
        fwd_hooks=[
            ("blocks.1.mlp.hook_post", resample_ablate(other, [2])),
            ("blocks.1.mlp.hook_post", lambda a, hook: got.setdefault("r", a.clone())),
        ],
    )
    ref = post.clone()
    ref[..., 2] = other[..., 2]
    torch.testing.assert_close(got["r"], ref)
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
    _, cache = model.run_with_cache(tokens)
    z, attn = cache["z", 0], model.blocks[0].attn
    dense_write = torch.einsum("bphe,hed->bpd", z, attn.W_O) + attn.b_O  # no AbsTopK
    out = {}
    model.run_with_hooks(
        tokens,
        fwd_hooks=[
            ("blocks.0.attn.hook_out_mask", force_mask(ones)),
            ("blocks.0.hook_attn_out", lambda a, hook: out.setdefault("a", a.clone())),
        ],
    )
    torch.testing.assert_close(out["a"], dense_write)
    # a forced mask of the clean run's own mask changes nothing; another mask is obeyed exactly
    picked = (torch.arange(16) % 5 == 0).float().expand(2, 10, 16)
    model.run_with_hooks(
        tokens,
        fwd_hooks=[
            ("blocks.0.attn.hook_out_mask", force_mask(picked)),
            ("blocks.0.hook_attn_out", lambda a, hook: out.__setitem__("b", a.clone())),
        ],
    )
    torch.testing.assert_close(out["b"], dense_write * picked)


def test_sink_mass_and_removal_effect():
    model = build_model(init_std=0.3)  # large enough weights that sinks matter
    tokens = random_tokens()
    tokens = random_tokens(3, 10)
    mass = sink_mass(model, tokens, batch_size=2)  # batches of 2 and 1: the mean runs over both
    # reference: the sink's share of each query's softmax, recomputed from the scores
    _, cache = model.run_with_cache(tokens)
    for layer in range(2):
        scores = cache["attn_scores", layer]  # masked entries hold a very negative number
        sinks = model.blocks[layer].attn.sinks[None, :, None]
        to_keys = scores.exp().sum(-1)
        ref = (sinks.exp() / (sinks.exp() + to_keys)).mean(dim=(0, 2))
        torch.testing.assert_close(mass[layer], ref, atol=1e-5, rtol=1e-4)
    effect = sink_removal_effect(model, tokens)
    ref = torch.zeros(2, 4)
    with torch.no_grad():
        base = model(tokens, return_type="loss")
        for layer in range(2):
            for head in range(4):
                without = build_model(init_std=0.3)
                without.blocks[layer].attn.sinks[head] = -torch.inf
                ref[layer, head] = without(tokens, return_type="loss") - base
    assert ref.abs().min() > 1e-3
    torch.testing.assert_close(effect, ref, atol=1e-5, rtol=1e-4)
    assert torch.equal(model.blocks[0].attn.sinks, build_model(init_std=0.3).blocks[0].attn.sinks)
    with pytest.raises(ValueError, match="no attention sinks"):
        sink_mass(build_model(attn_sinks=False), tokens)
