"""Benchmark: the floors under issue #29's speed goals, the parts of a sparse step that sparse
kernels cannot shrink, measured against the dense step in one run.

**Training** (``train_step.py``'s shape at d_model 1024: batch 8, n_ctx 64, 2 layers). The
paper's recipe keeps every weight gradient and both Adam moments dense, so that a zeroed weight
can grow back into the top-k (§2; App. B: pruning the moments hurt optimisation), normalises the
gradient's RMS and projects every matrix to its top-k after each step. Whatever the forward and
input-gradient kernels do, a sparse step still pays, each timed alone:

* ``weight_grad_s``: the dense weight gradient ``x^T gy`` of every weight matrix (batch x n_ctx
  tokens, random inputs of the real shapes; what each matrix's backward computes),
* ``adam_fused_s``: Adam over every entry with torch's fused CPU kernel (the project's Adam,
  torch's default implementation, is ``adam_s``),
* ``grad_rms_s``: the gradient RMS normalisation, ``projection_s``: the top-k projection
  (``project_``), and, not part of the recipe, ``finite_check_s`` (the NaN/inf guard).

``floor_over_dense_fused_adam`` = (weight gradients + fused Adam + normalisation + projection)
/ a dense step that uses the same fused Adam (like for like). Above 0.5, faster product kernels
alone cannot meet the goal "sparse / dense <= 0.5"; a cheaper projection or a different recipe
would be needed.

**Inference** (``inference.py``'s shape at d_model 1024: batch 4, n_ctx 256, 4 layers). The
sparse forward is timed whole, and every weight product in it standalone on random inputs of
its real shape, through the kernel the model uses (CSR where it holds a copy, else dense).
``non_product_s`` = forward - products is what the sparse model spends outside its weight
products: attention, AbsTopK, norms, embedding. ``max_speedup`` = dense forward /
non_product_s bounds dense / sparse for free weight products; below 3 the goal "sparse
inference >= 3x" cannot be met by product kernels alone. The dense model's own products, timed
the same way, give what it spends outside them (``dense_non_product_s``: attention, norms,
embedding, no AbsTopK); ``max_speedup_free_abstopk`` = dense forward / that bounds the speed-up
even if the sparse model's AbsTopK selections cost nothing as well.

    python benchmarks/step_floor.py --out benchmarks/results/step_floor.json
    python benchmarks/step_floor.py --quick   # small shapes (smoke test)
"""

import platform
from collections.abc import Callable

import inference  # benchmarks/inference.py
import torch
import train_step  # benchmarks/train_step.py
from report_json import benchmark_parser, emit  # benchmarks/report_json.py
from timing import interleaved_medians  # benchmarks/timing.py

from hooks.weight_sparsity import all_finite, normalize_grad_rms_, project_
from sparse_lens import HookedSparseTransformer
from sparse_lens.model.sparse_matmul import LAYOUTS, as_matrix, csr_matmul, refresh_csr_weights
from sparse_lens.model.sparsity import sparse_params
from sparse_lens.training.sparse import TrainConfig, densities_at, make_optimizer
from sparse_lens.training.sparse import train_step as one_step


def product_calls(
    model: HookedSparseTransformer, tokens: int, grad: bool
) -> dict[str, Callable[[], object]]:
    """One standalone call per weight matrix: its forward product through the model's kernel,
    or (``grad``) its dense weight gradient ``x^T gy``."""
    g = torch.Generator().manual_seed(0)
    calls: dict[str, Callable[[], object]] = {}
    for mod_name, module in model.named_modules():
        store = getattr(module, "csr_weights", {})
        for name, p in module.named_parameters(recurse=False):
            if name not in LAYOUTS:
                continue
            M = as_matrix(p.detach(), LAYOUTS[name]).contiguous()
            x = torch.randn(tokens, M.shape[0], generator=g)
            if grad:
                xt, gy = x.t().contiguous(), torch.randn(tokens, M.shape[1], generator=g)
                calls[f"{mod_name}.{name}"] = lambda xt=xt, gy=gy: xt @ gy
            elif name in store:
                W, csr = p.detach(), store[name]
                calls[f"{mod_name}.{name}"] = lambda x=x, W=W, c=csr: csr_matmul(x, W, c)
            else:
                calls[f"{mod_name}.{name}"] = lambda x=x, M=M: x @ M
    return calls


def fused_adam(model: torch.nn.Module, tcfg: TrainConfig) -> torch.optim.Adam:
    """``make_optimizer``'s Adam (same betas, eps, lr) with torch's fused kernel."""
    betas = (tcfg.beta1, tcfg.beta2)
    return torch.optim.Adam(
        model.parameters(), lr=tcfg.lr, betas=betas, eps=tcfg.adam_eps, fused=True
    )


def training_floor(d_model: int, batch: int, n_ctx: int, n_layers: int, rounds: int) -> dict:
    """Medians of the dense step (the project's Adam, and fused Adam), the sparse step, and each
    part of the sparse step that does not depend on the product kernels."""
    tcfg = TrainConfig(steps=10**6, batch_size=batch, anneal_start=0.0, anneal_end=0.0)
    tokens = torch.randint(0, 2048, (batch, n_ctx), generator=torch.Generator().manual_seed(0))
    runs = {}
    for kind in ("dense", "dense_fused_adam", "sparse"):
        model = train_step.build(d_model, kind == "sparse", n_layers, n_ctx)
        opt = fused_adam(model, tcfg) if kind.endswith("fused_adam") else None
        runs[kind] = (model, opt or make_optimizer(model, tcfg))
    sparse, opt = runs["sparse"]
    one_step(sparse, sparse, opt, tokens, 10**5, tcfg)  # gradients and moments in place
    params, fused = list(sparse.parameters()), fused_adam(sparse, tcfg)
    densities = dict(zip(("matrix", "embed"), densities_at(10**5, tcfg, sparse.cfg), strict=True))
    grads = product_calls(sparse, batch * n_ctx, grad=True)
    calls: dict[str, Callable[[], object]] = {
        f"{k}_step_s": lambda r=runs[k]: one_step(r[0], r[0], r[1], tokens, 10**5, tcfg)
        for k in runs
    }
    calls |= {
        "weight_grad_s": lambda: [fn() for fn in grads.values()],
        "adam_s": opt.step,  # the project's (torch's default implementation on CPU)
        "adam_fused_s": fused.step,
        "grad_rms_s": lambda: normalize_grad_rms_(params),
        "projection_s": lambda: project_(
            sparse_params(sparse), densities, min_per_neuron=sparse.cfg.min_nonzero_per_neuron
        ),
        "finite_check_s": lambda: all_finite(params),
    }
    med = interleaved_medians(calls, rounds, warmup=2)
    floor = sum(med[k] for k in ("weight_grad_s", "adam_fused_s", "grad_rms_s", "projection_s"))
    return med | {
        "sparse_over_dense": med["sparse_step_s"] / med["dense_step_s"],
        "floor_s": floor,
        "floor_over_dense_fused_adam": floor / med["dense_fused_adam_step_s"],
        "weight_matrices": len(grads),
    }


def inference_floor(d_model: int, batch: int, n_ctx: int, n_layers: int, rounds: int) -> dict:
    """Medians of the dense and sparse forward and of the sparse forward's weight products."""
    dense = inference.build(d_model, False, n_layers, n_ctx)
    sparse = inference.build(d_model, True, n_layers, n_ctx)
    in_use = refresh_csr_weights(sparse)
    tokens = torch.randint(0, 2048, (batch, n_ctx), generator=torch.Generator().manual_seed(0))
    products = product_calls(sparse, batch * n_ctx, grad=False)
    dense_products = product_calls(dense, batch * n_ctx, grad=False)
    calls: dict[str, Callable[[], object]] = {
        "dense_forward_s": lambda: dense(tokens),
        "sparse_forward_s": lambda: sparse(tokens),
        "sparse_products_s": lambda: [fn() for fn in products.values()],
        "dense_products_s": lambda: [fn() for fn in dense_products.values()],
    }
    with torch.no_grad():
        med = interleaved_medians(calls, rounds)
    rest = med["sparse_forward_s"] - med["sparse_products_s"]
    shared = med["dense_forward_s"] - med["dense_products_s"]
    return med | {
        "dense_over_sparse": med["dense_forward_s"] / med["sparse_forward_s"],
        "non_product_s": rest,
        "non_product_share": rest / med["sparse_forward_s"],
        "max_speedup": med["dense_forward_s"] / rest,
        "dense_non_product_s": shared,
        "max_speedup_free_abstopk": med["dense_forward_s"] / shared,
        "csr_matrices_in_use": in_use,
        "weight_matrices": len(products),
    }


def main() -> None:
    args = benchmark_parser(__doc__, quick="small shapes, few rounds").parse_args()
    d, rounds = (256, 2) if args.quick else (1024, 7)
    train = {"d_model": d, "batch": 8, "n_ctx": 64, "n_layers": 2}
    infer = {"d_model": d, "batch": 4, "n_ctx": 64 if args.quick else 256, "n_layers": 4}
    t = training_floor(**train, rounds=rounds)
    i = inference_floor(**infer, rounds=rounds)
    result = {
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads()},
        "densities": {"weight": 1 / 64, "embed": 1 / 16, "afrac": 0.25},
        "rounds": rounds,
        "training": {"shape": train, **t},
        "inference": {"shape": infer, **i},
        "goals": None  # the goals are set at d_model 1024: the quick shapes judge nothing
        if args.quick
        else {
            "training_sparse_over_dense_max": 0.5,
            "training_reachable_with_dense_gradients": t["floor_over_dense_fused_adam"] <= 0.5,
            "inference_speedup_min": 3.0,
            "inference_reachable_by_product_kernels": i["max_speedup"] >= 3.0,
        },
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
