"""Token data: the corpus tokenised once into ``uint16`` shards cached on disk, read by memmap.

Each document is prefixed by ``<|endoftext|>`` and the documents of a split are concatenated
into one shard, ``tokens-{corpus fingerprint}-{tokenizer hash}-{split}.bin``. Training draws
random contiguous windows of ``n_ctx`` tokens with an explicit ``torch.Generator``; validation
uses a fixed set of evenly spaced windows. If the validation split is empty (tiny corpora), the
last 10% of the training shard serves as validation and the training windows avoid it.
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from sparse_lens.corpus import Corpus, Split
from sparse_lens.io import atomic_write
from sparse_lens.tokenizer import Tokenizer


@runtime_checkable
class WindowSource(Protocol):
    """What training loops draw from: ``TokenData`` or a test fake."""

    def sample(
        self, batch_size: int, n_ctx: int, generator: torch.Generator
    ) -> Int[Tensor, "batch pos"]: ...

    def val_windows(self, n_windows: int, n_ctx: int) -> Int[Tensor, "batch pos"]: ...


def tokenizer_hash(tokenizer: Tokenizer) -> str:
    return hashlib.sha256(tokenizer.to_json().encode()).hexdigest()[:12]


def build_shard(corpus: Corpus, tokenizer: Tokenizer, split: Split, cache_dir: Path) -> Path:
    """Tokenise ``split`` of ``corpus`` into a cached ``uint16`` shard; returns its path."""
    if tokenizer.vocab_size > 2**16:
        raise ValueError(f"vocab of {tokenizer.vocab_size} does not fit uint16 shards")
    path = Path(cache_dir) / f"tokens-{corpus.fingerprint}-{tokenizer_hash(tokenizer)}-{split}.bin"
    if path.is_file():
        return path
    texts = [t for _, t in corpus.documents(split)]
    ids: list[int] = []
    for doc in tokenizer.encode_batch(texts):
        ids.append(tokenizer.eot_id)
        ids.extend(doc)
    array = np.asarray(ids, dtype=np.uint16)
    atomic_write(path, lambda p: array.tofile(p))
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
        for name, arr in (("training", self.train), ("validation", self.val)):
            if len(arr) < n_ctx + 1:
                raise ValueError(
                    f"the {name} split has {len(arr)} tokens, fewer than n_ctx+1={n_ctx + 1}"
                )

    def sample(
        self, batch_size: int, n_ctx: int, generator: torch.Generator
    ) -> Int[Tensor, "batch pos"]:
        """``batch_size`` random training windows of ``n_ctx`` tokens."""
        starts = torch.randint(0, len(self.train) - n_ctx + 1, (batch_size,), generator=generator)
        return torch.from_numpy(
            np.stack([self.train[s : s + n_ctx] for s in starts.tolist()]).astype(np.int64)
        )

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


def prepare_data(
    corpus_path: str | Path | None,
    cache_dir: Path,
    *,
    val_frac: float = 0.02,
    vocab_size: int = 2048,
) -> tuple[Corpus, Tokenizer, TokenData]:
    """Corpus, its cached tokenizer and its cached token shards, in one call."""
    from sparse_lens.corpus import load_corpus
    from sparse_lens.tokenizer import cached_tokenizer

    corpus = load_corpus(corpus_path, val_frac=val_frac)
    texts = [t for _, t in corpus.documents("train")]
    tokenizer = cached_tokenizer(texts, corpus.fingerprint, cache_dir, vocab_size)
    return corpus, tokenizer, TokenData.build(corpus, tokenizer, cache_dir)
