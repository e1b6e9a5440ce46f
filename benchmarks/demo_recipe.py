"""Benchmark: which demo recipe solves the most tasks per CPU-minute of training.

Each variant is the ``demo`` preset with some fields replaced (model shape, steps, batch, idiom
share and kinds, training settings); it is trained with ``sparse-lens train``'s own code
(``train_run``) into ``--work/NAME`` and scored with ``task_table`` on the validation split (100
examples a task; the demo chooses its tasks there) and the test split (200). Variants run one
after another in one process, so only one trains at a time. A variant whose folder already
holds a trained model is scored again, not retrained (its recorded training time is kept).

It writes one JSON: per variant the settings, training seconds (wall clock of ``train_run``,
data preparation included), tokens, the tasks solved at the paper's target 0.15 on each split,
and every task loss; and per variant the ratios to the first of the run (``baseline`` by default): training seconds
and solved tasks per training minute.

    python benchmarks/demo_recipe.py --out benchmarks/results/demo_recipe.json --work /tmp/recipes
    python benchmarks/demo_recipe.py --variants baseline two_layers ...   # a subset

A run of a subset keeps the file's rows of the other variants.
"""

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from report_json import emit  # benchmarks/report_json.py

from sparse_lens.vocab import PAPER_TARGET

# The previous demo preset, which every variant starts from (so the variants stay what was
# measured whatever the demo preset is now): 4 layers, n_ctx 128, block density 1/8,
# 1000 x 16 windows, 35% idioms (literals).
PREVIOUS_DEMO: dict[str, Any] = {
    "model": {"n_layers": 4, "n_ctx": 128, "weight_density": 0.125, "embed_density": 0.25},
    "train": {"steps": 1000, "batch_size": 16},
    "idiom_frac": 0.35,
    "idiom_kinds": ["literals"],
}
# name -> fields replaced in PREVIOUS_DEMO: "model"/"train" (PresetModel/PresetTrain fields),
# "tcfg" (other TrainConfig fields), and Preset fields (idiom_frac, idiom_kinds)
BOTH = {"idiom_kinds": ["literals", "statements"]}
DEMO: dict[str, Any] = {  # the demo preset now
    "train": {"steps": 750, "batch_size": 32},
    "model": {"n_ctx": 64, "n_layers": 2, "weight_density": 0.25},
    "idiom_frac": 0.5,
    **BOTH,
}
VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {"train": {"steps": 450}},
    "statements_50": {"train": {"steps": 450}, "idiom_frac": 0.5, **BOTH},
    "statements_70": {"train": {"steps": 450}, "idiom_frac": 0.7, **BOTH},
    "ctx64": {
        "train": {"steps": 450, "batch_size": 32}, "model": {"n_ctx": 64},
        "idiom_frac": 0.5, **BOTH,
    },
    "ctx64_lr2x": {
        "train": {"steps": 450, "batch_size": 32, "lr": 0.0256}, "model": {"n_ctx": 64},
        "idiom_frac": 0.5, **BOTH,
    },
    "ctx64_anneal25": {
        "train": {"steps": 450, "batch_size": 32}, "tcfg": {"anneal_end": 0.25},
        "model": {"n_ctx": 64}, "idiom_frac": 0.5, **BOTH,
    },
    "ctx64_idioms70": {
        "train": {"steps": 450, "batch_size": 32}, "model": {"n_ctx": 64},
        "idiom_frac": 0.7, **BOTH,
    },
    "two_layers": {
        "train": {"steps": 750, "batch_size": 32}, "model": {"n_ctx": 64, "n_layers": 2},
        "idiom_frac": 0.5, **BOTH,
    },
    "two_layers_1000": {
        "train": {"steps": 1000, "batch_size": 32}, "model": {"n_ctx": 64, "n_layers": 2},
        "idiom_frac": 0.5, **BOTH,
    },
    "two_layers_idioms65": {
        "train": {"steps": 750, "batch_size": 32}, "model": {"n_ctx": 64, "n_layers": 2},
        "idiom_frac": 0.65, **BOTH,
    },
    "two_layers_density4": DEMO,
    # variants of the demo preset (two_layers_density4)
    "demo_seed1": DEMO | {"seed": 1},
    "demo_idioms70": DEMO | {"idiom_frac": 0.7},
    "demo_900": DEMO | {"train": {"steps": 900, "batch_size": 32}},
    "demo_lr_half": DEMO | {"train": {"steps": 750, "batch_size": 32, "lr": 0.0064}},
    "demo_density2": DEMO | {"model": DEMO["model"] | {"weight_density": 0.5}},
}  # fmt: skip


def preset_of(spec: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``PREVIOUS_DEMO`` with ``spec``'s fields replaced (on the ``demo`` preset's other
    fields), and the extra TrainConfig fields."""
    from sparse_lens.training.presets import get_preset

    spec = PREVIOUS_DEMO | spec
    base = get_preset("demo")
    model_fields = PREVIOUS_DEMO["model"] | spec.pop("model", {})
    model = dataclasses.replace(base.model, **model_fields)
    train = dataclasses.replace(base.train, **(PREVIOUS_DEMO["train"] | spec.pop("train", {})))
    tcfg = spec.pop("tcfg", {})
    if "idiom_kinds" in spec:
        spec["idiom_kinds"] = tuple(spec["idiom_kinds"])
    return dataclasses.replace(base, model=model, train=train, **spec), tcfg


def train_variant(spec: dict[str, Any], out: Path) -> float:
    """Train the variant into ``out`` with ``train``'s own code (``train_run`` given the
    variant's preset and TrainConfig fields); returns the wall-clock seconds."""
    from analyses.cli.train import TrainSettings, train_run

    seed = spec.get("seed", 0)
    preset, tcfg = preset_of({k: v for k, v in spec.items() if k != "seed"})
    t0 = time.perf_counter()
    settings = TrainSettings(
        preset=preset.name,
        out=out,
        quiet=True,
        seed=seed,
        custom_preset=preset,
        train_overrides=tcfg,
    )
    train_run(settings)
    return time.perf_counter() - t0


def score(model_dir: Path) -> dict[str, dict[str, float]]:
    """Task losses on the validation (100 examples) and test (200) splits."""
    from sparse_lens import HookedSparseTransformer
    from sparse_lens.tasks.task import TASK_NAMES, get_task, task_table

    model = HookedSparseTransformer.from_pretrained(model_dir).eval()
    tasks = [get_task(n) for n in TASK_NAMES]
    return {
        split: {k: v["loss"] for k, v in task_table(model, tasks, split, n).items()}
        for split, n in (("val", 100), ("test", 200))
    }


def run_variant(name: str, work: Path) -> dict[str, Any]:
    spec = VARIANTS[name]
    out = work / name
    seconds_file = out / "train_seconds"
    if not (out / "final" / "config.json").exists():
        seconds_file.parent.mkdir(parents=True, exist_ok=True)
        seconds_file.write_text(str(train_variant(spec, out)))
    preset, _ = preset_of({k: v for k, v in spec.items() if k != "seed"})
    losses = score(out / "final")
    row: dict[str, Any] = {
        "spec": spec,
        "train_seconds": float(seconds_file.read_text()) if seconds_file.exists() else None,
        "tokens": preset.train.steps * preset.train.batch_size * preset.model.n_ctx,
    }
    for split, table in losses.items():
        row[f"solved_{split}"] = sorted(k for k, v in table.items() if v <= PAPER_TARGET)
        row[f"loss_{split}"] = {k: round(v, 4) for k, v in table.items()}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/demo_recipe.json"))
    parser.add_argument("--work", type=Path, required=True, help="folder for the trained models")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    old = json.loads(args.out.read_text())["variants"] if args.out.exists() else {}
    # the rows of variants not run this time are kept from the file (their specs unchanged)
    rows = {k: v for k, v in old.items() if k in VARIANTS and k not in args.variants}
    rows |= {name: run_variant(name, args.work) for name in args.variants}
    first = rows[args.variants[0]]
    for row in rows.values():
        if row["train_seconds"]:  # None: trained before the timing was recorded
            row["solved_test_per_minute"] = len(row["solved_test"]) / (row["train_seconds"] / 60)
            if first["train_seconds"]:
                row["train_seconds_over_first"] = row["train_seconds"] / first["train_seconds"]
    result = {"target": PAPER_TARGET, "first": args.variants[0], "variants": rows}
    emit(result, args.out)
    print(json.dumps({k: (r["train_seconds"], r["solved_test"]) for k, r in rows.items()}))


if __name__ == "__main__":
    main()
