"""``sparse-lens explain``: a circuit file in, its card out as JSON and Markdown."""

import json

import pytest
import torch

import sparse_lens.data.token_data
from analyses.cli import main
from sparse_lens import HookedSparseTransformer
from sparse_lens.circuits.ablation import ablation_means
from sparse_lens.circuits.circuit import Circuit
from sparse_lens.circuits.nodes import node_locations
from tests.helpers import build_cfg, tiny_tokenizer

FAST = ["--examples", "16", "--permutations", "49"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    tok = tiny_tokenizer()
    model = HookedSparseTransformer(build_cfg(d_vocab=tok.vocab_size, n_ctx=64), tokenizer=tok)
    model.save_pretrained(root / "model")
    windows = torch.randint(0, tok.vocab_size, (4, 64), generator=torch.Generator().manual_seed(3))
    nodes = {loc.hook: list(range(0, loc.size, 13)) for loc in node_locations(model.cfg)}
    circuit = Circuit.from_nodes(
        model.eval(), nodes, ablation_means(model, windows), task="single_double_quote"
    )
    circuit.extra["model_dir"] = str(root / "model")
    circuit.save(root / "circuits" / "quote.json")
    return root, circuit


def test_explain_writes_the_card_as_json_and_markdown(saved, capsys):
    root, circuit = saved
    assert main(["explain", str(root / "circuits" / "quote.json"), "--windows", "0", *FAST]) == 0
    md = root / "circuits" / "cards" / "quote.card.md"
    assert f"card written to {md}" in capsys.readouterr().out
    card = json.loads(md.with_suffix(".json").read_text())
    assert card["task"] == "single_double_quote" and len(card["nodes"]) == circuit.n_nodes
    assert card["provenance"]["split"] == "test" and card["provenance"]["n_examples"] <= 16
    assert card["provenance"]["pretraining_sample"] is None
    text = md.read_text()
    assert text.startswith("# Circuit card: `single_double_quote`")
    for section in ("## Computed on", "## Stages", "## Heads", "## Every node", "## Role rules"):
        assert section in text
    assert all(f"`{n['label']}`" in text for n in card["nodes"])


def test_explain_samples_pretraining_windows(saved, data, tmp_path, monkeypatch, capsys):
    """``--windows N`` takes N windows of the model's corpus (here the test corpus, tokenised by
    the same tiny tokenizer) for each node's top contexts: by default the validation split's
    evenly spaced windows, as the report does; ``--windows-split train`` random training
    windows of ``--seed``. The card records which."""
    root, _ = saved
    monkeypatch.setattr(sparse_lens.data.token_data, "model_token_data", lambda *a: data)
    run = {"corpus": {"source": "stdlib", "fingerprint": "f" * 16}}
    monkeypatch.setattr(sparse_lens.data.token_data, "run_info_beside", lambda d: run)
    args = ["explain", str(root / "circuits" / "quote.json"), *FAST, "--windows", "6"]
    samples = {}
    for split in ("val", "train"):
        out = tmp_path / split
        assert main([*args, "--out", str(out), "--windows-split", split, "--seed", "4"]) == 0
        card = json.loads((out / "quote.card.json").read_text())
        samples[split] = card["provenance"]["pretraining_sample"]
        assert all(n["corpus"] is not None for n in card["nodes"])
        assert "pretraining sample" in card["provenance"]["sd_unit"]
    val, train = samples["val"], samples["train"]
    assert val == {
        "corpus": "stdlib",
        "corpus_fingerprint": "f" * 16,
        "split": "val",
        "sampling": "evenly spaced",
        "seed": None,
        "n_windows": 6,
        "n_ctx": 64,
        "digest": val["digest"],
    }
    assert (train["split"], train["sampling"], train["seed"]) == ("train", "random", 4)
    assert train["digest"] != val["digest"] and len(train["digest"]) == 16


def test_explain_errors(saved, tmp_path, capsys):
    root, _ = saved
    orphan = tmp_path / "orphan.json"
    orphan.write_text(json.dumps({"circuit_version": 1, "extra": {}}))
    assert main(["explain", str(orphan), "--out", str(tmp_path / "c"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "no model folder recorded" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()  # refused before writing: nothing left
    assert main(["explain", str(tmp_path / "missing.json"), "--out", str(tmp_path / "c")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("what", "says"),
    [
        ("model folder", "is a model or run folder, not a circuit file"),
        ("model config", "not a circuit file (a model config"),
        ("card", "not a circuit file (a circuit card"),
        ("other json", "not a circuit file (a JSON object with keys a, b"),
        ("json list", "not a circuit file (a JSON list)"),
    ],
)
def test_explain_names_what_it_was_given_instead_of_a_circuit(saved, tmp_path, capsys, what, says):
    """``explain`` (and ``report`` for a file) says what the path is when it is not a circuit
    file (a model folder or its config.json, a card, another JSON) and creates nothing."""
    root, _ = saved
    path = {
        "model folder": root / "model",
        "model config": root / "model" / "config.json",
    }.get(what)
    if path is None:
        path = tmp_path / "x.json"
        body = {"card": {"rules": [], "nodes": [], "summary": ""}, "other json": {"a": 1, "b": 2}}
        path.write_text(json.dumps(body.get(what, [1, 2])))
    commands = [["explain", str(path)]]
    commands += [["report", str(path)]] if path.is_file() else []  # report takes run folders
    for command in commands:
        out = tmp_path / "out"
        assert main([*command, "--out", str(out), *(FAST if command[0] == "explain" else [])]) == 2
        err = capsys.readouterr().err
        assert says in err, (command, err)
        assert not out.exists()
    with pytest.raises(ValueError, match="not a circuit file"):
        Circuit.load(path)


def test_explain_shows_progress_unless_quiet(saved, tmp_path, capsys):
    """Two forward passes per node take minutes on a real circuit: the knockouts show tqdm
    bars on stderr, and ``--quiet`` turns them off."""
    root, _ = saved
    args = ["explain", str(root / "circuits" / "quote.json"), "--windows", "0", *FAST]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert "knockouts (circuit)" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "b"), "--quiet"]) == 0
    assert "knockouts" not in capsys.readouterr().err


def test_explain_defaults_to_the_circuit_files_own_test_pairs(saved, tmp_path):
    """A card on 64 pairs said 'misses its target: 0.153' beside the file's 0.149 on 128: by
    default explain measures the number of test pairs the circuit file records."""
    _, circuit = saved
    circuit.extra["n_test"] = 12
    path = circuit.save(tmp_path / "quote.json")
    out = tmp_path / "cards"
    args = ["explain", str(path), "--windows", "0", "--permutations", "49", "--quiet"]
    assert main([*args, "--out", str(out)]) == 0
    card = json.loads((out / "quote.card.json").read_text())
    assert card["provenance"]["n_examples"] == 12 and card["provenance"]["split"] == "test"
