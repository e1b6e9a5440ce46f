"""The cache's neuron results with ``project_output_onto`` project first: the values of the
unprojected path, and no ``[batch pos d_mlp d_model]`` tensor built on the way (a dispatch spy
records every op's output)."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tests.helpers import build_model


class ShapeSpy(TorchDispatchMode):
    """Records the shape of every tensor an aten op returns."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outs = out if isinstance(out, tuple | list) else (out,)
        self.shapes += [tuple(o.shape) for o in outs if isinstance(o, torch.Tensor)]
        return out


@pytest.mark.parametrize("mlp_out_topk", [True, False], ids=["masked", "unmasked"])
def test_projected_neuron_results_equal_unprojected_without_the_big_tensor(mlp_out_topk):
    sites = ("mlp_neuron", "mlp_out") if mlp_out_topk else ("mlp_neuron",)
    model = build_model(act_sparse_sites=sites)
    cfg = model.cfg
    tokens = torch.randint(0, cfg.d_vocab, (3, 6), generator=torch.Generator().manual_seed(0))
    _, cache = model.run_with_cache(tokens)
    assert ("blocks.1.mlp.hook_out_mask" in cache.cache_dict) == mlp_out_topk
    D = torch.randn(cfg.d_model, 2, generator=torch.Generator().manual_seed(1))
    full = cache.get_neuron_results(1)  # [batch pos d_mlp d_model]
    big = full.numel()
    with ShapeSpy() as spy:
        projected = cache.get_neuron_results(1, project_output_onto=D)
        one = cache.get_neuron_results(1, project_output_onto=D[:, 0])
        fused = cache.stack_neuron_results(1, apply_ln=True, project_output_onto=D)
    torch.testing.assert_close(projected, full @ D, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(one, full @ D[:, 0], atol=1e-5, rtol=1e-5)
    assert fused.shape == (cfg.d_mlp, 3, 6, 2)
    built = [s for s in spy.shapes if torch.Size(s).numel() >= big]
    assert not built, f"a tensor as large as [batch pos d_mlp d_model] was built: {built}"
