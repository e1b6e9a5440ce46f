"""The capability-interpretability frontier (``paper.md`` §4, Figs. 2 and 3) as a grid of runs.

A sweep trains one model per grid point: every width ``d_model`` (``d_mlp = 4 d_model``,
``n_heads = d_model / d_head``) at every nonzero budget ``L0`` and AbsTopK fraction ``afrac``,
plus one dense baseline per width (weight and embedding density 1, no AbsTopK), each an
ordinary resumable training run (``train.py``) in its own folder. It then tables the task suite
on the test split and prunes every task the model solves (test loss <= ``target_loss``) with
``find_circuit``, the one place that picks the circuit search.

``L0`` counts the nonzero entries of every sparsified parameter (block matrices, embedding,
unembedding, biases; the bigram table, norms and sinks are dense and not counted) when the
training has annealed to its final densities. A point's block density is the one that meets its
budget with the embedding density kept at the preset's ratio to it (``paper.md`` §2: ``pfrac /
ef`` vs ``pfrac / ef^2``); a budget above the dense count, or one that leaves a neuron fewer than
``min_nonzero_per_neuron`` weights, is skipped with its reason.

Layout of a sweep folder::

    sweep.json                 the settings (a rerun with other settings is refused)
    points/{name}/spec.json    the point's model and training configs
    points/{name}/run/         the training run (resumable)
    points/{name}/tasks.json   task table of the final model
    points/{name}/circuits/    one circuit JSON per solved task (a ``.skip.json`` if it failed)
    points/{name}/point.json   the point's results, written last: a point with it is done
    submitit/                  submitit's job files and logs

A killed sweep resumes: done points are skipped, a half-trained run continues from its latest
checkpoint, circuits already written are kept. A point is held by one process at a time
(``filelock`` on ``points/{name}/.lock``), so a sweep started twice never trains one point twice.

Points are run by ``submitit`` (``run_sweep``): ``cluster="local"`` starts ``jobs`` processes on
this machine, ``"slurm"`` submits them to SLURM, ``"debug"`` runs them in this process without submitit. The
points are dealt round-robin (largest first) to the jobs; each job runs its points one after
another. ``tasks_per_point > 1`` makes every job a ``torch.distributed`` job of that many
processes (submitit's ``tasks_per_node``, its ``TorchDistributedEnvironment`` sets what
``torchrun`` would): each point trains data-parallel (``train.py``), rank 0 tables and prunes.
"""

import dataclasses
import datetime
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist

from sparse_lens.checks import require_min
from sparse_lens.circuit import Circuit
from sparse_lens.io import atomic_write_json, read_json
from sparse_lens.presets import get_preset
from sparse_lens.sparsity import density_for, n_keep, param_role
from sparse_lens.train import DistInfo

logger = logging.getLogger(__name__)

Kind = Literal["sparse", "dense"]
Cluster = Literal["local", "slurm", "debug"]
SWEEP_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class SweepConfig:
    """The grid and what every point does.

    ``widths`` are ``d_model`` values; ``l0s`` nonzero budgets (see the module docstring);
    ``afracs`` AbsTopK fractions at the preset's activation sites (empty: the preset's).
    ``steps``, ``batch_size``, ``checkpoint_every``, ``idiom_frac`` and ``lr`` override the
    preset's training settings when not ``None``. ``tasks`` restricts the task suite (empty:
    all tasks); ``task_n`` examples per task for the table; pruning runs ``prune_steps`` mask
    steps per search run, with the small search when ``prune_search``, on ``2 x
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
    corpus: str | None = None
    seed: int = 0
    target_loss: float = 0.15
    tasks: tuple[str, ...] = ()
    task_n: int = 200
    prune_steps: int = 80
    prune_search: bool = True
    prune_examples: int = 128

    def __post_init__(self) -> None:
        get_preset(self.preset)  # raises for an unknown name
        if not self.widths or not self.l0s:
            raise ValueError(f"a sweep needs widths and l0s, got {self.widths!r}, {self.l0s!r}")
        for name in ("widths", "l0s"):
            for v in getattr(self, name):
                if not isinstance(v, int) or v < 1:
                    raise ValueError(f"{name} must be positive ints, got {v!r}")
        for a in self.afracs:
            if not 0.0 < a <= 1.0:
                raise ValueError(f"afracs must be in (0, 1], got {a!r}")
        if not self.target_loss > 0:
            raise ValueError(f"target_loss must be > 0, got {self.target_loss!r}")
        require_min(self, ("task_n", "prune_steps", "prune_examples"), 1)
        from sparse_lens.tasks import get_task

        for t in self.tasks:
            get_task(t)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SweepConfig":
        tuples = ("widths", "l0s", "afracs", "tasks")
        return cls(**{k: tuple(v) if k in tuples else v for k, v in d.items()})

    def train_overrides(self) -> dict[str, Any]:
        keys = ("steps", "batch_size", "checkpoint_every", "idiom_frac", "lr")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


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


def point_configs(spec: PointSpec, scfg: SweepConfig, d_vocab: int) -> tuple[Any, Any]:
    """(model config, train config) of a grid point."""
    preset = get_preset(scfg.preset)
    return preset.build(
        d_vocab,
        seed=scfg.seed,
        model_overrides=spec.model_overrides(preset.model["d_head"]),
        **scfg.train_overrides(),
    )


# -- the grid ----------------------------------------------------------------------------------


def sparse_numels(mcfg: Any) -> list[tuple[str, int]]:
    """(role, numel) of every sparsified parameter of a model with config ``mcfg`` (built on
    the meta device: no memory, no init)."""
    from sparse_lens.model import HookedSparseTransformer

    with torch.device("meta"):
        model = HookedSparseTransformer(mcfg)
    return [
        (param_role(n), p.numel()) for n, p in model.named_parameters() if param_role(n) != "dense"
    ]


def l0_at(numels: list[tuple[str, int]], weight_density: float, embed_density: float) -> int:
    """Nonzeros kept at these final densities (``sparsity.n_keep`` per tensor)."""
    return sum(n_keep(n, density_for(r, weight_density, embed_density)) for r, n in numels)


def densities_for_l0(
    numels: list[tuple[str, int]], l0: int, embed_ratio: float
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
    from sparse_lens.model import HookedSparseTransformer
    from sparse_lens.train import check_sparsity_budget

    with torch.device("meta"):
        check_sparsity_budget(HookedSparseTransformer(mcfg))


def grid(scfg: SweepConfig, d_vocab: int) -> tuple[list[PointSpec], dict[str, str]]:
    """The grid's points, largest first, and the points skipped (name -> reason)."""
    preset = get_preset(scfg.preset)
    base_w, base_e = preset.model["weight_density"], preset.model["embed_density"]
    afracs = scfg.afracs or (preset.build(d_vocab)[0].afrac,)
    points: list[PointSpec] = []
    skipped: dict[str, str] = {}
    for width in scfg.widths:
        if width % preset.model["d_head"]:
            raise ValueError(f"width {width} is not a multiple of d_head {preset.model['d_head']}")
        dense = PointSpec(
            name=f"w{width}-dense", kind="dense", d_model=width, afrac=1.0,
            weight_density=1.0, embed_density=1.0,
        )  # fmt: skip
        numels = sparse_numels(point_configs(dense, scfg, d_vocab)[0])
        for l0 in scfg.l0s:
            for afrac in afracs:
                name = f"w{width}-l0_{l0}-af{afrac:g}"
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
    """Points dealt round-robin to ``jobs`` groups (largest first, so groups balance)."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs!r}")
    groups = [points[i::jobs] for i in range(min(jobs, len(points)))]
    return [g for g in groups if g]


# -- one point ---------------------------------------------------------------------------------


def find_circuit(
    model: Any, task: Any, windows: torch.Tensor, scfg: SweepConfig, cache: Path
) -> Circuit:
    """The circuit of ``task`` at ``scfg.target_loss``: the one call that picks the circuit
    search (now ``prune.prune_task`` with its small grid; a better search replaces this body).
    ``windows`` [batch, n_ctx] are pretraining windows for the ablation means.

    Raises:
        ValueError: the search finds no circuit (e.g. the full model misses the target).
    """
    from sparse_lens.prune import PruneConfig, prune_task

    pcfg = PruneConfig(target_loss=scfg.target_loss, steps=scfg.prune_steps, seed=scfg.seed)
    n = scfg.prune_examples
    return prune_task(
        model, task, windows, pcfg, n_train=2 * n, n_val=n, n_test=n,
        search=scfg.prune_search, cache_dir=cache,
    )  # fmt: skip


def _spec_record(spec: PointSpec, mcfg: Any, tcfg: Any) -> dict[str, Any]:
    return {
        "point": dataclasses.asdict(spec),
        "model_config": mcfg.to_dict(),
        "train_config": tcfg.to_dict(),
    }


def _check_spec(pdir: Path, record: dict[str, Any]) -> None:
    path = pdir / "spec.json"
    if path.exists():
        old = read_json(path, "point spec")
        if old != record:
            raise ValueError(
                f"{pdir} holds a point with other settings; pass another --out or delete it"
            )
    else:
        atomic_write_json(path, record)


def _timings(pdir: Path, **new: float) -> dict[str, float]:
    path = pdir / "timings.json"
    old = read_json(path, "timings") if path.exists() else {}
    if new:
        atomic_write_json(path, old | new)
    return old | new


@dataclass(frozen=True)
class Prepared:
    """The sweep's corpus, tokenizer and token data (built once, cached on disk)."""

    corpus: Any
    tokenizer: Any
    data: Any
    cache_dir: Path

    @classmethod
    def load(cls, scfg: SweepConfig, cache_dir: Path) -> "Prepared":
        from sparse_lens.data import prepare_data, with_idioms

        corpus, tokenizer, data = prepare_data(scfg.corpus, cache_dir)
        prepared = cls(corpus, tokenizer, data, cache_dir)
        idiom_frac = get_preset(scfg.preset).build(1, **scfg.train_overrides())[1].idiom_frac
        with_idioms(data, tokenizer, idiom_frac, cache_dir)  # builds the idiom cache once
        return prepared

    def mixed(self, idiom_frac: float) -> Any:
        from sparse_lens.data import with_idioms

        return with_idioms(self.data, self.tokenizer, idiom_frac, self.cache_dir)

    def windows(self, n_ctx: int, seed: int) -> torch.Tensor:
        """Pretraining windows for the ablation means (as ``sparse-lens prune`` draws them)."""
        return self.data.sample(64, n_ctx, torch.Generator().manual_seed(seed))


def train_point(
    spec: PointSpec, scfg: SweepConfig, pdir: Path, prepared: Prepared, dist_info: DistInfo
) -> None:
    """Train (or resume, or skip when finished) the point's run in ``pdir/run``."""
    from sparse_lens.model import HookedSparseTransformer
    from sparse_lens.train import train

    corpus, tokenizer = prepared.corpus, prepared.tokenizer
    mcfg, tcfg = point_configs(spec, scfg, tokenizer.vocab_size)
    run = pdir / "run"
    if dist_info.is_main:
        _check_spec(pdir, _spec_record(spec, mcfg, tcfg))
    if (run / "final" / "config.json").is_file():
        return
    data = prepared.mixed(tcfg.idiom_frac)
    model = HookedSparseTransformer(mcfg, tokenizer=tokenizer)
    meta = {
        "preset": scfg.preset,
        "sweep_point": spec.name,
        "corpus": corpus.metadata(),
        "tokenizer": {"vocab_size": tokenizer.vocab_size, "eot_id": tokenizer.eot_id},
    }
    start = time.perf_counter()
    resume = (run / "run.json").exists()
    train(model, data, tcfg, run, metadata=meta, resume=resume, dist_info=dist_info, progress=False)
    if dist_info.is_main:
        _timings(pdir, train_s=time.perf_counter() - start, resumed=float(resume))


def table_and_prune(spec: PointSpec, scfg: SweepConfig, pdir: Path, prepared: Prepared) -> None:
    """Task table (``tasks.json``), one circuit per solved task, then ``point.json``."""
    from sparse_lens.model import HookedSparseTransformer
    from sparse_lens.tasks import TASK_NAMES, evaluate_task, get_task, task_batch

    model = HookedSparseTransformer.from_pretrained(pdir / "run" / "final").eval()
    tasks_path = pdir / "tasks.json"
    if not tasks_path.exists():
        table: dict[str, Any] = {}
        for name in scfg.tasks or TASK_NAMES:
            try:
                task = get_task(name)
                n_ctx = model.cfg.n_ctx
                batch = task_batch(task, model.tokenizer, n_ctx, "test", scfg.task_n, scfg.seed)
                table[name] = evaluate_task(model, batch) | {"dropped": batch.n_dropped}
            except ValueError as e:
                table[name] = {"error": str(e)}
        atomic_write_json(tasks_path, table)
    table = read_json(tasks_path, "task table")
    solved = [n for n, r in table.items() if "loss" in r and r["loss"] <= scfg.target_loss]
    windows = prepared.windows(model.cfg.n_ctx, scfg.seed)
    for name in solved:
        path = pdir / "circuits" / f"{name}.json"
        skip = path.with_suffix(".skip.json")
        if path.exists() or skip.exists():
            continue
        start = time.perf_counter()
        try:
            circuit = find_circuit(model, get_task(name), windows, scfg, prepared.cache_dir)
        except (ValueError, FloatingPointError) as e:
            atomic_write_json(skip, {"task": name, "skipped": str(e)})
            continue
        circuit.extra["prune_seconds"] = time.perf_counter() - start
        circuit.extra["model_dir"] = str((pdir / "run" / "final").resolve())
        circuit.save(path)
    atomic_write_json(pdir / "point.json", point_row(spec, scfg, pdir, table, solved))


def point_row(
    spec: PointSpec, scfg: SweepConfig, pdir: Path, table: dict[str, Any], solved: list[str]
) -> dict[str, Any]:
    """The results of a finished point (one row of the sweep table)."""
    from sparse_lens.model import HookedSparseTransformer
    from sparse_lens.train import l0_stats

    info = read_json(pdir / "run" / "run.json", "run")
    mcfg, tcfg = info["model_config"], info["train_config"]
    records = [r for r in _read_jsonl(pdir / "run" / "metrics.jsonl") if "val_loss" in r]
    model = HookedSparseTransformer.from_pretrained(pdir / "run" / "final")
    circuits: dict[str, Any] = {}
    for name in solved:
        path = pdir / "circuits" / f"{name}.json"
        if path.exists():
            c = Circuit.load(path)
            circuits[name] = {
                "nodes": c.n_nodes, "edges": c.n_edges, "loss": c.loss,
                "test_loss": c.test_loss, "seconds": c.extra.get("prune_seconds"),
                "file": str(path.relative_to(pdir)),
            }  # fmt: skip
        else:
            circuits[name] = read_json(path.with_suffix(".skip.json"), "skipped circuit")
    edges = [c["edges"] for c in circuits.values() if "edges" in c]
    return dataclasses.asdict(spec) | {
        "d_mlp": mcfg["d_mlp"],
        "n_layers": mcfg["n_layers"],
        "n_heads": mcfg["n_heads"],
        "steps": tcfg["steps"],
        "tokens": tcfg["steps"] * tcfg["batch_size"] * mcfg["n_ctx"],
        "idiom_frac": tcfg.get("idiom_frac", 0.0),
        "l0_total": l0_stats(model)["l0_total"],
        "val_loss": records[-1]["val_loss"] if records else math.nan,
        "target_loss": scfg.target_loss,
        "tasks": table,
        "solved": solved,
        "circuits": circuits,
        "n_circuits": len(edges),
        "geo_mean_edges": geometric_mean(edges),
        "timings": _timings(pdir),
    }


def geometric_mean(values: list[int] | list[float]) -> float | None:
    """Geometric mean of ``max(v, 1)`` (a circuit of no edges counts as 1), ``None`` if empty."""
    if not values:
        return None
    return math.exp(sum(math.log(max(v, 1)) for v in values) / len(values))


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- jobs ---------------------------------------------------------------------------------------


def _init_distributed() -> DistInfo:
    """Rank and world size of this submitit task; joins the process group when there are several
    (``tasks_per_node > 1``). Outside submitit: one process."""
    import submitit

    try:
        env = submitit.JobEnvironment()
        n_tasks = env.num_tasks
    except RuntimeError:
        return DistInfo()
    if n_tasks == 1:
        return DistInfo()
    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    # rank 0 prunes while the others wait for the next point: a long timeout
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(hours=12))
    return DistInfo(rank=env.global_rank, world_size=n_tasks)


def _agree(value: str, dist_info: DistInfo) -> str:
    """Rank 0's ``value`` on every rank."""
    if dist_info.world_size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def run_point(
    spec: PointSpec, scfg: SweepConfig, out: Path, prepared: Prepared, dist_info: DistInfo
) -> str:
    """Run one point to the end unless it is done or held by another process; its status."""
    from filelock import FileLock, Timeout

    pdir = out / "points" / spec.name
    lock, action = None, "run"
    if dist_info.is_main:
        pdir.mkdir(parents=True, exist_ok=True)
        if (pdir / "point.json").exists():
            action = "done before"
        else:
            lock = FileLock(pdir / ".lock")
            try:
                lock.acquire(timeout=0)
            except Timeout:
                lock, action = None, "busy: another process holds it"
    action = _agree(action, dist_info)
    if action != "run":
        return action
    try:
        train_point(spec, scfg, pdir, prepared, dist_info)
        dist_info.barrier()
        if dist_info.is_main:
            table_and_prune(spec, scfg, pdir, prepared)
    finally:
        if lock is not None:
            lock.release()
    return "done"


def run_points(
    points: list[PointSpec], scfg: SweepConfig, out: Path, cache_dir: Path, threads: int | None
) -> dict[str, str]:
    """One job: ``points`` one after another (the function submitit runs); name -> status.
    A point that fails with a ``ValueError``/``FloatingPointError`` (e.g. a diverged run) is
    reported and the job goes on."""
    threads_before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    dist_info = _init_distributed()
    status: dict[str, str] = {}
    try:
        if dist_info.is_main:
            prepared = Prepared.load(scfg, cache_dir)
        dist_info.barrier()
        if not dist_info.is_main:
            prepared = Prepared.load(scfg, cache_dir)
        for spec in points:
            try:
                status[spec.name] = run_point(spec, scfg, out, prepared, dist_info)
            except (ValueError, FloatingPointError) as e:
                logger.error("sweep point %s failed: %s", spec.name, e)
                status[spec.name] = f"failed: {e}"
            logger.info("sweep point %s: %s", spec.name, status[spec.name])
    finally:
        torch.set_num_threads(threads_before)  # the debug executor runs in the caller's process
        if dist_info.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()
    return status


@dataclass(frozen=True, kw_only=True)
class Launch:
    """How points are run: submitit ``cluster``, number of ``jobs``, torch threads per process,
    processes per point (DDP), job time limit, SLURM partition."""

    cluster: Cluster = "local"
    jobs: int = 1
    threads: int | None = None
    tasks_per_point: int = 1
    timeout_min: int = 24 * 60
    slurm_partition: str | None = None

    def __post_init__(self) -> None:
        if self.cluster not in ("local", "slurm", "debug"):
            raise ValueError(f"cluster must be local, slurm or debug, got {self.cluster!r}")
        require_min(self, ("jobs", "tasks_per_point", "timeout_min"), 1)
        if self.threads is not None:
            require_min(self, ("threads",), 1)


def check_settings(out: Path, scfg: SweepConfig) -> None:
    """Write ``sweep.json``, or refuse a folder whose sweep has other settings (the grid axes
    may grow: new widths, budgets or fractions are new points)."""
    path = out / "sweep.json"
    grid_keys = {"widths", "l0s", "afracs", "dense", "tasks"}
    mine = {k: v for k, v in scfg.to_dict().items() if k not in grid_keys}
    if path.exists():
        old = read_json(path, "sweep settings")
        theirs = {k: v for k, v in old.get("config", {}).items() if k not in grid_keys}
        if theirs != mine:
            diff = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
            raise ValueError(f"{out} holds a sweep with other settings ({', '.join(diff)})")
    atomic_write_json(path, {"version": SWEEP_VERSION, "config": scfg.to_dict()})


def run_sweep(
    scfg: SweepConfig, out: Path, cache_dir: Path, launch: Launch
) -> tuple[list[PointSpec], dict[str, str]]:
    """Run every unfinished point through submitit; returns the grid and name -> status
    (skipped points with their reason, failed jobs with theirs)."""
    import submitit

    out.mkdir(parents=True, exist_ok=True)
    check_settings(out, scfg)
    prepared = Prepared.load(scfg, cache_dir)  # before the jobs: they find the cache built
    points, status = grid(scfg, prepared.tokenizer.vocab_size)
    status = {k: f"skipped: {v}" for k, v in status.items()}
    todo = [p for p in points if not (out / "points" / p.name / "point.json").exists()]
    status |= {p.name: "done before" for p in points if p not in todo}
    if launch.cluster == "debug":
        if todo:
            status |= run_points(todo, scfg, out, cache_dir, launch.threads)
        return points, status
    executor = submitit.AutoExecutor(folder=out / "submitit", cluster=launch.cluster)
    params: dict[str, Any] = {
        "name": "sparse-lens-sweep",
        "timeout_min": launch.timeout_min,
        "tasks_per_node": launch.tasks_per_point,
        "cpus_per_task": launch.threads or 1,
    }
    if launch.slurm_partition:
        params["slurm_partition"] = launch.slurm_partition
    executor.update_parameters(**params)
    groups = deal(todo, launch.jobs) if todo else []
    jobs = []
    with executor.batch():
        for group in groups:
            jobs.append(executor.submit(run_points, group, scfg, out, cache_dir, launch.threads))
    for group, job in zip(groups, jobs, strict=True):
        try:
            status |= job.results()[0]  # one result per task; rank 0's has the statuses
        except Exception as e:  # a job that crashed: its points stay unfinished, resumable
            logger.error("sweep job %s failed: %s", job.job_id, e)
            status |= {p.name: f"failed: job {job.job_id}: {str(e)[-300:]}" for p in group}
    return points, status
