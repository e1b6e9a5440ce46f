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


def _without_weights_digest(path):
    """Make ``path`` a folder as written before the weights had a digest (the checks below the
    digest are then reached even for weights changed on disk)."""
    cfg = json.loads((path / "config.json").read_text())
    del cfg["weights_sha256"]
    (path / "config.json").write_text(json.dumps(cfg))


def test_truncated_weights(saved):
    _, path = saved
    _without_weights_digest(path)
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
    _without_weights_digest(path)
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


def test_weights_changed_on_disk_are_refused_naming_the_file(saved):
    """One flipped bit anywhere in model.safetensors (here in a weight's data, which still
    parses and is finite) or another model's weights: refused by the SHA-256 in config.json."""
    model, path = saved
    assert len(json.loads((path / "config.json").read_text())["weights_sha256"]) == 64
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-5] ^= 0x01  # the low bit of a float32's mantissa: a finite, plausible weight
    (path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="model.safetensors.*not the one saved.*weights_sha256"):
        HookedSparseTransformer.from_pretrained(path)
    other = build_model(d_vocab=model.cfg.d_vocab, positional_embedding="learned", seed=1)
    save_file(other.state_dict(), str(path / "model.safetensors"))
    with pytest.raises(ValueError, match="not the one saved"):
        HookedSparseTransformer.from_pretrained(path)


def test_a_folder_without_the_weights_digest_still_loads(saved):
    """Folders written before ``weights_sha256`` existed load as before (every other check
    applies); a digest that is not 64 hex digits is refused, naming the field."""
    model, path = saved
    _without_weights_digest(path)
    loaded = HookedSparseTransformer.from_pretrained(path)
    tokens = random_tokens(d_vocab=model.cfg.d_vocab)
    assert torch.equal(model(tokens), loaded.eval()(tokens))
    cfg = json.loads((path / "config.json").read_text())
    for bad in ("abc", 12, "g" * 64):
        (path / "config.json").write_text(json.dumps(cfg | {"weights_sha256": bad}))
        with pytest.raises(ValueError, match="config.json.*weights_sha256 must be a SHA-256"):
            HookedSparseTransformer.from_pretrained(path)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.uint8, torch.bool])
def test_weights_that_are_not_floating_point_are_refused(saved, dtype):
    """Integer (or boolean) weights of the right shapes, with a matching digest: refused,
    naming the file, the tensor and its dtype (they loaded into the float parameters before)."""
    from sparse_lens.model.checkpoint import file_sha256

    _, path = saved
    state = load_file(str(path / "model.safetensors"))
    state = {k: v.round().to(dtype) for k, v in state.items()}
    save_file(state, str(path / "model.safetensors"))
    cfg = json.loads((path / "config.json").read_text())
    cfg["weights_sha256"] = file_sha256(path / "model.safetensors")
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="model.safetensors.*not floating point"):
        HookedSparseTransformer.from_pretrained(path)


@pytest.mark.parametrize("device", ["cuda", "cuda:7", "mps", "xpu:0", "tpu", "cuda:x"])
def test_a_device_this_machine_lacks_is_one_line_naming_it(saved, capsys, device):
    """``"device": "cuda"`` in config.json on a machine without CUDA (an ``AssertionError`` from
    torch before), any other device it lacks or a name torch does not know: a ``ValueError``
    naming the device and the file, and one line (exit 2) from the command line."""
    from analyses.cli import main
    from sparse_lens.model.config import SparseTransformerConfig

    kind = device.split(":")[0]
    backend = getattr(torch, kind, None)
    if backend is not None and backend.is_available() and device != "cuda:x":
        pytest.skip(f"this machine has {kind}")
    _, path = saved
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(cfg | {"device": device}))
    with pytest.raises(ValueError, match=f"config.json.*device {device!r}"):
        HookedSparseTransformer.from_pretrained(path)
    assert main(["tasks", str(path)]) == 2
    err = capsys.readouterr().err
    assert repr(device) in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(ValueError, match=f"device {device!r}"):
        SparseTransformerConfig.tiny(device=device)
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=f"device {device!r}"):
        HookedSparseTransformer.from_pretrained(path, device=device)
