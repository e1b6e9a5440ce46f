"""Acceptance tests of issue #2: the sparse model works with TransformerLens' tools."""

import inspect

import circuitsvis
import pytest
import torch
import transformer_lens.patching as patching
from transformer_lens import ActivationCache
from transformer_lens.head_detector import detect_head

from sparse_lens import HookedSparseTransformer, SparseTransformerConfig
from tests.helpers import build_model, random_tokens

SPARSE = dict()  # tiny(): sinks, bigram table, AbsTopK at all 8 paper sites
DENSE = dict(afrac=1.0, attn_sinks=False)
VARIANTS = {
    "sparse": SPARSE,
    "dense": DENSE,
    "sparse_learned_pos": dict(positional_embedding="learned"),
}


@pytest.fixture(params=list(VARIANTS))
def model(request) -> HookedSparseTransformer:
    return build_model(**VARIANTS[request.param])


def test_run_with_cache_returns_activation_cache(model):
    tokens = random_tokens()
    logits, cache = model.run_with_cache(tokens)
    assert isinstance(cache, ActivationCache)
    assert torch.equal(logits, model(tokens))
    assert cache["pattern", 0].shape == (2, 4, 10, 10)
    assert cache["resid_post", -1].shape == (2, 10, 16)
    assert not model.hook_dict["blocks.0.hook_resid_pre"].fwd_hooks


def test_hooks_carry_post_abstopk_values():
    model = build_model()
    _, cache = model.run_with_cache(random_tokens())
    k_neuron = model.cfg.act_k(model.cfg.d_mlp)
    assert ((cache["post", 0] != 0).sum(-1) <= k_neuron).all()
    assert ((cache["blocks.0.attn.hook_in"] != 0).sum(-1) <= model.cfg.act_k(16)).all()
    q = cache["q", 1].flatten(-2)
    assert ((q != 0).sum(-1) <= model.cfg.act_k(16)).all()
    assert ((cache["attn_out", 0] != 0).sum(-1) <= model.cfg.act_k(16)).all()


def test_sink_mass_and_pattern_rows():
    model = build_model()
    _, cache = model.run_with_cache(random_tokens())
    rows = cache["pattern", 0].sum(-1)
    sink = cache["blocks.0.attn.hook_sink_prob"]
    assert (rows < 1).all()
    torch.testing.assert_close(rows + sink, torch.ones_like(rows))


def test_full_resid_decomposition_sums_to_final_residual(model):
    tokens = random_tokens()
    _, cache = model.run_with_cache(tokens)
    stack, labels = cache.get_full_resid_decomposition(expand_neurons=True, return_labels=True)
    torch.testing.assert_close(stack.sum(0), cache["resid_post", -1], atol=1e-5, rtol=1e-4)
    layer_stack = cache.get_full_resid_decomposition(layer=1, mlp_input=True, expand_neurons=False)
    torch.testing.assert_close(layer_stack.sum(0), cache["resid_mid", 1], atol=1e-5, rtol=1e-4)
    head_stack = cache.stack_head_results(layer=1)
    attn_out = cache["attn_out", 0] - model.blocks[0].attn.b_O * cache.cache_dict.get(
        "blocks.0.attn.hook_out_mask", 1.0
    )
    torch.testing.assert_close(head_stack.sum(0), attn_out, atol=1e-5, rtol=1e-4)


def test_use_attn_result_matches_cache_reconstruction(model):
    tokens = random_tokens()
    logits, cache = model.run_with_cache(tokens)
    model.set_use_attn_result(True)
    logits2, cache2 = model.run_with_cache(tokens)
    model.set_use_attn_result(False)
    torch.testing.assert_close(logits, logits2)
    torch.testing.assert_close(
        cache2["result", 1], cache.stack_head_results(layer=2)[4:].movedim(0, -2)
    )


def test_direct_logit_attribution_sums_to_logit_difference(model):
    tokens = random_tokens()
    logits, cache = model.run_with_cache(tokens)
    right, wrong = tokens[:, -1], (tokens[:, -1] + 1) % model.cfg.d_vocab
    resid_stack = cache.decompose_resid(layer=-1, pos_slice=-1)
    attrs = cache.logit_attrs(resid_stack, tokens=right, incorrect_tokens=wrong, pos_slice=-1)
    true_diff = logits[range(2), -1, right] - logits[range(2), -1, wrong]
    # DLA explains the residual stream's part; the bigram table and b_U add the rest.
    other = torch.zeros(2)
    if model.cfg.use_bigram_table:
        table = model.bigram.W_bigram[tokens[:, -1]]
        other = table[range(2), right] - table[range(2), wrong]
    other = other + model.b_U[right] - model.b_U[wrong]
    torch.testing.assert_close(attrs.sum(0), true_diff - other, atol=1e-4, rtol=1e-4)


def test_tokens_to_residual_directions_folds_final_norm_gain():
    model = build_model()
    torch.testing.assert_close(
        model.tokens_to_residual_directions(5), model.W_U[:, 5] * model.ln_final.w
    )
    assert model.tokens_to_residual_directions(torch.tensor([1, 2])).shape == (2, 16)


def _patching_functions():
    return sorted(
        name
        for name in dir(patching)
        if name.startswith("get_act_patch") and "direct_path" not in name
    )


@pytest.mark.parametrize("name", _patching_functions())
def test_every_act_patch_function_runs_and_self_patch_is_identity(name):
    model = build_model()
    tokens = random_tokens(n_batch=1, n_pos=6)
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
    clean_value = float(logits[0, -1, 3] - logits[0, -1, 7])

    def metric(patched_logits):
        return patched_logits[0, -1, 3] - patched_logits[0, -1, 7]

    with torch.no_grad():
        result = getattr(patching, name)(model, tokens, cache, metric)
    result = result if isinstance(result, torch.Tensor) else result.values
    torch.testing.assert_close(result, torch.full_like(result, clean_value), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("component", ["q", "k", "v"])
def test_direct_path_patching_runs(component):
    if "component" not in inspect.signature(patching.get_act_patch_direct_path).parameters:
        pytest.skip("direct-path patching needs TransformerLens 4")
    model = build_model(act_sparse_sites=("mlp_neuron",))  # z @ W_O is the exact head write
    clean, corrupt = random_tokens(1, 6, seed=1), random_tokens(1, 6, seed=2)
    _, clean_cache = model.run_with_cache(clean)
    _, corrupt_cache = model.run_with_cache(corrupt)
    out = patching.get_act_patch_direct_path(
        model,
        corrupt,
        clean_cache,
        corrupt_cache,
        lambda lg: lg[0, -1, 3],
        0,
        1,
        component=component,
        verbose=False,
    )
    assert out.shape == (2, 4)
    assert not model.cfg.use_split_qkv_input


def test_split_qkv_input_is_identity_when_unpatched(model):
    tokens = random_tokens()
    logits = model(tokens)
    for setter in (model.set_use_split_qkv_input, model.set_use_attn_in, model.set_use_hook_mlp_in):
        setter(True)
        torch.testing.assert_close(model(tokens), logits, atol=1e-5, rtol=1e-5)
        setter(False)
    model.set_use_split_qkv_input(True)
    _, cache = model.run_with_cache(tokens)
    assert cache["blocks.0.attn.hook_q_input"].shape == (2, 10, 4, 16)
    model.set_use_split_qkv_input(False)


def test_detect_head_runs(tokenizer):
    model = build_model(d_vocab=tokenizer.vocab_size, n_ctx=64)
    model.tokenizer = tokenizer
    scores = detect_head(model, "x = [1, 2, 3]\nx = [1, 2, 3]\n", "previous_token_head")
    assert scores.shape == (2, 4)


def test_circuitsvis_renders_from_cached_pattern():
    model = build_model()
    _, cache = model.run_with_cache(random_tokens(1, 6))
    html = circuitsvis.attention.attention_heads(
        cache["pattern", 0][0], [f"t{i}" for i in range(6)]
    ).local_src
    assert "CircuitsVis" in html and "unpkg.com" not in html


def test_hooks_removed_even_when_hook_raises():
    model = build_model()

    def boom(act, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        model.run_with_hooks(random_tokens(), fwd_hooks=[("blocks.1.mlp.hook_post", boom)])
    assert all(not hp.fwd_hooks for hp in model.hook_dict.values())


def test_unknown_hook_name_gives_close_matches():
    model = build_model()
    with pytest.raises(KeyError, match="did you mean"):
        model.run_with_hooks(
            random_tokens(), fwd_hooks=[("blocks.0.mlp.hook_psot", lambda a, hook: a)]
        )
    assert all(not hp.fwd_hooks for hp in model.hook_dict.values())


def test_legacy_split_input_names_resolve():
    model = build_model()
    model.set_use_split_qkv_input(True)
    seen = []
    model.run_with_hooks(
        random_tokens(),
        fwd_hooks=[("blocks.0.hook_q_input", lambda a, hook: seen.append(hook.name))],
    )
    assert seen == ["blocks.0.attn.hook_q_input"]
    assert "blocks.0.hook_q_input" not in model.hook_dict


@pytest.mark.parametrize(
    ("tokens", "error", "match"),
    [
        (torch.tensor([[0, 64]]), ValueError, "out of range"),
        (torch.tensor([[-1, 0]]), ValueError, "out of range"),
        (torch.zeros(1, 17, dtype=torch.long), ValueError, "n_ctx"),
        (torch.zeros(1, 2, 3, dtype=torch.long), ValueError, "shape"),
        (torch.zeros(1, 3), TypeError, "integer"),
    ],
)
def test_bad_tokens_raise_clear_errors(tokens, error, match):
    with pytest.raises(error, match=match):
        build_model()(tokens)


def test_string_input_and_tokenizer_surface(tokenizer):
    model = HookedSparseTransformer(
        SparseTransformerConfig.tiny(d_vocab=tokenizer.vocab_size, seed=0), tokenizer
    )
    tokens = model.to_tokens('print("hi")')
    assert tokens[0, 0] == tokenizer.eot_id
    assert torch.equal(model('print("hi")'), model(tokens))
    assert model.to_string(tokens[0, 1:]) == 'print("hi")'
    assert "".join(model.to_str_tokens('print("hi")', prepend_bos=False)) == 'print("hi")'
    assert model.to_single_token('("') == tokenizer.encode('("')[0]
    with pytest.raises(ValueError, match="not one"):
        model.to_single_token("hello world foo")
    loss = model('print("hi")', return_type="loss")
    assert loss.ndim == 0 and loss > 0
    per_tok = model(tokens, return_type="loss", loss_per_token=True)
    assert per_tok.shape == (1, tokens.shape[1] - 1)
    batch = model.to_tokens(["a", "for i in x"])
    assert batch.shape[0] == 2


def test_no_tokenizer_gives_clear_error():
    with pytest.raises(ValueError, match="no tokenizer"):
        build_model()("hello")


def test_stacked_weights_and_factored_matrices(model):
    assert model.W_Q.shape == (2, 4, 16, 4)
    assert model.W_O.shape == (2, 4, 4, 16)
    assert model.W_in.shape == (2, 16, 32)
    assert model.QK.shape == (2, 4, 16, 16)
    assert model.OV.shape == (2, 4, 16, 16)
    assert len(model.all_head_labels()) == 8


def test_sparsity_stats_counts_nonzeros_and_dead_units():
    model = build_model()
    with torch.no_grad():
        model.blocks[0].mlp.W_in[:, :3] = 0
        model.blocks[0].mlp.b_in[:3] = 0
    stats = model.sparsity_stats()
    assert stats["params"]["blocks.0.mlp.W_in"]["nonzero"] == 16 * 29
    assert stats["dead_neurons"] == 3
    assert stats["total_nonzero"] == sum(int((p != 0).sum()) for p in model.parameters())
