import pytest
import torch

from sparse_lens.model.config import ACT_SITES
from sparse_lens.model.sparse_matmul import (
    as_matrix,
    clear_csr_weights,
    csr_matmul,
    csr_weight,
    refresh_csr_weights,
)
from sparse_lens.model.sparsity import project_weights_
from sparse_lens.training.sparse import TrainConfig, train_step
from tests.helpers import build_model

SHAPES = {"in_out": (24, 40), "heads_in": (3, 24, 8), "heads_out": (3, 8, 24)}


def _sparse(shape, density=0.2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=gen)
    return w * (torch.rand(shape, generator=gen) < density)


@pytest.mark.parametrize("layout", SHAPES)
def test_csr_matmul_matches_the_dense_product_and_its_gradients(layout):
    W = _sparse(SHAPES[layout]).requires_grad_()
    csr = csr_weight(W, layout)
    M = as_matrix(W.detach(), layout)
    assert csr.fwd.shape == (M.shape[1], M.shape[0]) and csr.bwd.shape == M.shape
    assert csr.bwd._nnz() == int((M != 0).sum())
    x = torch.randn(2, 5, M.shape[0], requires_grad=True)
    gy = torch.randn(2, 5, M.shape[1])

    out = csr_matmul(x, W, csr)
    out.backward(gy)
    W_dense = W.detach().clone().requires_grad_()
    x_dense = x.detach().clone().requires_grad_()
    ref = x_dense @ as_matrix(W_dense, layout)
    ref.backward(gy)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(x.grad, x_dense.grad)
    # The weight gradient is dense: zero weights get theirs too (they can regrow).
    torch.testing.assert_close(W.grad, W_dense.grad)
    assert int((W.grad != 0).sum()) > int((W != 0).sum())


def _sparse_model():
    model = build_model(
        act_sparse_sites=ACT_SITES,
        weight_density=1 / 8,
        embed_density=1 / 4,
        min_nonzero_per_neuron=2,
    )
    project_weights_(model, weight_density=1 / 8, embed_density=1 / 4, min_per_neuron=2)
    return model


def _loss_and_grads(model, tokens):
    model.zero_grad(set_to_none=True)
    loss = model(tokens, return_type="loss")
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_model_with_csr_weights_computes_the_same_loss_and_gradients():
    model = _sparse_model()
    tokens = torch.randint(0, model.cfg.d_vocab, (3, 12))
    loss, grads = _loss_and_grads(model, tokens)
    n = refresh_csr_weights(model, max_density=0.3, min_numel=0)
    assert n == 6 * model.cfg.n_layers + 1  # W_Q W_K W_V W_O W_in W_out per block, and W_U
    loss_csr, grads_csr = _loss_and_grads(model, tokens)
    torch.testing.assert_close(loss_csr, loss)
    for name, g in grads.items():
        torch.testing.assert_close(grads_csr[name], g, msg=name)
    # the hooks see the same activations
    _, cache = model.run_with_cache(tokens)
    clear_csr_weights(model)
    _, dense_cache = model.run_with_cache(tokens)
    for name, act in dense_cache.items():
        torch.testing.assert_close(cache[name], act, msg=name)


def test_a_changed_weight_falls_back_to_dense_until_refreshed():
    model = _sparse_model()
    refresh_csr_weights(model, max_density=0.3, min_numel=0)
    mlp = model.blocks[0].mlp
    kept = model.blocks[1].mlp.csr_weights["W_in"]
    with torch.no_grad():
        mlp.W_in.mul_(3.0)  # stale copy: must not be used
    tokens = torch.randint(0, model.cfg.d_vocab, (2, 8))
    with_stale = model(tokens)
    clear_csr_weights(model)
    torch.testing.assert_close(with_stale, model(tokens))
    refresh_csr_weights(model, max_density=0.3, min_numel=0)
    assert model.blocks[1].mlp.csr_weights["W_in"] is not kept  # cleared, so rebuilt
    kept = model.blocks[1].mlp.csr_weights["W_in"]
    with torch.no_grad():
        mlp.W_in.mul_(2.0)
    refresh_csr_weights(model, max_density=0.3, min_numel=0)
    assert model.blocks[1].mlp.csr_weights["W_in"] is kept  # unchanged weight: kept
    torch.testing.assert_close(mlp.csr_weights["W_in"].bwd.to_dense(), mlp.W_in.detach())


def test_refresh_selects_only_sparse_enough_and_large_enough_weights():
    model = _sparse_model()
    assert refresh_csr_weights(model, max_density=0.1, min_numel=0) == 0  # 1/8 and 1/4 > 0.1
    assert refresh_csr_weights(model, max_density=0.3, min_numel=10**9) == 0
    assert refresh_csr_weights(model, max_density=0.0, min_numel=0) == 0
    n = refresh_csr_weights(model, max_density=0.3, min_numel=0)
    held = {
        f"{mod_name}.{w}"
        for mod_name, m in model.named_modules()
        for w in getattr(m, "csr_weights", {})
    }
    products = ("W_Q", "W_K", "W_V", "W_O", "W_in", "W_out", "W_U")
    sparse_enough = {
        name
        for name, p in model.named_parameters()
        if name.rsplit(".", 1)[-1] in products and float((p != 0).float().mean()) <= 0.3
    }
    assert len(sparse_enough) == 2 * 6 + 1  # every layer weight and W_U
    assert n == len(held) and held == sparse_enough
    assert refresh_csr_weights(model, max_density=0.1, min_numel=0) == 0  # policy re-applied
    assert all(not m.csr_weights for m in model.modules() if hasattr(m, "csr_weights"))
    with pytest.raises(ValueError, match="max_density must be in"):
        refresh_csr_weights(model, max_density=1.5)
    with pytest.raises(ValueError, match="min_numel must be >= 0"):
        refresh_csr_weights(model, min_numel=-1)
    with pytest.raises(ValueError, match="unknown layout 'rows'"):
        as_matrix(torch.zeros(2, 2), "rows")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("sparse_matmul_max_density", 2.0, "sparse_matmul_max_density must be in"),
        ("sparse_matmul_min_numel", -3, "sparse_matmul_min_numel must be >= 0"),
    ],
)
def test_train_config_rejects_bad_sparse_matmul_settings(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(steps=1, batch_size=1, **{field: value})


def _train_steps(max_density):
    model = _sparse_model().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, eps=0.1)
    tcfg = TrainConfig(
        steps=10,
        batch_size=4,
        anneal_start=0.0,
        anneal_end=0.0,
        sparse_matmul_max_density=max_density,
        sparse_matmul_min_numel=0,
    )
    gen = torch.Generator().manual_seed(0)
    for step in range(4):
        tokens = torch.randint(0, model.cfg.d_vocab, (4, 12), generator=gen)
        train_step(model, model, opt, tokens, step, tcfg)
    return model


def test_training_with_sparse_kernels_is_reproducible_and_matches_dense_kernels():
    a, b, dense = _train_steps(0.3), _train_steps(0.3), _train_steps(0.0)
    assert sum(len(m.csr_weights) for m in a.modules() if hasattr(m, "csr_weights")) == 13
    assert not any(getattr(m, "csr_weights", None) for m in dense.modules())
    for (name, wa), wb, wd in zip(
        a.state_dict().items(), b.state_dict().values(), dense.state_dict().values(), strict=True
    ):
        assert torch.equal(wa, wb), name
        torch.testing.assert_close(wa, wd, atol=1e-4, rtol=1e-3, msg=name)
