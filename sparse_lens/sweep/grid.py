"""The capability-interpretability frontier (arXiv 2511.13653, Figs. 2 and 3) as a grid of runs.

A sweep trains one model per grid point: every width ``d_model`` (``d_mlp = 4 d_model``,
``n_heads = d_model / d_head``) at every nonzero budget ``L0`` and AbsTopK fraction ``afrac``,
plus one dense baseline per width (weight and embedding density 1, no AbsTopK), each an
ordinary resumable training run (``training/sparse.py``) in its own folder. It then tables the task suite
on the test split and prunes every task the model solves (test loss <= ``target_loss``) with
``sweep.point.prune_request`` (the one place that picks the sweep's circuit search) and
``circuits.prune_task.prune_to_file``, as ``sparse-lens prune`` does.

``L0`` counts the nonzero entries of every sparsified parameter (block matrices, embedding,
unembedding, biases; the bigram table, norms and sinks are dense and not counted) when the
training has annealed to its final densities. A point's block density is the one that meets its
budget with the embedding density kept at the preset's ratio to it (App. A: ``pfrac /
ef`` vs ``pfrac / ef^2``); a budget above the dense count, or one that leaves a neuron fewer than
``min_nonzero_per_neuron`` weights, is skipped with its reason.

Layout of a sweep folder::

    sweep.json                 the settings (a rerun with other training settings is refused;
                               other pruning settings re-prune, ``sweep.jobs.check_settings``)
    points/{name}/spec.json    the point's model and training configs
    points/{name}/run/         the training run (resumable)
    points/{name}/tasks.json   task table of the final model
    points/{name}/circuits/    one circuit JSON per solved task (a ``.skip.json`` if it failed)
    points/{name}/point.json   the point's results, written last: a point with it is done
    points/{name}/circuits.TAG/, point.TAG.json   set aside when the pruning settings changed
    submitit/                  submitit's job files and logs

A killed sweep resumes: done points are skipped, a half-trained run continues from its latest
checkpoint, circuits already written are kept. A point is held by one process at a time
(``filelock`` on ``points/{name}/.lock``), so a sweep started twice never trains one point twice.

Points are run by ``submitit`` (``sweep_jobs.run_sweep``): ``cluster="local"`` starts ``jobs`` processes on
this machine, ``"slurm"`` submits them to SLURM, ``"debug"`` runs them in this process without submitit. The
points are dealt round-robin (largest first) to the jobs; each job runs its points one after
another. ``tasks_per_point > 1`` makes every job a ``torch.distributed`` job of that many
processes (submitit's ``tasks_per_node``, its ``TorchDistributedEnvironment`` sets what
``torchrun`` would): each point trains data-parallel (``training/sparse.py``), rank 0 tables and prunes.
"""

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch

from hooks.topk import n_keep
from sparse_lens.circuits.cleanup import CLEANUP_STAGES, CleanupStage, check_stages
from sparse_lens.model.config import SparseTransformerConfig
from sparse_lens.model.sparsity import ParamRole, density_for, param_role
from sparse_lens.tasks.task import CHANCE_LOSS, TASK_NAMES, get_task
from sparse_lens.training.presets import get_preset
from sparse_lens.training.sparse import TrainConfig, check_sparsity_budget
from sparse_lens.validation import require_min
from sparse_lens.vocab import PAPER_TARGET, SearchMethod

Kind = Literal["sparse", "dense"]
PruneSearch = SearchMethod  # the circuit search every point runs (circuits.find)
SWEEP_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class SweepConfig:
    """The grid and what every point does.

    ``widths`` are ``d_model`` values; ``l0s`` nonzero budgets (see the module docstring);
    ``afracs`` AbsTopK fractions at the preset's activation sites (empty: the preset's).
    ``steps``, ``batch_size``, ``checkpoint_every`` and ``lr`` override the preset's training
    settings, ``idiom_frac`` its idiom share of the data, when not ``None``; ``dense_lr`` is
    the dense baselines' peak learning rate (default: the sparse points'; dense models train
    best at a lower rate than weight-sparse ones). ``tasks`` restricts
    the task suite (empty: all tasks); ``custom_tasks`` adds JSONL tasks of the user's
    (``tasks.task.load_custom_task``, named by the file's stem; resolved paths, their content
    is part of the settings); ``task_n`` examples per task for the table. Every solved
    task is pruned with the circuit search of ``circuits.find`` (``prune_search``: ``"optuna"``,
    ``prune_trials`` trials, no wall-clock limit so the result does not depend on machine load;
    ``"grid"``; or ``"none"``, one run of ``prune_steps`` mask steps), then cleaned up
    (``prune_cleanup`` stages, at most ``prune_cleanup_evals`` evaluations each), on ``2 x
    prune_examples`` training and ``prune_examples`` validation and test pairs.
    """

    preset: str
    widths: tuple[int, ...]
    l0s: tuple[int, ...]
    afracs: tuple[float, ...] = ()
    dense: bool = True
    steps: int | None = None
    batch_size: int | None = None
    checkpoint_every: int | None = None
    idiom_frac: float | None = None
    lr: float | None = None
    dense_lr: float | None = None
    corpus: str | None = None
    seed: int = 0
    target_loss: float = PAPER_TARGET
    tasks: tuple[str, ...] = ()
    custom_tasks: tuple[str, ...] = ()
    task_n: int = 200
    prune_steps: int = 80
    prune_search: PruneSearch = "optuna"
    prune_trials: int = 12
    prune_cleanup: tuple[CleanupStage, ...] = CLEANUP_STAGES
    prune_cleanup_evals: int = 400
    prune_examples: int = 128

    def __post_init__(self) -> None:
        get_preset(self.preset).idioms(self.idiom_frac)  # raises for an unknown name or share
        if not self.widths or not self.l0s:
            raise ValueError(f"a sweep needs widths and l0s, got {self.widths!r}, {self.l0s!r}")
        for name in ("widths", "l0s"):
            for v in getattr(self, name):
                if not isinstance(v, int) or v < 1:
                    raise ValueError(f"{name} must be positive ints, got {v!r}")
        for a in self.afracs:
            if not 0.0 < a <= 1.0:
                raise ValueError(f"afracs must be in (0, 1], got {a!r}")
        _check_distinct(self)
        d_head = get_preset(self.preset).model.d_head
        for width in self.widths:
            if width % d_head:
                raise ValueError(f"width {width} is not a multiple of d_head {d_head}")
        if self.dense_lr is not None and not (math.isfinite(self.dense_lr) and self.dense_lr > 0):
            raise ValueError(f"dense_lr must be finite and > 0, got {self.dense_lr!r}")
        if not 0 < self.target_loss < CHANCE_LOSS:
            raise ValueError(
                f"target_loss must be > 0 and below ln 2 = {CHANCE_LOSS:.3f} (chance on a "
                f"two-token task), got {self.target_loss!r}"
            )
        require_min(
            self,
            ("task_n", "prune_steps", "prune_examples", "prune_trials", "prune_cleanup_evals"),
            1,
        )
        if self.prune_search not in get_args(PruneSearch):
            raise ValueError(
                f"prune_search must be one of {get_args(PruneSearch)}, got {self.prune_search!r}"
            )
        check_stages(self.prune_cleanup)

        for t in self.tasks:
            get_task(t)
        _check_custom_tasks(self.custom_tasks)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SweepConfig":
        tuples = ("widths", "l0s", "afracs", "tasks", "custom_tasks", "prune_cleanup")
        d = dict(d)
        if isinstance(d.get("prune_search"), bool):  # sweeps written before the Optuna search
            d["prune_search"] = "grid" if d["prune_search"] else "none"
            d.setdefault("prune_cleanup", ())
        fields: dict[str, Any] = {k: tuple(v) if k in tuples else v for k, v in d.items()}
        return cls(**fields)

    def task_names(self) -> list[str]:
        """The names of the tasks every point tables: the built-in ones, then the custom."""
        from pathlib import Path

        return [*(self.tasks or TASK_NAMES), *(Path(p).stem for p in self.custom_tasks)]

    def train_overrides(self) -> dict[str, Any]:
        keys = ("steps", "batch_size", "checkpoint_every", "lr")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}

    def idiom_share(self) -> float:
        """The share of idiom windows per training batch: ``idiom_frac``, else the preset's."""
        return get_preset(self.preset).idioms(self.idiom_frac)


def _check_custom_tasks(paths: tuple[str, ...]) -> None:
    """Custom task files exist and their names (file stems) are new.

    Raises:
        ValueError: a missing file, or a stem that is a built-in task or given twice (named).
    """
    from pathlib import Path

    stems = [Path(p).stem for p in paths]
    for path, stem in zip(paths, stems, strict=True):
        if not Path(path).is_file():
            raise ValueError(f"custom task file {path!r} does not exist")
        if stem in TASK_NAMES or stems.count(stem) > 1:
            raise ValueError(
                f"custom task {path!r} is named {stem!r} (its file name), which is taken by "
                "a built-in task or another custom task; rename the file"
            )


def afrac_label(afrac: float) -> str:
    """The AbsTopK fraction as it appears in a point's name (``w64-l0_40000-af0.25``)."""
    return f"{afrac:g}"


def _check_distinct(cfg: SweepConfig) -> None:
    """Every grid value once: two equal widths (or budgets, or fractions whose names
    ``afrac_label`` are equal) would be one folder, run and counted twice."""
    for name, label in (("widths", str), ("l0s", str), ("afracs", afrac_label)):
        values = getattr(cfg, name)
        labels = [label(v) for v in values]
        twice = sorted({v for v, lab in zip(values, labels, strict=True) if labels.count(lab) > 1})
        if twice:
            raise ValueError(
                f"{name} lists a value twice (or two that name one point): "
                f"{', '.join(map(repr, twice))}"
            )


@dataclass(frozen=True, kw_only=True)
class PointSpec:
    """One grid point: its folder name, shape and densities (``l0`` is ``None`` when dense)."""

    name: str
    kind: Kind
    d_model: int
    afrac: float
    weight_density: float
    embed_density: float
    l0: int | None = None

    def model_overrides(self, d_head: int) -> dict[str, Any]:
        return {
            "d_model": self.d_model,
            "d_mlp": 4 * self.d_model,
            "n_heads": self.d_model // d_head,
            "weight_density": self.weight_density,
            "embed_density": self.embed_density,
            "afrac": self.afrac,
        }


def point_configs(
    spec: PointSpec, scfg: SweepConfig, d_vocab: int
) -> tuple[SparseTransformerConfig, TrainConfig]:
    """(model config, train config) of a grid point."""
    preset = get_preset(scfg.preset)
    train = scfg.train_overrides()
    if spec.kind == "dense" and scfg.dense_lr is not None:
        train["lr"] = scfg.dense_lr
    return preset.build(
        d_vocab,
        seed=scfg.seed,
        model_overrides=spec.model_overrides(preset.model.d_head),
        **train,
    )


# -- the grid ----------------------------------------------------------------------------------


def sparse_numels(mcfg: SparseTransformerConfig) -> list[tuple[ParamRole, int]]:
    """(role, numel) of every sparsified parameter of a model with config ``mcfg`` (built on
    the meta device: no memory, no init)."""
    from sparse_lens.model.transformer import HookedSparseTransformer

    with torch.device("meta"):
        model = HookedSparseTransformer(mcfg)
    return [
        (param_role(n), p.numel()) for n, p in model.named_parameters() if param_role(n) != "dense"
    ]


def l0_at(numels: list[tuple[ParamRole, int]], weight_density: float, embed_density: float) -> int:
    """Nonzeros kept at these final densities (``sparsity.n_keep`` per tensor)."""
    return sum(n_keep(n, density_for(r, weight_density, embed_density)) for r, n in numels)


def densities_for_l0(
    numels: list[tuple[ParamRole, int]], l0: int, embed_ratio: float
) -> tuple[float, float]:
    """(weight density, embed density = min(1, ratio x weight density)) keeping about ``l0``
    nonzeros (bisection on the weight density; the count is monotone in it).

    Raises:
        ValueError: ``l0`` exceeds the dense count.
    """

    def count(w: float) -> int:
        return l0_at(numels, w, min(1.0, embed_ratio * w))

    if count(1.0) < l0:
        raise ValueError(f"L0 {l0} exceeds the {count(1.0)} entries of the sparsified parameters")
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if count(mid) < l0 else (lo, mid)
    return hi, min(1.0, embed_ratio * hi)


def _check_budget(mcfg: Any) -> None:
    from sparse_lens.model.transformer import HookedSparseTransformer

    with torch.device("meta"):
        check_sparsity_budget(HookedSparseTransformer(mcfg))


def grid(scfg: SweepConfig, d_vocab: int) -> tuple[list[PointSpec], dict[str, str]]:
    """The grid's points, largest first, and the points skipped (name -> reason). (Widths are
    multiples of the preset's ``d_head``: ``SweepConfig`` checks it.)"""
    preset = get_preset(scfg.preset)
    base_w, base_e = preset.model.weight_density, preset.model.embed_density
    afracs = scfg.afracs or (preset.build(d_vocab)[0].afrac,)
    points: list[PointSpec] = []
    skipped: dict[str, str] = {}
    for width in scfg.widths:
        dense = PointSpec(
            name=f"w{width}-dense", kind="dense", d_model=width, afrac=1.0,
            weight_density=1.0, embed_density=1.0,
        )  # fmt: skip
        numels = sparse_numels(point_configs(dense, scfg, d_vocab)[0])
        for l0 in scfg.l0s:
            for afrac in afracs:
                name = f"w{width}-l0_{l0}-af{afrac_label(afrac)}"
                try:
                    w, e = densities_for_l0(numels, l0, base_e / base_w)
                    spec = PointSpec(
                        name=name, kind="sparse", d_model=width, afrac=afrac,
                        weight_density=w, embed_density=e, l0=l0,
                    )  # fmt: skip
                    _check_budget(point_configs(spec, scfg, d_vocab)[0])
                except ValueError as err:
                    skipped[name] = str(err)
                    continue
                points.append(spec)
        if scfg.dense:
            points.append(dense)
    points.sort(key=lambda p: (-p.d_model, p.kind == "sparse", -(p.l0 or 0)))
    return points, skipped


def deal(points: list[PointSpec], jobs: int) -> list[list[PointSpec]]:
    """Points dealt round-robin to ``jobs`` groups (largest first, so groups balance).

    Raises:
        ValueError: ``jobs`` is below 1 (named).
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs!r}")
    groups = [points[i::jobs] for i in range(min(jobs, len(points)))]
    return [g for g in groups if g]
