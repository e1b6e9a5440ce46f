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


def _plain_abs_topk(x: torch.Tensor, k: int) -> torch.Tensor:
    """Reference AbsTopK: each row's k largest-magnitude entries by a full sort, the rest 0."""
    keep = torch.zeros_like(x, dtype=torch.bool)
    keep.scatter_(-1, x.abs().argsort(dim=-1, descending=True)[..., :k], True)
    return torch.where(keep, x, torch.zeros_like(x))


def _plain_rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt() * w


def test_hooks_carry_post_abstopk_values():
    model = build_model()
    _, cache = model.run_with_cache(random_tokens())
    cfg, block = model.cfg, model.blocks[0]
    k_neuron, k_model = cfg.act_k(cfg.d_mlp), cfg.act_k(cfg.d_model)
    assert k_neuron < cfg.d_mlp and k_model < cfg.d_model  # AbsTopK really drops entries
    # mlp_neuron: AbsTopK of gelu(pre), recomputed from hook_pre
    post_ref = _plain_abs_topk(torch.nn.functional.gelu(cache["pre", 0]), k_neuron)
    torch.testing.assert_close(cache["post", 0], post_ref)
    assert ((cache["post", 0] != 0).sum(-1) == k_neuron).all()
    # attn_in: AbsTopK of RMSNorm(resid_pre), recomputed from the residual and the gain
    ln = _plain_rms(cache["resid_pre", 0], block.ln1.w, cfg.eps)
    torch.testing.assert_close(cache["blocks.0.attn.hook_in"], _plain_abs_topk(ln, k_model))
    # attn_q: AbsTopK over all heads' channels of the projected (pre-AbsTopK) query
    attn1 = model.blocks[1].attn
    q_pre = torch.einsum("bpd,hde->bphe", cache["blocks.1.attn.hook_in"], attn1.W_Q) + attn1.b_Q
    q_pre = q_pre.flatten(-2)
    q = cache["q", 1].flatten(-2)
    torch.testing.assert_close(q, _plain_abs_topk(q_pre, cfg.act_k(q.shape[-1])))
    # attn_out: the write is AbsTopK of z @ W_O + b_O
    out_pre = torch.einsum("bphe,hed->bpd", cache["z", 0], block.attn.W_O) + block.attn.b_O
    torch.testing.assert_close(cache["attn_out", 0], _plain_abs_topk(out_pre, k_model))


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
    two = model.tokens_to_residual_directions(torch.tensor([[1, 2]]))
    assert two.shape == (1, 2, 16)
    torch.testing.assert_close(two[0, 1], model.W_U[:, 2] * model.ln_final.w)
    torch.testing.assert_close(two[0, 0], model.W_U[:, 1] * model.ln_final.w)


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
    # z @ W_O is the exact head write; init_std=0.3 so the paths move the metric measurably
    model = build_model(act_sparse_sites=("mlp_neuron",), init_std=0.3)
    clean, corrupt = random_tokens(1, 6, seed=1), random_tokens(1, 6, seed=2)
    _, clean_cache = model.run_with_cache(clean)
    corrupt_logits, corrupt_cache = model.run_with_cache(corrupt)

    def metric(lg):
        return lg[0, -1, 3]

    with torch.no_grad():
        out = patching.get_act_patch_direct_path(
            model,
            corrupt,
            clean_cache,
            corrupt_cache,
            metric,
            0,
            1,
            component=component,
            verbose=False,
        )
    assert not model.cfg.use_split_qkv_input
    # Reference with plain hooks: head 1's clean-minus-corrupt write is added to layer 1's
    # residual in a side run, whose layer-1 `component` activation then replaces head h's alone.
    W_O = model.blocks[0].attn.W_O[1]
    delta = (clean_cache["z", 0][:, :, 1] - corrupt_cache["z", 0][:, :, 1]) @ W_O
    add = [("blocks.1.hook_resid_pre", lambda a, hook: a + delta)]
    with torch.no_grad(), model.hooks(fwd_hooks=add):
        _, side = model.run_with_cache(corrupt, names_filter=f"blocks.1.attn.hook_{component}")
    moved = side[f"blocks.1.attn.hook_{component}"]
    ref = torch.zeros(2, 4)
    for h in range(4):

        def put(a, hook, h=h):
            a = a.clone()
            a[:, :, h] = moved[:, :, h]
            return a

        with torch.no_grad():
            lg = model.run_with_hooks(corrupt, fwd_hooks=[(f"blocks.1.attn.hook_{component}", put)])
        ref[1, h] = metric(lg)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert (out[1] - metric(corrupt_logits)).abs().max() > 1e-3  # the paths carry an effect


def test_split_qkv_input_is_identity_when_unpatched(model):
    tokens = random_tokens()
    logits = model(tokens)
    for setter in (model.set_use_split_qkv_input, model.set_use_attn_in, model.set_use_hook_mlp_in):
        setter(True)
        torch.testing.assert_close(model(tokens), logits, atol=1e-5, rtol=1e-5)
        setter(False)
    model.set_use_split_qkv_input(True)
    _, cache = model.run_with_cache(tokens)
    q_input = cache["blocks.0.attn.hook_q_input"]  # each head's own copy of resid_pre
    torch.testing.assert_close(q_input, cache["resid_pre", 0][:, :, None].expand(-1, -1, 4, -1))
    model.set_use_split_qkv_input(False)


def _plain_pattern(model, resid_pre: torch.Tensor, layer: int) -> torch.Tensor:
    """Reference attention pattern [head q k] of one prompt, recomputed from the residual with
    plain loops: RMSNorm, AbsTopK, projections, causal softmax with the sink as an extra key."""
    cfg, attn = model.cfg, model.blocks[layer].attn
    x = _plain_abs_topk(_plain_rms(resid_pre, model.blocks[layer].ln1.w, cfg.eps), cfg.act_k(16))
    q = _plain_abs_topk((x @ attn.W_Q + attn.b_Q[:, None]).transpose(0, 1).flatten(-2), 16 // 4)
    k = _plain_abs_topk((x @ attn.W_K + attn.b_K[:, None]).transpose(0, 1).flatten(-2), 16 // 4)
    q, k = q.unflatten(-1, (4, 4)), k.unflatten(-1, (4, 4))  # [pos head d_head]
    n = resid_pre.shape[0]
    pattern = torch.zeros(4, n, n)
    for h in range(4):
        for i in range(n):
            logits = torch.stack([q[i, h] @ k[j, h] / 2.0 for j in range(i + 1)] + [attn.sinks[h]])
            pattern[h, i, : i + 1] = logits.softmax(0)[:-1]
    return pattern


def test_detect_head_runs(tokenizer):
    model = build_model(d_vocab=tokenizer.vocab_size, n_ctx=64)
    model.tokenizer = tokenizer
    assert model.cfg.act_k(16) == 4 and model.cfg.attn_sinks  # what _plain_pattern assumes
    text = "x = [1, 2, 3]\nx = [1, 2, 3]\n"
    tokens = model.to_tokens(text)[0]
    n = len(tokens)
    _, cache = model.run_with_cache(tokens[None])
    prev = torch.zeros(n, n)
    prev[1:, :-1] = torch.eye(n - 1)
    dup = (tokens[:, None] == tokens[None, :]).float().tril(-1)
    induction = torch.zeros(n, n)
    induction[:, 1:] = dup[:, :-1]  # attend to the token after an earlier copy of this one
    with torch.no_grad():
        patterns = [_plain_pattern(model, cache["resid_pre", i][0], i) for i in range(2)]
    for name, detection in (
        ("previous_token_head", prev),
        ("duplicate_token_head", dup),
        ("induction_head", induction.tril()),
    ):
        assert detection.sum() > 0, name  # the prompt has such positions
        scores = detect_head(model, text, name)
        ref = torch.tensor(
            [[float((p[h] * detection).sum() / p[h].sum()) for h in range(4)] for p in patterns]
        )
        torch.testing.assert_close(scores, ref, atol=1e-5, rtol=1e-4)
    # exclude_bos and the "abs" measure read the same patterns
    scores = detect_head(model, text, prev, exclude_bos=True)
    no_bos = [p.clone() for p in patterns]
    for p in no_bos:
        p[:, :, 0] = 0
    ref = torch.tensor(
        [[float((p[h] * prev).sum() / p[h].sum()) for h in range(4)] for p in no_bos]
    )
    torch.testing.assert_close(scores, ref, atol=1e-5, rtol=1e-4)
    scores = detect_head(model, text, prev, error_measure="abs")
    ref = torch.tensor(
        [[1 - round(float((p[h] - prev).abs().mean() * n), 3) for h in range(4)] for p in patterns]
    )
    torch.testing.assert_close(scores, ref, atol=2e-3, rtol=0)


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
    logits = model(tokens)
    nll = -logits[0, :-1].log_softmax(-1)[range(tokens.shape[1] - 1), tokens[0, 1:]]
    per_tok = model(tokens, return_type="loss", loss_per_token=True)
    torch.testing.assert_close(per_tok, nll[None])
    torch.testing.assert_close(model('print("hi")', return_type="loss"), nll.mean())
    batch = model.to_tokens(["a", "for i in x"])
    assert batch.shape[0] == 2


def test_no_tokenizer_gives_clear_error():
    with pytest.raises(ValueError, match="no tokenizer"):
        build_model()("hello")


def test_stacked_weights_and_factored_matrices(model):
    assert model.W_Q.shape == (2, 4, 16, 4)
    assert model.W_O.shape == (2, 4, 4, 16)
    assert model.W_in.shape == (2, 16, 32)
    parts = {"attn": ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O")}
    parts["mlp"] = ("W_in", "W_out", "b_in", "b_out")
    for part, names in parts.items():
        for name in names:
            for layer, block in enumerate(model.blocks):
                assert torch.equal(getattr(model, name)[layer], getattr(getattr(block, part), name))
    assert model.all_head_labels() == ["L0H0", "L0H1", "L0H2", "L0H3"] + [
        f"L1H{h}" for h in range(4)
    ]
    # QK and OV, read against the forward pass: with the q/k/v biases zeroed and AbsTopK off,
    # scores = x QK y^T / sqrt(d_head) and each head writes pattern @ x @ OV (x = hook_in).
    dense = build_model(**VARIANTS["dense"])  # no sinks, afrac=1: AbsTopK is the identity
    with torch.no_grad():
        for block in dense.blocks:
            for b in ("b_Q", "b_K", "b_V"):
                getattr(block.attn, b).zero_()
    dense.set_use_attn_result(True)
    _, cache = dense.run_with_cache(random_tokens())
    QK, OV = dense.QK, dense.OV
    assert QK.shape == (2, 4, 16, 16) and OV.shape == (2, 4, 16, 16)
    for layer in range(2):
        x = cache[f"blocks.{layer}.attn.hook_in"]  # [batch pos d_model]
        scores = torch.einsum("bqd,hde,bke->bhqk", x, QK.AB[layer], x) / 2.0  # sqrt(d_head = 4)
        ref = cache["attn_scores", layer]
        causal = torch.ones(10, 10, dtype=torch.bool).tril()
        torch.testing.assert_close(scores[..., causal], ref[..., causal], atol=1e-4, rtol=1e-4)
        write = torch.einsum("bhqk,bkd,hde->bqhe", cache["pattern", layer], x, OV.AB[layer])
        torch.testing.assert_close(write, cache["result", layer], atol=1e-4, rtol=1e-4)


def test_sparsity_stats_counts_nonzeros_and_dead_units():
    model = build_model()
    with torch.no_grad():
        model.blocks[0].mlp.W_in[:, :3] = 0
        model.blocks[0].mlp.b_in[:3] = 0
    stats = model.sparsity_stats()
    assert stats["params"]["blocks.0.mlp.W_in"]["nonzero"] == 16 * 29
    assert stats["dead_neurons"] == 3
    assert stats["total_nonzero"] == sum(int((p != 0).sum()) for p in model.parameters())


def test_logits_at_equals_full_logits_at_those_positions(model):
    tokens = random_tokens(3, 7, model.cfg.d_vocab)
    at = torch.tensor([6, 0, 3])
    scales: list[tuple] = []
    hooks = [("ln_final.hook_scale", lambda x, hook: scales.append(x.shape))]
    with torch.no_grad():
        full = model(tokens)
        part = model.run_with_hooks(tokens, fwd_hooks=hooks, logits_at=at)
    assert part.shape == (3, 1, model.cfg.d_vocab)
    torch.testing.assert_close(part[:, 0], full[torch.arange(3), at], rtol=1e-5, atol=1e-5)
    assert scales == [(3, 7, 1)]  # the final norm's hooks still see every position


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(logits_at=torch.tensor([0, 9])), r"in \[0, 7\)"),
        (dict(logits_at=torch.tensor([0])), r"shape \(2,\), got shape \(1,\)"),
        (dict(logits_at=torch.tensor([0.0, 1.0])), "integer tensor.*float32"),
        (dict(logits_at=torch.tensor([0, 1]), return_type="loss"), "return_type='loss'"),
    ],
)
def test_logits_at_rejects_bad_positions(kwargs, match):
    model = build_model()
    with pytest.raises(ValueError, match=match):
        model(random_tokens(2, 7, model.cfg.d_vocab), **kwargs)


def test_logits_at_that_is_not_a_tensor_is_named():
    from sparse_lens.model.transformer import _at_positions

    with pytest.raises(ValueError, match="integer tensor.*got 3"):
        _at_positions(torch.zeros(2, 5, 4), None, 3)
