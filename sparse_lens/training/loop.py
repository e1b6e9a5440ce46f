"""The one training loop: what every trainer shares, so each trainer is a step function plus its
settings.

A trainer (the sparse model's, the dense baseline's, the bridges') brings a ``step(i, log)``
function that takes optimizer step ``i`` (0-based) and returns the fields of that step's metrics
record, and the named objects whose ``state_dict`` make up its state (models, optimizers). This
module owns the rest:

* ``Loop.run``: the steps ``start..end`` with a tqdm bar, the record cadence (``log_every``,
  ``eval_every``; the last step always), ``fault_point("step:N")`` after each step for the kill
  tests, checkpoints every ``checkpoint_every`` steps, ``halt_after`` (stop as if killed) and a
  DDP barrier after each checkpoint;
* run settings, compare-or-refuse: a resumed run whose settings differ is refused, naming the
  first difference (``refuse_other_settings``);
* ``metrics.jsonl`` (``MetricsLog``): one JSON record per line, flushed as written; on resume,
  the lines after the checkpoint are dropped, and so is a line cut by a kill;
* one trainer-state format (``TrainerState``): step, data generator, the state dicts, the
  records, the settings, in one ``torch.save`` file read back with ``weights_only=True`` and
  replaced atomically; files of the three earlier layouts are read and converted;
* checkpoint folders with keep-N (``CheckpointFolders``): ``checkpoints/step-NNNNNNN/`` built
  whole in a temporary folder (a model folder plus ``trainer.pt``), ``latest.json`` switched
  after it;
* ``DistInfo``: rank and world size under ``torchrun``;
* ``set_lr``: the step's learning rate on every parameter group (the schedules themselves are
  pure functions in ``schedules``).
"""

import json
import logging
import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from sparse_lens.files.atomic import (
    atomic_dir,
    atomic_write,
    atomic_write_json,
    fault_point,
    read_json,
)
from sparse_lens.files.jsonl import read_jsonl

logger = logging.getLogger(__name__)

TRAINER_STATE = "trainer.pt"
STATE_FORMAT = "sparse_lens.trainer_state"
STATE_VERSION = 1
_CKPT_NAME = re.compile(r"step-\d{7,}")


@runtime_checkable
class Stateful(Protocol):
    """Anything with ``state_dict``/``load_state_dict`` (a module, an optimizer, a hook)."""

    def state_dict(self) -> Mapping[str, Any]: ...

    def load_state_dict(self, state_dict: Any, /) -> Any: ...


# ---------------------------------------------------------------------------------------------
# Run settings


def first_difference(old: Any, new: Any) -> str:
    """The first key where two settings differ, as ``key: run has X, now Y``."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new)):
            if old.get(k) != new.get(k):
                return f"{k}: run has {old.get(k)!r}, now {new.get(k)!r}"
    return f"run has {old!r}, now {new!r}"


def refuse_other_settings(saved: Any, current: Any, where: str) -> None:
    """Raise unless a run's saved settings equal the current ones.

    Raises:
        ValueError: ``cannot resume WHERE: its run had other settings (FIRST DIFFERENCE)``.
    """
    if saved != current:
        raise ValueError(
            f"cannot resume {where}: its run had other settings ({first_difference(saved, current)})"
        )


def refuse_fresh_start(exists: bool, resume: bool, where: str) -> None:
    """Refuse to start over a run that holds a checkpoint or a result, unless resuming.

    Raises:
        ValueError: ``exists`` and not ``resume``.
    """
    if exists and not resume:
        raise ValueError(
            f"{where} already holds a run; resume it (--resume on the command line, "
            "resume=True in Python) or pick a new folder"
        )


# ---------------------------------------------------------------------------------------------
# The trainer-state format


@dataclass(kw_only=True)
class TrainerState:
    """Everything a loop needs to continue exactly: ``step`` steps taken, the data generator's
    state, the named state dicts (models, optimizers, hooks), the metrics records (when they are
    not kept in a ``metrics.jsonl``) and the run's settings (plain values, compared on resume)."""

    step: int
    generator: torch.Tensor
    states: dict[str, Any]
    records: list[dict[str, Any]] | None = None
    settings: Any = None

    @classmethod
    def capture(
        cls,
        step: int,
        generator: torch.Generator,
        objects: Mapping[str, Stateful],
        *,
        records: list[dict[str, Any]] | None = None,
        settings: Any = None,
    ) -> "TrainerState":
        states = {name: obj.state_dict() for name, obj in objects.items()}
        return cls(
            step=step,
            generator=generator.get_state(),
            states=states,
            records=None if records is None else list(records),
            settings=settings,
        )

    def restore(self, generator: torch.Generator, objects: Mapping[str, Stateful]) -> None:
        """Load the saved states into ``objects`` and ``generator``.

        Raises:
            ValueError: the state lacks one of ``objects``.
        """
        missing = sorted(set(objects) - set(self.states))
        if missing:
            raise ValueError(f"the trainer state lacks {missing} (it holds {sorted(self.states)})")
        for name, obj in objects.items():
            obj.load_state_dict(self.states[name])
        generator.set_state(self.generator)

    def payload(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "step": self.step,
            "generator": self.generator,
            "states": self.states,
            "records": self.records,
            "settings": self.settings,
        }


_EARLIER_KEYS = ("settings", "step", "generator", "records", "metrics")


def _from_payload(payload: Any) -> TrainerState:
    """A ``TrainerState`` from a loaded file: this format, or one of the three earlier layouts
    (the sparse trainer's ``{step, optimizer, generator}``; the dense and bridge loops'
    ``{settings, step, generator, records|metrics, <state dicts>}``)."""
    if not isinstance(payload, dict) or not {"step", "generator"} <= set(payload):
        raise ValueError("not a trainer state")
    if payload.get("format") == STATE_FORMAT:
        if payload.get("version") != STATE_VERSION:
            raise ValueError(
                f"trainer-state version {payload.get('version')!r}; this version reads "
                f"{STATE_VERSION}"
            )
        return TrainerState(
            step=int(payload["step"]),
            generator=payload["generator"],
            states=dict(payload["states"]),
            records=payload.get("records"),
            settings=payload.get("settings"),
        )
    records = payload.get("records", payload.get("metrics"))
    return TrainerState(
        step=int(payload["step"]),
        generator=payload["generator"],
        states={k: v for k, v in payload.items() if k not in _EARLIER_KEYS},
        records=None if records is None else list(records),
        settings=payload.get("settings"),
    )


def write_trainer_state(path: Path, state: TrainerState) -> None:
    """``torch.save`` ``state`` to ``path`` (not atomic: for a file of a folder being built)."""
    torch.save(state.payload(), path)


def save_trainer_state(path: Path, state: TrainerState) -> None:
    """Replace ``path`` by ``state`` atomically (a kill leaves the previous file whole)."""
    atomic_write(Path(path), lambda p: write_trainer_state(p, state))


def load_trainer_state(
    path: Path, *, settings: Any = None, where: str | None = None
) -> TrainerState:
    """The trainer state in ``path``; with ``settings``, refused unless the saved ones equal them.

    Raises:
        ValueError: the file is corrupt or not a trainer state (the message names it), or its
            run had other settings.
    """
    path = Path(path)
    try:
        state = _from_payload(torch.load(path, weights_only=True))
    except Exception as e:  # noqa: BLE001 - torch raises several kinds for a bad file
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:100]
        raise ValueError(f"trainer state {str(path)!r} is corrupt ({why})") from e
    if settings is not None:
        refuse_other_settings(state.settings, settings, where or str(path))
    return state


# ---------------------------------------------------------------------------------------------
# metrics.jsonl


def kept_metric_records(path: Path, upto: int) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` up to step ``upto``, read by ``read_jsonl`` (a cut last
    line, from a kill while it was written, is dropped).

    Raises:
        ValueError: a corrupt line before the last, or a record without ``step``, naming it.
    """
    if not path.exists():
        return []
    try:
        records = read_jsonl(path)
    except ValueError as e:
        raise ValueError(
            f"{e}; delete that line (the metrics before it are kept) and resume again"
        ) from e
    for record in records:
        if "step" not in record:
            raise ValueError(f"{path}: a record without 'step' ({record}); resume needs steps")
    return [r for r in records if isinstance(r["step"], int) and r["step"] <= upto]


@dataclass
class MetricsLog:
    """The metrics records of a run, in memory and, with a ``path``, in a ``metrics.jsonl``
    (one JSON object per line, each with ``step``; flushed as written)."""

    path: Path | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    write: bool = True  # False on DDP ranks other than 0

    def start(self, step: int, saved: list[dict[str, Any]] | None = None) -> None:
        """Begin at ``step``: keep the records up to it (from the file, or else ``saved``) and
        rewrite the file with them."""
        if self.path is None or not self.write:
            self.records = [r for r in (saved or []) if r["step"] <= step]
            return
        if self.path.exists() or saved is None:
            kept = kept_metric_records(self.path, step) if step > 0 else []
        else:  # an earlier dense run kept its records in its trainer state
            kept = [r for r in saved if r["step"] <= step]
        lines = [json.dumps(r) for r in kept]
        self.records = [json.loads(line) for line in lines]
        atomic_write(self.path, lambda p: p.write_text("".join(k + "\n" for k in lines)))

    def append(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self.path is not None and self.write:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()


# ---------------------------------------------------------------------------------------------
# Checkpoint folders


@dataclass(frozen=True)
class CheckpointFolders:
    """``run_dir/checkpoints/step-NNNNNNN/`` folders, each complete or absent, the newest named
    by ``checkpoints/latest.json``; ``keep`` of them are kept."""

    run_dir: Path
    keep: int = 2

    @property
    def root(self) -> Path:
        return self.run_dir / "checkpoints"

    def folder(self, step: int) -> Path:
        return self.root / f"step-{step:07d}"

    def save(
        self,
        state: TrainerState,
        write_files: Callable[[Path, str], None],
        replaces: Iterable[str] = (),
    ) -> Path:
        """Build checkpoint ``state.step`` whole (``write_files(tmp, name)`` then
        ``trainer.pt``) in a temporary folder, rename it, then point ``latest.json`` at it and
        delete the oldest ones beyond ``keep``."""
        ckpt = self.folder(state.step)
        with atomic_dir(ckpt, replaces=(*replaces, TRAINER_STATE)) as tmp:
            write_files(tmp, ckpt.name)
            write_trainer_state(tmp / TRAINER_STATE, state)
            fault_point(f"dir:{ckpt.name}/{TRAINER_STATE}")
        atomic_write_json(self.root / "latest.json", {"step": state.step, "dir": ckpt.name})
        for old in sorted(self.root.glob("step-*"))[: -self.keep]:
            if old != ckpt:
                shutil.rmtree(old, ignore_errors=True)
        return ckpt

    def complete(self) -> list[Path]:
        """The complete checkpoints (a ``step-N`` folder exists only whole), oldest first."""
        return sorted(p for p in self.root.glob("step-*") if _CKPT_NAME.fullmatch(p.name))

    def latest(self) -> Path | None:
        """The checkpoint ``latest.json`` names (``None`` if there is none); a pointer to a
        deleted checkpoint falls back to the newest one left.

        Raises:
            ValueError: the pointer is not JSON, lacks ``step``/``dir``, or names a folder that
                is not a checkpoint of this run (e.g. outside the run folder).
            FileNotFoundError: the pointer names a missing folder and none is left.
        """
        pointer = self.root / "latest.json"
        if not pointer.exists():
            found = self.complete()
            return found[-1] if found else None
        info = read_json(pointer, "checkpoint pointer")
        if not isinstance(info, dict) or not {"step", "dir"} <= set(info):
            raise ValueError(
                f"checkpoint pointer {str(pointer)!r} lacks 'step' or 'dir' ({info!r}); delete "
                "it to resume from the newest checkpoint folder"
            )
        name = info["dir"]
        if not isinstance(name, str) or not _CKPT_NAME.fullmatch(name):
            raise ValueError(
                f"checkpoint pointer {str(pointer)!r} names {name!r}, not a checkpoint folder "
                "of this run (step-NNNNNNN); delete it to resume from the newest checkpoint folder"
            )
        ckpt = self.root / name
        if ckpt.is_dir():
            return ckpt
        found = self.complete()
        if not found:
            raise FileNotFoundError(
                f"latest checkpoint {str(ckpt)!r} named in {pointer} is missing"
            )
        logger.warning("%s is missing; resuming from %s", ckpt, found[-1])
        return found[-1]

    def load(self, ckpt: Path) -> TrainerState:
        """``trainer.pt`` of ``ckpt``.

        Raises:
            ValueError: it is corrupt; the message offers the previous checkpoint.
        """
        try:
            return load_trainer_state(ckpt / TRAINER_STATE)
        except ValueError as e:
            earlier = [p for p in self.complete() if p != ckpt]
            offer = (
                f"delete {ckpt} to resume from the previous checkpoint {earlier[-1].name}"
                if earlier
                else f"no earlier checkpoint is left; delete {self.run_dir} to train anew"
            )
            raise ValueError(f"{e}; {offer}") from e


# ---------------------------------------------------------------------------------------------
# The loop


@dataclass
class DistInfo:
    """Rank and world size under ``torchrun`` (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate to ``lr``."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def due(done: int, every: int | None, total: int, *, at_end: bool = True) -> bool:
    """Whether a task run every ``every`` steps (``None``: never) is due after ``done`` steps;
    after the last step it is due exactly when ``at_end``."""
    if done == total:
        return at_end
    return every is not None and done % every == 0


@dataclass(frozen=True, kw_only=True)
class Loop:
    """When a run logs, evaluates and checkpoints, and where it stops.

    Attributes:
        total: the run's steps.
        log_every: a metrics record every this many steps (and after the last).
        eval_every: ``evaluate()`` every this many steps and after the last (``None``: never).
        checkpoint_every: ``checkpoint(done)`` every this many steps (``None``: never).
        checkpoint_at_end: also after the last step (else never after it: the trainer writes
            its result instead).
        halt_after: stop after this many steps of this call, as if killed (to test resuming).
        desc: the progress bar's label; ``progress`` shows it (rank 0 only).
    """

    total: int
    log_every: int = 1
    eval_every: int | None = None
    checkpoint_every: int | None = None
    checkpoint_at_end: bool = False
    halt_after: int | None = None
    progress: bool = True
    desc: str = "train"

    def end(self, start: int) -> int:
        """The step this call stops at, from ``start``."""
        return self.total if self.halt_after is None else min(self.total, start + self.halt_after)

    def run(
        self,
        step: Callable[[int, bool], dict[str, Any]],
        *,
        start: int,
        metrics: MetricsLog,
        checkpoint: Callable[[int], None] | None = None,
        evaluate: Callable[[int], dict[str, Any]] | None = None,
        postfix: Callable[[dict[str, Any]], dict[str, str]] | None = None,
        dist_info: DistInfo | None = None,
    ) -> int:
        """Take steps ``start..end``: ``step(i, log)`` returns the fields of step ``i``'s
        record (``log`` says one is due); each record, with the fields ``evaluate(i + 1)``
        adds when due, is appended to ``metrics`` as ``{"step": i + 1, ...}`` (rank 0 only);
        ``checkpoint(i + 1)`` runs when due. Returns the step this call stopped at."""
        dist_info = dist_info or DistInfo()
        end = self.end(start)
        bar = tqdm(
            range(start, end),
            initial=start,
            total=self.total,
            disable=not (self.progress and dist_info.is_main),
            desc=self.desc,
            unit="step",
        )
        for i in bar:
            done = i + 1
            record = step(i, due(done, self.log_every, self.total))
            fault_point(f"step:{done}")
            if (
                evaluate is not None
                and dist_info.is_main
                and due(done, self.eval_every, self.total)
            ):
                record |= evaluate(done)
            if record and dist_info.is_main:
                metrics.append({"step": done} | record)
                shown = postfix(record) if postfix is not None else None
                if shown:
                    bar.set_postfix(shown)
            if checkpoint is not None and due(
                done, self.checkpoint_every, self.total, at_end=self.checkpoint_at_end
            ):
                if dist_info.is_main:
                    checkpoint(done)
                dist_info.barrier()
        bar.close()
        return end
