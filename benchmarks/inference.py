"""Benchmark: forward-only speed of a weight-sparse model against a dense one of the same shape.

The analysis workloads of this package (caching activations over a corpus, task tables, the
faithfulness report's many ablated forwards) run the model forward only. Side by side in one
process, interleaved so machine noise hits all alike, it times three models of one shape:

* ``dense``: weight density 1, no AbsTopK (the dense baseline's model);
* ``sparse_dense_kernels``: the paper's densities (block matrices 1/64, embeddings 1/16, AbsTopK
  at the paper's sites), every product a dense matmul with the zeros in it;
* ``sparse``: the same weights with CSR copies of the large, sparse matrices
  (``refresh_csr_weights``, ``sparse_lens/model/sparse_matmul.py``), as the training loop uses.

Each is timed on ``model(tokens)`` and on ``run_with_cache`` of every residual stream and MLP
post-activation (``torch.no_grad``), at d_model 256 and 1024, batch x n_ctx tokens. It writes
a JSON of medians and the ratios dense / sparse (speed-up; the goal of issue #29 is >= 3 at
density 1/64, d_model 1024).

    python benchmarks/inference.py --out benchmarks/results/inference.json
    python benchmarks/inference.py --quick    # small shapes, a smoke test
"""

import argparse
import platform
from collections.abc import Callable

import torch
import train_step  # benchmarks/train_step.py: the same model family
from report_json import benchmark_parser, emit  # benchmarks/report_json.py
from timing import interleaved_medians  # benchmarks/timing.py

from hooks.weight_sparsity import project_
from sparse_lens import HookedSparseTransformer
from sparse_lens.model.sparse_matmul import clear_csr_weights, refresh_csr_weights
from sparse_lens.model.sparsity import sparse_params


def build(d_model: int, sparse: bool, n_layers: int, n_ctx: int) -> HookedSparseTransformer:
    """``train_step.build``'s model in eval mode; ``sparse``: its weights projected to their
    top-k magnitudes at the paper's densities (``hooks.weight_sparsity.project_``)."""
    model = train_step.build(d_model, sparse, n_layers, n_ctx).eval()
    if sparse:  # a trained model's weights are projected; a fresh one's are not yet
        cfg = model.cfg
        densities = {"matrix": cfg.weight_density, "embed": cfg.embed_density}
        project_(sparse_params(model), densities, min_per_neuron=cfg.min_nonzero_per_neuron)
    return model


def time_width(d_model: int, args: argparse.Namespace) -> dict[str, float]:
    """Medians (seconds per call) of each variant's forward and cached forward, interleaved."""
    models = {
        "dense": build(d_model, False, args.n_layers, args.n_ctx),
        "sparse_dense_kernels": build(d_model, True, args.n_layers, args.n_ctx),
        "sparse": build(d_model, True, args.n_layers, args.n_ctx),
    }
    clear_csr_weights(models["sparse_dense_kernels"])
    in_use = refresh_csr_weights(models["sparse"])
    tokens = torch.randint(
        0, 2048, (args.batch, args.n_ctx), generator=torch.Generator().manual_seed(0)
    )
    wanted = lambda name: name.endswith("hook_resid_post") or name.endswith("mlp.hook_post")  # noqa: E731
    calls: dict[str, Callable[[], object]] = {}
    for name, model in models.items():
        calls[f"{name}_forward_s"] = lambda m=model: m(tokens)
        calls[f"{name}_cache_s"] = lambda m=model: m.run_with_cache(tokens, names_filter=wanted)
    with torch.no_grad():
        row = interleaved_medians(calls, args.rounds)
    for what in ("forward", "cache"):
        row[f"dense_over_sparse_{what}"] = row[f"dense_{what}_s"] / row[f"sparse_{what}_s"]
        row[f"sparse_dense_kernels_over_sparse_{what}"] = (
            row[f"sparse_dense_kernels_{what}_s"] / row[f"sparse_{what}_s"]
        )
    row["csr_matrices_in_use"] = in_use
    return row


def main() -> None:
    args = benchmark_parser(__doc__, quick="small shapes, few rounds").parse_args()
    widths = (256,) if args.quick else (256, 1024)
    args.n_layers, args.batch, args.n_ctx = (1, 1, 32) if args.quick else (4, 4, 256)
    args.rounds = 2 if args.quick else 5
    rows = {str(w): time_width(w, args) for w in widths}
    widest = rows[str(max(widths))]
    result = {
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads()},
        "shape": {"n_layers": args.n_layers, "batch": args.batch, "n_ctx": args.n_ctx},
        "densities": {"weight": 1 / 64, "embed": 1 / 16, "afrac": 0.25},
        "rounds": args.rounds,
        "widths": rows,
        "target": {
            "dense_over_sparse_forward_at_widest": widest["dense_over_sparse_forward"],
            "dense_over_sparse_cache_at_widest": widest["dense_over_sparse_cache"],
            "min": 3.0,
            "met": min(widest["dense_over_sparse_forward"], widest["dense_over_sparse_cache"])
            >= 3.0,
        },
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
