"""Issue 13 fault classes 2-8 and 10 and the expected TL surface, each against a value computed
independently (with hooks or by running prompts alone), or the clear error."""

import dataclasses

import numpy as np
import pytest
import torch
from transformer_lens import model_protocol
from transformer_lens.config import TransformerLensConfig

from analyses.side_by_side import _remove_sink_hooks
from hooks import patch_from
from sparse_lens import HookedSparseTransformer, SparseTransformerConfig
from sparse_lens.model.config import DERIVED_TL_FIELDS, UNSUPPORTED_TL_FIELDS
from tests.helpers import build_model, random_tokens


def _model(**kw) -> HookedSparseTransformer:
    return build_model(init_std=0.3, **kw)


# ---------------------------------------------------------------- 2: hooks that never fire
def test_split_qkv_fires_attn_hook_in_and_node_masks_apply():
    model, tokens = _model(), random_tokens()
    zero = lambda a, hook: a * 0  # noqa: E731
    ref = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_in", zero)])
    model.set_use_split_qkv_input(True)
    try:
        out = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_in", zero)])
    finally:
        model.set_use_split_qkv_input(False)
    torch.testing.assert_close(out, ref)
    assert (ref - model(tokens)).abs().max() > 1e-2  # the hook fired and mattered


@pytest.mark.parametrize(
    ("name", "switch"),
    [
        ("blocks.0.attn.hook_result", "set_use_attn_result"),
        ("blocks.0.attn.hook_q_input", "set_use_split_qkv_input"),
        ("blocks.0.attn.hook_attn_in", "set_use_attn_in"),
        ("blocks.0.hook_mlp_in", "set_use_hook_mlp_in"),
    ],
)
def test_hook_that_cannot_fire_raises_naming_the_switch(name, switch):
    model = _model()
    with pytest.raises(ValueError, match=switch):
        model.add_hook(name, lambda a, hook: a)
    with pytest.raises(ValueError, match=switch):
        model.run_with_hooks(random_tokens(), fwd_hooks=[(name, lambda a, hook: a)])
    with pytest.raises(ValueError, match=switch):
        model.run_with_cache(random_tokens(), names_filter=[name])
    getattr(model, switch)(True)
    _, cache = model.run_with_cache(random_tokens(), names_filter=[name])
    assert name in cache.cache_dict


def test_legacy_name_caches_under_canonical_name():
    model = _model()
    model.set_use_split_qkv_input(True)
    _, full = model.run_with_cache(random_tokens())
    for legacy, canonical in (
        (["blocks.0.hook_q_input"], "blocks.0.attn.hook_q_input"),
        (lambda n: n == "blocks.0.hook_k_input", "blocks.0.attn.hook_k_input"),
    ):
        _, cache = model.run_with_cache(random_tokens(), names_filter=legacy)
        assert canonical in cache and not any(
            k.endswith(("_input", "hook_in")) and k != canonical for k in cache
        )
        torch.testing.assert_close(cache[canonical], full[canonical])
    torch.testing.assert_close(  # each head's copy of resid_pre
        full["blocks.0.attn.hook_k_input"], full["resid_pre", 0][:, :, None].expand(-1, -1, 4, -1)
    )


def test_out_mask_hook_refused_when_site_off():
    model = _model(act_sparse_sites=("mlp_neuron",))
    with pytest.raises(ValueError, match="attn_out"):
        model.add_hook("blocks.0.attn.hook_out_mask", lambda a, hook: a)


# ---------------------------------------------------------------- 3: layouts under slicing
@pytest.mark.parametrize("pos", [5, -1, slice(1, 4)])
def test_pos_slice_cuts_each_hooks_own_position_axis(pos):
    model, tokens = _model(), random_tokens(2, 6)
    _, full = model.run_with_cache(tokens)
    _, cut = model.run_with_cache(tokens, pos_slice=pos)
    assert model.hook_dict["blocks.1.attn.hook_sink_prob"].pos_dim == 2  # TL's declared axis
    index = [pos] if isinstance(pos, int) else pos
    for name in ("attn.hook_sink_prob", "attn.hook_pattern", "attn.hook_q", "ln1.hook_scale"):
        key = f"blocks.1.{name}"
        dim = 2 if "sink" in name or "pattern" in name else 1
        ref = full[key].index_select(dim, torch.arange(6)[index])
        torch.testing.assert_close(cut[key], ref)


def test_split_qkv_inputs_slice_positions_and_gradients():
    model, tokens = _model(), random_tokens(2, 6)
    model.set_use_split_qkv_input(True)
    _, full = model.run_with_cache(tokens)
    _, cut = model.run_with_cache(tokens, pos_slice=-1)
    model.set_use_split_qkv_input(False)
    torch.testing.assert_close(
        cut["blocks.0.attn.hook_q_input"], full["blocks.0.attn.hook_q_input"][:, -1:]
    )
    _, grads = model.run_with_cache(tokens, incl_bwd=True, return_type="loss")
    kept = {}

    def keep(a, hook):
        a.retain_grad()
        kept[hook.name] = a

    model.run_with_hooks(
        tokens, return_type="loss", fwd_hooks=[("blocks.0.attn.hook_pattern", keep)]
    ).backward()
    ref = kept["blocks.0.attn.hook_pattern"].grad  # autograd's d loss / d pattern
    assert ref.abs().sum() > 0
    torch.testing.assert_close(grads["blocks.0.attn.hook_pattern_grad"], ref)
    sink_grad = grads["blocks.0.attn.hook_sink_prob_grad"]  # the sink's value is zero
    torch.testing.assert_close(sink_grad, torch.zeros(2, 4, 6))


# ---------------------------------------------------------------- 4: padding
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("pos", ["none", "learned"])
def test_padded_batch_equals_prompts_run_alone(side, pos, tokenizer):
    model = _model(d_vocab=tokenizer.vocab_size, n_ctx=32, positional_embedding=pos)
    model.tokenizer = tokenizer
    prompts = ["x = [1, 2]", 'print("hello world")\nfor i in x:']
    batch = model.to_tokens(prompts, padding_side=side)
    mask = model.get_attention_mask(prompts, padding_side=side)
    logits = model(batch, attention_mask=mask)
    torch.testing.assert_close(model(prompts, padding_side=side), logits)
    for i, p in enumerate(prompts):
        alone = model(p)[0]
        real = mask[i].bool()
        torch.testing.assert_close(logits[i][real], alone, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- 6: sink removal
def test_sink_removal_is_exact_when_the_sink_holds_all_mass():
    model, tokens = _model(), random_tokens(2, 6)
    with torch.no_grad():
        model.blocks[1].attn.sinks[2] = 200.0  # far above every score
        hooks = _remove_sink_hooks(model, 1, 2, learned=True)
        out = model.run_with_hooks(tokens, fwd_hooks=hooks)
        model.blocks[1].attn.sinks[2] = -torch.inf  # the exact removal
        ref = model(tokens)
    torch.testing.assert_close(out, ref)


# ---------------------------------------------------------------- 7: patch_from channels
def test_patch_from_channels_are_flat_head_channels():
    model = _model()
    clean, corrupt = random_tokens(seed=1), random_tokens(seed=2)
    _, c = model.run_with_cache(clean)
    _, base = model.run_with_cache(corrupt)
    src = c["blocks.0.attn.hook_k"]
    seen = {}

    def spy(a, hook):
        seen["k"] = a
        return a

    hooks = [("blocks.0.attn.hook_k", patch_from(src, channels=[8, 9, 10, 11, 2]))]
    model.run_with_hooks(corrupt, fwd_hooks=hooks + [("blocks.0.attn.hook_k", spy)])
    ref = base["blocks.0.attn.hook_k"].clone()
    ref[:, :, 2] = src[:, :, 2]  # channels 8..11 = head 2
    ref[:, :, 0, 2] = src[:, :, 0, 2]  # channel 2 = head 0, d_head 2 only
    torch.testing.assert_close(seen["k"], ref)
    with pytest.raises(IndexError, match="16"):
        model.run_with_hooks(
            corrupt, fwd_hooks=[("blocks.0.attn.hook_k", patch_from(src, channels=[16]))]
        )


# ---------------------------------------------------------------- 8: config fields
def test_every_tl_config_field_is_implemented_or_refused():
    tl_fields = {f.name for f in dataclasses.fields(TransformerLensConfig)}
    implemented = {
        "d_model", "d_head", "n_layers", "n_ctx", "n_heads", "d_mlp", "d_vocab", "device",
        "use_attn_result", "use_split_qkv_input", "default_prepend_bos", "eps", "act_fn",
        "normalization_type", "dtype",
    }  # fmt: skip
    assert tl_fields == implemented | set(UNSUPPORTED_TL_FIELDS) | set(DERIVED_TL_FIELDS)
    bad = {"attn_only": True, "gated_mlp": True, "n_key_value_heads": 2,
           "layer_norm_folding": True, "num_experts": 2, "experts_per_token": 1}  # fmt: skip
    for name, value in bad.items():
        with pytest.raises(ValueError, match=name):
            SparseTransformerConfig.tiny(**{name: value})
    for name in DERIVED_TL_FIELDS:
        with pytest.raises(TypeError):
            SparseTransformerConfig.tiny(**{name: "x"})


# ---------------------------------------------------------------- 10: tokenizer and API surface
def test_tokenizer_surface(tokenizer):
    model = _model(d_vocab=tokenizer.vocab_size, n_ctx=32)
    model.tokenizer = tokenizer
    ids = model.to_tokens("x = [1, 2]", prepend_bos=False)[0]
    assert model.to_string(torch.tensor(int(ids[0]))) == tokenizer.decode([int(ids[0])])
    pieces = model.to_str_tokens(ids)
    assert model.to_str_tokens(ids.numpy()) == pieces
    assert model.to_str_tokens(np.asarray(ids.tolist())) == pieces
    two = torch.stack([ids, ids])
    assert model.to_str_tokens(two) == [pieces, pieces]
    assert model.to_str_tokens(ids[None]) == pieces
    assert model.to_str_tokens(["x = [1, 2]", "a"], prepend_bos=False)[0] == pieces
    direction = model.W_U[:, 5] * model.ln_final.w
    torch.testing.assert_close(model.tokens_to_residual_directions(torch.tensor(5)), direction)
    torch.testing.assert_close(model.tokens_to_residual_directions(torch.tensor([5])), direction)
    assert model.to_tokens("a", move_to_device=False).device.type == "cpu"
    assert model.to_single_str_token(int(ids[0])) == pieces[0]
    assert model.get_token_position(int(ids[1]), ids) == 1


def test_partial_utf8_tokens_show_their_bytes(tokenizer):
    byte = tokenizer.encode("é")  # byte-level: two tokens of one character unless merged
    parts = [tokenizer.token_str(i) for i in byte]
    assert "\ufffd" not in "".join(parts)
    if len(byte) == 2:
        assert parts == ["\\xc3", "\\xa9"]


# ---------------------------------------------------------------- the expected TL surface
def test_forward_options_match_hooks():
    model, tokens = _model(), random_tokens()
    logits, cache = model.run_with_cache(tokens)
    resid1 = model(tokens, stop_at_layer=1)
    torch.testing.assert_close(resid1, cache["resid_pre", 1])
    torch.testing.assert_close(model(resid1, start_at_layer=1, tokens=tokens), logits)
    with pytest.raises(ValueError, match="tokens"):
        model(resid1, start_at_layer=1)
    torch.testing.assert_close(cache["unembed.hook_out"] + cache["bigram.hook_logits"], logits)
    loss = model(tokens, return_type="loss")
    torch.testing.assert_close(loss, model.loss_fn(logits, tokens))
    both = model(tokens, return_type="both")
    torch.testing.assert_close(both[1], loss)
    assert model(tokens, return_type=None) is None
    resid, toks, _, mask = model.input_to_embed(tokens)
    torch.testing.assert_close(resid, cache["hook_embed"])
    for name in ("b_Q", "b_K", "b_V", "b_O", "b_in", "b_out"):
        part = "mlp" if name in ("b_in", "b_out") else "attn"
        torch.testing.assert_close(
            getattr(model, name)[1], getattr(getattr(model.blocks[1], part), name)
        )


def test_generate_greedy_and_sampling(tokenizer):
    model = _model(d_vocab=tokenizer.vocab_size, n_ctx=32)
    model.tokenizer = tokenizer
    prompt = model.to_tokens("x = [")
    out = model.generate(prompt, max_new_tokens=4, do_sample=False, stop_at_eos=False)
    ref = prompt
    for _ in range(4):
        ref = torch.cat([ref, model(ref)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, ref)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    a = model.generate(prompt, max_new_tokens=3, generator=g1, stop_at_eos=False)
    b = model.generate(prompt, max_new_tokens=3, generator=g2, stop_at_eos=False)
    assert torch.equal(a, b) and a.shape == (1, prompt.shape[1] + 3)
    text = model.generate("x = [", max_new_tokens=2, do_sample=False, stop_at_eos=False)
    greedy = model.generate(prompt, max_new_tokens=2, do_sample=False, stop_at_eos=False)
    assert text == model.to_string(greedy[0])


@pytest.mark.parametrize(
    "name",
    [
        "fold_layer_norm",
        "center_writing_weights",
        "center_unembed",
        "fold_value_biases",
        "refactor_factored_attn_matrices",
        "process_weights",
    ],  # fmt: skip
)
def test_weight_processing_raises_not_implemented(name):
    with pytest.raises(NotImplementedError, match="does not apply"):
        getattr(_model(), name)()


def test_load_and_process_state_dict():
    model, other = _model(), _model(seed=5)
    with pytest.raises(NotImplementedError, match="fold_layer_norm"):
        model.load_and_process_state_dict(other.state_dict(), fold_ln=True)
    model.load_and_process_state_dict(other.state_dict())
    tokens = random_tokens()
    torch.testing.assert_close(model(tokens), other(tokens))


def test_model_satisfies_tl_protocols():
    model = _model()
    for proto in (
        "TransformerLensModel",
        "TrainableTransformerLensModel",
        "TransformerLensModelWithWeights",
    ):
        cls = getattr(model_protocol, proto)
        members = {
            n for k in cls.__mro__ if k is not object for n in vars(k) if not n.startswith("_")
        }
        missing = [n for n in members if not hasattr(model, n)]
        assert not missing, (proto, missing)
        if getattr(cls, "_is_runtime_protocol", False):
            assert isinstance(model, cls)


# ---------------------------------------------------------------- 9: separators in statistics
def test_ablation_means_leave_out_separators_and_record_source(tokenizer):
    from sparse_lens.circuits.ablation import ablation_means, make_ablation

    model = _model(d_vocab=tokenizer.vocab_size, n_ctx=32)
    model.tokenizer = tokenizer
    eot = tokenizer.eot_id
    windows = torch.randint(0, eot, (4, 12), generator=torch.Generator().manual_seed(0))
    windows[:, ::3] = eot  # many short documents
    _, cache = model.run_with_cache(windows)
    real = windows != eot
    ref = cache["blocks.0.mlp.hook_post"][real].mean(0)
    abl = make_ablation("mean", model, windows)
    torch.testing.assert_close(abl.values["blocks.0.mlp.hook_post"], ref, atol=1e-5, rtol=1e-5)
    assert abl.source == {
        "data": "pretraining windows",
        "n_windows": 4,
        "n_tokens": int(real.sum()),
        "excluded_token_ids": [eot],
    }
    every = ablation_means(model, windows, exclude_ids=())
    torch.testing.assert_close(
        every["blocks.0.mlp.hook_post"], cache["blocks.0.mlp.hook_post"].mean((0, 1))
    )
    off = make_ablation("mean", model, windows, exclude_separators=False)
    assert off.source["excluded_token_ids"] == [] and off.source["n_tokens"] == windows.numel()


def test_top_contexts_never_peak_at_a_separator():
    from analyses.node_panels import top_contexts

    tokens = torch.tensor([[1, 2, 9, 3], [9, 4, 5, 6]])
    values = torch.tensor([[0.1, 0.2, 5.0, 0.3], [7.0, 0.5, 0.1, 0.2]])
    ctx = top_contexts(values, tokens, str, k=2, exclude_ids=(9,))
    assert [c.peak for c in ctx] == pytest.approx([0.5, 0.3])


# ---------------------------------------------------------------- 5: readouts reaching the logits
def test_tl_readouts_refuse_to_leave_out_the_bigram_table():
    from transformer_lens.tools.analysis.logit_lens import logit_lens, logit_readout

    model, tokens = _model(), random_tokens()
    with pytest.raises(ValueError, match="bigram"):
        logit_lens(model, tokens)
    with pytest.raises(ValueError, match="bigram"):
        logit_readout(model, torch.randn(2, 16))
    plain = _model(use_bigram_table=False)
    logits = plain(tokens)
    torch.testing.assert_close(logit_lens(plain, tokens).values[-1], logits[:, -1])


def test_left_padded_tokens_with_padding_side_equal_prompts_alone(tokenizer):
    model = _model(d_vocab=tokenizer.vocab_size, n_ctx=32)
    model.tokenizer = tokenizer
    prompts = ["a", 'print("hello world")']
    batch = model.to_tokens(prompts, padding_side="left")
    logits = model(batch, padding_side="left")
    torch.testing.assert_close(logits[0, -2:], model(prompts[0])[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits[1], model(prompts[1])[0], atol=1e-5, rtol=1e-5)


def test_patch_from_positions_on_patterns_are_query_positions():
    model = _model()
    clean, corrupt = random_tokens(seed=1), random_tokens(seed=2)
    _, c = model.run_with_cache(clean)
    _, base = model.run_with_cache(corrupt)
    name = "blocks.1.attn.hook_pattern"
    seen = {}

    def spy(a, hook):
        seen["p"] = a
        return a

    model.run_with_hooks(
        corrupt, fwd_hooks=[(name, patch_from(c[name], positions=[3])), (name, spy)]
    )
    ref = base[name].clone()
    ref[:, :, 3] = c[name][:, :, 3]
    torch.testing.assert_close(seen["p"], ref)


def test_write_mask_gradient_and_add_caching_hooks():
    model, tokens = _model(), random_tokens()
    _, g = model.run_with_cache(tokens, incl_bwd=True, return_type="loss")
    mask = g["blocks.1.mlp.hook_out_mask"]
    # d loss / d m = (unmasked write) * d loss / d mlp_out; where m = 1 the write is mlp_out
    ref = g["blocks.1.hook_mlp_out"] * g["blocks.1.hook_mlp_out_grad"]
    kept = mask.bool()
    torch.testing.assert_close(g["blocks.1.mlp.hook_out_mask_grad"][kept], ref[kept])
    cache = model.add_caching_hooks(names_filter="blocks.0.attn.hook_z")
    try:
        model(tokens)
    finally:
        model.reset_hooks()
    _, ref = model.run_with_cache(tokens)
    assert {"blocks.0.attn.hook_z", "blocks.0.attn.hook_out_mask"} <= set(cache)
    assert not any(k.endswith(("hook_q", "hook_pattern")) for k in cache)  # the filter holds
    for name in cache:
        torch.testing.assert_close(cache[name], ref[name])


def test_add_hook_with_a_filter_selects_only_hooks_that_fire():
    model, tokens = _model(), random_tokens()
    seen = []
    model.add_hook(lambda n: True, lambda a, hook: seen.append(hook.name))
    try:
        model(tokens)
    finally:
        model.reset_hooks()
    assert "blocks.0.attn.hook_z" in seen and "blocks.0.attn.hook_result" not in seen
    with pytest.raises(ValueError, match="eos_token_id"):
        model.generate(tokens[:1, :3], max_new_tokens=1)


def test_per_position_baseline_on_split_attn_in_matches_unsplit():
    from hooks import node_mask

    model = _model()
    tokens = random_tokens(4, 4)  # batch 4 = pos 4 = n_heads: a misaligned broadcast would pass
    mask = (torch.arange(16) % 3 == 0).float()
    baseline = torch.randn(4, 4, 16, generator=torch.Generator().manual_seed(2))
    hooks = [("blocks.1.attn.hook_in", node_mask(mask, baseline))]
    ref = model.run_with_hooks(tokens, fwd_hooks=hooks)
    model.set_use_split_qkv_input(True)
    try:
        out = model.run_with_hooks(tokens, fwd_hooks=hooks)
    finally:
        model.set_use_split_qkv_input(False)
    torch.testing.assert_close(out, ref)
    # the unsplit run is the plain per-position replacement, and it changes the logits
    plain = model.run_with_hooks(
        tokens,
        fwd_hooks=[("blocks.1.attn.hook_in", lambda a, hook: a * mask + baseline * (1 - mask))],
    )
    torch.testing.assert_close(ref, plain)
    assert (ref - model(tokens)).abs().max() > 1e-2


def test_generate_on_prompts_of_different_lengths_continues_each_alone(tokenizer):
    model = _model(d_vocab=tokenizer.vocab_size, n_ctx=32)
    model.tokenizer = tokenizer
    prompts = ["x", 'print("hello world")']
    both = model.generate(prompts, max_new_tokens=3, do_sample=False, stop_at_eos=False)
    alone = [
        model.generate(p, max_new_tokens=3, do_sample=False, stop_at_eos=False) for p in prompts
    ]
    assert both == alone


@pytest.mark.parametrize("pos", ["none", "learned"])
def test_kv_cache_gives_the_full_runs_logits(pos, tokenizer):
    from sparse_lens.model.kv_cache import KVCache

    model = _model(positional_embedding=pos, d_vocab=tokenizer.vocab_size, n_ctx=32)
    model.tokenizer = tokenizer
    tokens = random_tokens(2, 9)
    mask = torch.ones_like(tokens)
    mask[0, :3] = 0  # a left-padded row
    full = model(tokens, attention_mask=mask)
    cache = KVCache.empty(model.cfg.n_layers)
    parts = [
        model(tokens[:, a:b], attention_mask=mask[:, a:b], past_kv_cache=cache)
        for a, b in ((0, 5), (5, 6), (6, 9))
    ]
    torch.testing.assert_close(torch.cat(parts, dim=1)[mask.bool()], full[mask.bool()])
    prompts = ["x", 'print("hello world")']
    kw = dict(max_new_tokens=4, do_sample=False, stop_at_eos=False)
    assert model.generate(prompts, **kw) == model.generate(prompts, use_past_kv_cache=False, **kw)


def test_residual_stream_abstopk_refuses_decompositions_and_direct_path():
    import transformer_lens.patching as patching

    from sparse_lens.model.config import PAPER_ACT_SITES

    sites = ("mlp_neuron", "resid_post_mlp")  # attn_out dense: only the residual AbsTopK obstructs
    model, tokens = _model(act_sparse_sites=sites), random_tokens(1, 5)
    _, c = model.run_with_cache(tokens)
    for method in ("decompose_resid", "get_full_resid_decomposition"):
        with pytest.raises(ValueError, match="resid_post_mlp"):
            getattr(c, method)()
    with pytest.raises(ValueError, match="not hook_z @ W_O"):
        patching.get_act_patch_direct_path(
            model, tokens, c, c, lambda lg: lg[0, -1, 0], 0, 1, verbose=False
        )
    paper = _model(act_sparse_sites=PAPER_ACT_SITES)
    _, c = paper.run_with_cache(tokens)
    torch.testing.assert_close(
        c.decompose_resid().sum(0), c["resid_post", -1], atol=1e-5, rtol=1e-5
    )


def test_circuit_model_with_overridden_writes_refuses_decompositions():
    model, tokens = _model(circuit_overrides=True), random_tokens()
    _, c = model.run_with_cache(tokens)  # identity overrides: exact as usual
    torch.testing.assert_close(
        c.get_full_resid_decomposition().sum(0), c["resid_post", -1], atol=1e-5, rtol=1e-5
    )
    with torch.no_grad():
        model.blocks[0].override_attn_out.keep[3] = 0.0
        model.blocks[0].override_attn_out.fill[3] = 0.7
    _, c = model.run_with_cache(tokens)
    for call in (c.stack_head_results, c.get_full_resid_decomposition, c.logit_lens):
        with pytest.raises(ValueError, match="ablation value"):
            call()


@pytest.mark.parametrize("temperature", [float("nan"), float("inf"), 0.0, -1.0])
def test_generate_refuses_a_temperature_that_is_not_a_positive_number(tokenizer, temperature):
    model = _model(d_vocab=tokenizer.vocab_size, n_ctx=32)
    model.tokenizer = tokenizer
    with pytest.raises(ValueError, match=f"temperature={temperature}"):
        model.generate("x = [", max_new_tokens=2, temperature=temperature)
