"""One sweep point (``sweep/grid.py``): train or resume its run, table the tasks, prune the solved
ones (``circuits.prune_task.prune_to_file`` with the sweep's ``prune_request``), and write
``point.json`` (the point's row of the sweep table)."""

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sparse_lens.circuits.circuit import Circuit
from sparse_lens.circuits.hparam_search import SearchConfig
from sparse_lens.circuits.masks import PruneConfig
from sparse_lens.circuits.prune_task import PruneRequest, ablation_windows, prune_to_file
from sparse_lens.circuits.summary import GEOMETRIC_MEAN_EDGES, circuit_sizes, summary_row
from sparse_lens.data.corpus import Corpus
from sparse_lens.data.idioms import IdiomKind
from sparse_lens.data.token_data import MixedData, TokenData, prepare_data, with_idioms
from sparse_lens.data.tokenizer import Tokenizer
from sparse_lens.files.atomic import atomic_write_json, read_json
from sparse_lens.files.jsonl import read_jsonl
from sparse_lens.model.config import SparseTransformerConfig
from sparse_lens.model.transformer import HookedSparseTransformer
from sparse_lens.sweep.grid import PointSpec, SweepConfig, point_configs
from sparse_lens.tasks.task import Task, get_task, load_custom_task, task_table
from sparse_lens.training.loop import DistInfo
from sparse_lens.training.presets import get_preset
from sparse_lens.training.sparse import TrainConfig, l0_stats, recorded_idiom_frac, train

# How a sweep prunes, beyond its settings; a sweep folder whose circuits were pruned another way
# sets them aside and prunes again (``jobs.check_settings``). 2: ablation means over each
# point's own training mix (``ablation_windows``), and no first trials tuned on the sparse demo
# model, so that sparse points and dense baselines get the same search.
PRUNE_METHOD = 2


def prune_request(scfg: SweepConfig, storage: Path) -> PruneRequest:
    """The ``PruneRequest`` of every solved task of a point: ``SweepConfig``'s search and
    clean-up settings. The Optuna study lives in the SQLite file ``storage``, so a killed sweep
    resumes the search where it stopped; the search is bounded by trials only (an effectively
    unlimited wall clock), so its result does not depend on how busy the machine is. Every
    point, sparse or dense, gets the same search: TPE from its seeded start, without the first
    trials ``sparse-lens prune`` enqueues (``FIRST_TRIALS``, tuned on the sparse demo model)."""
    n = scfg.prune_examples
    return PruneRequest(
        prune=PruneConfig(target_loss=scfg.target_loss, steps=scfg.prune_steps, seed=scfg.seed),
        search=scfg.prune_search,
        search_cfg=SearchConfig(
            trials=scfg.prune_trials,
            budget_minutes=1e6,
            seed=scfg.seed,
            storage=f"sqlite:///{storage.resolve()}",
            enqueue_first=False,
        ),
        cleanup=scfg.prune_cleanup,
        cleanup_evals=scfg.prune_cleanup_evals,
        n_train=2 * n,
        n_val=n,
        n_test=n,
    )


def spec_record(
    spec: PointSpec, mcfg: SparseTransformerConfig, tcfg: TrainConfig, idiom_frac: float
) -> dict[str, Any]:
    """The point's settings as they read back from ``spec.json`` (tuples as lists)."""
    record = {
        "point": dataclasses.asdict(spec),
        "model_config": mcfg.to_dict(),
        "train_config": tcfg.to_dict(),
        "idiom_frac": idiom_frac,
    }
    return json.loads(json.dumps(record))


def read_spec(pdir: Path) -> dict[str, Any] | None:
    """The settings a point recorded in ``spec.json`` when it started training (as
    ``spec_record`` writes them now), or None if it has none.

    Raises:
        ValueError: the file is corrupt or not an object (named).
    """
    path = pdir / "spec.json"
    if not path.exists():
        return None
    old = read_json(path, "point spec")
    if not isinstance(old, dict):
        raise ValueError(f"point spec file {str(path)!r} holds a JSON {type(old).__name__}")
    if "idiom_frac" not in old:  # written when train_config held it
        train = dict(old.get("train_config") or {})
        old = old | {"train_config": train, "idiom_frac": train.pop("idiom_frac", 0.0)}
    return old


def spec_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``section.key: old there, new now`` for every setting two spec records differ in."""
    out = []
    for section in sorted(old.keys() | new.keys()):
        a, b = old.get(section), new.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [
                f"{section}.{k}: {a.get(k)!r} there, {b.get(k)!r} now"
                for k in sorted(a.keys() | b.keys())
                if a.get(k) != b.get(k)
            ]
        elif a != b:
            out.append(f"{section}: {a!r} there, {b!r} now")
    return out


def _check_spec(pdir: Path, record: dict[str, Any]) -> None:
    old = read_spec(pdir)
    if old is None:
        atomic_write_json(pdir / "spec.json", record)
    elif old != record:
        said = "; ".join(spec_differences(old, record)[:3])
        raise ValueError(
            f"{pdir} holds a point with other settings ({said}); pass another --out or delete it"
        )


def _timings(pdir: Path, **new: float) -> dict[str, float]:
    path = pdir / "timings.json"
    old = read_json(path, "timings") if path.exists() else {}
    if new:
        atomic_write_json(path, old | new)
    return old | new


@dataclass(frozen=True)
class Prepared:
    """The sweep's corpus, tokenizer and token data (built once, cached on disk)."""

    corpus: Corpus
    tokenizer: Tokenizer
    data: TokenData
    cache_dir: Path

    @classmethod
    def load(cls, scfg: SweepConfig, cache_dir: Path) -> "Prepared":

        corpus, tokenizer, data = prepare_data(scfg.corpus, cache_dir)
        prepared = cls(corpus, tokenizer, data, cache_dir)
        kinds = get_preset(scfg.preset).idiom_kinds
        with_idioms(data, tokenizer, scfg.idiom_share(), cache_dir, kinds=kinds)  # builds the cache
        return prepared

    def mixed(
        self, idiom_frac: float, kinds: tuple[IdiomKind, ...] = ("literals",)
    ) -> TokenData | MixedData:

        return with_idioms(self.data, self.tokenizer, idiom_frac, self.cache_dir, kinds=kinds)


def train_point(
    spec: PointSpec, scfg: SweepConfig, pdir: Path, prepared: Prepared, dist_info: DistInfo
) -> None:
    """Train (or resume, or skip when finished) the point's run in ``pdir/run``."""

    corpus, tokenizer = prepared.corpus, prepared.tokenizer
    mcfg, tcfg = point_configs(spec, scfg, tokenizer.vocab_size)
    run = pdir / "run"
    if dist_info.is_main:
        _check_spec(pdir, spec_record(spec, mcfg, tcfg, scfg.idiom_share()))
    if (run / "final" / "config.json").is_file():
        return
    data = prepared.mixed(scfg.idiom_share(), get_preset(scfg.preset).idiom_kinds)
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
    """Task table (``tasks.json``: every task the point was ever asked for, so a sweep whose
    tasks change tables only the new ones), one circuit per solved task of the sweep's tasks,
    then ``point.json`` (those tasks only)."""

    model = HookedSparseTransformer.from_pretrained(pdir / "run" / "final").eval()
    tasks_path = pdir / "tasks.json"
    wanted = scfg.task_names()
    table: dict[str, Any] = read_json(tasks_path, "task table") if tasks_path.exists() else {}
    missing = [name for name in wanted if name not in table]
    for name in missing:  # a new point, or tasks added to the sweep since the table was made
        try:
            table |= task_table(
                model, [_task(name, scfg, prepared)], "test", scfg.task_n, scfg.seed
            )
        except ValueError as e:
            table[name] = {"error": str(e)}
    if missing:
        atomic_write_json(tasks_path, table)
    table = {name: table[name] for name in wanted}  # the sweep's tasks only
    solved = [n for n, r in table.items() if "loss" in r and r["loss"] <= scfg.target_loss]
    todo = [n for n in solved if not _pruned(pdir / "circuits" / f"{n}.json")]
    if todo:
        _prune_tasks(model, pdir, todo, scfg, prepared)
    atomic_write_json(pdir / "point.json", point_row(spec, scfg, pdir, table, solved))


def _prune_tasks(
    model: HookedSparseTransformer,
    pdir: Path,
    names: list[str],
    scfg: SweepConfig,
    prepared: Prepared,
) -> None:
    """Prune the tasks ``names`` of the point (``prune_point_task`` with ``prune_request``)."""
    final = pdir / "run" / "final"
    windows = ablation_windows(model, final, scfg.corpus, prepared.cache_dir, scfg.seed)
    (pdir / "circuits").mkdir(exist_ok=True)
    for name in names:
        path = pdir / "circuits" / f"{name}.json"
        try:
            task = _task(name, scfg, prepared)
        except ValueError as e:
            atomic_write_json(path.with_suffix(".skip.json"), {"task": name, "skipped": str(e)})
            continue
        request = prune_request(scfg, path.with_suffix(".optuna.db"))
        prune_point_task(model, pdir, task, windows, request, prepared.cache_dir)


def _pruned(path: Path) -> bool:
    """Whether a task's circuit file, or the file saying why it has none, exists."""
    return path.exists() or path.with_suffix(".skip.json").exists()


def prune_point_task(
    model: HookedSparseTransformer,
    pdir: Path,
    task: Task,
    windows: tuple[torch.Tensor, dict[str, Any]],
    request: PruneRequest,
    cache_dir: Path,
) -> Path:
    """Prune ``task`` of the point's model (``pdir/run/final``) into
    ``pdir/circuits/{task}.json`` (``circuits.prune_task.prune_to_file``), or write why not
    into ``{task}.skip.json``; returns the file written."""
    path = pdir / "circuits" / f"{task.name}.json"
    try:
        path.parent.mkdir(exist_ok=True)
        prune_to_file(
            model, task, windows, request, path, model_dir=pdir / "run" / "final",
            cache_dir=cache_dir,
        )  # fmt: skip
    except (ValueError, FloatingPointError) as e:
        skip = path.with_suffix(".skip.json")
        atomic_write_json(skip, {"task": task.name, "skipped": str(e)})
        return skip
    return path


def _task(name: str, scfg: SweepConfig, prepared: Prepared) -> Task:
    """A task of the sweep by name: built-in, or one of ``scfg.custom_tasks`` (its stem).

    Raises:
        ValueError: an unknown name, or a malformed custom task file (its line named).
    """

    for path in scfg.custom_tasks:
        if Path(path).stem == name:
            return load_custom_task(path, prepared.tokenizer)
    return get_task(name)


def point_row(
    spec: PointSpec, scfg: SweepConfig, pdir: Path, table: dict[str, Any], solved: list[str]
) -> dict[str, Any]:
    """The results of a finished point (one row of the sweep table)."""

    info = read_json(pdir / "run" / "run.json", "run")
    mcfg, tcfg = info["model_config"], info["train_config"]
    records = [r for r in read_jsonl(pdir / "run" / "metrics.jsonl") if "val_loss" in r]
    model = HookedSparseTransformer.from_pretrained(pdir / "run" / "final")
    circuits: dict[str, Any] = {}
    for name in solved:
        path = pdir / "circuits" / f"{name}.json"
        if path.exists():
            circuits[name] = summary_row(Circuit.load(path), str(path.relative_to(pdir)))
        else:
            circuits[name] = read_json(path.with_suffix(".skip.json"), "skipped circuit")
    sizes = circuit_sizes(circuits)
    return dataclasses.asdict(spec) | {
        "d_mlp": mcfg["d_mlp"],
        "n_layers": mcfg["n_layers"],
        "n_heads": mcfg["n_heads"],
        "steps": tcfg["steps"],
        "tokens": tcfg["steps"] * tcfg["batch_size"] * mcfg["n_ctx"],
        "idiom_frac": recorded_idiom_frac(info),
        "l0_total": l0_stats(model)["l0_total"],
        "val_loss": records[-1]["val_loss"] if records else math.nan,
        "target_loss": scfg.target_loss,
        "tasks": table,
        "solved": solved,
        "circuits": circuits,
        "n_circuits": sizes["n_circuits"],
        "n_empty_circuits": sizes["n_empty_circuits"],
        GEOMETRIC_MEAN_EDGES: sizes[GEOMETRIC_MEAN_EDGES],
        "timings": _timings(pdir),
    }
