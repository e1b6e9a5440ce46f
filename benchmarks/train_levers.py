"""Benchmark: levers on the training step at the demo preset's size, on this machine's CPU.

Each lever is timed against the demo's own step (``baseline``: eager, the process's default
thread count, the preset's ``n_ctx`` and batch) interleaved in one process, so machine noise hits
both alike; the JSON holds medians and ratios ``lever_over_baseline`` (below 1 pays):

* ``threads_1``: ``torch.set_num_threads(1)`` (the default is one thread per core);
* ``compile``: ``torch.compile`` of the forward (inductor, default mode) on the CPU; the
  compile time is reported apart, and a compile that fails is recorded with its error;
* ``half_ctx``: the same tokens a step as windows of half the context (twice the batch);
* ``no_projection``: the step without the top-k projection and gradient hooks (the cost of
  weight sparsity itself; not a usable setting, the yardstick for the others).

    python benchmarks/train_levers.py --out benchmarks/results/train_levers.json
    python benchmarks/train_levers.py --quick   # tiny preset, a few steps (smoke test)
"""

import contextlib
import dataclasses
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from report_json import benchmark_parser, emit  # benchmarks/report_json.py
from timing import interleaved_medians  # benchmarks/timing.py

from sparse_lens import HookedSparseTransformer
from sparse_lens.training.presets import get_preset
from sparse_lens.training.sparse import make_optimizer, train_step

D_VOCAB = 2048  # the stdlib tokenizer's vocabulary


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def variant(preset: str, *, ctx_div: int = 1, compiled: bool = False, project: bool = True):
    """A step function on a fresh model of ``preset`` and its token batch."""
    model_cfg, tcfg = get_preset(preset).build(D_VOCAB)
    model_cfg = dataclasses.replace(model_cfg, n_ctx=model_cfg.n_ctx // ctx_div)
    tcfg = dataclasses.replace(tcfg, anneal_start=0.0, anneal_end=0.0)
    model = HookedSparseTransformer(model_cfg).train()
    opt = make_optimizer(model, tcfg)
    g = torch.Generator().manual_seed(0)
    shape = (tcfg.batch_size * ctx_div, model_cfg.n_ctx)
    tokens = torch.randint(0, D_VOCAB, shape, generator=g)
    runner = torch.compile(model) if compiled else model

    def step() -> None:
        if project:
            train_step(runner, model, opt, tokens, 10**5, tcfg)  # type: ignore[arg-type]
        else:
            opt.zero_grad(set_to_none=True)
            runner(tokens, return_type="loss").backward()
            opt.step()

    return step


def one_thread(fn: Callable[[], None]) -> Callable[[], None]:
    """``fn`` run under ``torch.set_num_threads(1)``, the old count restored after."""

    def run() -> None:
        with threads(1):
            fn()

    return run


def timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(preset: str, n_steps: int) -> dict:
    steps = {
        "baseline": variant(preset),
        "half_ctx": variant(preset, ctx_div=2),
        "no_projection": variant(preset, project=False),
        "threads_1": variant(preset),
    }
    result: dict = {}
    try:
        compiled = variant(preset, compiled=True)
        result["compile_s"] = timed(compiled)  # the first call compiles
        steps["compile"] = compiled
    except Exception as e:  # a lever that does not run is a result too  # noqa: BLE001
        result["compile_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
    steps["threads_1"] = one_thread(steps["threads_1"])
    med = interleaved_medians(steps, n_steps, warmup=2)
    result |= {f"{v}_step_s": s for v, s in med.items()}
    result |= {f"{v}_over_baseline": med[v] / med["baseline"] for v in med if v != "baseline"}
    return result


def main() -> None:
    parser = benchmark_parser(
        __doc__,
        quick="tiny preset, 2 steps",
        default_out=Path("benchmarks/results/train_levers.json"),
    )
    parser.add_argument("--steps", type=int, default=9, help="timed steps per variant")
    args = parser.parse_args()
    preset = "tiny" if args.quick else "demo"
    result = {
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads()},
        "preset": preset,
        **run(preset, 2 if args.quick else args.steps),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    emit(result, args.out)


if __name__ == "__main__":
    main()
