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


# -- the primitives: blend, record, replace, flat, like --------------------------------------
def _hook_point(name: str = "blocks.0.mlp.hook_post"):
    from transformer_lens.hook_points import HookPoint

    hp = HookPoint()
    hp.name = name
    return hp


def test_blend_keeps_or_replaces_exactly_and_interpolates_a_relaxed_mask():
    from hooks import blend

    g = torch.Generator().manual_seed(0)
    act = torch.randn(2, 3, 4, generator=g)
    value = torch.randn(4, generator=g)
    out = blend(act, torch.tensor([1.0, 0.0, 1.0, 0.0]), value)
    assert torch.equal(out[..., [0, 2]], act[..., [0, 2]])
    assert torch.equal(out[..., [1, 3]], value[[1, 3]].expand(2, 3, 2))
    half = blend(act, torch.full((4,), 0.5), 0.0)
    torch.testing.assert_close(half, act / 2)
    resampled = torch.randn(2, 3, 4, generator=g)  # [batch pos channels]
    assert torch.equal(blend(act, torch.zeros(4), resampled), resampled)
    # a [batch pos channels] value on a per-head fork [batch pos 3 heads channels]
    fork = torch.randn(2, 3, 3, 5, 4, generator=g)
    got = blend(fork, torch.zeros(4), resampled)
    assert torch.equal(got, resampled[:, :, None, None, :].expand_as(fork))


def test_blend_gradient_reaches_the_mask():
    from hooks import blend

    act = torch.tensor([[2.0, 5.0]])
    keep = torch.tensor([1.0, 0.0], requires_grad=True)
    blend(act, keep, torch.tensor([0.5, 1.0])).sum().backward()
    assert torch.equal(keep.grad, torch.tensor([1.5, 4.0]))  # d/dkeep = act - value


def test_blend_names_bad_shapes():
    from hooks import blend

    with pytest.raises(ValueError, match=r"mask of shape \(3,\)"):
        blend(torch.zeros(2, 4), torch.ones(3), 0.0)
    with pytest.raises(ValueError, match=r"ablation value of shape \(5, 4\)"):
        blend(torch.zeros(2, 4), torch.ones(4), torch.zeros(5, 4))


def test_masks_and_values_follow_the_activation_dtype_and_device():
    """float32 masks and values on a float64 / meta activation: the result has the activation's
    dtype and device (on CUDA, a CPU mask would otherwise fail or upcast the model)."""
    from hooks import blend, node_mask, replace, resample_ablate

    hp = _hook_point()
    keep, mean = torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0.1, 0.2, 0.3])
    act64 = torch.randn(2, 4, 3, dtype=torch.float64)
    out = node_mask(keep, mean)(act64, hp)
    assert out.dtype == torch.float64
    assert torch.equal(out[..., 1], mean[1].double().expand(2, 4))
    assert torch.equal(out[..., 0], act64[..., 0])
    src = torch.randn(2, 4, 3)
    assert resample_ablate(src, [1])(act64, hp).dtype == torch.float64
    assert replace(src)(act64, hp).dtype == torch.float64
    meta = torch.empty(2, 4, 3, dtype=torch.bfloat16, device="meta")
    for got in (
        blend(meta, keep, mean),
        node_mask(keep, mean)(meta, hp),
        node_mask(keep)(meta.reshape(2, 4, 3, 1), hp),  # per-head view [.. heads d_head]
        replace(src)(meta, hp),
        force_mask(src)(meta, hp),
        patch_from(src, channels=[0])(meta, hp),
    ):
        assert got.device.type == "meta" and got.dtype == torch.bfloat16


def test_node_mask_hooks_keep_a_float64_model_in_float64():
    model = build_model(dtype=torch.float64)
    tokens = random_tokens()
    seen = {}
    logits = model.run_with_hooks(
        tokens,
        fwd_hooks=[
            ("blocks.0.mlp.hook_post", mean_ablate(torch.arange(32.0), [1, 2])),
            ("blocks.0.attn.hook_q", zero_ablate([0, 5], 16)),
            ("blocks.0.mlp.hook_post", lambda a, hook: seen.setdefault("x", a)),
        ],
    )
    assert logits.dtype == torch.float64 and seen["x"].dtype == torch.float64
    assert torch.equal(seen["x"][..., 2], torch.full((2, 10), 2.0, dtype=torch.float64))


def test_record_stores_by_hook_name_or_key_detached_or_not():
    from hooks import record

    model = build_model()
    tokens = random_tokens()
    _, cache = model.run_with_cache(tokens, names_filter="blocks.0.mlp.hook_post")
    store = {}
    model.run_with_hooks(
        tokens,
        fwd_hooks=[
            ("blocks.0.mlp.hook_post", record(store)),
            ("blocks.1.hook_resid_pre", record(store, "resid", detach=False)),
        ],
    )
    assert torch.equal(store["blocks.0.mlp.hook_post"], cache["blocks.0.mlp.hook_post"])
    assert not store["blocks.0.mlp.hook_post"].requires_grad
    assert store["resid"].requires_grad and store["resid"].grad_fn is not None
    assert all(not hp.fwd_hooks for hp in model.hook_dict.values())


def test_replace_writes_the_value_checks_its_shape_and_passes_gradients():
    from hooks import replace

    model = build_model()
    tokens = random_tokens()
    _, cache = model.run_with_cache(tokens, names_filter="blocks.1.hook_resid_pre")
    value = cache["blocks.1.hook_resid_pre"].clone().requires_grad_(True)
    other = random_tokens(seed=5)
    logits = model.run_with_hooks(other, fwd_hooks=[("blocks.1.hook_resid_pre", replace(value))])
    clean = model(tokens)
    # the last layer sees the clean residual; only the bigram table reads the other tokens
    bigram_delta = model.bigram.W_bigram[tokens] - model.bigram.W_bigram[other]
    torch.testing.assert_close(logits + bigram_delta, clean, atol=1e-5, rtol=1e-5)
    logits.sum().backward()
    assert value.grad is not None and value.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"blocks.1.hook_resid_pre: replacement \(1, 10, 16\)"):
        model.run_with_hooks(other, fwd_hooks=[("blocks.1.hook_resid_pre", replace(value[:1]))])


def test_flat_and_like():
    from hooks import flat, like

    x = torch.arange(24.0).reshape(2, 3, 4)
    assert flat(x, 4) is x
    assert flat(x, 12).shape == (2, 12)
    with pytest.raises(ValueError, match="no trailing dimension of 5 channels"):
        flat(x, 5)
    t = like(0.5, torch.zeros(1, dtype=torch.float64, device="meta"))
    assert t.dtype == torch.float64 and t.device.type == "meta"
