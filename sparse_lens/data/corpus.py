"""Training text: the running interpreter's standard library by default, its installed packages,
or a user folder / JSONL.

``sparse_lens`` ships no data. The default corpus is every ``.py`` file under
``sysconfig.get_paths()["stdlib"]`` (site-packages excluded). ``"site-packages"`` (the
``SITE_PACKAGES`` name) is every ``.py`` file of the running interpreter's installed packages
(``sysconfig.get_paths()["purelib"]`` and ``["platlib"]``), minus this project's own packages
(``OWN_PACKAGES``: the task suite's source must not be training text). A user corpus is a folder
of ``.py``/``.txt`` files or a JSONL file of ``{"text": ...}`` records; a folder that is itself
called ``site-packages`` is passed as ``./site-packages``.

Documents are split into train/validation by a hash of their name (path relative to the corpus
root, or ``line:N`` for JSONL), so the split does not depend on file order or machine. The corpus
fingerprint hashes names and contents; both go into every run's metadata.
"""

import hashlib
import json
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Split = Literal["train", "val"]
TEXT_SUFFIXES = (".py", ".txt")
_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__"}
SITE_PACKAGES = "site-packages"
OWN_PACKAGES = frozenset({"sparse_lens", "analyses", "hooks", "tests"})


def stdlib_root() -> Path:
    """The standard library folder of the running interpreter."""
    return Path(sysconfig.get_paths()["stdlib"])


def site_packages_roots() -> list[Path]:
    """The installed-packages folders of the running interpreter (purelib, then platlib)."""
    paths = sysconfig.get_paths()
    roots = []
    for key in ("purelib", "platlib"):
        root = Path(paths[key])
        if root.is_dir() and root not in roots:
            roots.append(root)
    return roots


def split_of(name: str, val_frac: float) -> Split:
    """Deterministic train/val assignment of a document by the SHA-1 of its name."""
    h = int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big") / 2**64
    return "val" if h < val_frac else "train"


@dataclass(frozen=True, kw_only=True)
class Corpus:
    """A set of named documents with a fingerprint and a train/val split."""

    source: str
    names: tuple[str, ...]
    texts: tuple[str, ...]
    val_frac: float
    fingerprint: str

    def documents(self, split: Split | None = None) -> Iterator[tuple[str, str]]:
        """``(name, text)`` pairs of ``split`` (all documents if ``None``), in name order."""
        for name, text in zip(self.names, self.texts, strict=True):
            if split is None or split_of(name, self.val_frac) == split:
                yield name, text

    def split_names(self, split: Split) -> list[str]:
        return [n for n, _ in self.documents(split)]

    def metadata(self) -> dict[str, object]:
        """What a run records about its data."""
        return {
            "source": self.source,
            "fingerprint": self.fingerprint,
            "n_documents": len(self.names),
            "n_chars": sum(len(t) for t in self.texts),
            "val_frac": self.val_frac,
            "n_train_documents": len(self.split_names("train")),
            "n_val_documents": len(self.split_names("val")),
            "split": "sha1(name) < val_frac * 2**64 -> val",
        }


def _read_folder(
    root: Path, suffixes: tuple[str, ...] = TEXT_SUFFIXES, skip_top: frozenset[str] = frozenset()
) -> list[tuple[str, str]]:
    docs = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or path.suffix not in suffixes:
            continue
        if _SKIP_DIRS.intersection(rel.parts) or rel.parts[0] in skip_top:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # the stdlib test suite holds deliberately undecodable files
        if text.strip():
            docs.append((rel.as_posix(), text))
    return docs


def _read_jsonl(path: Path) -> list[tuple[str, str]]:
    docs = []
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: not valid JSON ({e.msg})") from e
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise ValueError(f'{path}:{i}: expected an object with a string "text" field')
            if record["text"].strip():
                docs.append((f"line:{i}", record["text"]))
    return docs


def _read_site_packages() -> list[tuple[str, str]]:
    """``.py`` files of the installed packages; names are paths relative to their folder (the
    first folder's document wins a name that occurs twice)."""
    docs: dict[str, str] = {}
    for root in site_packages_roots():
        for name, text in _read_folder(root, (".py",), OWN_PACKAGES):
            docs.setdefault(name, text)
    return sorted(docs.items())


def load_corpus(path: str | Path | None = None, *, val_frac: float = 0.02) -> Corpus:
    """Load the corpus at ``path`` (default: the standard library; ``"site-packages"``: the
    installed packages, see the module docstring).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: it holds no usable text, is not a folder or ``.jsonl``, or ``val_frac`` is
            outside (0, 1).
    """
    if not 0.0 < val_frac < 1.0:
        raise ValueError(f"val_frac must be in (0, 1), got {val_frac!r}")
    site = isinstance(path, str) and path == SITE_PACKAGES
    root = stdlib_root() if path is None else Path(path).expanduser()
    if site:
        roots = site_packages_roots()
        if not roots:
            raise FileNotFoundError("the running interpreter has no site-packages folder")
        root = roots[0]
        docs = _read_site_packages()
    elif not root.exists():
        raise FileNotFoundError(f"corpus path {str(root)!r} does not exist")
    elif root.is_dir():
        docs = _read_folder(root)
    elif root.suffix == ".jsonl":
        docs = _read_jsonl(root)
    else:
        raise ValueError(f"corpus path {str(root)!r} must be a folder or a .jsonl file")
    if not docs:
        raise ValueError(f"corpus {str(root)!r} holds no non-empty .py/.txt documents")
    h = hashlib.sha256()
    for name, text in docs:
        h.update(name.encode())
        h.update(b"\0")
        h.update(text.encode())
        h.update(b"\0")
    names, texts = zip(*docs, strict=True)
    corpus = Corpus(
        source="stdlib" if path is None else SITE_PACKAGES if site else str(root),
        names=tuple(names),
        texts=tuple(texts),
        val_frac=val_frac,
        fingerprint=h.hexdigest()[:16],
    )
    if not corpus.split_names("train"):
        raise ValueError(f"corpus {str(root)!r} has no training documents after the split")
    return corpus
