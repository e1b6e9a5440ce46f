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
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import torch
import torch.distributed as dist

from sparse_lens.files.atomic import atomic_write_json, read_json
from sparse_lens.sweep.grid import SWEEP_VERSION, PointSpec, SweepConfig, deal, grid
from sparse_lens.sweep.point import PRUNE_METHOD, Prepared, table_and_prune, train_point
from sparse_lens.training.loop import DistInfo
from sparse_lens.validation import require_min
from sparse_lens.vocab import Cluster

logger = logging.getLogger(__name__)
HOLDER = ".holder.json"  # pid and host of the process that holds a point's lock


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
                atomic_write_json(pdir / HOLDER, {"pid": os.getpid(), "host": socket.gethostname()})
            except Timeout:
                lock, action = None, f"busy: {_holder(pdir)} holds it"
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
            (pdir / HOLDER).unlink(missing_ok=True)
            lock.release()
    return "done"


def _holder(pdir: Path) -> str:
    """Who holds a point's lock, from its ``HOLDER`` file: e.g. a job of a sweep that was
    killed (submitit's local jobs outlive the process that submitted them)."""
    try:
        who = read_json(pdir / HOLDER, "point holder")
        return f"process {who['pid']} on {who['host']}"
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return "another process"


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
    | {"prune_cleanup_evals", "prune_examples", "prune_method"}
)
GRID_KEYS = frozenset({"widths", "l0s", "afracs", "dense"})
CHANGEABLE = (
    "the grid (widths, l0s, afracs, dense), the tasks (--task, --custom-task), dense_lr and "
    "the pruning settings"
)


def _effective(cfg: SweepConfig) -> dict[str, Any]:
    """The settings a sweep folder must keep, as they take effect and as JSON reads them back:
    a training override left unset is the preset's value, ``dense_lr`` unset is the sparse
    points' rate, ``prune_trials`` counts only for the Optuna search. The grid axes may grow
    and are left out."""
    from sparse_lens.training.presets import get_preset

    d = json.loads(json.dumps(cfg.to_dict()))
    train = get_preset(cfg.preset).train
    for key in ("steps", "batch_size", "checkpoint_every", "lr"):
        if d[key] is None:
            d[key] = getattr(train, key)
    d["idiom_frac"] = cfg.idiom_share()
    d["dense_lr"] = d["lr"] if d["dense_lr"] is None else d["dense_lr"]
    if d["prune_search"] != "optuna":
        d["prune_trials"] = None
    d["custom_tasks"] = {
        Path(p).stem: hashlib.sha256(Path(p).read_bytes()).hexdigest()[:16]
        if Path(p).is_file()
        else None
        for p in cfg.custom_tasks
    }  # a task is its content, wherever its file lies
    return {k: v for k, v in d.items() if k not in GRID_KEYS}


def _first_free(base: str, taken: Callable[[str], bool]) -> str:
    """``base``, or ``base.2``, ``base.3``...: the first name ``taken`` says is free (going
    back to earlier settings must not reuse a name: nothing would move)."""
    name, i = base, 1
    while taken(name):
        i += 1
        name = f"{base}.{i}"
    return name


def _free_tag(out: Path, base: str) -> str:
    """The first tag (``_first_free``) no point has set anything aside under."""
    pdirs = sorted((out / "points").glob("*"))
    return _first_free(
        base,
        lambda tag: any(
            (d / f"circuits.{tag}").exists() or (d / f"point.{tag}.json").exists() for d in pdirs
        ),
    )


def _set_aside(out: Path, base: str, circuits: bool, renamed: dict[str, str] | None = None) -> str:
    """Move every point's ``point.json`` to ``point.TAG.json`` and, with ``circuits``, its
    ``circuits/`` to ``circuits.TAG/`` (the circuit paths in the moved ``point.json`` follow,
    as do those of the custom tasks in ``renamed``, name -> the hash their files were moved
    to by ``_drop_custom_results``); nothing is deleted. Returns TAG (``_free_tag`` of
    ``base``)."""
    tag = _free_tag(out, base)
    for pdir in sorted((out / "points").glob("*")):
        if circuits and (pdir / "circuits").exists():
            (pdir / "circuits").rename(pdir / f"circuits.{tag}")
        point = pdir / "point.json"
        if point.exists():
            row = read_json(point, "sweep point")
            for c in row.get("circuits", {}).values() if circuits else ():
                if isinstance(c, dict) and str(c.get("file", "")).startswith("circuits/"):
                    c["file"] = f"circuits.{tag}/" + c["file"].removeprefix("circuits/")
            for name, h in (renamed or {}).items():
                c = row.get("circuits", {}).get(name)
                if isinstance(c, dict) and c.get("file") == f"circuits/{name}.json":
                    c["file"] = f"circuits/{name}.{h}.json"
            atomic_write_json(pdir / f"point.{tag}.json", row)
            point.unlink()
    return tag


def _digest(values: Any) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:8]


def _set_aside_dense(out: Path, old_lr: Any) -> str:
    """Move every dense point to ``points/NAME.lr{old_lr}`` (or ``.lr{old_lr}.2``... when that
    is taken; kept, not deleted) so that it is trained again at the new ``dense_lr``; returns
    the suffix."""
    pdirs = [d for d in sorted((out / "points").glob("*-dense")) if d.is_dir()]
    suffix = _first_free(
        f"lr{old_lr}", lambda sfx: any(d.with_name(f"{d.name}.{sfx}").exists() for d in pdirs)
    )
    for pdir in pdirs:
        pdir.rename(pdir.with_name(f"{pdir.name}.{suffix}"))
    return suffix


def _drop_custom_results(out: Path, old: dict[str, Any], new: dict[str, Any]) -> dict[str, str]:
    """For every custom task whose file changed (same name, other content), drop its row from
    each point's ``tasks.json`` and move its circuit files to ``NAME.OLDHASH.*`` (kept), so the
    points table and prune it again. Returns name -> OLDHASH of the moved tasks."""
    changed = {name: h or "unknown" for name, h in old.items() if name in new and new[name] != h}
    if not changed:
        return changed
    for pdir in sorted((out / "points").glob("*")):
        table_path = pdir / "tasks.json"
        if table_path.exists():
            table = read_json(table_path, "task table")
            atomic_write_json(table_path, {k: v for k, v in table.items() if k not in changed})
        for name, h in changed.items():
            for f in sorted((pdir / "circuits").glob(f"{name}.*")):
                if f.name.split(".")[1] in ("json", "skip", "optuna"):
                    f.rename(f.with_name(f"{name}.{h}.{f.name.split('.', 1)[1]}"))
    return changed


def _read_old(path: Path) -> tuple[dict[str, Any], SweepConfig]:
    old = read_json(path, "sweep settings")
    try:
        if not isinstance(old, dict) or not isinstance(old.get("config", {}), dict):
            raise TypeError(f"holds a JSON {type(old).__name__}, not the settings object")
        return old, SweepConfig.from_dict(old.get("config", {}))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path} is not a readable sweep settings file: {e}") from e


def check_settings(
    out: Path, scfg: SweepConfig, points: Sequence[PointSpec] = (), d_vocab: int = 0
) -> None:
    """Write ``sweep.json``, or refuse a folder whose sweep has other settings. Settings are
    compared as they take effect (``_effective``). The grid axes may grow: new widths, budgets
    or fractions are new points. Other *pruning* settings (``PRUNE_KEYS``: the target loss and
    the search) are accepted: the trained runs and task tables are kept, each point's circuits
    and ``point.json`` are set aside under a tag (listed in ``sweep.json``'s ``earlier``), and
    the points are pruned again. Other ``tasks`` set each ``point.json`` aside (circuits kept):
    the points table the new tasks and prune those they solve. A custom task is its content, as
    hashed into ``sweep.json`` when it was tabled: a file edited in place since is another
    task (its rows and circuits are redone). Another ``dense_lr`` sets the
    dense points aside (``points/NAME.lrOLD``) and trains them again. Before anything moves,
    each of ``points`` (of vocabulary ``d_vocab``) already in ``out`` is checked against its
    own records (``recorded.check_points``): ``sweep.json`` alone never decides.

    Raises:
        ValueError: ``sweep.json`` in ``out`` is unreadable, or holds other training or task
            settings (each differing key named with both values), or a point's own records
            differ or do not read (``recorded.check_points``).
    """
    from sparse_lens.sweep.recorded import check_points

    path = out / "sweep.json"
    mine = _effective(scfg) | {"prune_method": PRUNE_METHOD}
    before = _compare(out, path, mine) if path.exists() else None
    if points:  # before anything moves: each point by its own records
        diff = None if before is None else before[2]
        check_points(out, scfg, list(points), d_vocab, diff, PRUNE_KEYS)
    earlier: list[dict[str, Any]] = []
    if before is not None:
        old, theirs, diff = before
        earlier = list(old.get("earlier", []))
        for entry in _move_changed(out, diff, theirs, mine):
            earlier.append(entry | {"config": old["config"]})
    record = {"version": SWEEP_VERSION, "config": scfg.to_dict(), "prune_method": PRUNE_METHOD}
    record["custom_task_hashes"] = mine["custom_tasks"]
    atomic_write_json(path, record | ({"earlier": earlier} if earlier else {}))


def _compare(
    out: Path, path: Path, mine: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """The old ``sweep.json``, its effective settings and the keys that differ from ``mine``.

    Raises:
        ValueError: the file is unreadable, or a setting that may not change did (each named).
    """
    old, old_cfg = _read_old(path)
    theirs = _effective(old_cfg)
    # the content the old sweep tabled, as recorded then: its file may have been edited in
    # place since (an old record without hashes: unknown, so every custom task is redone)
    theirs["custom_tasks"] = old.get("custom_task_hashes") or dict.fromkeys(theirs["custom_tasks"])
    theirs["prune_method"] = old.get("prune_method")  # none recorded: pruned the first way
    diff = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
    fixed = [k for k in diff if k not in PRUNE_KEYS | {"dense_lr", "tasks", "custom_tasks"}]
    if fixed:
        said = ", ".join(f"{k}: {theirs.get(k)!r} there, {mine.get(k)!r} now" for k in fixed)
        raise ValueError(
            f"{out} holds a sweep with other settings ({said}); only {CHANGEABLE} may "
            "change in a sweep folder: pick another --out"
        )
    return old, theirs, diff


def _move_changed(
    out: Path, diff: list[str], theirs: dict[str, Any], mine: dict[str, Any]
) -> list[dict[str, Any]]:
    """Set aside what the changed settings ``diff`` outdate (``check_settings``); one
    ``earlier`` entry per move."""
    moved: list[dict[str, Any]] = []
    if "dense_lr" in diff:
        suffix = _set_aside_dense(out, theirs.get("dense_lr"))
        moved.append({"dense_points": f"*-dense.{suffix}"})
    if set(diff) & PRUNE_KEYS:
        prune = {k: theirs[k] for k in sorted(PRUNE_KEYS) if k in theirs}
        tag = _set_aside(out, f"t{theirs.get('target_loss')}-{_digest(prune)}", circuits=True)
        moved.append({"tag": tag, "set_aside": "circuits, point.json"})
        logger.info("pruning settings changed (%s): earlier circuits in *.%s", diff, tag)
    elif "tasks" in diff or "custom_tasks" in diff:
        renamed = {}
        if "custom_tasks" in diff:  # a changed file outdates its table rows and circuits
            renamed = _drop_custom_results(out, theirs["custom_tasks"], mine["custom_tasks"])
        tasks = [theirs.get("tasks"), theirs.get("custom_tasks")]
        tag = _set_aside(out, f"tasks-{_digest(tasks)}", circuits=False, renamed=renamed)
        moved.append({"tag": tag, "set_aside": "point.json"})
    return moved


def run_sweep(
    scfg: SweepConfig, out: Path, cache_dir: Path, launch: Launch
) -> tuple[list[PointSpec], dict[str, str]]:
    """Run every unfinished point through submitit; returns the grid and name -> status
    (skipped points with their reason, failed jobs with theirs).

    Raises:
        ValueError: a custom task file does not fit the tokenizer, no sparse point of the
            grid is feasible, the folder holds a sweep or points of other settings
            (``check_settings``), or the executor cannot start here; all before any point runs.
    """
    from sparse_lens.tasks.task import load_custom_task

    prepared = Prepared.load(scfg, cache_dir)  # before the jobs: they find the cache built
    for path in scfg.custom_tasks:  # the tokenizer is known now: single-token candidates
        load_custom_task(path, prepared.tokenizer)
    points, status = grid(scfg, prepared.tokenizer.vocab_size)
    if not any(p.kind == "sparse" for p in points):
        said = "; ".join(f"{k}: {v}" for k, v in status.items())
        raise ValueError(
            f"no sparse point of the grid is feasible ({said}); change --widths or --l0"
        )
    out.mkdir(parents=True, exist_ok=True)
    executor = _executor(launch, out)
    # last: it may set results aside, so nothing may refuse after
    check_settings(out, scfg, points, prepared.tokenizer.vocab_size)
    status = {k: f"skipped: {v}" for k, v in status.items()}
    todo = [p for p in points if not (out / "points" / p.name / "point.json").exists()]
    status |= {p.name: "done before" for p in points if p not in todo}
    if executor is None:
        if todo:
            status |= run_points(todo, scfg, out, cache_dir, launch.threads)
        return points, status
    groups = deal(todo, launch.jobs) if todo else []
    jobs = []
    if groups:  # an empty batch makes submitit warn "No submission happened"
        with executor.batch():
            for group in groups:
                jobs.append(
                    executor.submit(run_points, group, scfg, out, cache_dir, launch.threads)
                )
    try:
        for group, job in zip(groups, jobs, strict=True):
            try:
                status |= job.results()[0]  # one result per task; rank 0's has the statuses
            except Exception as e:  # a job that crashed: its points stay unfinished, resumable
                logger.error("sweep job %s failed: %s", job.job_id, e)
                status |= {p.name: f"failed: job {job.job_id}: {str(e)[-300:]}" for p in group}
    except KeyboardInterrupt:
        _cancel(jobs)
        raise
    return points, status


def _executor(launch: Launch, out: Path) -> Any:  # noqa: ANN401
    """The submitit executor of ``launch`` (jobs' files in ``out/submitit``), or None for
    ``"debug"`` (points run in this process).

    Raises:
        ValueError: the executor cannot start here (e.g. SLURM without ``sbatch``).
    """
    import submitit

    if launch.cluster == "debug":
        return None
    try:
        executor = submitit.AutoExecutor(folder=out / "submitit", cluster=launch.cluster)
    except RuntimeError as e:  # e.g. no srun/sbatch: not on a SLURM cluster
        raise ValueError(f"executor {launch.cluster!r} cannot start here: {e}") from e
    params: dict[str, Any] = {
        "name": "sparse-lens-sweep",
        "timeout_min": launch.timeout_min,
        "tasks_per_node": launch.tasks_per_point,
        "cpus_per_task": launch.threads or 1,
    }
    if launch.slurm_partition:
        params["slurm_partition"] = launch.slurm_partition
    executor.update_parameters(**params)
    return executor


def _cancel(jobs: list[Any], wait_s: float = 30.0) -> None:
    """Stop the sweep's jobs (Ctrl-C): submitit's ``cancel`` (SIGINT to a local job,
    ``scancel`` on SLURM), waiting up to ``wait_s`` for local jobs to end; what they had
    written stays and the sweep resumes from it."""
    import time

    for job in jobs:
        try:
            job.cancel(check=False)
        except Exception as e:  # a job that already ended, or scancel missing
            logger.warning("could not cancel sweep job %s: %s", job.job_id, e)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and not all(job.done() for job in jobs):
        time.sleep(0.2)
