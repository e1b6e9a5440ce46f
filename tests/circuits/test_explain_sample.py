"""The pretraining sample of a circuit card: one draw for ``explain`` and the report, described
fully (corpus and fingerprint, split, sampling, seed, n windows, n_ctx, digest)."""

import pytest
import torch

from sparse_lens.circuits.explain.sample import (
    SAMPLE_KEYS,
    corpus_identity,
    draw_sample,
    sample_text,
)
from sparse_lens.data.corpus import load_corpus
from sparse_lens.data.token_data import TokenData, windows_digest

CORPUS = {"source": "stdlib", "fingerprint": "0123456789abcdef"}


def test_validation_windows_are_the_fixed_evenly_spaced_set(data):
    """The default split is the validation split's evenly spaced windows (the report's own
    draw): the same windows whatever the seed, and the description says so."""
    a = draw_sample(data, corpus=CORPUS, n_ctx=16, n_windows=5, seed=0)
    b = draw_sample(data, corpus=CORPUS, n_ctx=16, n_windows=5, seed=7)
    assert torch.equal(a.windows, data.val_windows(5, 16)) and torch.equal(a.windows, b.windows)
    assert a.description == {
        "corpus": "stdlib",
        "corpus_fingerprint": "0123456789abcdef",
        "split": "val",
        "sampling": "evenly spaced",
        "seed": None,
        "n_windows": 5,
        "n_ctx": 16,
        "digest": windows_digest(a.windows),
    }


def test_training_windows_are_random_and_seeded(data):
    a = draw_sample(data, corpus=CORPUS, n_ctx=16, split="train", n_windows=5, seed=3)
    again = draw_sample(data, corpus=CORPUS, n_ctx=16, split="train", n_windows=5, seed=3)
    other = draw_sample(data, corpus=CORPUS, n_ctx=16, split="train", n_windows=5, seed=4)
    assert torch.equal(a.windows, again.windows) and not torch.equal(a.windows, other.windows)
    assert (a.description["sampling"], a.description["seed"]) == ("random", 3)
    assert a.description["digest"] != other.description["digest"]


def test_a_short_split_says_how_many_were_asked_for():
    tokens = torch.arange(40).numpy().astype("uint16")
    tail = TokenData(train=tokens[:30], val=tokens[30:], val_from_train_tail=True)
    s = draw_sample(tail, corpus=CORPUS, n_ctx=8, n_windows=9)
    assert len(s.windows) == 3 and s.description["n_windows"] == 3
    assert s.description["n_requested"] == 9 and s.description["val_from_train_tail"] is True
    text = sample_text(s.description)
    assert "3 windows of 8 tokens (of 9 requested" in text and "last 10%" in text


def test_bad_requests_are_refused(data):
    with pytest.raises(ValueError, match="n_windows must be >= 1"):
        draw_sample(data, corpus=CORPUS, n_ctx=8, n_windows=0)


def test_the_corpus_is_the_runs_own_unless_named(tmp_path):
    """The run's recorded corpus and fingerprint by default (no second read of the corpus); a
    corpus the run did not record is read for its fingerprint."""
    run = {"corpus": {"source": "/data/code", "fingerprint": "aaaa"}}
    assert corpus_identity(None, run) == (
        "/data/code",
        {"source": "/data/code", "fingerprint": "aaaa"},
    )
    stdlib_run = {"corpus": {"source": "stdlib", "fingerprint": "bbbb"}}
    assert corpus_identity(None, stdlib_run) == (None, {"source": "stdlib", "fingerprint": "bbbb"})
    (tmp_path / "m.py").write_text("x = 1\n")
    path, identity = corpus_identity(str(tmp_path), stdlib_run)
    assert path == str(tmp_path)
    assert identity == {"source": str(tmp_path), "fingerprint": load_corpus(tmp_path).fingerprint}


def test_the_sentence_names_the_whole_sample(data):
    train = draw_sample(data, corpus=CORPUS, n_ctx=16, split="train", n_windows=4, seed=2)
    text = sample_text(train.description)
    assert text == (
        "4 windows of 16 tokens, drawn at random (seed 2) from the training split of corpus "
        f"stdlib (fingerprint 0123456789abcdef); windows digest {train.description['digest']}"
    )
    val = sample_text(draw_sample(data, corpus=CORPUS, n_ctx=16, n_windows=4).description)
    assert "evenly spaced over the validation split of corpus stdlib" in val
    assert sample_text(None) == "none (no corpus contexts)"


def test_a_partial_description_names_what_it_leaves_out():
    """A caller's own description (the report's was one phrase) is not passed off as a full
    one: the sentence lists the keys it does not state."""
    text = sample_text({"data": "the report's pretraining windows", "n_windows": 16, "n_ctx": 64})
    assert text.startswith("16 windows of 64 tokens; data the report's pretraining windows")
    assert f"(not stated: {', '.join(SAMPLE_KEYS[:5])})" in text
