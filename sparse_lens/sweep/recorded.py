"""A sweep folder judged by what each point recorded, never by ``sweep.json`` alone.

``sweep.json`` holds the sweep's settings, but a point keeps its own: ``spec.json`` (the model
and training settings it was trained with, written when it started) and ``point.json`` (its
row: the target loss and the tasks it was tabled and pruned for). A rerun checks each point it
would reuse against its own records (``check_points``), so a folder whose ``sweep.json`` was
deleted (or replaced) is not adopted by a rerun with other settings, and a ``point.json`` cut
short or edited into another shape is reported in one line naming it (``read_point_row``).
"""

from pathlib import Path
from typing import Any

from sparse_lens.circuits.summary import with_one_name
from sparse_lens.files.atomic import read_json
from sparse_lens.sweep.grid import PointSpec, SweepConfig, point_configs
from sparse_lens.sweep.point import read_spec, spec_differences, spec_record

# key -> JSON type of a point row (``point.point_row``) that the table and figures read
ROW_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "kind": (str,),
    "solved": (list,),
    "circuits": (dict,),
    "tasks": (dict,),
    "target_loss": (int, float),
    "val_loss": (int, float),
    "steps": (int,),
    "n_circuits": (int,),
    "n_empty_circuits": (int,),
}
MOVES_ROWS = frozenset({"tasks", "custom_tasks"})  # besides PRUNE_KEYS: rows set aside


def read_point_row(path: Path) -> dict[str, Any]:
    """A finished point's row (``point.json``), after checking it has every field the table
    reads, of the right type; an older file's ``geo_mean_edges`` is read as
    ``geometric_mean_edges`` (``circuits.summary.with_one_name``).

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: the file is corrupt (e.g. cut short) or a field is missing or of another
            type (the file and the field named, and what to do).
    """
    fix = "delete it and run the sweep again to table the point anew (its run is kept)"
    try:
        row = read_json(path, "sweep point")
    except ValueError as e:
        raise ValueError(f"{e}; {fix}") from e
    if not isinstance(row, dict):
        raise ValueError(f"sweep point file {str(path)!r} holds a JSON {type(row).__name__}; {fix}")
    for key, types in ROW_TYPES.items():
        value = row.get(key)
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ValueError(
                f"sweep point file {str(path)!r}: field {key!r} is {value!r:.60}, not a "
                f"{' or '.join(t.__name__ for t in types)}; {fix}"
            )
    if not all(isinstance(c, dict) for c in row["circuits"].values()):
        raise ValueError(f"sweep point file {str(path)!r}: a circuit entry is not an object; {fix}")
    return with_one_name(row)


def check_points(
    out: Path,
    scfg: SweepConfig,
    points: list[PointSpec],
    d_vocab: int,
    diff: list[str] | None,
    prune_keys: frozenset[str],
) -> None:
    """Refuse to reuse a point of ``out`` whose own records do not match ``scfg``: a
    ``spec.json`` of other model or training settings, or (unless the settings change
    ``diff`` sets the rows aside: pruning settings or tasks) a ``point.json`` of another target
    loss or other tasks, or one that does not read (``read_point_row``). ``diff`` is the
    settings that changed since ``sweep.json``, ``None`` when there is no ``sweep.json`` (the
    points' records are then all there is). Dense points are skipped when ``dense_lr``
    changed (they are set aside and trained again).

    Raises:
        ValueError: naming the point, its file and the settings that differ.
    """
    changed = set(diff or ())
    rows_move = bool(changed & (prune_keys | MOVES_ROWS))
    for spec in points:
        pdir = out / "points" / spec.name
        if not pdir.is_dir() or (spec.kind == "dense" and "dense_lr" in changed):
            continue
        old = read_spec(pdir)
        if old is not None:
            mcfg, tcfg = point_configs(spec, scfg, d_vocab)
            new = spec_record(spec, mcfg, tcfg, scfg.idiom_share())
            if old != new:
                said = "; ".join(spec_differences(old, new)[:3])
                raise ValueError(
                    f"{out} holds point {spec.name} trained with other settings ({said}; from "
                    f"its spec.json): pick another --out, or run with the settings it was "
                    "trained with"
                )
        if (pdir / "point.json").exists() and not rows_move:
            _check_row(pdir / "point.json", scfg)


def _check_row(path: Path, scfg: SweepConfig) -> None:
    row = read_point_row(path)
    tasks = sorted(row["tasks"])
    if row["target_loss"] != scfg.target_loss or tasks != sorted(scfg.task_names()):
        raise ValueError(
            f"{str(path)!r} was tabled and pruned for target_loss {row['target_loss']!r} and "
            f"tasks {tasks}, not {scfg.target_loss!r} and {sorted(scfg.task_names())} (a change "
            "sweep.json does not record): pick another --out, or run with the settings it "
            "recorded"
        )
