"""Running a sweep's points (``sweep/grid.py``) through submitit, on one machine or a cluster.

``run_sweep`` deals the unfinished points to ``Launch.jobs`` jobs; each job (``run_points``)
runs its points one after another, each (``run_point``) under a ``filelock`` so that two sweeps
never work on one point. ``Launch.tasks_per_point > 1`` makes a job a ``torch.distributed`` job
of that many processes (submitit's ``tasks_per_node`` and ``TorchDistributedEnvironment``).
"""

import datetime
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import torch
import torch.distributed as dist

from sparse_lens.files.atomic import atomic_write_json, read_json
from sparse_lens.sweep.grid import SWEEP_VERSION, Cluster, PointSpec, SweepConfig, deal, grid
from sparse_lens.sweep.point import Prepared, table_and_prune, train_point
from sparse_lens.training.loop import DistInfo
from sparse_lens.validation import require_min

logger = logging.getLogger(__name__)


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
        prepared = Prepared.load(scfg, cache_dir) if dist_info.is_main else None
        dist_info.barrier()
        if prepared is None:  # the other ranks, once the main one has built the cache
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
        if self.cluster not in get_args(Cluster):
            raise ValueError(f"cluster must be one of {get_args(Cluster)}, got {self.cluster!r}")
        require_min(self, ("jobs", "tasks_per_point", "timeout_min"), 1)
        if self.threads is not None:
            require_min(self, ("threads",), 1)


PRUNE_KEYS = frozenset(
    {"target_loss", "prune_steps", "prune_search", "prune_trials", "prune_cleanup"}
    | {"prune_cleanup_evals", "prune_examples"}
)


def _settings(cfg: SweepConfig) -> dict[str, Any]:
    """The settings a sweep folder must keep, as JSON reads them back (lists); the grid axes
    may grow and are left out."""
    grid_keys = {"widths", "l0s", "afracs", "dense", "tasks"}
    return {k: v for k, v in json.loads(json.dumps(cfg.to_dict())).items() if k not in grid_keys}


def _set_aside(out: Path, old: dict[str, Any]) -> str:
    """Move every point's circuits and ``point.json`` to ``circuits.TAG`` / ``point.TAG.json``
    (nothing is deleted) and return TAG, named by the old target and a hash of the old pruning
    settings."""
    prune = {k: old[k] for k in sorted(PRUNE_KEYS) if k in old}
    digest = hashlib.sha256(json.dumps(prune, sort_keys=True).encode()).hexdigest()[:8]
    tag = f"t{old.get('target_loss')}-{digest}"
    for pdir in sorted((out / "points").glob("*")):
        for src, dst in ((pdir / "circuits", pdir / f"circuits.{tag}"),
                         (pdir / "point.json", pdir / f"point.{tag}.json")):  # fmt: skip
            if src.exists() and not dst.exists():
                src.rename(dst)
    return tag


def _set_aside_dense(out: Path, old_lr: Any) -> None:
    """Move every dense point to ``points/NAME.lr{old_lr}`` (kept, not deleted) so that it is
    trained again at the new ``dense_lr``."""
    for pdir in sorted((out / "points").glob("*-dense")):
        dst = pdir.with_name(f"{pdir.name}.lr{old_lr}")
        if pdir.is_dir() and not dst.exists():
            pdir.rename(dst)


def check_settings(out: Path, scfg: SweepConfig) -> None:
    """Write ``sweep.json``, or refuse a folder whose sweep has other settings (the grid axes
    may grow: new widths, budgets or fractions are new points). Other *pruning* settings
    (``PRUNE_KEYS``: the target loss and the search) are accepted: the trained runs and task
    tables are kept, each point's circuits and ``point.json`` are set aside under a tag (listed
    in ``sweep.json``'s ``earlier``), and the points are pruned again. Another ``dense_lr``
    sets the dense points aside (``points/NAME.lrOLD``) and trains them again.

    Raises:
        ValueError: ``sweep.json`` in ``out`` is unreadable, or holds other training or task
            settings (the differing keys are named).
    """
    path = out / "sweep.json"
    mine, earlier = _settings(scfg), []
    if path.exists():
        old = read_json(path, "sweep settings")
        try:
            if not isinstance(old, dict) or not isinstance(old.get("config", {}), dict):
                raise TypeError(f"holds a JSON {type(old).__name__}, not the settings object")
            theirs = _settings(SweepConfig.from_dict(old.get("config", {})))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path} is not a readable sweep settings file: {e}") from e
        diff = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
        if set(diff) - PRUNE_KEYS - {"dense_lr"}:
            raise ValueError(f"{out} holds a sweep with other settings ({', '.join(diff)})")
        earlier = list(old.get("earlier", []))
        if "dense_lr" in diff:
            _set_aside_dense(out, theirs.get("dense_lr"))
            earlier.append({"dense_points": f"*-dense.lr{theirs.get('dense_lr')}"})
        if set(diff) & PRUNE_KEYS:
            tag = _set_aside(out, theirs)
            earlier.append({"tag": tag})
            logger.info("pruning settings changed (%s): earlier circuits in *.%s", diff, tag)
        if diff:
            earlier[-1]["config"] = old["config"]
    record = {"version": SWEEP_VERSION, "config": scfg.to_dict()}
    atomic_write_json(path, record | ({"earlier": earlier} if earlier else {}))


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
