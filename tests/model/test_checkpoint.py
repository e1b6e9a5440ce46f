import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from sparse_lens import HookedSparseTransformer
from tests.helpers import build_model, random_tokens


@pytest.fixture
def saved(tmp_path, tokenizer):
    model = build_model(d_vocab=tokenizer.vocab_size, positional_embedding="learned")
    model.tokenizer = tokenizer
    model.save_pretrained(tmp_path / "m")
    return model, tmp_path / "m"


def test_round_trip_is_bit_identical(saved):
    model, path = saved
    loaded = HookedSparseTransformer.from_pretrained(path)
    tokens = random_tokens(d_vocab=model.cfg.d_vocab)
    assert torch.equal(model(tokens), loaded.eval()(tokens))
    assert loaded.cfg == model.cfg
    assert loaded.to_tokens("x = 1").tolist() == model.to_tokens("x = 1").tolist()
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]


def test_missing_folder_and_files(saved, tmp_path):
    _, path = saved
    with pytest.raises(FileNotFoundError, match="does not exist"):
        HookedSparseTransformer.from_pretrained(tmp_path / "nope")
    (path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        HookedSparseTransformer.from_pretrained(path)


def test_missing_config(saved):
    _, path = saved
    (path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        HookedSparseTransformer.from_pretrained(path)


def test_truncated_weights(saved):
    _, path = saved
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="model.safetensors.*corrupt or truncated"):
        HookedSparseTransformer.from_pretrained(path)


def test_corrupt_config_and_tokenizer(saved):
    _, path = saved
    (path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer.json.*corrupt"):
        HookedSparseTransformer.from_pretrained(path)
    (path / "config.json").write_text("{oops")
    with pytest.raises(ValueError, match="config.json.*corrupt"):
        HookedSparseTransformer.from_pretrained(path)


def test_config_weights_mismatch(saved):
    _, path = saved
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(cfg | {"d_mlp": 48}))
    with pytest.raises(ValueError, match="W_in has shape"):
        HookedSparseTransformer.from_pretrained(path)
    (path / "config.json").write_text(json.dumps(cfg | {"n_layers": 3}))
    with pytest.raises(ValueError, match="missing"):
        HookedSparseTransformer.from_pretrained(path)


def test_extra_tensor_rejected(saved):
    _, path = saved
    state = load_file(str(path / "model.safetensors"))
    state["stowaway"] = torch.zeros(3)
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(ValueError, match="unexpected.*stowaway"):
        HookedSparseTransformer.from_pretrained(path)


def test_tokenizer_vocab_mismatch(saved, tokenizer):
    _, path = saved
    cfg = json.loads((path / "config.json").read_text())
    state = load_file(str(path / "model.safetensors"))
    small = build_model()  # d_vocab 64, tokenizer has 300
    small.save_pretrained(path)  # replaces the whole folder: put a tokenizer beside it
    tokenizer.save(path / "tokenizer.json")
    with pytest.raises(ValueError, match="tokenizer has 300 tokens"):
        HookedSparseTransformer.from_pretrained(path)
    del cfg, state


def test_failed_write_leaves_previous_checkpoint_intact(saved, monkeypatch):
    model, path = saved
    before = (path / "model.safetensors").read_bytes()

    def broken_save(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr("sparse_lens.model.checkpoint.save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        model.save_pretrained(path)
    assert (path / "model.safetensors").read_bytes() == before
    assert not [p for p in path.iterdir() if p.name.endswith(".tmp")]
