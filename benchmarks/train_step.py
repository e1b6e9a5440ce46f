"""Benchmark: cost of a sparse training step relative to a dense one, and of the top-k projection.

Side by side in one process, interleaved so machine noise hits both alike, it times

* a dense step (weight density 1, no AbsTopK) and a sparse step (paper densities ef=4,
  pfrac=1/4: block matrices 1/64, embeddings and biases 1/16; AbsTopK at the 8 paper sites;
  projection included) of the same shape at two widths, the sparse step with AbsTopK on MLP
  neurons only (the ``demo`` preset's sites), and the sparse step with every product dense
  (``sparse_matmul_max_density=0``: what the sparse kernels of ``sparse_matmul.py`` save);
* the same four at d_model 1024 with the paper's context (n_ctx 256): the projection's cost is
  per step, the forward/backward's per token, so the ratio falls as a step carries more tokens;
* the projection alone: ``torch.topk`` per matrix (naive) versus ``topk_weight_indices``.

It writes a JSON of medians and ratios (the target: sparse/dense <= 1.25 at d_model 1024).

    python benchmarks/train_step.py --out benchmarks/results/train_step.json
"""

import argparse
import platform
from dataclasses import replace
from pathlib import Path

import torch
from report_json import emit  # benchmarks/report_json.py
from timing import interleaved_medians  # benchmarks/timing.py

from hooks.topk import n_keep, naive_topk_weight_mask, topk_weight_indices
from hooks.weight_sparsity import NEURON_FAN_DIM
from sparse_lens import HookedSparseTransformer, SparseTransformerConfig
from sparse_lens.model.sparsity import density_for, param_role
from sparse_lens.training.sparse import TrainConfig, make_optimizer, train_step

VARIANTS = ("dense", "sparse", "sparse_mlp_only", "sparse_dense_kernels")


def build(
    d_model: int, sparse: bool, n_layers: int, n_ctx: int, mlp_only: bool = False
) -> HookedSparseTransformer:
    sites = {"act_sparse_sites": ("mlp_neuron",)} if mlp_only else {}
    cfg = SparseTransformerConfig(
        d_model=d_model,
        d_head=16,
        n_heads=d_model // 16,
        d_mlp=4 * d_model,
        n_layers=n_layers,
        n_ctx=n_ctx,
        d_vocab=2048,
        seed=0,
        afrac=0.25 if sparse else 1.0,
        weight_density=1 / 64 if sparse else 1.0,
        embed_density=1 / 16 if sparse else 1.0,
        **sites,
    )
    return HookedSparseTransformer(cfg)


def time_steps(d_model: int, n_steps: int, batch: int, n_ctx: int, n_layers: int) -> dict:
    tcfg = TrainConfig(steps=10**6, batch_size=batch, anneal_start=0.0, anneal_end=0.0)
    runs = {}
    for v in VARIANTS:
        model = build(d_model, v != "dense", n_layers, n_ctx, mlp_only=v == "sparse_mlp_only")
        vcfg = replace(tcfg, sparse_matmul_max_density=0.0) if v.endswith("kernels") else tcfg
        runs[v] = (model, make_optimizer(model, vcfg), vcfg)
    tokens = torch.randint(0, 2048, (batch, n_ctx), generator=torch.Generator().manual_seed(0))
    calls = {
        v: lambda r=runs[v]: train_step(r[0], r[0], r[1], tokens, 10**5, r[2]) for v in VARIANTS
    }
    med = interleaved_medians(calls, n_steps, warmup=2)
    return {f"{v}_step_s": med[v] for v in VARIANTS} | {
        f"{v}_over_dense": med[v] / med["dense"] for v in VARIANTS[1:]
    }


def time_projection(d_model: int, repeats: int) -> dict:
    model = build(d_model, True, 1, 64)

    def project_all(naive: bool) -> None:
        for name, p in model.named_parameters():
            role = param_role(name)
            density = density_for(role, 1 / 64, 1 / 16)
            if density >= 1:
                continue
            k = n_keep(p.numel(), density)
            if naive:
                naive_topk_weight_mask(p, k)
            else:
                fan = NEURON_FAN_DIM.get(name.rsplit(".", 1)[-1]) if role == "matrix" else None
                topk_weight_indices(p, k, fan_dim=fan, min_per_neuron=4)

    med = interleaved_medians(
        {"naive": lambda: project_all(True), "ours": lambda: project_all(False)},
        repeats,
        warmup=0,
    )
    n, o = med["naive"], med["ours"]
    return {"naive_topk_s": n, "ours_s": o, "ours_over_naive": o / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/train_step.json"))
    parser.add_argument("--steps", type=int, default=9, help="timed steps per variant")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--n-ctx", type=int, default=64)
    parser.add_argument("--n-layers", type=int, default=2)
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 1024])
    parser.add_argument(
        "--paper-n-ctx",
        type=int,
        default=256,
        help="context of the extra d_model 1024 row (0: skip)",
    )
    args = parser.parse_args()
    result = {
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads()},
        "shape": {"batch": args.batch, "n_ctx": args.n_ctx, "n_layers": args.n_layers},
        "steps": {
            str(w): time_steps(w, args.steps, args.batch, args.n_ctx, args.n_layers)
            for w in args.widths
        },
        "projection": {str(w): time_projection(w, 5) for w in args.widths},
    }
    if args.paper_n_ctx:
        result["steps_paper_n_ctx"] = {
            "shape": {"d_model": 1024, "batch": args.batch, "n_ctx": args.paper_n_ctx},
            **time_steps(
                1024, max(3, args.steps // 2), args.batch, args.paper_n_ctx, args.n_layers
            ),
        }
    widest = str(max(args.widths))
    result["target"] = {
        "sparse_over_dense_at_widest": result["steps"][widest]["sparse_over_dense"],
        "sparse_mlp_only_over_dense_at_widest": result["steps"][widest][
            "sparse_mlp_only_over_dense"
        ],
        "max": 1.25,
        "met": result["steps"][widest]["sparse_over_dense"] <= 1.25,
        "sparse_dense_kernels_over_dense_at_widest": result["steps"][widest][
            "sparse_dense_kernels_over_dense"
        ],
    }
    if args.paper_n_ctx:
        paper = result["steps_paper_n_ctx"]
        result["target"]["sparse_over_dense_at_paper_n_ctx"] = paper["sparse_over_dense"]
        result["target"]["met_at_paper_n_ctx"] = paper["sparse_over_dense"] <= 1.25
    args.out.parent.mkdir(parents=True, exist_ok=True)
    emit(result, args.out)


if __name__ == "__main__":
    main()
