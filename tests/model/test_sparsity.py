import pytest
import torch

from hooks.topk import abs_topk, abs_topk_mask, naive_topk_weight_mask, topk_weight_mask
from sparse_lens.model.sparsity import param_role, project_weights_
from tests.helpers import build_model


def test_abs_topk_keeps_largest_magnitudes_per_row():
    x = torch.tensor([[1.0, -5.0, 3.0, 0.1], [-0.2, 0.3, -0.4, 0.5]])
    out = abs_topk(x, 2)
    assert torch.equal(out, torch.tensor([[0.0, -5.0, 3.0, 0.0], [0.0, 0.0, -0.4, 0.5]]))
    assert torch.equal(abs_topk(x, 4), x)
    assert abs_topk_mask(x, 1).sum(-1).tolist() == [1, 1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_abs_topk_mask_selects_the_largest_magnitudes(dtype):
    """The selection runs on the magnitudes' bit patterns as integers: same as ranking floats."""
    x = torch.randn(64, 256, generator=torch.Generator().manual_seed(0)).to(dtype)
    x[:4] = 0.0  # rows of ties: any k of them
    x[4, :10] = float("inf")
    mask = abs_topk_mask(x, 32)
    assert mask.dtype == torch.bool and bool((mask.sum(-1) == 32).all())
    kept = torch.where(mask, x.abs().float(), float("inf")).amin(-1)
    dropped = torch.where(mask, -1.0, x.abs().float()).amax(-1)
    assert bool((kept >= dropped).all())  # every kept magnitude >= every dropped one
    assert bool(mask[4, :10].all())
    ref = x.abs().float().topk(32, dim=-1).values.sort(-1).values
    got = torch.where(mask, x.abs().float(), 0.0).sort(-1).values[:, -32:]
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    assert abs_topk_mask(x, 32, torch.float32).dtype == torch.float32


def test_abs_topk_gradient_flows_only_to_kept_entries():
    x = torch.tensor([1.0, -5.0, 3.0, 0.1], requires_grad=True)
    abs_topk(x, 2).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize(
    "shape,fan_dim", [((8, 32, 4), 1), ((8, 4, 32), 2), ((32, 64), 0), ((64, 32), 1)]
)
def test_topk_weight_mask_exact_k_and_min_per_neuron(shape, fan_dim):
    w = torch.randn(shape)
    numel = w.numel()
    n_neurons = numel // shape[fan_dim]
    k = 4 * n_neurons + 10
    mask = topk_weight_mask(w, k, fan_dim=fan_dim, min_per_neuron=4)
    assert int(mask.sum()) == k
    assert int(mask.sum(dim=fan_dim).min()) >= 4


def test_topk_weight_mask_without_minimum_matches_torch_topk():
    w = torch.randn(64, 48)
    assert torch.equal(topk_weight_mask(w, 300), naive_topk_weight_mask(w, 300))


def test_topk_weight_mask_rejects_budget_below_minimum():
    with pytest.raises(ValueError, match="per neuron"):
        topk_weight_mask(torch.randn(32, 64), 10, fan_dim=0, min_per_neuron=4)


def test_param_role_covers_every_parameter():
    model = build_model(positional_embedding="learned")
    roles = {name: param_role(name) for name, _ in model.named_parameters()}
    assert roles["blocks.0.attn.W_Q"] == "matrix"
    assert roles["blocks.1.mlp.W_out"] == "matrix"
    assert roles["embed.W_E"] == "embed"
    assert roles["pos_embed.W_pos"] == "embed"
    assert roles["unembed.W_U"] == "unembed"
    assert roles["blocks.0.attn.b_O"] == "bias"
    assert roles["bigram.W_bigram"] == "dense"
    assert roles["blocks.0.attn.sinks"] == "dense"
    assert roles["ln_final.w"] == "dense"
    with pytest.raises(ValueError, match="no sparsity role"):
        param_role("blocks.0.attn.mystery")


def test_project_weights_exact_k_and_dense_untouched():
    model = build_model(d_model=32, d_mlp=64, n_heads=4, d_head=8)
    dense_before = {n: p.clone() for n, p in model.named_parameters() if param_role(n) == "dense"}
    kept = project_weights_(model, weight_density=0.25, embed_density=0.5, min_per_neuron=4)
    params = dict(model.named_parameters())
    for name, k in kept.items():
        assert int((params[name] != 0).sum()) == k, name
    assert int((params["blocks.0.mlp.W_in"] != 0).sum(0).min()) >= 4
    assert int((params["blocks.0.mlp.W_out"] != 0).sum(1).min()) >= 4
    assert int((params["blocks.0.attn.W_Q"] != 0).sum(1).min()) >= 4
    assert int((params["blocks.0.attn.W_O"] != 0).sum(2).min()) >= 4
    assert params["embed.W_E"].count_nonzero() == int(0.5 * params["embed.W_E"].numel())
    for name, before in dense_before.items():
        assert torch.equal(params[name], before), name


@pytest.mark.parametrize("k", [1, 50, 4096, 65536, 300_000])
def test_fast_flat_topk_is_exact(k):
    from hooks.topk import _topk_flat_indices

    scores = torch.randn(1024, 1024).abs().reshape(-1)
    idx = _topk_flat_indices(scores, k)
    assert torch.equal(idx, scores.topk(k).indices.sort().values)
    skewed = torch.cat([torch.full((900_000,), 5.0), torch.rand(200_000)])  # estimate overshoots
    assert torch.equal(_topk_flat_indices(skewed, 1000), torch.arange(1000))
    ties = torch.cat([torch.rand(600_000), torch.full((10,), 2.0), torch.full((10,), 3.0)])
    expected = torch.cat([torch.arange(600_000, 600_005), torch.arange(600_010, 600_020)])
    assert torch.equal(_topk_flat_indices(ties, 15), expected)  # all 3.0s, the first five 2.0s
    # mostly zeros (a tensor projected before), with ties: exact whether or not its positives
    # fill k (ties, zeros included, go to the lowest index)
    sparse = torch.zeros(1_000_000)
    sparse[torch.randperm(1_000_000, generator=torch.Generator().manual_seed(0))[:5000]] = 1.0
    sparse[::7919] += torch.rand(len(sparse[::7919]), generator=torch.Generator().manual_seed(1))
    for k in (100, 5000, 6000):
        reference = torch.argsort(-sparse, stable=True)[:k].sort().values
        assert torch.equal(_topk_flat_indices(sparse, k), reference), k


def test_project_weights_keeps_values_and_matches_the_mask():
    model = build_model(d_model=32, d_mlp=64, n_heads=4, d_head=8)
    before = {n: p.clone() for n, p in model.named_parameters()}
    project_weights_(model, weight_density=0.25, embed_density=0.5, min_per_neuron=4)
    w, w0 = model.blocks[0].mlp.W_in, before["blocks.0.mlp.W_in"]
    mask = topk_weight_mask(w0, int(0.25 * w0.numel()), fan_dim=0, min_per_neuron=4)
    assert torch.equal(w, w0 * mask)


def test_fast_path_equals_guaranteed_path():
    """Dense enough that plain top-k satisfies the minimum: both definitions agree."""
    w = torch.randn(256, 512)
    k = w.numel() // 4
    mask = topk_weight_mask(w, k, fan_dim=0, min_per_neuron=4)
    scores = w.abs().scatter(0, w.abs().topk(4, dim=0).indices, float("inf"))
    reference = naive_topk_weight_mask(scores, k)
    assert torch.equal(mask, reference)
