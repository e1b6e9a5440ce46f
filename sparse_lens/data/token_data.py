"""Token data: the corpus tokenised once into ``uint16`` shards cached on disk, read by memmap.

Each document is prefixed by ``<|endoftext|>`` and the documents of a split are concatenated
into one shard, ``tokens-{corpus fingerprint}-{tokenizer hash}-{split}.bin``. Training draws
random contiguous windows of ``n_ctx`` tokens with an explicit ``torch.Generator``; validation
uses a fixed set of evenly spaced windows. If the validation split is empty (tiny corpora), the
last 10% of the training shard serves as validation and the training windows avoid it.

``MixedData`` adds the synthetic idiom stream (:mod:`sparse_lens.data.idioms`) to a ``TokenData``: a
fixed share of every training batch comes from it; validation stays the corpus' own.
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from sparse_lens.data.corpus import Corpus, Split, load_corpus
from sparse_lens.data.idioms import IDIOMS_VERSION, IdiomKind, check_kinds, idiom_documents
from sparse_lens.data.tokenizer import Tokenizer, cached_tokenizer
from sparse_lens.files.atomic import atomic_write, read_json
from sparse_lens.files.outputs import cache_entry


@runtime_checkable
class WindowSource(Protocol):
    """What training loops draw from: ``TokenData`` or a test fake."""

    def sample(
        self, batch_size: int, n_ctx: int, generator: torch.Generator
    ) -> Int[Tensor, "batch pos"]: ...

    def val_windows(self, n_windows: int, n_ctx: int) -> Int[Tensor, "batch pos"]: ...


def tokenizer_hash(tokenizer: Tokenizer) -> str:
    return tokenizer.sha256()[:12]


def build_shard(corpus: Corpus, tokenizer: Tokenizer, split: Split, cache_dir: Path) -> Path:
    """Tokenise ``split`` of ``corpus`` into a cached ``uint16`` shard; returns its path.

    Raises:
        ValueError: the tokenizer's vocabulary does not fit ``uint16`` ids.
    """
    if tokenizer.vocab_size > 2**16:
        raise ValueError(f"vocab of {tokenizer.vocab_size} does not fit uint16 shards")
    path = Path(cache_dir) / f"tokens-{corpus.fingerprint}-{tokenizer_hash(tokenizer)}-{split}.bin"
    with cache_entry(path):
        if not path.is_file():
            _write_shard(path, [t for _, t in corpus.documents(split)], tokenizer)
    return path


def _write_shard(path: Path, texts: list[str], tokenizer: Tokenizer) -> None:
    """``<|endoftext|>`` + tokens of each text, concatenated, written atomically as uint16."""
    ids: list[int] = []
    for doc in tokenizer.encode_batch(texts):
        ids.append(tokenizer.eot_id)
        ids.extend(doc)
    array = np.asarray(ids, dtype=np.uint16)
    atomic_write(path, lambda p: array.tofile(p))


def build_idiom_shard(
    tokenizer: Tokenizer,
    n_docs: int,
    seed: int,
    cache_dir: Path,
    kinds: tuple[IdiomKind, ...] = ("literals",),
) -> Path:
    """Tokenise ``n_docs`` idiom snippets of ``kinds`` (seed ``seed``) into a cached ``uint16``
    shard."""
    from sparse_lens.data.statement_idioms import STATEMENTS_VERSION

    tag = f"v{IDIOMS_VERSION}"
    if "statements" in kinds:
        tag = "-".join(kinds) + f"-v{IDIOMS_VERSION}.{STATEMENTS_VERSION}"
    name = f"idioms-{tag}-{seed}-{n_docs}-{tokenizer_hash(tokenizer)}.bin"
    path = Path(cache_dir) / name
    with cache_entry(path):
        if not path.is_file():
            _write_shard(path, idiom_documents(n_docs, seed, kinds), tokenizer)
    return path


def _load(path: Path) -> np.ndarray:
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=np.uint16)
    return np.memmap(path, dtype=np.uint16, mode="r")


@dataclass
class TokenData:
    """Train/validation token arrays and window sampling."""

    train: np.ndarray
    val: np.ndarray
    val_from_train_tail: bool = False

    @classmethod
    def build(cls, corpus: Corpus, tokenizer: Tokenizer, cache_dir: Path) -> "TokenData":
        train = _load(build_shard(corpus, tokenizer, "train", cache_dir))
        val = _load(build_shard(corpus, tokenizer, "val", cache_dir))
        if len(val) == 0:
            cut = int(len(train) * 0.9)
            return cls(train=train[:cut], val=train[cut:], val_from_train_tail=True)
        return cls(train=train, val=val)

    def check_fits(self, n_ctx: int) -> None:
        """Check that each split holds at least one window of ``n_ctx + 1`` tokens.

        Raises:
            ValueError: a split has fewer than ``n_ctx + 1`` tokens (split and count named).
        """
        for name, arr in (("training", self.train), ("validation", self.val)):
            if len(arr) < n_ctx + 1:
                raise ValueError(
                    f"the {name} split has {len(arr)} tokens, fewer than n_ctx+1={n_ctx + 1}"
                )

    def sample(
        self, batch_size: int, n_ctx: int, generator: torch.Generator
    ) -> Int[Tensor, "batch pos"]:
        """``batch_size`` random training windows of ``n_ctx`` tokens."""
        return _windows(self.train, batch_size, n_ctx, generator)

    def val_windows(self, n_windows: int, n_ctx: int) -> Int[Tensor, "batch pos"]:
        """A fixed set of up to ``n_windows`` evenly spaced validation windows."""
        n_max = len(self.val) - n_ctx + 1
        starts = np.linspace(0, n_max - 1, num=min(n_windows, n_max)).astype(np.int64)
        return torch.from_numpy(
            np.stack([self.val[s : s + n_ctx] for s in starts]).astype(np.int64)
        )

    def metadata(self) -> dict[str, object]:
        return {
            "train_tokens": len(self.train),
            "val_tokens": len(self.val),
            "val_from_train_tail": self.val_from_train_tail,
        }


def _windows(
    tokens: np.ndarray, batch_size: int, n_ctx: int, generator: torch.Generator
) -> Int[Tensor, "batch pos"]:
    starts = torch.randint(0, len(tokens) - n_ctx + 1, (batch_size,), generator=generator)
    return torch.from_numpy(
        np.stack([tokens[s : s + n_ctx] for s in starts.tolist()]).astype(np.int64)
    )


@dataclass
class MixedData:
    """Corpus windows plus a share ``idiom_frac`` of idiom windows in every training batch.

    Each batch holds ``round(idiom_frac * batch_size)`` idiom windows at positions drawn from the
    same generator, so the mix is reproducible, resumable and spread over DDP ranks.
    """

    base: TokenData
    idioms: np.ndarray
    idiom_frac: float
    idiom_info: dict[str, object]

    def __post_init__(self) -> None:
        if not 0.0 < self.idiom_frac < 1.0:
            raise ValueError(f"idiom_frac must be in (0, 1), got {self.idiom_frac!r}")

    def check_fits(self, n_ctx: int) -> None:
        """Check that the base splits and the idiom stream each hold one ``n_ctx + 1`` window.

        Raises:
            ValueError: a base split or the idiom stream has fewer than ``n_ctx + 1`` tokens.
        """
        self.base.check_fits(n_ctx)
        if len(self.idioms) < n_ctx + 1:
            raise ValueError(f"the idiom stream has {len(self.idioms)} tokens, fewer than n_ctx+1")

    def sample(
        self, batch_size: int, n_ctx: int, generator: torch.Generator
    ) -> Int[Tensor, "batch pos"]:
        n_idiom = round(self.idiom_frac * batch_size)
        batch = self.base.sample(batch_size, n_ctx, generator)
        if n_idiom:
            rows = torch.randperm(batch_size, generator=generator)[:n_idiom]
            batch[rows] = _windows(self.idioms, n_idiom, n_ctx, generator)
        return batch

    def val_windows(self, n_windows: int, n_ctx: int) -> Int[Tensor, "batch pos"]:
        return self.base.val_windows(n_windows, n_ctx)

    def metadata(self) -> dict[str, object]:
        return self.base.metadata() | {
            "idiom_frac": self.idiom_frac,
            "idioms": self.idiom_info | {"tokens": len(self.idioms)},
        }


def with_idioms(
    data: TokenData,
    tokenizer: Tokenizer,
    idiom_frac: float,
    cache_dir: Path,
    *,
    n_docs: int = 20_000,
    seed: int = 1234,
    kinds: tuple[IdiomKind, ...] = ("literals",),
) -> "TokenData | MixedData":
    """``data`` itself when ``idiom_frac`` is 0, else ``data`` mixed with the idiom stream of
    ``kinds`` (``n_docs`` snippets of each kind).

    Raises:
        ValueError: bad ``kinds`` (named).
    """
    if idiom_frac == 0:
        return data
    from sparse_lens.data.statement_idioms import STATEMENTS_VERSION

    kinds = check_kinds(kinds)
    n_docs *= len(kinds)
    path = build_idiom_shard(tokenizer, n_docs, seed, cache_dir, kinds)
    info: dict[str, object] = {"version": IDIOMS_VERSION, "n_docs": n_docs, "seed": seed}
    if kinds != ("literals",):  # recorded only when set, so runs from before kinds still resume
        info |= {"kinds": list(kinds), "statements_version": STATEMENTS_VERSION}
    return MixedData(base=data, idioms=_load(path), idiom_frac=idiom_frac, idiom_info=info)


def training_mix(
    data: TokenData,
    tokenizer: Tokenizer,
    run_info: dict[str, Any] | None,
    cache_dir: Path,
) -> "tuple[TokenData | MixedData, dict[str, Any]]":
    """The model's own training distribution: ``data`` (its corpus) with the idiom stream its
    ``run.json`` records (share, kinds, documents, seed), so ablation means are taken over what
    the model was trained on; and a provenance record saying so. Without a ``run.json`` (an
    imported model, a lone folder) the corpus alone, and the record says that.

    Raises:
        ValueError: the ``run.json`` records an idiom stream this package cannot rebuild.
    """
    if run_info is None:
        return data, {"distribution": "corpus only (no run.json: training mix unknown)"}
    data_info = run_info.get("data")
    recorded: dict[str, Any] = data_info if isinstance(data_info, dict) else {}
    frac = float(recorded.get("idiom_frac", run_info.get("train_config", {}).get("idiom_frac", 0)))
    if frac == 0:
        return data, {"distribution": "training mix: corpus, no idioms", "idiom_frac": 0.0}
    info = recorded.get("idioms", {})
    kinds = tuple(info.get("kinds", ["literals"]))
    try:
        n_docs, seed = int(info.get("n_docs", 20_000 * len(kinds))), int(info.get("seed", 1234))
    except (TypeError, ValueError) as e:
        raise ValueError(f"run.json records an unreadable idiom stream {info!r}: {e}") from e
    mixed = with_idioms(
        data, tokenizer, frac, cache_dir, n_docs=n_docs // len(kinds), seed=seed, kinds=kinds
    )
    return mixed, {
        "distribution": "training mix: corpus and idiom stream",
        "idiom_frac": frac,
        "idioms": {"kinds": list(kinds), "n_docs": n_docs, "seed": seed},
    }


def run_info_beside(model_dir: Path) -> dict[str, Any] | None:
    """The ``run.json`` of the training run a model folder belongs to (the folder itself, or
    ``RUN/final``, ``RUN/checkpoints/NAME``), or None.

    Raises:
        ValueError: a ``run.json`` that is not a JSON object (named).
    """

    for folder in (model_dir, model_dir.parent, model_dir.parent.parent):
        path = folder / "run.json"
        if path.is_file():
            info = read_json(path, "run")
            if not isinstance(info, dict):
                raise ValueError(f"{path}: not a run.json (a JSON {type(info).__name__})")
            return info
    return None


def windows_digest(windows: Tensor) -> str:
    """SHA-256 prefix of a ``[batch pos]`` window tensor (what a circuit file records of the
    windows its ablation means came from)."""
    return hashlib.sha256(windows.contiguous().numpy().astype(np.int64).tobytes()).hexdigest()[:16]


def prepare_data(
    corpus_path: str | Path | None,
    cache_dir: Path,
    *,
    val_frac: float = 0.02,
    vocab_size: int = 2048,
) -> tuple[Corpus, Tokenizer, TokenData]:
    """Corpus, its cached tokenizer and its cached token shards, in one call."""

    corpus = load_corpus(corpus_path, val_frac=val_frac)
    texts = [t for _, t in corpus.documents("train")]
    tokenizer = cached_tokenizer(texts, corpus.fingerprint, cache_dir, vocab_size)
    return corpus, tokenizer, TokenData.build(corpus, tokenizer, cache_dir)


def model_token_data(model: Any, corpus_path: str | Path | None, cache_dir: Path) -> TokenData:
    """Token data for analysing ``model`` (mean ablation, top contexts) on ``corpus_path``.

    A model trained here must come with the corpus it was trained on (same cached tokenizer). A
    model imported from OpenAI's release (``cfg.model_name == "circuit_sparsity"``) was trained
    on data that is not released: the corpus is tokenised with the model's own tokenizer as a
    stand-in pretraining distribution.

    Raises:
        ValueError: a model of ours whose tokenizer is not the corpus's.
    """

    if getattr(model.cfg, "model_name", None) == "circuit_sparsity":
        return TokenData.build(load_corpus(corpus_path, val_frac=0.02), model.tokenizer, cache_dir)
    _, corpus_tok, data = prepare_data(corpus_path, cache_dir)
    if tokenizer_hash(corpus_tok) != tokenizer_hash(model.tokenizer):
        raise ValueError("the model's tokenizer differs from the corpus tokenizer; pass --corpus")
    return data
