"""The pretraining sample of a circuit card: the windows its top contexts and sd unit come from,
drawn the same way by ``sparse-lens explain`` and by the report's circuit pages, so the two give
one card for one circuit.

``draw_sample`` takes ``n_windows`` windows of ``n_ctx`` tokens from one split of token data: the
validation split's fixed set of evenly spaced windows (``TokenData.val_windows``; no seed), or
random training windows (seeded ``torch.Generator``). ``load_sample`` first resolves the corpus
(the one named, else the run's own) and loads its token data. Both return a
``PretrainingSample``: the windows and their ``description``, which the card's provenance
records (corpus source and fingerprint, split, sampling, seed, n windows, n_ctx, digest);
``sample_text`` says it in one sentence.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Int
from torch import Tensor

from sparse_lens.data.token_data import WindowSource, windows_digest
from sparse_lens.model.transformer import HookedSparseTransformer
from sparse_lens.vocab import SAMPLE_WINDOWS

SampleSplit = Literal["val", "train"]
SAMPLE_SPLITS: tuple[SampleSplit, ...] = ("val", "train")
DEFAULT_WINDOWS = SAMPLE_WINDOWS  # explain's --windows, the report's (and the demo's)
DEFAULT_SPLIT: SampleSplit = "val"
SAMPLE_KEYS = ("corpus", "corpus_fingerprint", "split", "sampling", "seed", "n_windows", "n_ctx")
_SPLIT_WORDS = {"val": "validation", "train": "training"}


@dataclass(frozen=True, kw_only=True)
class PretrainingSample:
    """Pretraining windows ``[window pos]`` (token ids) and how they were drawn
    (``description``: the keys of ``SAMPLE_KEYS`` and ``digest``, see ``draw_sample``)."""

    windows: Int[Tensor, "window pos"]
    description: dict[str, Any]


def draw_sample(
    data: WindowSource,
    *,
    corpus: Mapping[str, Any],
    n_ctx: int,
    split: SampleSplit = DEFAULT_SPLIT,
    n_windows: int = DEFAULT_WINDOWS,
    seed: int = 0,
) -> PretrainingSample:
    """``n_windows`` windows of ``n_ctx`` tokens from ``split`` of ``data``: ``"val"`` the
    validation split's evenly spaced windows (fewer when the split holds fewer; ``seed`` unused),
    ``"train"`` random training windows drawn with ``seed``. ``corpus`` names the data (its
    ``source`` and ``fingerprint``, as a run's ``run.json`` records them).

    The description holds ``corpus``, ``corpus_fingerprint``, ``split``, ``sampling``
    (``"evenly spaced"`` or ``"random"``), ``seed`` (None for ``"val"``), ``n_windows`` (drawn),
    ``n_ctx``, ``digest`` (``windows_digest``), and ``n_requested`` when fewer were drawn, and
    ``val_from_train_tail`` when the validation split is the training tokens' tail.

    Raises:
        ValueError: ``split`` is not ``"val"`` or ``"train"``, or ``n_windows`` < 1.
    """
    if n_windows < 1:
        raise ValueError(f"n_windows must be >= 1, got {n_windows!r}")
    if split == "val":
        windows, sampling, used_seed = data.val_windows(n_windows, n_ctx), "evenly spaced", None
    elif split == "train":
        gen = torch.Generator().manual_seed(seed)
        windows, sampling, used_seed = data.sample(n_windows, n_ctx, gen), "random", seed
    else:
        raise ValueError(f"split must be one of {SAMPLE_SPLITS}, got {split!r}")
    description: dict[str, Any] = {
        "corpus": corpus.get("source"),
        "corpus_fingerprint": corpus.get("fingerprint"),
        "split": split,
        "sampling": sampling,
        "seed": used_seed,
        "n_windows": len(windows),
        "n_ctx": int(windows.shape[1]),
        "digest": windows_digest(windows),
    }
    if len(windows) < n_windows:
        description["n_requested"] = n_windows
    if split == "val" and getattr(data, "val_from_train_tail", False):
        description["val_from_train_tail"] = True
    return PretrainingSample(windows=windows, description=description)


def corpus_identity(
    corpus: str | None, run_info: Mapping[str, Any] | None
) -> tuple[str | None, dict[str, Any]]:
    """The corpus to load (``corpus``, else the run's recorded source unless it is the default,
    ``stdlib``: None) and its identity, ``{"source", "fingerprint"}``: the run's recorded
    fingerprint when it is the run's corpus, else computed by reading the corpus.

    Raises:
        FileNotFoundError, ValueError: as ``load_corpus``, for a corpus the run did not record.
    """
    recorded = dict((run_info or {}).get("corpus") or {})
    path = corpus
    if path is None and recorded.get("source") not in (None, "stdlib"):
        path = str(recorded["source"])
    source = "stdlib" if path is None else str(path)
    fingerprint = recorded.get("fingerprint") if recorded.get("source") == source else None
    if fingerprint is None:
        from sparse_lens.data.corpus import load_corpus

        fingerprint = load_corpus(path).fingerprint
    return path, {"source": source, "fingerprint": fingerprint}


def load_sample(
    model: HookedSparseTransformer,
    *,
    corpus: str | None,
    run_info: Mapping[str, Any] | None,
    cache_dir: Path,
    split: SampleSplit = DEFAULT_SPLIT,
    n_windows: int = DEFAULT_WINDOWS,
    seed: int = 0,
) -> PretrainingSample:
    """``draw_sample`` from ``model``'s pretraining corpus (``corpus_identity``: the one named,
    else the run's of ``run_info``), windows of ``model.cfg.n_ctx`` tokens; its token shards are
    cached in ``cache_dir``.

    Raises:
        FileNotFoundError, ValueError: the corpus cannot be read, its tokenizer is not the
            model's (``model_token_data``), or as ``draw_sample``.
    """
    from sparse_lens.data import token_data  # looked up per call: tests stand in token data

    path, identity = corpus_identity(corpus, run_info)
    data = token_data.model_token_data(model, path, cache_dir)
    return draw_sample(
        data, corpus=identity, n_ctx=model.cfg.n_ctx, split=split, n_windows=n_windows, seed=seed
    )


def sample_text(sample: Mapping[str, Any] | None) -> str:
    """One sentence naming a card's pretraining sample (its provenance's
    ``pretraining_sample``), e.g. "32 windows of 64 tokens, evenly spaced over the validation
    split of corpus stdlib (fingerprint e95a495a93fa07c4); windows digest 380df64bc2a0490e". A
    description without every key of ``SAMPLE_KEYS`` (a caller's own) is given as it is, with
    the keys it does not state named."""
    if sample is None:
        return "none (no corpus contexts)"
    s = dict(sample)
    size = f"{s.get('n_windows', '?')} windows of {s.get('n_ctx', '?')} tokens"
    if "n_requested" in s:
        size += f" (of {s['n_requested']} requested: the split holds no more)"
    missing = [k for k in SAMPLE_KEYS if k not in s]
    if missing:
        given = "; ".join(f"{k} {v}" for k, v in s.items() if k not in ("n_windows", "n_ctx"))
        return f"{size}" + (f"; {given}" if given else "") + f" (not stated: {', '.join(missing)})"
    corpus = f"corpus {s['corpus']} (fingerprint {s['corpus_fingerprint']})"
    text = f"{size}, {_drawn(s)} of {corpus}"
    return text + (f"; windows digest {s['digest']}" if s.get("digest") else "")


def _drawn(s: Mapping[str, Any]) -> str:
    """How the windows were drawn from which split, in words."""
    split = _SPLIT_WORDS.get(str(s["split"]), str(s["split"]))
    if s.get("val_from_train_tail"):
        split += " (the training tokens' last 10%: the corpus has no validation documents)"
    if s["sampling"] == "evenly spaced":
        return f"evenly spaced over the {split} split"
    if s["sampling"] == "random":
        return f"drawn at random (seed {s['seed']}) from the {split} split"
    return f"{s['sampling']} from the {split} split"
