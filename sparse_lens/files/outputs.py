"""Where a command writes: checked before any work, taken under a lock, never clobbered.

Every command that writes a run folder, a circuit (folder or file), a report or a cache entry
goes through ``claim_output``:

1. ``check_output_path``: the path is not empty (an unset shell variable), its names are not too
   long, a folder is not an existing file (or a file an existing folder), and the place is
   writable; all before any training or pruning starts.
2. A lock (``filelock``) on the folder (``.sparse_lens.lock``, or ``.NAME.lock`` beside a single
   output file). A second writer fails at once with ``OutputBusy``, naming the holder's pid,
   host and command from the lock's sidecar ``.sparse_lens.lock.json``.
3. Ownership: a folder that holds files the command did not create is refused. The first claim
   writes ``.sparse_lens-owner.json`` (the command); a folder without it is accepted only if it
   is empty, or holds only the command's own names and the file an older version wrote first
   (``legacy``, e.g. ``run.json``).
4. Temporaries a killed writer left (``files.atomic.remove_stale_temps``) are deleted.
"""

import fnmatch
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from filelock import FileLock, Timeout

from sparse_lens.files.atomic import atomic_write_json, is_temp_name, remove_stale_temps

LOCK = ".sparse_lens.lock"
OWNER = ".sparse_lens-owner.json"
NAME_MAX = 255  # bytes per name, and per path (Linux limits)
PATH_MAX = 4096
OutputKind = Literal["folder", "file"]


class OutputBusy(ValueError):
    """Another process holds the output's lock."""


def _own_entry(name: str) -> bool:
    """Lock, owner and temporary files: this package's, never the user's."""
    return (
        name.startswith(".sparse_lens")
        or is_temp_name(name)
        or (name.startswith(".") and name.endswith((".lock", ".lock.json")))
    )


def check_output_path(path: str | Path, kind: OutputKind, option: str = "--out") -> Path:
    """The output path, expanded, after checking it can be written as ``kind``.

    Raises:
        ValueError: ``path`` is empty, has a name longer than 255 bytes, is an existing file
            where a folder is expected (or a folder where a file is), is a symbolic link that
            leads nowhere (or, for a file, any symbolic link: writing would replace the link),
            or lies where nothing can be written (read-only, or below a file).
    """
    if str(path).strip() == "":
        raise ValueError(f"{option} is empty (an unset shell variable?); name a {kind}")
    p = Path(path).expanduser()
    check_name_lengths(p, option)
    if p.is_symlink() and (kind == "file" or not p.exists()):
        raise ValueError(
            f"{option} {str(p)!r} is a symbolic link (to {os.readlink(p)!r}"
            f"{'' if p.exists() else ', which does not exist'}); name the {kind} itself"
        )
    if kind == "folder" and p.exists() and not p.is_dir():
        raise ValueError(f"{option} {str(p)!r} is an existing file; name a folder")
    if kind == "file" and p.is_dir():
        raise ValueError(f"{option} {str(p)!r} is a folder; name a file (e.g. {p / 'out.json'})")
    folder = p if kind == "folder" else p.parent
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{option} {str(p)!r} lies below {str(existing)!r}, which is a file")
    _probe_writable(existing, p, option)
    return p


def check_name_lengths(path: Path, option: str) -> None:
    """Refuse a path the file system cannot hold: a name (a part between slashes) longer than
    255 bytes, or the whole path longer than 4096 (``OSError`` "File name too long" otherwise,
    from the first call that touches it).

    Raises:
        ValueError: naming ``option``, the path (shortened) and the name that is too long.
    """
    for part in path.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise ValueError(
                f"{option} {str(path)[:80]!r}...: the name {part[:40]!r}... is longer than "
                f"{NAME_MAX} bytes; pick a shorter name"
            )
    if len(os.fsencode(str(path.absolute()))) >= PATH_MAX:
        raise ValueError(f"{option} {str(path)[:80]!r}... is longer than {PATH_MAX} bytes")


def _probe_writable(folder: Path, target: Path, option: str) -> None:
    """Create and delete a file in ``folder`` (``os.access`` says yes to root everywhere)."""
    try:
        fd = os.open(folder / f".sparse_lens-probe-{os.getpid()}.tmp", os.O_CREAT | os.O_WRONLY)
        os.close(fd)
        os.unlink(folder / f".sparse_lens-probe-{os.getpid()}.tmp")
    except OSError as e:
        raise ValueError(
            f"{option} {str(target)!r}: cannot write in {str(folder)!r} ({e.strerror}); "
            "pick a writable place"
        ) from e


def _holder(info_path: Path) -> str:
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        return (
            f"pid {info['pid']} on {info['host']}, running {info['command']!r} "
            f"since {info['since']}"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not yet recorded itself"


@contextmanager
def output_lock(lock_path: Path, what: str) -> Iterator[None]:
    """Hold ``lock_path`` (``filelock``) with a sidecar naming this process.

    Raises:
        OutputBusy: another process holds it (named in the message).
    """
    info_path = lock_path.with_name(lock_path.name + ".json")
    lock = FileLock(str(lock_path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise OutputBusy(
            f"{what} is being written by another process ({_holder(info_path)}); wait for it "
            "to finish or pick another output"
        ) from None
    try:
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": " ".join(["sparse-lens", *sys.argv[1:]]),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        atomic_write_json(info_path, info)
        yield
    finally:
        info_path.unlink(missing_ok=True)
        lock.release()


def _owner_command(owner_file: Path) -> str | None:
    """The command an owner file names (``None`` if the file is unreadable or names none)."""
    try:
        return json.loads(owner_file.read_text(encoding="utf-8")).get("command")
    except (ValueError, AttributeError):
        return None


def _check_owner(
    folder: Path, command: str, owned: Sequence[str], legacy: Sequence[str] | None, option: str
) -> None:
    entries = sorted(e.name for e in folder.iterdir() if not _own_entry(e.name))
    foreign = [e for e in entries if not any(fnmatch.fnmatch(e, pat) for pat in owned)]
    if foreign:
        raise ValueError(
            f"{option} {str(folder)!r} holds files that {command!r} did not write "
            f"({', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}); "
            "pick an empty or new folder"
        )
    owner_file = folder / OWNER
    if owner_file.is_file():
        owner = _owner_command(owner_file)
        if owner != command:
            raise ValueError(
                f"{option} {str(folder)!r} was written by {owner!r}, not {command!r}; pick "
                "another folder"
            )
    elif entries and legacy is not None:
        if not any((folder / m).exists() for m in legacy):
            raise ValueError(
                f"{option} {str(folder)!r} holds {', '.join(entries[:5])} but no "
                f"{' or '.join(legacy) or 'file of its own'}: "
                f"not a folder {command!r} wrote; pick an empty or new folder"
            )
        for name in legacy:
            _check_legacy_marker(folder / name, command, option)


# The keys an older version's marker file always held (``a.b``: key ``b`` of the object at
# ``a``): a file of that name without them is the user's (e.g. their own run.json), and is
# never adopted, let alone overwritten.
LEGACY_KEYS = {
    "run.json": ("model_config", "train_config"),
    "sweep.json": ("version", "config.preset", "config.widths", "config.l0s"),
}


def _has_key(data: object, dotted: str) -> bool:
    for key in dotted.split("."):
        if not isinstance(data, dict) or key not in data:
            return False
        data = data[key]
    return True


def _check_legacy_marker(path: Path, command: str, option: str) -> None:
    keys = LEGACY_KEYS.get(path.name)
    if keys is None or not path.is_file():
        return
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        data = None
    if not all(_has_key(data, k) for k in keys):
        raise ValueError(
            f"{option}: {str(path)!r} is not a {path.name} that {command!r} wrote (it lacks "
            f"{', '.join(keys)}); pick an empty or new folder"
        )


def _check_not_in_owned_folder(
    start: Path, command: str, option: str, p: Path, within: Sequence[str]
) -> None:
    """An output may not go into a folder another command owns, at any depth (e.g. a circuit
    in a training run's ``checkpoints/``: ``train --resume`` would then refuse the run, or a
    resumed run would replace it). ``start`` and every folder above it are checked; only a
    folder owned by one of ``within`` (a command that writes its outputs inside its own folder,
    e.g. ``demo``) is allowed. (``command`` names the claimant in the message only.)"""
    for folder in (start, *start.absolute().parents):
        owner_file = folder / OWNER
        if not owner_file.is_file():
            continue
        owner = _owner_command(owner_file)
        if owner not in within:
            raise ValueError(
                f"{option} {str(p)!r} of {command!r} is inside {str(folder)!r}, which "
                f"{owner!r} writes; pick a place outside it"
            )


@contextmanager
def claim_output(
    path: str | Path,
    command: str,
    *,
    kind: OutputKind = "folder",
    owned: Sequence[str] = ("*",),
    legacy: Sequence[str] | None = None,
    option: str = "--out",
    within: Sequence[str] = (),
    check_existing: Callable[[Path], None] | None = None,
) -> Iterator[Path]:
    """Check, lock and take ``path`` for ``command`` (see the module docstring); yields it.

    ``owned``: glob patterns of the names ``command`` writes in the folder; ``legacy``: names
    of which one marks a folder an older version of ``command`` wrote (``None``: any folder of
    only owned names is accepted). For ``kind="file"`` the lock sits beside the file and an
    existing file is replaced only if its name matches ``owned`` and ``check_existing(path)``
    (raising ``ValueError`` for a file that is not the command's kind, e.g. someone's notes)
    passes, checked before the lock file is made (a refusal leaves nothing beside the user's
    file) and again under the lock. No folder above the output (nor a file output's own
    folder) may be owned by another command, except one of ``within``.

    Raises:
        ValueError: a bad path or a foreign folder (see ``check_output_path``), or an output
            inside a folder another command owns (at any depth).
        OutputBusy: another process writes there.
    """
    p = check_output_path(path, kind, option)
    if kind == "file" and check_existing is not None and p.exists():
        check_existing(p)
    folder = p if kind == "folder" else p.parent
    above = folder.absolute().parent if kind == "folder" else folder.absolute()
    _check_not_in_owned_folder(above, command, option, p, within)
    created = [f for f in (folder, *folder.parents) if not f.exists()]  # deepest first
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{option} {str(p)!r}: cannot create {str(folder)!r}: {e}") from e
    lock = folder / (LOCK if kind == "folder" else f".{p.name}.lock")
    wrote = True
    try:
        with output_lock(lock, f"{option} {str(p)!r}"):
            remove_stale_temps(folder, None if kind == "folder" else p.name)
            if kind == "file" and check_existing is not None and p.exists():
                check_existing(p)  # again, under the lock: another process may have written it
            if kind == "folder":
                try:
                    _check_owner(folder, command, owned, legacy, option)
                except ValueError:
                    wrote = False  # refused: leave no lock file in someone else's folder
                    raise
                if not (folder / OWNER).is_file():
                    atomic_write_json(folder / OWNER, {"command": command})
            try:
                yield p
            except BaseException:
                if kind == "folder" and not any(not _own_entry(e.name) for e in folder.iterdir()):
                    (folder / OWNER).unlink(missing_ok=True)  # refused before writing: not claimed
                    wrote = False
                raise
    finally:
        if created and (not wrote or (kind == "file" and not p.exists())):
            _remove_created(created, lock)
        elif not wrote and not (folder / OWNER).is_file():
            lock.unlink(missing_ok=True)


def _remove_created(created: list[Path], lock: Path) -> None:
    """Undo the folders a refused claim created (deepest first), when they hold nothing but
    this package's lock files."""
    lock.unlink(missing_ok=True)
    for folder in created:
        try:
            for e in folder.iterdir():
                if _own_entry(e.name) and e.is_file():
                    e.unlink(missing_ok=True)
            folder.rmdir()
        except OSError:
            return  # not empty (someone else wrote there): keep it and everything above


@contextmanager
def cache_entry(path: Path, timeout_s: float = 3600.0) -> Iterator[Path]:
    """Hold the lock of cache entry ``path`` (``.NAME.lock`` beside it) while checking for it and
    building it: a second process building the same entry waits, then finds it built."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.parent / f".{path.name}.lock"), timeout=timeout_s):
        yield path
