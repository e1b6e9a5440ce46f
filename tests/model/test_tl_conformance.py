"""Issue 13: every public ``ActivationCache`` method and every ``transformer_lens.patching``
function on a model with AbsTopK at all 8 sites, sinks and the bigram table (``init_std=0.3``)
gives the exact value, computed independently with hooks, or a clear error.

The public names are enumerated from TL itself, so a method that TL adds and that is neither
covered here nor listed as exempt makes ``test_every_public_name_is_covered`` fail.
"""

import functools
import inspect
import logging

import pytest
import torch
import transformer_lens.patching as patching
from transformer_lens import ActivationCache

from sparse_lens import HookedSparseTransformer, SparseTransformerConfig
from sparse_lens.model.activation_cache import SparseActivationCache

ATOL = dict(atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def model() -> HookedSparseTransformer:
    m = HookedSparseTransformer(SparseTransformerConfig.tiny(seed=0, init_std=0.3)).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # nonzero biases and sinks so masked biases and sink mass matter
        for name, p in m.named_parameters():
            if name.rsplit(".", 1)[-1].startswith("b_") or name.endswith("sinks"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return m


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    return torch.randint(0, 64, (3, 6), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def run(model, tokens):
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
    return logits, cache


def _head_results(model, tokens) -> list[torch.Tensor]:
    """Reference per-head writes: the model's own masked ``hook_result`` (use_attn_result)."""
    model.set_use_attn_result(True)
    try:
        with torch.no_grad():
            _, c = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_result"))
    finally:
        model.set_use_attn_result(False)
    return [c[f"blocks.{i}.attn.hook_result"] for i in range(model.cfg.n_layers)]


def _neuron_results(cache, layer) -> torch.Tensor:
    """Reference per-neuron writes ``m * post_n W_out[n]`` from cached hooks."""
    W_out = cache.model.blocks[layer].mlp.W_out
    mask = cache[f"blocks.{layer}.mlp.hook_out_mask"]
    return cache["post", layer][..., None] * W_out * mask[..., None, :]


# ---------------------------------------------------------------- ActivationCache methods
def check_accumulated_resid(model, tokens, run):
    _, c = run
    stack, labels = c.accumulated_resid(return_labels=True)
    ref = [c["resid_pre", i] for i in range(model.cfg.n_layers)] + [c["resid_post", -1]]
    torch.testing.assert_close(stack, torch.stack(ref))
    ln = c.accumulated_resid(layer=1, apply_ln=True)
    torch.testing.assert_close(ln[-1], c["blocks.1.ln1.hook_normalized"], **ATOL)


def check_apply_ln_to_stack(model, tokens, run):
    _, c = run
    out = c.apply_ln_to_stack(c["resid_mid", 1][None], layer=1, mlp_input=True)[0]
    torch.testing.assert_close(out, c["blocks.1.ln2.hook_normalized"], **ATOL)


def check_apply_slice_to_batch_dim(model, tokens, run):
    _, c = run
    one = c.apply_slice_to_batch_dim(1)
    assert isinstance(one, SparseActivationCache)
    torch.testing.assert_close(
        one.get_full_resid_decomposition().sum(0), c["resid_post", -1][1], **ATOL
    )


def check_compute_head_results(model, tokens, run):
    _, c = model.run_with_cache(tokens)
    c.compute_head_results()
    for layer, ref in enumerate(_head_results(model, tokens)):
        torch.testing.assert_close(c["result", layer], ref, **ATOL)


def check_ssm(model, tokens, run):
    _, c = run
    assert c.ssm_layers() == []
    for name in ("compute_ssm_effective_attention", "compute_ssm_state"):
        with pytest.raises(RuntimeError, match="No SSM"):
            getattr(c, name)()


def check_decompose_resid(model, tokens, run):
    _, c = run
    stack, labels = c.decompose_resid(return_labels=True)
    torch.testing.assert_close(stack.sum(0), c["resid_post", -1], **ATOL)
    torch.testing.assert_close(stack[labels.index("1_attn_out")], c["attn_out", 1])


def check_get_full_resid_decomposition(model, tokens, run):
    _, c = run
    D = torch.randn(16, generator=torch.Generator().manual_seed(3))
    stack, labels = c.get_full_resid_decomposition(return_labels=True)
    torch.testing.assert_close(stack.sum(0), c["resid_post", -1], **ATOL)
    heads = _head_results(model, tokens)
    torch.testing.assert_close(stack[labels.index("L1H2")], heads[1][:, :, 2], **ATOL)
    torch.testing.assert_close(
        stack[labels.index("L0N5")], _neuron_results(c, 0)[..., 5, :], **ATOL
    )
    ln = c.get_full_resid_decomposition(apply_ln=True, pos_slice=-1)
    torch.testing.assert_close(ln.sum(0), c["ln_final.hook_normalized"][:, -1], **ATOL)
    fused = c.get_full_resid_decomposition(apply_ln=True, project_output_onto=D)
    torch.testing.assert_close(fused, c.get_full_resid_decomposition(apply_ln=True) @ D, **ATOL)
    mid = c.get_full_resid_decomposition(1, mlp_input=True, expand_neurons=False)
    torch.testing.assert_close(mid.sum(0), c["resid_mid", 1], **ATOL)


def check_get_neuron_results(model, tokens, run):
    _, c = run
    D = torch.randn(16, 2, generator=torch.Generator().manual_seed(4))
    ref = _neuron_results(c, 1)
    torch.testing.assert_close(c.get_neuron_results(1), ref, **ATOL)
    torch.testing.assert_close(c.get_neuron_results(1, project_output_onto=D), ref @ D, **ATOL)
    torch.testing.assert_close(
        c.get_neuron_results(1, neuron_slice=[3, 4], pos_slice=-1), ref[:, -1, [3, 4]], **ATOL
    )
    torch.testing.assert_close(c.get_neuron_results(1, neuron_slice=3), ref[..., 3, :], **ATOL)
    torch.testing.assert_close(
        c.get_neuron_results(1, neuron_slice=3, project_output_onto=D[:, 0]),
        ref[..., 3, :] @ D[:, 0],
        **ATOL,
    )


def check_dict_views(model, tokens, run):
    _, c = run
    assert list(c.keys()) == list(c.cache_dict.keys())
    assert all(v is c.cache_dict[k] for k, v in c.items())
    assert len(list(c.values())) == len(c.cache_dict)


def check_logit_attrs(model, tokens, run):
    logits, c = run
    right, wrong = tokens[:, -1], (tokens[:, -1] + 1) % 64
    stack = c.get_full_resid_decomposition(pos_slice=-1)  # logit_attrs applies ln_final
    attrs = c.logit_attrs(stack, tokens=right, incorrect_tokens=wrong, pos_slice=-1)
    table = c["bigram.hook_logits"][:, -1]
    r = torch.arange(3)
    other = table[r, right] - table[r, wrong]
    diff = logits[r, -1, right] - logits[r, -1, wrong]
    torch.testing.assert_close(attrs.sum(0), diff - other, **ATOL)


def check_logit_lens(model, tokens, run):
    logits, c = run
    out = c.logit_lens(positions=None)
    torch.testing.assert_close(out.values[-1], logits, **ATOL)
    torch.testing.assert_close(c.logit_lens().values[-1], logits[:, -1], **ATOL)


def check_remove_batch_dim(model, tokens, run):
    _, c = model.run_with_cache(tokens[:1])
    one = c.remove_batch_dim()
    assert isinstance(one, SparseActivationCache) and not one.has_batch_dim
    torch.testing.assert_close(
        one.get_full_resid_decomposition().sum(0), one["resid_post", -1], **ATOL
    )


def check_stack_activation(model, tokens, run):
    _, c = run
    ref = torch.stack([c["blocks.0.attn.hook_pattern"], c["blocks.1.attn.hook_pattern"]])
    torch.testing.assert_close(c.stack_activation("pattern"), ref)


def check_stack_head_results(model, tokens, run):
    _, c = run
    ref = torch.cat(_head_results(model, tokens), dim=2).movedim(2, 0)
    torch.testing.assert_close(c.stack_head_results(), ref, **ATOL)
    _, z_only = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_z"))
    torch.testing.assert_close(z_only.stack_head_results(), ref, **ATOL)
    bare = SparseActivationCache({k: v for k, v in c.items() if "out_mask" not in k}, model)
    with pytest.raises(KeyError, match="hook_out_mask"):
        bare.stack_head_results()


def check_stack_neuron_results(model, tokens, run):
    _, c = run
    D = torch.randn(16, generator=torch.Generator().manual_seed(5))
    ref = torch.cat([_neuron_results(c, i) for i in range(2)], dim=-2).movedim(-2, 0)
    torch.testing.assert_close(c.stack_neuron_results(-1), ref, **ATOL)
    ln = c.stack_neuron_results(-1, pos_slice=-1, apply_ln=True)
    fused = c.stack_neuron_results(-1, pos_slice=-1, apply_ln=True, project_output_onto=D)
    torch.testing.assert_close(fused, ln @ D, **ATOL)
    torch.testing.assert_close(ln, ref[:, :, -1] / c["ln_final.hook_scale"][:, -1], **ATOL)


def check_to(model, tokens, run):
    _, c = model.run_with_cache(tokens)
    moved = c.to("cpu")
    assert isinstance(moved, SparseActivationCache) and list(moved.keys()) == list(c.keys())
    assert all(torch.equal(moved[k], c[k]) for k in c.cache_dict)
    torch.testing.assert_close(moved.stack_head_results(), c.stack_head_results())


def check_toggle_autodiff(model, tokens, run):
    _, c = run
    state = torch.is_grad_enabled()
    logging.disable(logging.WARNING)
    try:
        c.toggle_autodiff(state)
    finally:
        logging.disable(logging.NOTSET)
    assert torch.is_grad_enabled() == state


CACHE_CHECKS = {
    "accumulated_resid": check_accumulated_resid,
    "apply_ln_to_stack": check_apply_ln_to_stack,
    "apply_slice_to_batch_dim": check_apply_slice_to_batch_dim,
    "compute_head_results": check_compute_head_results,
    "compute_ssm_effective_attention": check_ssm,
    "compute_ssm_state": check_ssm,
    "ssm_layers": check_ssm,
    "decompose_resid": check_decompose_resid,
    "get_full_resid_decomposition": check_get_full_resid_decomposition,
    "get_neuron_results": check_get_neuron_results,
    "items": check_dict_views,
    "keys": check_dict_views,
    "values": check_dict_views,
    "logit_attrs": check_logit_attrs,
    "logit_lens": check_logit_lens,
    "remove_batch_dim": check_remove_batch_dim,
    "stack_activation": check_stack_activation,
    "stack_head_results": check_stack_head_results,
    "stack_neuron_results": check_stack_neuron_results,
    "to": check_to,
    "toggle_autodiff": check_toggle_autodiff,
}


def _public_cache_methods() -> set[str]:
    return {
        n
        for n in dir(ActivationCache)
        if not n.startswith("_") and callable(getattr(ActivationCache, n))
    }


@pytest.mark.parametrize("name", sorted(set(CACHE_CHECKS.values()), key=lambda f: f.__name__))
def test_cache_method(name, model, tokens, run):
    name(model, tokens, run)


# ---------------------------------------------------------------- transformer_lens.patching
def _metric(lg):
    return lg[:, -1, 3].sum() - lg[:, -1, 7].sum()


def _patched(model, tokens, name, setter):
    with torch.no_grad():
        return float(_metric(model.run_with_hooks(tokens, fwd_hooks=[(name, setter)])))


def _reference(model, corrupt, clean_cache, act, kind, index):
    """The metric after one patch, written with our own hook (not TL's setters)."""
    layer, rest = index[0], index[1:]
    name = f"blocks.{layer}.{act}"
    clean = clean_cache[name]

    def hook(x, hook):
        x = x.clone()
        if kind == "pos":
            x[:, rest[0]] = clean[:, rest[0]]
        elif kind == "pos_head":
            x[:, rest[0], rest[1]] = clean[:, rest[0], rest[1]]
        elif kind == "head":
            x[:, :, rest[0]] = clean[:, :, rest[0]]
        elif kind == "pattern_head":
            x[:, rest[0]] = clean[:, rest[0]]
        elif kind == "pattern_head_pos":
            x[:, rest[0], rest[1]] = clean[:, rest[0], rest[1]]
        else:  # pattern_head_dest_src
            x[:, rest[0], rest[1], rest[2]] = clean[:, rest[0], rest[1], rest[2]]
        return x

    return _patched(model, corrupt, name, hook)


# TL's function -> (hook below blocks.{l}, the kind of index)
SINGLE = {
    "get_act_patch_resid_pre": ("hook_resid_pre", "pos"),
    "get_act_patch_resid_mid": ("hook_resid_mid", "pos"),
    "get_act_patch_attn_out": ("hook_attn_out", "pos"),
    "get_act_patch_mlp_out": ("hook_mlp_out", "pos"),
    "get_act_patch_attn_head_out_by_pos": ("attn.hook_z", "pos_head"),
    "get_act_patch_attn_head_q_by_pos": ("attn.hook_q", "pos_head"),
    "get_act_patch_attn_head_k_by_pos": ("attn.hook_k", "pos_head"),
    "get_act_patch_attn_head_v_by_pos": ("attn.hook_v", "pos_head"),
    "get_act_patch_attn_head_pattern_by_pos": ("attn.hook_pattern", "pattern_head_pos"),
    "get_act_patch_attn_head_pattern_dest_src_pos": ("attn.hook_pattern", "pattern_head_dest_src"),
    "get_act_patch_attn_head_out_all_pos": ("attn.hook_z", "head"),
    "get_act_patch_attn_head_q_all_pos": ("attn.hook_q", "head"),
    "get_act_patch_attn_head_k_all_pos": ("attn.hook_k", "head"),
    "get_act_patch_attn_head_v_all_pos": ("attn.hook_v", "head"),
    "get_act_patch_attn_head_pattern_all_pos": ("attn.hook_pattern", "pattern_head"),
}
EVERY = {
    "get_act_patch_block_every": [
        "get_act_patch_resid_pre",
        "get_act_patch_attn_out",
        "get_act_patch_mlp_out",
    ],
    "get_act_patch_attn_head_all_pos_every": [
        "get_act_patch_attn_head_out_all_pos",
        "get_act_patch_attn_head_q_all_pos",
        "get_act_patch_attn_head_k_all_pos",
        "get_act_patch_attn_head_v_all_pos",
        "get_act_patch_attn_head_pattern_all_pos",
    ],
    "get_act_patch_attn_head_by_pos_every": [
        "get_act_patch_attn_head_out_by_pos",
        "get_act_patch_attn_head_q_by_pos",
        "get_act_patch_attn_head_k_by_pos",
        "get_act_patch_attn_head_v_by_pos",
        "get_act_patch_attn_head_pattern_by_pos",
    ],
}
REFUSED = {"get_act_patch_direct_path", "get_act_patch_direct_path_all_sources"}
# Building blocks of the functions above, exercised through them.
HELPERS = {
    "generic_activation_patch",
    "make_df_from_ranges",
    "layer_pos_patch_setter",
    "layer_pos_head_vector_patch_setter",
    "layer_head_vector_patch_setter",
    "layer_head_pattern_patch_setter",
    "layer_head_pos_pattern_patch_setter",
    "layer_head_dest_src_pos_pattern_patch_setter",
}


def _public_patching_functions() -> set[str]:
    out = set()
    for name, value in vars(patching).items():
        if name.startswith("_") or inspect.isclass(value) or not callable(value):
            continue
        if (
            isinstance(value, functools.partial)
            or getattr(value, "__module__", "") == patching.__name__
        ):
            out.add(name)
    return out


def test_every_public_name_is_covered():
    assert _public_cache_methods() == set(CACHE_CHECKS)
    assert _public_patching_functions() == set(SINGLE) | set(EVERY) | REFUSED | HELPERS


@pytest.fixture(scope="module")
def pair(model):
    gen = torch.Generator().manual_seed(7)
    clean = torch.randint(0, 64, (2, 5), generator=gen)
    corrupt = torch.randint(0, 64, (2, 5), generator=gen)
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean)
        _, corrupt_cache = model.run_with_cache(corrupt)
    return corrupt, clean_cache, corrupt_cache


def _values(result) -> torch.Tensor:
    return result if isinstance(result, torch.Tensor) else result.values


@pytest.mark.parametrize("name", sorted(SINGLE))
def test_patching_function_exact(name, model, pair):
    corrupt, clean_cache, _ = pair
    act, kind = SINGLE[name]
    with torch.no_grad():
        result = _values(getattr(patching, name)(model, corrupt, clean_cache, _metric))
    gen = torch.Generator().manual_seed(11)
    for _ in range(4):
        index = tuple(int(torch.randint(0, n, (1,), generator=gen)) for n in result.shape)
        ref = _reference(model, corrupt, clean_cache, act, kind, index)
        assert abs(float(result[index]) - ref) < 1e-4, (name, index)


@pytest.mark.parametrize("name", sorted(EVERY))
def test_patching_every_matches_singles(name, model, pair):
    corrupt, clean_cache, _ = pair
    with torch.no_grad():
        every = _values(getattr(patching, name)(model, corrupt, clean_cache, _metric))
        for i, single in enumerate(EVERY[name]):
            one = _values(getattr(patching, single)(model, corrupt, clean_cache, _metric))
            # TL lays the pattern sweep out as [layer pos head] inside the _every stack
            one = one if one.shape == every[i].shape else one.transpose(-1, -2)
            torch.testing.assert_close(every[i], one)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_direct_path_refused_under_attn_out_abstopk(name, model, pair):
    corrupt, clean_cache, corrupt_cache = pair
    args = (model, corrupt, clean_cache, corrupt_cache, _metric)
    extra = (0, 1) if name == "get_act_patch_direct_path" else ()
    with pytest.raises(ValueError, match="not hook_z @ W_O"):
        getattr(patching, name)(*args, *extra, verbose=False)
