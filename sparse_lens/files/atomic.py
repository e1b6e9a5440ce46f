"""Atomic writes of files and folders, and a fault-injection point for the kill tests.

A file is written to a temporary file in the same folder, fsynced, then renamed; a folder (a
model folder, a checkpoint) is built in a temporary sibling folder and renamed into place. A
reader, or a crashed writer, never sees a half-written file or folder under the final name:
after a kill it is complete or absent. Leftover temporaries are named ``.NAME.*.tmp`` and removed
by ``remove_stale_temps`` when a command next takes the folder (``outputs.claim_output``).
"""

import json
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

FAULT_ENV = "SPARSE_LENS_FAULT"


def fault_point(name: str) -> None:
    """Kill this process (SIGKILL, as ``kill -9``) if the environment variable
    ``SPARSE_LENS_FAULT`` equals ``name``; for tests that kill a run at a named point. Points:
    ``step:N`` (after training step N), ``write:DIR/FILE`` (a file written, not yet renamed),
    ``dir:DIR/FILE`` (a file of a folder being built), ``dir:DIR`` (a folder built, not yet
    renamed)."""
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _fsync(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)`` (its return value is ignored) then atomically rename ``tmp_path`` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.chmod(tmp_path, 0o644)  # mkstemp makes 0600; results are meant to be shared
        _fsync(tmp_path)
        fault_point(f"write:{path.parent.name}/{path.name}")
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextmanager
def atomic_dir(path: Path, replaces: Collection[str] = ()) -> Iterator[Path]:
    """Build a folder: yields an empty temporary sibling to fill; on a normal exit its files are
    fsynced and it replaces ``path`` (an existing folder there is moved aside first, then
    deleted). On an error, or a kill, ``path`` keeps its old state or is absent; never partial.

    An existing folder is replaced only if it holds nothing but the names in ``replaces`` (the
    files this folder is made of), so no one else's file is ever deleted with it.

    Raises:
        ValueError: ``path`` exists and is not a folder, or holds other files.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{str(path)!r} exists and is not a folder")
    if path.is_dir():
        foreign = sorted(e.name for e in path.iterdir() if e.name not in replaces)
        if foreign:
            raise ValueError(
                f"{str(path)!r} holds files other than {sorted(replaces)} "
                f"({', '.join(foreign[:5])}); save into an empty or new folder"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                os.chmod(f, 0o644)  # some writers (safetensors) make 0600; results are shared
                _fsync(f)
            elif f.is_dir():
                os.chmod(f, 0o755)
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700
        fault_point(f"dir:{path.name}")
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
            os.replace(path, old)  # onto the empty temporary folder
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


_TEMP = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp")  # tempfile's names, as made above


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is a temporary of ``atomic_write`` / ``atomic_dir``."""
    return _TEMP.fullmatch(name) is not None


def remove_stale_temps(folder: Path, of: str | None = None) -> list[Path]:
    """Delete the temporaries (``.NAME.xxxxxxxx.tmp``) a killed writer left in ``folder`` (only
    those of ``NAME == of`` if given); returns them. Call only while holding the folder or the
    file (``outputs.claim_output``)."""
    removed: list[Path] = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        m = _TEMP.fullmatch(entry.name)
        if m is not None and (of is None or m["name"] == of):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def read_json(path: Path, what: str) -> Any:
    """Parse a JSON file, raising ``FileNotFoundError``/``ValueError`` that name the file.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: the file is not valid UTF-8 JSON.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {str(path)!r} is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} file {str(path)!r} is corrupt: {e}") from e
