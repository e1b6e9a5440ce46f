import json
import sysconfig
from pathlib import Path

import pytest

from sparse_lens.data import corpus as corpus_mod
from sparse_lens.data.corpus import load_corpus, split_of, stdlib_root
from sparse_lens.data.token_data import TokenData
from sparse_lens.data.tokenizer import EOT, REQUIRED_TOKENS, Tokenizer, cached_tokenizer, train_bpe
from tests.helpers import TEXTS


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "code"
    for i in range(40):
        (root / f"pkg{i % 3}").mkdir(parents=True, exist_ok=True)
        (root / f"pkg{i % 3}" / f"m{i}.py").write_text(TEXTS[i % 5] * (i + 1))
    (root / "notes.md").write_text("ignored")
    return root


def test_split_is_deterministic_and_independent_of_order():
    names = [f"a/b{i}.py" for i in range(500)]
    first = [split_of(n, 0.1) for n in names]
    assert first == [split_of(n, 0.1) for n in names]
    assert [split_of(n, 0.1) for n in reversed(names)] == list(reversed(first))
    assert 20 < first.count("val") < 80


def test_folder_corpus_and_fingerprint(folder, tmp_path):
    c1 = load_corpus(folder, val_frac=0.2)
    c2 = load_corpus(folder, val_frac=0.2)
    assert c1.fingerprint == c2.fingerprint and len(c1.names) == 40
    assert c1.split_names("val") == c2.split_names("val")
    assert set(c1.split_names("val")).isdisjoint(c1.split_names("train"))
    (folder / "pkg0" / "m0.py").write_text("changed = True\n")
    assert load_corpus(folder, val_frac=0.2).fingerprint != c1.fingerprint
    meta = c1.metadata()
    assert meta["fingerprint"] == c1.fingerprint and meta["n_documents"] == 40


def test_jsonl_corpus_and_errors(tmp_path):
    good = tmp_path / "c.jsonl"
    good.write_text("\n".join(json.dumps({"text": t}) for t in TEXTS[:30]))
    assert len(load_corpus(good, val_frac=0.1).names) == 30
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x"}\n{"nope": 1}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        load_corpus(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_corpus(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no non-empty"):
        load_corpus(tmp_path / "empty")
    with pytest.raises(ValueError, match="val_frac"):
        load_corpus(good, val_frac=1.5)


def test_default_corpus_is_the_stdlib():
    assert (stdlib_root() / "os.py").is_file()


def test_tokenizer_invariants(tokenizer):
    assert tokenizer.vocab_size == 300
    assert tokenizer.eot_id == 299
    assert tokenizer.id_to_token(299) == EOT
    for t in REQUIRED_TOKENS:
        assert tokenizer.is_single_token(t), t
    text = "def f(x):\n    return [x, 'a', \"b\"]\n"
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_required_tokens_are_added_when_bpe_does_not_learn_them():
    tok = train_bpe(TEXTS, vocab_size=300, required=("@@!", "zq"))
    assert tok.is_single_token("@@!") and tok.is_single_token("zq")
    assert tok.vocab_size == 300 and tok.eot_id == 299


def test_tokenizer_cache_and_save_load(tmp_path, tokenizer):
    tok = cached_tokenizer(TEXTS, "fp", tmp_path, vocab_size=300)
    assert (tmp_path / "tokenizer-fp-300.json").is_file()
    again = cached_tokenizer(["unused"], "fp", tmp_path, vocab_size=300)
    assert again.to_json() == tok.to_json()
    with pytest.raises(FileNotFoundError):
        Tokenizer.load(tmp_path / "nope.json")


def test_token_data_windows(folder, tmp_path, tokenizer):
    import torch

    corpus = load_corpus(folder, val_frac=0.2)
    data = TokenData.build(corpus, tokenizer, tmp_path / "cache")
    assert data.train.dtype.name == "uint16" and len(data.val) > 0
    # each split's stream: <|endoftext|> + the tokens of each of its documents, in order
    for split, stream in (("train", data.train), ("val", data.val)):
        ref = []
        for _, text in corpus.documents(split):
            ref += [tokenizer.eot_id, *tokenizer.encode(text)]
        assert stream.tolist() == ref, split
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    batch = data.sample(4, 16, g1)
    assert torch.equal(batch, data.sample(4, 16, g2))
    train = data.train.tolist()
    for row in batch.tolist():  # every window is a contiguous slice of the training stream
        assert any(train[i : i + 16] == row for i in range(len(train) - 15))
    v = data.val_windows(5, 16)
    assert torch.equal(v, data.val_windows(5, 16))
    last = len(data.val) - 16  # evenly spaced from the first to the last window
    val = data.val.tolist()
    assert v.tolist() == [val[j * last // 4 : j * last // 4 + 16] for j in range(5)]
    assert int(data.train.max()) < tokenizer.vocab_size
    with pytest.raises(ValueError, match="fewer than n_ctx"):
        data.check_fits(10**7)


def test_hf_tokenizer_view_matches(tokenizer):
    hf = tokenizer.to_hf()
    text = "x = (\"a\", 'b')\n"
    assert hf(text)["input_ids"] == tokenizer.encode(text)
    assert hf.eos_token_id == tokenizer.eot_id


def test_site_packages_corpus(tmp_path, monkeypatch):
    """``--corpus site-packages``: the .py files of the installed packages, this project's own
    packages (the task suite's source) left out, split by name like every corpus."""
    assert Path(sysconfig.get_paths()["purelib"]) in corpus_mod.site_packages_roots()
    pure, plat = tmp_path / "pure", tmp_path / "plat"
    files = {
        pure / "pkg_a" / "core.py": "def f(x):\n    return x\n",
        pure / "pkg_a" / "__pycache__" / "core.py": "cached = 1\n",
        pure / "pkg_a" / "notes.txt": "not python\n",
        pure / "sparse_lens" / "task_suite.py": "TASKS = 1\n",
        pure / "hooks" / "x.py": "y = 2\n",
        plat / "pkg_b" / "ext.py": "import os\n",
        plat / "pkg_a" / "core.py": "shadowed = 1\n",
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    monkeypatch.setattr(corpus_mod, "site_packages_roots", lambda: [pure, plat])
    c = load_corpus("site-packages", val_frac=0.5)
    assert c.source == "site-packages"
    assert c.names == ("pkg_a/core.py", "pkg_b/ext.py")
    assert c.texts[0] == "def f(x):\n    return x\n"  # the first folder wins a shared name
    assert c.split_names("val") == [n for n in c.names if split_of(n, 0.5) == "val"]
    assert load_corpus("site-packages", val_frac=0.5).fingerprint == c.fingerprint
    monkeypatch.setattr(corpus_mod, "site_packages_roots", lambda: [])
    with pytest.raises(FileNotFoundError, match="site-packages"):
        load_corpus("site-packages")
