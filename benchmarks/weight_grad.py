"""Benchmark: a weight gradient computed only where a weight can enter the top-k (issue #29).

A training step of a projected matrix ``M [d_in d_out]`` takes three products: the forward
``y = x M`` and the input gradient ``gx = gy M^T`` (both CSR kernels once ``M`` is sparse,
``sparse_lens/model/sparse_matmul.py``) and the weight gradient ``gM = x^T gy``, which the recipe
keeps dense: after the optimizer step every entry competes for the top-k again, so a zeroed
weight can grow back (the paper, §2 and App. B). This benchmark prices the alternative, side
by side in one process, interleaved, at the paper's d_model 1024 shapes and density 1/64:

* ``dense_grad``: ``x^T gy`` in full (what the recipe does);
* ``sampled_grad_kept``: ``gM`` at the current nonzeros only (``torch.sparse.sampled_addmm``),
  the cheapest rule, which freezes the support: no zeroed weight can come back;
* ``sampled_grad_4x``: at the nonzeros plus 3x as many other entries (a candidate set, as a
  rule that lets weights grow back would need);
* ``forward_csr`` and ``input_grad_csr``: the two products that are sparse already.

Ratios ``*_over_dense_grad`` below 1 pay. ``step_share`` is the weight gradient's share of the
three products with the current kernels: the most any weight-gradient rule can save.

    python benchmarks/weight_grad.py --out benchmarks/results/weight_grad.json
    python benchmarks/weight_grad.py --quick
"""

import platform
import warnings
from collections.abc import Callable

import torch
from report_json import benchmark_parser, emit  # benchmarks/report_json.py
from timing import interleaved_medians  # benchmarks/timing.py

from sparse_lens.model.sparse_matmul import csr_weight

SHAPES = {"W_in": (1024, 4096), "W_out": (4096, 1024), "W_Q": (1024, 1024)}


def _support(d_in: int, d_out: int, nnz: int, g: torch.Generator) -> torch.Tensor:
    """A random CSR 0/1 pattern of ``nnz`` entries of ``[d_in d_out]``."""
    flat = torch.randperm(d_in * d_out, generator=g)[:nnz]
    dense = torch.zeros(d_in * d_out)
    dense[flat] = 1.0
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support")
        return dense.view(d_in, d_out).to_sparse_csr()


def time_shape(d_in: int, d_out: int, tokens: int, density: float, rounds: int) -> dict:
    """Medians (seconds) of the five products for one matrix, interleaved over ``rounds``."""
    g = torch.Generator().manual_seed(0)
    nnz = int(density * d_in * d_out)
    W = torch.zeros(d_in, d_out)
    W.view(-1)[torch.randperm(d_in * d_out, generator=g)[:nnz]] = torch.randn(nnz, generator=g)
    csr = csr_weight(W, "in_out")
    x, gy = torch.randn(tokens, d_in, generator=g), torch.randn(tokens, d_out, generator=g)
    kept, wider = _support(d_in, d_out, nnz, g), _support(d_in, d_out, 4 * nnz, g)
    xt = x.t().contiguous()
    calls: dict[str, Callable[[], object]] = {
        "dense_grad": lambda: xt @ gy,
        "sampled_grad_kept": lambda: torch.sparse.sampled_addmm(kept, xt, gy, beta=0.0),
        "sampled_grad_4x": lambda: torch.sparse.sampled_addmm(wider, xt, gy, beta=0.0),
        "forward_csr": lambda: torch.mm(csr.fwd, x.t()).t(),
        "input_grad_csr": lambda: torch.mm(csr.bwd, gy.t()).t(),
    }
    row = {f"{k}_s": v for k, v in interleaved_medians(calls, rounds).items()}
    for k in ("sampled_grad_kept", "sampled_grad_4x"):
        row[f"{k}_over_dense_grad"] = row[f"{k}_s"] / row["dense_grad_s"]
    three = row["dense_grad_s"] + row["forward_csr_s"] + row["input_grad_csr_s"]
    row["step_share"] = row["dense_grad_s"] / three
    return row


def main() -> None:
    args = benchmark_parser(__doc__, quick="small shapes, few rounds").parse_args()
    tokens, rounds, scale = (256, 2, 8) if args.quick else (2048, 7, 1)
    rows = {
        name: time_shape(d_in // scale, d_out // scale, tokens, 1 / 64, rounds)
        for name, (d_in, d_out) in SHAPES.items()
    }
    result = {
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads()},
        "tokens": tokens,
        "density": 1 / 64,
        "rounds": rounds,
        "shapes": {k: list(v) for k, v in SHAPES.items()} if scale == 1 else "quick",
        "rows": rows,
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
