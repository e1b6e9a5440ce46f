"""Weight sparsity as optimizer hooks (``hooks.weight_sparsity``): any model trained to a target
density with one call, and the sparse trainer built from the same hooks unchanged."""

import pytest
import torch
from torch import nn

from hooks import abs_topk_hook, linear_weights, sparsify, tl_weights
from hooks.topk import n_keep, topk_weight_indices
from hooks.weight_sparsity import anneal_progress, normalize_grad_rms_
from sparse_lens.model.sparsity import density_for, param_role
from sparse_lens.training.sparse import (
    TrainConfig,
    densities_at,
    lr_at,
    sparsity_hooks,
    train_step,
)
from tests.helpers import build_model, random_tokens


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 8))


def _regression_batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(16, 8, generator=gen)
    out = []
    for _ in range(n):
        x = torch.randn(32, 16, generator=gen)
        out.append((x, torch.tanh(x @ w)))
    return out


def _fit(model: nn.Module, opt: torch.optim.Optimizer, batches, on_step=None) -> list[float]:
    losses = []
    for i, (x, y) in enumerate(batches):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(i)
    return losses


def test_sparsify_trains_a_dense_mlp_to_the_target_density():
    model = _mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    steps, density = 40, 0.25
    handle = sparsify(
        model, opt, density=density, total_steps=steps, anneal_start=0.1, anneal_end=0.5
    )
    weights = {sp.name: sp.param for sp in linear_weights(model)}
    assert set(weights) == {"0.weight", "2.weight"}
    biases = {n: p for n, p in model.named_parameters() if n.endswith("bias")}
    seen: list[dict[str, int]] = []

    def check(i: int) -> None:
        # each step's nonzeros follow the linear L0 anneal from dense (4 steps) to 0.25 (20)
        expected = 1.0 + (density - 1.0) * anneal_progress(i, steps, 0.1, 0.5)
        nnz = {n: int(p.count_nonzero()) for n, p in weights.items()}
        seen.append(nnz)
        for n, p in weights.items():
            if expected < 1.0:
                assert nnz[n] == n_keep(p.numel(), expected), (i, n)
            else:
                assert nnz[n] == p.numel(), (i, n)

    losses = _fit(model, opt, _regression_batches(steps), check)
    assert seen[3]["0.weight"] == 16 * 64 and seen[20]["0.weight"] == 16 * 64 // 4
    for n, p in weights.items():
        assert int(p.count_nonzero()) == int(density * p.numel()), n
        assert int((p != 0).sum(1).min()) >= 4, n  # every output neuron keeps 4 inputs
    for n, p in biases.items():
        assert int(p.count_nonzero()) == p.numel(), n  # not selected: left dense
    assert sum(losses[-5:]) < sum(losses[:5])  # it learned while being sparsified
    assert handle.step == steps

    handle.remove()
    _fit(model, opt, _regression_batches(1))
    assert all(int(p.count_nonzero()) > int(density * p.numel()) for p in weights.values())


def test_sparsify_normalises_gradients_to_unit_rms_before_the_step():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with sparsify(model, opt, density=0.5, total_steps=10, min_per_neuron=1) as handle:
        x, y = _regression_batches(1)[0]
        (1e3 * nn.functional.mse_loss(model(x), y)).backward()
        opt.step()
        grads = torch.cat([p.grad.flatten() for p in model.parameters()])
        assert float(grads.pow(2).mean().sqrt()) == pytest.approx(1.0, rel=1e-4)
        assert handle.grad_norm is not None and handle.grad_norm.rms > 1.0


def test_sparsify_a_dense_transformer_lens_model_with_abs_topk_hooks():
    """A dense TL-style model (TL parameter names and hook points, no activation sparsity)
    sparsified by hooks alone: top-k weights via ``tl_weights``, AbsTopK via a hook point."""
    model = build_model(afrac=1.0).train()
    assert model.cfg.weight_density == 1.0 and not model.cfg.act_sparse("mlp_neuron")
    model.add_hook("blocks.0.mlp.hook_post", abs_topk_hook(8))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps = 6
    with sparsify(
        model, opt, density=0.5, total_steps=steps, anneal_end=0.5, params=tl_weights
    ) as handle:
        for i in range(steps):
            opt.zero_grad()
            model(random_tokens(2, 8, 64, seed=i), return_type="loss").backward()
            opt.step()
    matrices = ("attn.W_Q", "attn.W_K", "attn.W_V", "attn.W_O", "mlp.W_in", "mlp.W_out")
    assert set(handle.projection.kept) == {f"blocks.{i}.{m}" for i in range(2) for m in matrices}
    attn, mlp = model.blocks[0].attn, model.blocks[0].mlp
    for w in (attn.W_Q, attn.W_O, mlp.W_in, mlp.W_out):
        assert int(w.count_nonzero()) == w.numel() // 2
    assert int((attn.W_Q != 0).sum(1).min()) >= 4  # each q channel's fan-in over d_model
    assert int((attn.W_O != 0).sum(2).min()) >= 4  # each value channel's fan-out
    assert int((mlp.W_in != 0).sum(0).min()) >= 4  # each neuron's fan-in
    assert int(model.W_E.count_nonzero()) == model.W_E.numel()  # not selected: dense
    _, cache = model.run_with_cache(random_tokens(2, 8, 64))
    post, free = cache["blocks.0.mlp.hook_post"], cache["blocks.1.mlp.hook_post"]
    assert int((post != 0).sum(-1).max()) <= 8  # AbsTopK on the hooked point only
    assert int((free != 0).sum(-1).max()) > 8
    model.reset_hooks()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"density": 0.01}, "fewer than min_per_neuron"),
        ({"density": 1.5}, "density must be in"),
        ({"density": 0.5, "total_steps": 0}, "total_steps"),
        ({"density": 0.5, "anneal_start": 0.6, "anneal_end": 0.5}, "anneal_end"),
        ({"density": 0.5, "params": lambda m: []}, "no sparse parameter"),
    ],
)
def test_sparsify_refuses_bad_settings(kwargs, match):
    model = _mlp()
    opt = torch.optim.Adam(model.parameters())
    with pytest.raises(ValueError, match=match):
        sparsify(model, opt, **({"total_steps": 10} | kwargs))


def test_sparsify_refuses_parameters_the_optimizer_does_not_update():
    model = _mlp()
    opt = torch.optim.Adam(model[0].parameters())
    with pytest.raises(ValueError, match=r"does not update .*2\.weight"):
        sparsify(model, opt, density=0.5, total_steps=10)


def test_abs_topk_hook_refuses_k_below_one():
    with pytest.raises(ValueError, match="k >= 1"):
        abs_topk_hook(0)


# ---------------------------------------------------------------------------------------------
# The sparse trainer, now built from the hooks, against the explicit step it used to take.


def _reference_step(model, opt, tokens, step, tcfg) -> None:
    """The sparse recipe's step written out as before the hooks: normalise, step, check,
    project (``param_role``/``density_for`` per parameter), decay."""
    mcfg = model.cfg
    opt.zero_grad(set_to_none=True)
    model(tokens, return_type="loss").backward()
    normalize_grad_rms_(list(model.parameters()), tcfg.grad_rms_eps)
    lr = lr_at(step, tcfg, mcfg)
    for group in opt.param_groups:
        group["lr"] = lr
    opt.step()
    w_density, e_density = densities_at(step, tcfg, mcfg)
    fan = {"W_Q": 1, "W_K": 1, "W_V": 1, "W_O": 2, "W_in": 0, "W_out": 1}
    with torch.no_grad():
        for name, p in model.named_parameters():
            role = param_role(name)
            density = density_for(role, w_density, e_density)
            if density >= 1.0:
                continue
            fan_dim = fan[name.rsplit(".", 1)[-1]] if role == "matrix" else None
            idx = topk_weight_indices(
                p,
                n_keep(p.numel(), density),
                fan_dim=fan_dim,
                min_per_neuron=mcfg.min_nonzero_per_neuron,
            )
            flat = p.view(-1)
            values = flat[idx]
            flat.zero_()
            flat[idx] = values
        for name, p in model.named_parameters():
            if p.ndim > 1 and param_role(name) != "dense":
                p.mul_(1.0 - tcfg.weight_decay * lr)


@pytest.mark.parametrize("embed_anneal", ["linear", "paper_bug"])
def test_sparse_train_step_with_hooks_is_bit_identical_to_the_explicit_step(embed_anneal):
    tcfg = TrainConfig(
        steps=12, batch_size=2, lr=1e-2, anneal_start=0.1, anneal_end=0.6,
        embed_anneal=embed_anneal, sparse_matmul_max_density=0.0,
    )  # fmt: skip
    models = [build_model(weight_density=0.25, embed_density=0.5).train() for _ in range(3)]
    opts = [
        torch.optim.Adam(m.parameters(), lr=tcfg.lr, betas=(0.9, 0.95), eps=0.1) for m in models
    ]
    handle = sparsity_hooks(models[2], opts[2], tcfg)  # attached once, as train() does
    for step in range(tcfg.steps):
        tokens = random_tokens(2, 12, models[0].cfg.d_vocab, seed=step)
        _reference_step(models[0], opts[0], tokens, step, tcfg)
        train_step(models[1], models[1], opts[1], tokens, step, tcfg)  # hooks for one step
        train_step(models[2], models[2], opts[2], tokens, step, tcfg, sparsity=handle)
    handle.remove()
    ref = models[0].state_dict()
    w_in = ref["blocks.0.mlp.W_in"]
    assert int(w_in.count_nonzero()) == n_keep(w_in.numel(), 0.25)  # annealed to the target
    for other in models[1:]:
        for name, value in other.state_dict().items():
            assert torch.equal(value, ref[name]), name


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_all_finite_finds_one_bad_entry_and_the_step_hook_raises(bad):
    from hooks.weight_sparsity import FiniteCheck, all_finite

    params = [torch.nn.Parameter(torch.randn(4, 5)), torch.nn.Parameter(torch.randn(3))]
    assert all_finite(params) and all_finite([])
    big = [torch.full((2,), 3e38)]  # finite, however large: no overflow to inf
    assert all_finite(big)
    opt = torch.optim.SGD(params, lr=0.5)
    check = FiniteCheck(params)
    check(opt, (), {})  # finite: no error
    with torch.no_grad():
        params[1][2] = bad
    assert not all_finite(params)
    with pytest.raises(FloatingPointError, match="the update at lr 0.5 made weights non-finite"):
        check(opt, (), {})
