"""The JSON format of a circuit file (``Circuit.load``): every field of the right JSON type,
every entry inside a field of the right shape, and every edge within one block in the forward
direction (``EDGE_KINDS``, as ``circuits/nodes.py`` defines edges). Each check raises
``ValueError`` naming the file and the first bad entry.
"""

from pathlib import Path
from typing import Any

from sparse_lens.files.atomic import read_json

CIRCUIT_VERSION = 1

# (source kind, destination kind) of every edge (``circuits/nodes.py``): within one block,
# forward only
EDGE_KINDS = frozenset(
    {
        ("attn_in", "q"),
        ("attn_in", "k"),
        ("attn_in", "v"),
        ("v", "attn_out"),
        ("mlp_in", "neuron"),
        ("neuron", "mlp_out"),
    }
)


def _label_place(label: str) -> tuple[int, str] | None:
    """``(layer, kind)`` of a node label (``node_label``: ``1.attn.v.h3.c2``,
    ``0.mlp.neuron.57``), or None if it is not one."""
    parts = label.split(".")
    if len(parts) < 4 or not parts[0].isdigit():
        return None
    return int(parts[0]), parts[2]


def check_edge_direction(i: int, src: str, dst: str, where: str) -> None:
    """Check that edge ``i`` (``src -> dst``, node labels) joins two nodes of one block in the
    forward direction (``EDGE_KINDS``).

    Raises:
        ValueError: a label that is not a node label, or an edge that is not one (``where``).
    """
    a, b = _label_place(src), _label_place(dst)
    if a is None or b is None:
        bad = src if a is None else dst
        raise ValueError(
            f"{where}: edges[{i}] names {bad!r}, not a node label (e.g. 0.mlp.neuron.5)"
        )
    if a[0] != b[0] or (a[1], b[1]) not in EDGE_KINDS:
        raise ValueError(
            f"{where}: edges[{i}] ({src} -> {dst}) is not an edge of the model: edges join "
            f"{', '.join(f'{x} -> {y}' for x, y in sorted(EDGE_KINDS))} within one layer"
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_structure(d: dict[str, Any], path: Any) -> None:
    """Raise ``ValueError`` naming the file and the first entry of the wrong JSON type inside
    a field: a channel or size that is not an integer (``3.0`` would be truncated), an edge
    that is not ``[source, destination, weight]``, a curve point that is not ``[k, loss]``.

    Raises:
        ValueError: the first bad entry, named.
    """
    for hook, chans in (d.get("nodes") or {}).items():
        if not isinstance(chans, list):
            raise ValueError(
                f"{path}: nodes[{hook!r}] must be a list of channels, got {chans!r:.60}"
            )
        for c in chans:
            if not _is_int(c):
                raise ValueError(f"{path}: nodes[{hook!r}] has channel {c!r}, not an integer")
    for hook, size in (d.get("sizes") or {}).items():
        if not _is_int(size):
            raise ValueError(f"{path}: sizes[{hook!r}] is {size!r}, not an integer")
    for i, e in enumerate(d.get("edges") or []):
        if not (isinstance(e, list) and len(e) == 3 and all(isinstance(x, str) for x in e[:2])
                and isinstance(e[2], _NUMBER) and not isinstance(e[2], bool)):  # fmt: skip
            raise ValueError(
                f"{path}: edges[{i}] must be [source, destination, weight], got {e!r:.80}"
            )
    for i, e in enumerate(d.get("removed_edges") or []):
        if not (isinstance(e, list) and len(e) == 2 and all(isinstance(x, str) for x in e)):
            raise ValueError(
                f"{path}: removed_edges[{i}] must be [source, destination], got {e!r:.80}"
            )
    for i, e in enumerate(d.get("curve") or []):
        if not (
            isinstance(e, list) and len(e) == 2 and _is_int(e[0]) and isinstance(e[1], _NUMBER)
        ):
            raise ValueError(
                f"{path}: curve[{i}] must be [nodes (an integer), loss], got {e!r:.80}"
            )


_NUMBER = (int, float)
# JSON type of every circuit field; None allowed where the dataclass default is None.
_FIELD_TYPES: dict[str, tuple[tuple[type, ...], bool]] = {
    "task": ((str,), False),
    "target_loss": (_NUMBER, False),
    "ablation": ((str,), False),
    "freeze_norms": ((bool,), False),
    "nodes": ((dict,), False),
    "sizes": ((dict,), False),
    "baselines": ((dict,), False),
    "edges": ((list,), False),
    "loss": (_NUMBER, False),
    "full_loss": (_NUMBER, False),
    "model_fingerprint": ((str,), False),
    "calibrated_loss": (_NUMBER, True),
    "calibration": ((dict,), True),
    "test_loss": (_NUMBER, True),
    "curve": ((list,), False),
    "hparams": ((dict,), False),
    "extra": ((dict,), False),
    "removed_edges": ((list,), False),
}


def check_field_types(d: dict[str, Any], path: Any) -> None:
    """Check every known field of a circuit file's JSON object ``d`` against its JSON type.

    Raises:
        ValueError: naming ``path`` and the first field of the wrong JSON type.
    """
    for name, value in d.items():
        if name not in _FIELD_TYPES:
            continue  # unknown keys are reported by the dataclass constructor
        types, nullable = _FIELD_TYPES[name]
        if value is None and nullable:
            continue
        is_bool = isinstance(value, bool)
        if not isinstance(value, types) or (is_bool and bool not in types):
            raise ValueError(
                f"{path}: field {name!r} must be {' or '.join(t.__name__ for t in types)}"
                f"{' or null' if nullable else ''}, got {value!r:.60}"
            )


def read_circuit_dict(path: str | Path) -> dict[str, Any]:
    """The JSON object of a circuit file, with a message that says what ``path`` is instead
    when it is not one (a folder, a model's ``config.json``, a card, another JSON file).

    Raises:
        FileNotFoundError: nothing is at ``path``.
        ValueError: ``path`` is a folder, not valid JSON, not a JSON object, or has no supported
            ``circuit_version``; the path and what it looks like named.
    """
    path = Path(path)
    if path.is_dir():
        model = (path / "config.json").is_file() or (path / "final" / "config.json").is_file()
        what = "a model or run folder" if model else "a folder"
        raise ValueError(
            f"{str(path)!r} is {what}, not a circuit file: pass the circuit JSON that "
            "`sparse-lens prune --out` writes (a model folder goes to --model)"
        )
    if not path.exists():
        raise FileNotFoundError(f"circuit file {str(path)!r} does not exist")
    d = read_json(path, "circuit")
    if not isinstance(d, dict):
        raise ValueError(f"{path}: not a circuit file (a JSON {type(d).__name__})")
    if "circuit_version" not in d:
        raise ValueError(f"{path}: not a circuit file ({_looks_like(d)}, no circuit_version)")
    if d["circuit_version"] != CIRCUIT_VERSION:
        raise ValueError(f"{path}: circuit_version {d['circuit_version']!r} is not supported")
    return d


def _looks_like(d: dict[str, Any]) -> str:
    """What a JSON object without ``circuit_version`` seems to be, for the error message."""
    if "d_model" in d or "n_layers" in d:
        return "a model config; a model folder goes to --model"
    if "rules" in d and "nodes" in d and "summary" in d:
        return "a circuit card written by `sparse-lens explain`"
    keys = ", ".join(sorted(d)[:6])
    return f"a JSON object with keys {keys}" if d else "an empty JSON object"
