"""Hyperparameter search for pruning with Optuna: the smallest circuit that reaches the target.

The paper re-tunes its 8 pruning hyperparameters per (model, task) with CARBS (arXiv
2511.13653, App. A.5, Table 2: 256-768 runs). Here Optuna's TPE sampler searches log-uniform ranges around the
Table 2 centres (``SPACE``) plus the number of epochs over the task's training pairs. A trial
trains masks (``Pruner.learn_masks``), bisects on the validation pairs and scores

    objective = k + n_edges / EDGE_SCALE

(``k`` = kept nodes of the smallest passing circuit; edges only break ties; a trial whose
masks cannot reach the target scores ``total nodes + 1``). Optuna's median pruner stops trials
whose learned mask is larger (weighted by how far the training loss is above the target) than
the median of earlier trials at the same tenth of training.

Reproducibility and storage:

* The study lives in Optuna storage. The default is an SQLite file, so a killed search
  resumes where it stopped: trials still marked running by a dead process are failed once
  their heartbeat is ``grace_s`` old, and the trial budget counts finished trials only.
* Each trial is sampled by a TPE sampler seeded with ``(seed, finished trials, running
  trials)``, so a resumed search samples the same parameters for the same history, and ends
  with the same best trial as an uninterrupted one given the same trial budget (the objective
  is deterministic: masks are trained with the pruning seed, not the trial's).
* Several processes (or machines) can work on one study: give each the same ``storage`` and
  ``study_name``. On one machine an SQLite file or ``journal:PATH`` (Optuna's file journal,
  safe for concurrent writers) works; across machines a database URL such as
  ``postgresql://user@host/db``. A new SQLite study is created under a lock file beside it
  (``_creation_lock``), so workers may start at the same instant. Two processes that sample at
  the same instant may draw the same parameters; that wastes a trial, nothing else.
* A study records its identity (``study_identity``): the model, the task's train and
  validation pairs, the ablation values and every pruning setting that the trials do not sample
  (target, ablation, frozen norms, q/k tying, steps, batch, seed, ...), the epochs range and the
  search space. Resuming a study whose identity differs is refused, naming what changed: its
  trials scored another objective, and their circuits would be reported under the new settings.
"""

import hashlib
import json
import logging
import math
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from filelock import FileLock, Timeout
from optuna.storages.journal import JournalFileBackend
from tqdm.auto import tqdm

from sparse_lens.circuits.ablation import model_fingerprint
from sparse_lens.circuits.circuit import circuit_edges
from sparse_lens.circuits.masks import PruneConfig, Pruner
from sparse_lens.files.outputs import check_name_lengths
from sparse_lens.tasks.task import TaskBatch

logger = logging.getLogger(__name__)

# name -> (low, high) of a log-uniform range around the paper's Table 2 centre
SPACE: dict[str, tuple[float, float]] = {
    "k_coef": (1e-5, 1e-2),  # centre 1e-4
    "init_noise_scale": (1e-3, 1e-1),  # centre 1e-2
    "init_noise_bias": (1e-2, 1.0),  # centre 0.1
    "weight_decay": (1e-4, 1e-2),  # centre 1e-3
    "lr": (1e-3, 3e-2),  # centre 3e-3
    "inv_beta2": (5e-3, 0.5),  # 1 - beta2, centre 5e-2
    "warmup_frac": (5e-3, 0.3),  # centre 5e-2
    "heaviside_temp": (0.1, 10.0),  # centre 1.0
}


# The first trials of a new study. First, the settings that gave the smallest circuits on the
# demo model in our own searches (else_elif 107 nodes, single_double_quote 175: TPE's second
# trial there; a Heaviside temperature near 5 and a small init noise), rounded, 17 epochs: a
# fast trial that a short search (the demo's) can afford. Then Table 2's centres with the larger
# k_coef and lr of the single runs, 48 epochs (best for bracket_counting there).
FIRST_TRIALS: tuple[dict[str, float], ...] = (
    {
        "k_coef": 7e-4,
        "init_noise_scale": 2e-3,
        "init_noise_bias": 4e-2,
        "weight_decay": 3.5e-4,
        "lr": 1.5e-2,
        "inv_beta2": 6e-2,
        "warmup_frac": 3.6e-2,
        "heaviside_temp": 5.0,
        "epochs": 17,
    },
    {
        "k_coef": 1e-3,
        "init_noise_scale": 1e-2,
        "init_noise_bias": 0.1,
        "weight_decay": 1e-3,
        "lr": 1e-2,
        "inv_beta2": 5e-2,
        "warmup_frac": 5e-2,
        "heaviside_temp": 1.0,
        "epochs": 48,
    },
)
EDGE_SCALE = 1e9  # above any edge count, so edges only break ties between equal node counts


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    """Optuna search settings.

    ``trials``: finished trials (complete or pruned) the study should reach (the first one of
    a new study are ``FIRST_TRIALS`` when ``enqueue_first``); ``budget_minutes``:
    wall-clock limit of this call (a trial running at the limit finishes); ``epochs``: inclusive
    log-uniform range of epochs over the training pairs; ``storage``: an Optuna storage URL
    (``sqlite:///file.db``, ``postgresql://...``) or ``journal:PATH``; None keeps the study in
    memory (nothing to resume). ``study_name`` defaults to one derived from the model, task,
    target and seed.
    """

    trials: int = 24
    budget_minutes: float = 5.0
    epochs: tuple[int, int] = (8, 48)
    seed: int = 0
    storage: str | None = None
    study_name: str | None = None
    n_startup_trials: int = 6
    prune_trials: bool = True
    enqueue_first: bool = True
    heartbeat_s: int = 10
    grace_s: int = 60

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise ValueError(f"trials must be >= 1, got {self.trials!r}")
        if not self.budget_minutes > 0:
            raise ValueError(f"budget_minutes must be > 0, got {self.budget_minutes!r}")
        lo, hi = self.epochs
        if not 1 <= lo <= hi:
            raise ValueError(f"epochs must be a range 1 <= low <= high, got {self.epochs!r}")
        if self.storage is not None:
            check_storage_url(self.storage)
        if self.heartbeat_s < 1 or self.grace_s <= self.heartbeat_s:
            raise ValueError(
                f"need heartbeat_s >= 1 and grace_s > heartbeat_s, got {self.heartbeat_s!r}, "
                f"{self.grace_s!r}"
            )


def _storage_file(url: str, path_text: str, kind: str) -> Path:
    """The file of a file-backed storage ``url``; ``ValueError`` naming ``url`` if the path is
    empty, a folder, or in a folder that does not exist (no folder is created for a typo)."""
    if not path_text or path_text == ":memory:":
        raise ValueError(
            f"storage {url!r} names no {kind} file; give a path, e.g. sqlite:///runs/optuna.db "
            "(an in-memory study cannot be resumed: leave --storage out for the default file)"
        )
    path = Path(path_text).expanduser()
    check_name_lengths(path, f"storage {url[:60]!r}")
    if path.is_dir():
        raise ValueError(f"storage {url!r}: {str(path)!r} is a folder, not a {kind} file")
    if not path.parent.is_dir():
        raise ValueError(
            f"storage {url!r}: folder {str(path.parent)!r} does not exist; create it first"
        )
    return path


def check_storage_url(url: str) -> None:
    """Check an Optuna storage URL before any work: ``journal:PATH``, ``sqlite:///PATH`` (a file
    in an existing folder) or another database URL (``postgresql://...``, whose server is only
    reached when the study opens).

    Raises:
        ValueError: naming ``url``: not a URL, or a file path that is empty, a folder, or in a
            missing folder.
    """
    if url.startswith("journal:"):
        _storage_file(url, url.removeprefix("journal:"), "journal")
        return
    if "://" not in url:
        raise ValueError(
            f"storage must be a database URL (sqlite:///FILE, postgresql://...) or "
            f"journal:PATH, got {url!r}"
        )
    if url.startswith("sqlite:"):
        if not url.startswith("sqlite:///"):
            raise ValueError(f"storage {url!r}: an SQLite URL is sqlite:///PATH")
        _storage_file(url, url.removeprefix("sqlite:///"), "database")


def open_storage(url: str | None, scfg: SearchConfig) -> optuna.storages.BaseStorage | None:
    """Optuna storage for ``url``: RDB (with heartbeats) for database URLs, a file journal for
    ``journal:PATH``, None (in memory) for None.

    Raises:
        ValueError: ``url`` fails ``check_storage_url``, or the database cannot be opened.
    """
    if url is None:
        return None
    check_storage_url(url)
    if url.startswith("journal:"):
        path = Path(url.removeprefix("journal:")).expanduser()
        try:
            backend = JournalFileBackend(str(path))
        except OSError as e:
            raise ValueError(f"cannot open the Optuna journal {url!r}: {e}") from e
        try:  # reads the journal: a file of another kind (an SQLite database, text) fails here
            return optuna.storages.JournalStorage(backend)
        except _NOT_A_JOURNAL as e:
            raise _not_a_journal(url, e) from e
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna's terms
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=scfg.heartbeat_s,
                grace_period=scfg.grace_s,
                engine_kwargs={"connect_args": {"timeout": 60}}
                if url.startswith("sqlite")
                else None,
            )
    except (ImportError, OSError, sqlalchemy.exc.SQLAlchemyError) as e:
        raise ValueError(f"cannot open the Optuna storage {url!r}: {_first_line(e)}") from e


# What Optuna's journal reader raises on a file that is not a journal (or on its first read)
_NOT_A_JOURNAL = (ValueError, KeyError, TypeError, AttributeError, IndexError)


def _not_a_journal(url: str, e: BaseException) -> ValueError:
    path = url.removeprefix("journal:")
    return ValueError(
        f"storage {url!r}: {path!r} is not an Optuna journal file "
        f"({type(e).__name__}: {_first_line(e)}); give the journal's own file or a new one"
    )


def _first_line(e: BaseException) -> str:
    """An exception's message up to its first line break (SQLAlchemy appends the SQL and a
    link on further lines): errors are one line."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def open_study(
    scfg: SearchConfig, *, study_name: str, identity: dict[str, Any] | None = None
) -> optuna.Study:
    """Create or load the study ``scfg.study_name or study_name`` in ``scfg.storage`` (with
    ``FIRST_TRIALS`` enqueued in a new one, ``scfg.enqueue_first``); with ``identity``, recorded
    on a new study and checked on an old one (``check_identity``) before anything is enqueued.

    Raises:
        ValueError: a bad storage string, the storage cannot be opened (named), or the study
            was run with another identity.
    """
    with _creation_lock(scfg.storage):
        storage = open_storage(scfg.storage, scfg)
        try:
            study = optuna.create_study(
                storage=storage,
                study_name=scfg.study_name or study_name,
                direction="minimize",
                load_if_exists=True,
                pruner=optuna.pruners.MedianPruner(n_startup_trials=scfg.n_startup_trials),
            )
        except _NOT_A_JOURNAL as e:
            if not str(scfg.storage).startswith("journal:"):
                raise
            raise _not_a_journal(str(scfg.storage), e) from e
        except (OSError, sqlalchemy.exc.SQLAlchemyError) as e:  # e.g. a read-only database
            raise ValueError(
                f"cannot create the study in the Optuna storage {scfg.storage!r}: {_first_line(e)}"
            ) from e
        if identity is not None:
            check_identity(study, identity)
        if scfg.enqueue_first and not study.get_trials(deepcopy=False):
            lo, hi = scfg.epochs
            for first in FIRST_TRIALS:
                epochs = min(max(int(first["epochs"]), lo), hi)
                study.enqueue_trial(first | {"epochs": epochs}, skip_if_exists=True)
    return study


@contextmanager
def _creation_lock(url: str | None, timeout_s: float = 300.0) -> Iterator[None]:
    """Hold ``.NAME.lock`` beside the SQLite file of ``url`` (``filelock``) while the storage
    and the study are created: Optuna creates an RDB's tables and its ``alembic_version`` row
    without a guard, so two processes opening one new SQLite file at the same instant fail
    ("table studies already exists", "UNIQUE constraint failed"). Other storages need no lock
    (a journal file locks itself; a database server has transactional DDL).

    Raises:
        ValueError: the lock was not free within ``timeout_s`` (its file named).
    """
    if url is None or not url.startswith("sqlite:///"):
        yield
        return
    db = Path(url.removeprefix("sqlite:///")).expanduser()
    lock = db.with_name(f".{db.name}.lock")
    file_lock = FileLock(str(lock), timeout=timeout_s)
    try:
        file_lock.acquire()
    except Timeout:
        raise ValueError(
            f"storage {url!r}: another process has held {str(lock)!r} for {timeout_s:g} s "
            "while creating the study; if none is running, delete that file"
        ) from None
    except OSError as e:
        raise ValueError(f"storage {url!r}: cannot create {str(lock)!r}: {e.strerror}") from e
    try:
        yield
    finally:
        file_lock.release()


def trial_config(trial: optuna.Trial, base: PruneConfig, scfg: SearchConfig) -> PruneConfig:
    """The pruning settings a trial samples (log-uniform over ``SPACE`` and ``scfg.epochs``)."""
    values = {name: trial.suggest_float(name, lo, hi, log=True) for name, (lo, hi) in SPACE.items()}
    inv_beta2 = values.pop("inv_beta2")
    epochs = trial.suggest_int("epochs", *scfg.epochs, log=True)
    return replace(base, **values, beta2=1.0 - inv_beta2, epochs=epochs)


def _objective(pruner: Pruner, scfg: SearchConfig, full_loss: float) -> Any:
    base = pruner.pcfg
    target = base.target_loss

    def objective(trial: optuna.Trial) -> float:
        run = pruner.with_config(trial_config(trial, base, scfg))

        def report(mark: int, kept: int, loss: float) -> None:
            if not scfg.prune_trials:
                return
            trial.report(kept * max(1.0, loss / target), mark)
            if trial.should_prune():
                raise optuna.TrialPruned()

        taus, _ = run.learn_masks(report=report)
        k, loss, curve = run.bisect(taus, full_loss)
        masks = run.masks_from_ranking(taus, k)
        kept = {h: m.nonzero().squeeze(-1).tolist() for h, m in masks.items()}
        n_edges = len(circuit_edges(pruner.model, kept))
        trial.set_user_attr("k", k)
        trial.set_user_attr("n_edges", n_edges)
        trial.set_user_attr("loss", loss)
        trial.set_user_attr("curve", curve)
        trial.set_user_attr("kept", {h: v for h, v in kept.items() if v})
        trial.set_user_attr("kept_taus", {h: taus[h][v].tolist() for h, v in kept.items() if v})
        if loss > target or not math.isfinite(loss):
            return float(pruner.n_nodes + 1)
        return k + n_edges / EDGE_SCALE

    return objective


# PruneConfig fields a trial samples (``trial_config``), or that do not change its objective
_NOT_IDENTITY = (*SPACE, "beta2", "epochs", "calibrate")


def _digest(tensors: list[Any]) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _batch_digest(batch: TaskBatch) -> str:
    return _digest([batch.tokens, batch.last, batch.correct, batch.incorrect])


def study_identity(pruner: Pruner, scfg: SearchConfig) -> dict[str, Any]:
    """Everything that changes a trial's objective, as JSON values: the model fingerprint, the
    hashes of the train / val pairs and of the ablation values, the pruning settings the trials
    do not sample, the epochs range and the search space (module docstring)."""
    values = pruner.ablation.values
    fixed = {k: v for k, v in asdict(pruner.pcfg).items() if k not in _NOT_IDENTITY}
    identity = {
        "model": model_fingerprint(pruner.model),
        "train_pairs": _batch_digest(pruner.train),
        "val_pairs": _batch_digest(pruner.val),
        "ablation_values": _digest([values[h] for h in sorted(values)]),
        "prune_config": fixed,
        "epochs": list(scfg.epochs),
        "space": SPACE,
    }
    return json.loads(json.dumps(identity))  # tuples as lists: equal to what storage returns


def check_identity(study: optuna.Study, identity: dict[str, Any]) -> None:
    """Record ``identity`` on a new study; refuse an existing one recorded with another.

    Raises:
        ValueError: the study holds trials but another identity (the changed settings named),
            or none (a study from before identities were recorded).
    """
    old = study.user_attrs.get("identity")
    if old is None and not study.get_trials(deepcopy=False):
        study.set_user_attr("identity", identity)
        return
    if old == identity:
        return
    if old is None:
        changed = "its settings were not recorded"
    else:
        diff = _differences(old, identity)
        changed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diff)
    raise ValueError(
        f"the Optuna study {study.study_name!r} was run with other settings ({changed}); its "
        "trials would be reused for an objective they did not score. Give another --storage "
        "file or study name, or rerun with the study's settings"
    )


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and key != "space":
            out += [(f"{key}.{k}", x, y) for k, x, y in _differences(a, b)]
        elif a != b:
            out.append((key, a, b))
    return out


def _counts(study: optuna.Study) -> tuple[int, int]:
    states = [t.state for t in study.get_trials(deepcopy=False)]
    done = sum(
        s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for s in states
    )
    return done, sum(s == optuna.trial.TrialState.RUNNING for s in states)


def run_search(
    pruner: Pruner,
    scfg: SearchConfig,
    *,
    study_name: str,
    progress: bool = False,
) -> optuna.Study:
    """Run (or resume) the study until it holds ``scfg.trials`` finished trials or this call has
    spent ``scfg.budget_minutes``; returns the study (``study.best_trial`` is the circuit).

    Raises:
        ValueError: a bad storage string, the full model misses the target, or the study was
            run with other settings (``check_identity``).
    """
    full_loss = pruner.full_loss()
    study = open_study(scfg, study_name=study_name, identity=study_identity(pruner, scfg))
    rdb = scfg.storage is not None and not scfg.storage.startswith("journal:")
    objective = _objective(pruner, scfg, full_loss)
    deadline = time.monotonic() + 60 * scfg.budget_minutes
    done, _ = _counts(study)
    bar = tqdm(
        total=scfg.trials,
        initial=min(done, scfg.trials),
        disable=not progress,
        desc="search",
        unit="trial",
    )
    quiet = _InterruptFilter()
    optuna_log = logging.getLogger("optuna.study._optimize")
    optuna_log.addFilter(quiet)
    try:
        while time.monotonic() < deadline:
            if rdb:  # heartbeats: trials of a dead process are failed
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    optuna.storages.fail_stale_trials(study)
            done, running = _counts(study)
            bar.update(min(done, scfg.trials) - bar.n)
            if done >= scfg.trials:
                break
            study.sampler = optuna.samplers.TPESampler(
                seed=(scfg.seed * 1_000_003 + done * 1009 + running) % 2**31,
                n_startup_trials=scfg.n_startup_trials,
            )
            study.optimize(objective, n_trials=1, catch=(FloatingPointError,))
    finally:
        optuna_log.removeFilter(quiet)
        bar.close()
    return study


class _InterruptFilter(logging.Filter):
    """Drops Optuna's two warnings about a trial failed by Ctrl-C (a traceback, then "failed
    with value None"): the ``KeyboardInterrupt`` goes on to the caller, which reports it in one
    line; the trial stays FAILED in the study and is retried on resume."""

    def __init__(self) -> None:
        super().__init__()
        self.interrupted = False

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[0] if record.exc_info else None
        if exc is not None and issubclass(exc, KeyboardInterrupt):
            self.interrupted = True
            return False
        return not (self.interrupted and "failed with value" in record.getMessage())
