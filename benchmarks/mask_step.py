"""Benchmark: one mask-training step over one plain forward and backward of the same batch.

A mask-training step (``Pruner.train_loss`` under the node-mask hooks that ``learn_masks``
installs once, every node location masked with its mean-ablation value, then backward to the
mask parameters) and a plain step (the model's own forward and backward to its weights, same
batch, same task loss) are timed interleaved in one process so machine noise hits both alike.
It writes one JSON of medians and the ratio (goal: mask / plain <= 1.5), and for comparison
the step as it was before (``rebuilt``: fresh ``node_mask`` hooks through ``run_with_hooks``
every step). ``mask`` recomputes the RMSNorm scales (``--live-norms``); ``frozen`` holds them
at the full model's (``PruneConfig(freeze_norms=True)``, the default since the norm-cheating
measurements of the README), whose cost must stay within 1.2x of the live step
(``frozen_over_mask``) so that the honest setting is not the slow one; ``frozen_per_step`` is
how frozen norms were done before (the full model's scales recomputed by an extra forward pass
every step).

    python benchmarks/mask_step.py --out benchmarks/results/mask_step.json
    python benchmarks/mask_step.py --quick            # tiny model, a few repeats (smoke test)
    python benchmarks/mask_step.py --quick --profile  # cProfile of the mask step (hotspots)
"""

import cProfile
import platform
import pstats
import sys

import torch
from report_json import benchmark_parser, emit  # benchmarks/report_json.py
from timing import interleaved_medians  # benchmarks/timing.py

from sparse_lens import HookedSparseTransformer, SparseTransformerConfig
from sparse_lens.circuits.ablation import make_ablation
from sparse_lens.circuits.masks import MaskHolder, PruneConfig, Pruner, mask_hooks
from sparse_lens.tasks.task import TaskBatch, mean_task_loss


def build(quick: bool) -> tuple[HookedSparseTransformer, TaskBatch]:
    shape = (
        dict(d_model=16, d_head=4, n_heads=4, n_layers=2, d_mlp=32, d_vocab=64, n_ctx=16)
        if quick
        else dict(
            d_model=256, d_head=16, n_heads=16, n_layers=4, d_mlp=1024, d_vocab=2048, n_ctx=64
        )
    )
    cfg = SparseTransformerConfig(**shape, afrac=0.25, weight_density=1 / 16, seed=0)
    model = HookedSparseTransformer(cfg).eval()
    g = torch.Generator().manual_seed(0)
    n = 64
    tokens = torch.randint(0, cfg.d_vocab, (n, cfg.n_ctx), generator=g)
    batch = TaskBatch(
        tokens=tokens,
        last=torch.full((n,), cfg.n_ctx - 1),
        correct=torch.full((n,), 3),
        incorrect=torch.full((n,), 4),
        contexts=[""] * n,
    )
    return model, batch


def run(quick: bool, repeats: int, profile: bool) -> dict:
    model, batch = build(quick)
    ablation = make_ablation("mean", model, batch.tokens[:16])
    pairs = len(batch) // 2
    pruner = Pruner(
        model, batch, batch, ablation, PruneConfig(batch_pairs=pairs, freeze_norms=False)
    )
    frozen = Pruner(
        model, batch, batch, ablation, PruneConfig(batch_pairs=pairs, freeze_norms=True)
    )
    taus = {h: torch.nn.Parameter(t) for h, t in pruner.init_taus(torch.Generator()).items()}
    idx = torch.arange(len(batch))
    live = MaskHolder(pruner.locs, ablation)
    frozen.frozen_scales(batch)  # once per batch, as learn_masks does before its first step

    def step(p: Pruner, fresh_scales: bool = False) -> None:
        """One mask-training step of ``p`` (live or frozen norms); ``fresh_scales``: the full
        model's scales recomputed first, as every frozen-norm step did before they were cached."""
        for q in model.parameters():
            q.requires_grad_(False)
        if fresh_scales:
            p._scales.clear()
            live.masks = {}
            p.frozen_scales(batch)
        with model.hooks(fwd_hooks=live.hooks()):
            masks = p.masks_of(taus)
            loss = (
                p.train_loss(live, masks, batch, idx) + 1e-4 * torch.cat(list(masks.values())).sum()
            )
            loss.backward()
        for t in taus.values():
            t.grad = None

    def mask_step() -> None:
        step(pruner)

    def frozen_step(per_step: bool = False) -> None:
        step(frozen, fresh_scales=per_step)

    def rebuilt_step() -> None:  # before: fresh hooks through run_with_hooks every step
        for q in model.parameters():
            q.requires_grad_(False)
        masks = pruner.masks_of(taus)
        logits = model.run_with_hooks(batch.tokens, fwd_hooks=mask_hooks(masks, ablation))
        loss = mean_task_loss(logits, batch)
        (loss + 1e-4 * torch.cat(list(masks.values())).sum()).backward()
        for t in taus.values():
            t.grad = None

    def plain_step() -> None:
        for q in model.parameters():
            q.requires_grad_(True)
        loss = mean_task_loss(model(batch.tokens), batch)
        loss.backward()
        model.zero_grad(set_to_none=True)

    mask_step(), rebuilt_step(), plain_step()  # warm-up
    if profile:
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(repeats):
            mask_step()
        prof.disable()
        pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(20)
    med = interleaved_medians(
        {
            "mask": mask_step,
            "rebuilt": rebuilt_step,
            "plain": plain_step,
            "frozen": frozen_step,
            "frozen_per_step": lambda: frozen_step(per_step=True),
        },
        repeats,
        warmup=0,  # the warm-up calls above
    )
    mask, plain, rebuilt = med["mask"], med["plain"], med["rebuilt"]
    cfg = model.cfg
    return {
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads()},
        "shape": {
            "d_model": cfg.d_model,
            "n_layers": cfg.n_layers,
            "d_mlp": cfg.d_mlp,
            "batch": len(batch),
            "n_ctx": cfg.n_ctx,
            "nodes": pruner.n_nodes,
            "repeats": repeats,
        },
        "mask_step_s": mask,
        "plain_step_s": plain,
        "rebuilt_hooks_step_s": rebuilt,
        "mask_over_plain": mask / plain,
        "rebuilt_hooks_over_plain": rebuilt / plain,
        "frozen_norms_step_s": med["frozen"],
        "frozen_per_step_s": med["frozen_per_step"],
        "frozen_over_mask": med["frozen"] / mask,
        "frozen_per_step_over_mask": med["frozen_per_step"] / mask,
    }


def main() -> None:
    parser = benchmark_parser(__doc__, quick="tiny model (smoke test)")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps of each kind")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the mask step")
    args = parser.parse_args()
    result = run(args.quick, args.repeats or (5 if args.quick else 30), args.profile)
    emit(result, args.out)


if __name__ == "__main__":
    main()
