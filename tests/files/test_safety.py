"""Nothing lost, nothing silently wrong: outputs, locks, files under corruption and misuse.

One section per class of problem (runs that kill a real process are in ``test_kill.py``).
"""

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from analyses.cli import main
from sparse_lens.circuits.ablation import ablation_means
from sparse_lens.circuits.circuit import Circuit
from sparse_lens.circuits.nodes import node_locations
from sparse_lens.data.tokenizer import train_bpe
from sparse_lens.model.config import SparseTransformerConfig
from sparse_lens.model.transformer import HookedSparseTransformer
from sparse_lens.openai_models.convert import from_circuit_sparsity
from sparse_lens.tasks.task import load_custom_task
from sparse_lens.training.sparse import TrainConfig, train
from tests.helpers import TEXTS, build_cfg, build_model, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def model_dir(tmp_path, tokenizer):
    model = HookedSparseTransformer(build_cfg(d_vocab=tokenizer.vocab_size), tokenizer=tokenizer)
    return model.save_pretrained(tmp_path / "m")


def _err(capsys) -> str:
    return capsys.readouterr().err


# -- 1. an empty or wrong --out never clobbers files -------------------------------------------
def test_empty_out_is_refused_by_the_parser(capsys):
    for argv in (
        ["train", "--preset", "tiny", "--out", ""],
        ["prune", "m", "--task", "x", "--out", " "],
        ["report", "src", "--out", ""],
        ["demo", "--out", ""],
    ):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        assert "empty" in _err(capsys)


def test_train_refuses_a_folder_of_foreign_files(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text("mine\n")
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "config.json").write_text('{"mine": 1}')
    code = main(["train", "--preset", "tiny", "--out", str(tmp_path), "--cache-dir", "/nonexist"])
    assert code == 2
    assert "no run.json" in _err(capsys)
    assert (tmp_path / "metrics.jsonl").read_text() == "mine\n"
    assert (tmp_path / "final" / "config.json").read_text() == '{"mine": 1}'
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "run.json").write_text("{}")
    assert main(["train", "--preset", "tiny", "--out", str(tmp_path)]) == 2
    assert "notes.txt" in _err(capsys)
    mine = {"metrics.jsonl", "final", "notes.txt", "run.json"}
    assert {p.name for p in tmp_path.iterdir()} == mine  # no lock file left in the user's folder
    sweep = ["sweep", "--preset", "tiny", "--widths", "32", "--l0", "40000", "--out", str(tmp_path)]
    assert main(sweep) == 2
    assert {p.name for p in tmp_path.iterdir()} == mine


def test_prune_refuses_to_replace_a_file_that_is_not_a_circuit(tmp_path, model_dir, capsys):
    target = tmp_path / "notes.json"
    target.write_text('{"my": "notes"}')
    code = main(["prune", str(model_dir), "--task", "bracket_counting", "--out", str(target)])
    assert code == 2
    assert "not a circuit file" in _err(capsys)
    assert target.read_text() == '{"my": "notes"}'


# -- 2. one writer per output --------------------------------------------------------------------
def test_a_second_writer_fails_at_once_naming_the_holder(tmp_path, capsys):
    from analyses.cli.train import RUN_FILES
    from sparse_lens.files.outputs import claim_output

    run = tmp_path / "run"
    with claim_output(run, "train", owned=RUN_FILES, legacy=("run.json",)):
        code = main(["train", "--preset", "tiny", "--out", str(run)])
        assert code == 2
        err = _err(capsys)
        assert f"pid {os.getpid()}" in err and "another process" in err
    assert not (run / "run.json").exists()


def test_two_processes_on_one_folder(tmp_path):
    """A real second process is refused while the first holds the folder."""
    from sparse_lens.files.outputs import claim_output

    out = tmp_path / "circuits"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from sparse_lens.files.outputs import claim_output\n"
            f"with claim_output({str(out)!r}, 'report'):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(60)\n",
        ],
        cwd=ROOT,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ValueError, match=f"pid {holder.pid}"), claim_output(out, "report"):
            pass
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    with claim_output(out, "report"):  # released by the kill
        pass


# -- 3. a model folder is complete or absent (kill tests: test_kill.py) -------------------------
def test_save_replaces_the_whole_folder(tmp_path, tokenizer):
    path = tmp_path / "m"
    HookedSparseTransformer(
        build_cfg(d_vocab=tokenizer.vocab_size), tokenizer=tokenizer
    ).save_pretrained(path)
    build_model().save_pretrained(path)  # no tokenizer: the old one must not stay behind
    assert not (path / "tokenizer.json").exists()
    assert HookedSparseTransformer.from_pretrained(path).tokenizer is None


def test_save_never_deletes_foreign_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="notes.txt"):
        build_model().save_pretrained(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


# -- 4. resume never silently changes the run --------------------------------------------------
def _tcfg(**kw):
    return TrainConfig(steps=6, batch_size=4, checkpoint_every=2, eval_every=3, log_every=3, **kw)


def test_resume_refuses_other_data_or_tokenizer(tmp_path, data, tokenizer):
    cfg = build_cfg(d_vocab=tokenizer.vocab_size, n_ctx=16, weight_density=0.5, seed=0)
    meta = {"corpus": {"source": "a", "fingerprint": "A"}, "tokenizer": {"sha256": "t"}}
    run = tmp_path / "run"
    model = HookedSparseTransformer(cfg, tokenizer=tokenizer)
    train(model, data, _tcfg(), run, metadata=meta, halt_after=3, progress=False)
    other = meta | {"corpus": {"source": "b", "fingerprint": "B"}}
    model = HookedSparseTransformer(cfg, tokenizer=tokenizer)
    with pytest.raises(ValueError, match="corpus differs.*fingerprint"):
        train(model, data, _tcfg(), run, metadata=other, resume=True, progress=False)
    # the same corpus under another path is the same run
    same = meta | {"corpus": {"source": "elsewhere/a", "fingerprint": "A"}}
    other_tok = train_bpe([t.upper() for t in TEXTS], vocab_size=tokenizer.vocab_size)
    assert other_tok.vocab_size == tokenizer.vocab_size
    model = HookedSparseTransformer(cfg, tokenizer=other_tok)
    with pytest.raises(ValueError, match="tokenizer differs"):
        train(model, data, _tcfg(), run, metadata=same, resume=True, progress=False)


def test_a_tokenizer_from_another_run_is_refused(model_dir):
    tiny_tokenizer(vocab_size=290).save(model_dir / "tokenizer.json")
    with pytest.raises(ValueError, match="not the one saved with this model"):
        HookedSparseTransformer.from_pretrained(model_dir)
    (model_dir / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.json.*missing"):
        HookedSparseTransformer.from_pretrained(model_dir)


# -- 5. circuit files are validated against the model -------------------------------------------
@pytest.fixture
def circuit_file(tmp_path):
    model = build_model()
    windows = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(0))
    nodes = {loc.hook: list(range(0, loc.size, 2)) for loc in node_locations(model.cfg)}
    circuit = Circuit.from_nodes(model, nodes, ablation_means(model, windows), task="t")
    assert circuit.n_edges > 0
    return model, circuit.save(tmp_path / "c.json")


@pytest.mark.parametrize(
    ("tamper", "match"),
    [
        (lambda d: d["nodes"].update({"blocks.9.mlp.hook_post": [0]}), "blocks.9.mlp.hook_post"),
        (lambda d: d["nodes"]["blocks.0.mlp.hook_post"].append(32), "channel 32"),
        (lambda d: d["nodes"]["blocks.0.mlp.hook_post"].append(-1), "channel -1"),
        (lambda d: d["nodes"]["blocks.0.mlp.hook_post"].append(0), "channel 0 twice"),
        (lambda d: d["nodes"]["blocks.0.mlp.hook_post"].append("3"), "channel '3'"),
        (lambda d: d["edges"].append(["L0.mlp.n31", "L0.mlp_out.c0", 1.0]), r"edges\[\d+\]"),
        (lambda d: d["sizes"].update({"blocks.0.mlp.hook_post": 99}), "sizes"),
        (lambda d: d["baselines"]["blocks.0.mlp.hook_post"].pop(), "baselines"),
    ],
)
def test_circuit_load_validates_against_the_model(circuit_file, tamper, match):
    model, path = circuit_file
    d = json.loads(path.read_text())
    tamper(d)
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=match):
        Circuit.load(path, model=model)
    try:  # loading without a model is lenient; running it is not
        circuit = Circuit.load(path)
    except ValueError:
        return
    with pytest.raises(ValueError, match=match):
        circuit.fwd_hooks(model)


def _add_node(d):
    """A node added by hand, to a location that had it removed (channel 1 of the first MLP)."""
    d["nodes"]["blocks.0.mlp.hook_post"] = sorted([*d["nodes"]["blocks.0.mlp.hook_post"], 1])


@pytest.mark.parametrize(
    ("tamper", "field"),
    [
        (_add_node, "n_nodes"),  # the count written with the file no longer matches
        (lambda d: (_add_node(d), d.update(n_nodes=d["n_nodes"] + 1)), "'nodes'"),
        (lambda d: d["removed_edges"].append(list(d["edges"][0][:2])), "n_edges|removed_edges"),
        (lambda d: d["edges"].pop(), "n_edges"),
        (lambda d: (d["edges"].pop(), d.update(n_edges=d["n_edges"] - 1)), "'edges'"),
        (lambda d: d.update(loss=0.01), "'losses'"),
        # a setting that changes what the losses mean: refused like a loss
        (lambda d: d.update(target_loss=0.5), "target_loss"),
        (lambda d: d.update(freeze_norms=not d["freeze_norms"]), "freeze_norms"),
        (lambda d: d.update(ablation="zero"), "ablation"),
        (lambda d: d["hparams"].update(k_coef=1.0), "hparams"),
    ],
)
def test_a_circuit_edited_by_hand_is_refused_not_reported_stale(circuit_file, tamper, field):
    """Nodes added (or edges dropped, or a loss changed) by hand: the edges and the loss in the
    file are no longer those of its nodes. Refused on load, with or without the model, naming
    the file and the field (the counts, the digests in ``derived_from``)."""
    model, path = circuit_file
    d = json.loads(path.read_text())
    tamper(d)
    path.write_text(json.dumps(d))
    for m in (None, model):
        with pytest.raises(ValueError, match=rf"c\.json.*({field}).*edited by hand") as info:
            Circuit.load(path, model=m)
        assert "\n" not in str(info.value)


def test_a_circuit_written_before_the_digests_is_checked_against_the_model(circuit_file, caplog):
    """A file without ``derived_from`` and counts (as older versions or a careful hand wrote):
    it loads, and nodes added to it are caught by recomputing the edges from the model."""
    model, path = circuit_file
    d = json.loads(path.read_text())
    for key in ("derived_from", "n_nodes", "n_edges"):
        del d[key]
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=r"c\.json: records no digests.*unchecked=True"):
        Circuit.load(path, model=model)  # refused by default: its losses cannot be checked
    with caplog.at_level(logging.WARNING):
        loaded = Circuit.load(path, model=model, unchecked=True)
    assert "read without digests" in caplog.text  # not silent
    assert set(loaded.unchecked_fields) >= {"losses", "settings", "nodes"}
    _add_node(d)
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=r"c\.json.*field 'edges' does not match.*edited by hand"):
        Circuit.load(path, model=model, unchecked=True)


@pytest.mark.parametrize(
    ("edge", "match"),
    [
        (["1.mlp.neuron.0", "0.mlp.mlp_out.0", 1.0], "not an edge of the model"),  # backwards
        (["0.mlp.mlp_out.0", "0.mlp.neuron.0", 1.0], "not an edge of the model"),  # reversed
        (["0.mlp.neuron.0", "1.mlp.mlp_out.0", 1.0], "not an edge of the model"),  # across layers
        (["0.attn.attn_in.0", "0.mlp.neuron.0", 1.0], "not an edge of the model"),
        (["neuron 0", "0.mlp.mlp_out.0", 1.0], "not a node label"),
        (["0.mlp.neuron.0", "0.mlp.mlp_out.0"], r"edges\[\d+\] must be"),
        (["0.mlp.neuron.0", "0.mlp.mlp_out.0", "1"], r"edges\[\d+\] must be"),
    ],
)
def test_an_edge_the_architecture_lacks_is_refused(circuit_file, edge, match):
    """An edge from layer 1 back to layer 0 (or against the forward direction, across layers,
    between kinds no weight joins, or malformed): refused on load, even without the model."""
    _, path = circuit_file
    d = json.loads(path.read_text())
    d["edges"].append(edge)
    d["n_edges"] += 1
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=rf"c\.json.*{match}"):
        Circuit.load(path)


@pytest.mark.parametrize(
    ("tamper", "match"),
    [
        (lambda d: d["nodes"]["blocks.0.mlp.hook_post"].__setitem__(0, 0.0), "channel 0.0"),
        (lambda d: d["nodes"]["blocks.0.mlp.hook_post"].__setitem__(0, 2.5), "channel 2.5"),
        (lambda d: d["nodes"]["blocks.0.mlp.hook_post"].__setitem__(0, True), "channel True"),
        (lambda d: d["sizes"].update({"blocks.0.mlp.hook_post": 32.0}), "sizes"),
        (lambda d: d.update(curve=[[3.7, 0.1]]), "curve"),
    ],
)
def test_indices_of_a_circuit_file_must_be_integers(circuit_file, tamper, match):
    """A channel (or size, or curve node count) written as a float was truncated by ``int()``
    or passed as a float; now refused on load, naming the file and the entry."""
    _, path = circuit_file
    d = json.loads(path.read_text())
    tamper(d)
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=rf"c\.json.*{match}.*(integer|must be)"):
        Circuit.load(path)


# -- 6. non-finite numbers ------------------------------------------------------------------------
def _record_weights_digest(model_dir):
    from sparse_lens.model.checkpoint import file_sha256

    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["weights_sha256"] = file_sha256(model_dir / "model.safetensors")
    (model_dir / "config.json").write_text(json.dumps(cfg))


def test_nan_weights_are_refused_on_load(model_dir, capsys):
    state = load_file(str(model_dir / "model.safetensors"))
    state["blocks.0.mlp.W_in"][0, 0] = float("nan")
    save_file(state, str(model_dir / "model.safetensors"))
    _record_weights_digest(model_dir)  # as a writer of NaN weights would: past the digest
    with pytest.raises(ValueError, match="blocks.0.mlp.W_in holds 1 non-finite"):
        HookedSparseTransformer.from_pretrained(model_dir)
    assert main(["tasks", str(model_dir)]) == 2
    assert "non-finite" in _err(capsys)


def test_training_stops_at_a_non_finite_loss_and_keeps_the_last_checkpoint(
    tmp_path, data, tokenizer
):
    cfg = build_cfg(d_vocab=tokenizer.vocab_size, n_ctx=16, weight_density=0.5, seed=0)
    model = HookedSparseTransformer(cfg, tokenizer=tokenizer)
    with pytest.raises(FloatingPointError, match="training stopped at step") as e:
        train(model, data, _tcfg(lr=1e30, warmup_frac=0.0), tmp_path / "run", progress=False)
    assert "last good checkpoint" in str(e.value) or "no checkpoint" in str(e.value)
    for ckpt in (tmp_path / "run" / "checkpoints").glob("step-*"):
        HookedSparseTransformer.from_pretrained(ckpt)  # finite, loadable
    assert not (tmp_path / "run" / "final").exists()
    with pytest.raises(ValueError, match="lr must be finite"):
        _tcfg(lr=float("inf"))


# -- 7. arguments outside their domain -----------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["tasks", "m", "--n", "-5"],
        ["tasks", "m", "--n", "0"],
        ["tasks", "m", "--seed", "-1"],
        ["train", "--preset", "tiny", "--out", "o", "--lr", "inf"],
        ["train", "--preset", "tiny", "--out", "o", "--lr", "nan"],
        ["train", "--preset", "tiny", "--out", "o", "--lr", "0"],
        ["train", "--preset", "tiny", "--out", "o", "--steps", "0"],
        ["train", "--preset", "tiny", "--out", "o", "--batch-size", "-8"],
        ["train", "--preset", "tiny", "--out", "o", "--idiom-frac", "1.5"],
        ["prune", "m", "--task", "t", "--out", "o", "--target-loss", "-1"],
        ["prune", "m", "--task", "t", "--out", "o", "--steps", "0"],
        ["prune", "m", "--task", "t", "--out", "o", "--epochs", "64,8"],
        ["prune", "m", "--task", "t", "--out", "o", "--epochs", "0,8"],
        ["prune", "m", "--task", "t", "--out", "o", "--epochs", "8"],
        ["sweep", "--preset", "tiny", "--out", "o", "--widths", "0", "--l0", "100"],
        ["sweep", "--preset", "tiny", "--out", "o", "--widths", "32", "--l0", "100,-1"],
        ["sweep", "--preset", "tiny", "--out", "o", "--widths", ",", "--l0", "100"],
        ["sweep", "--preset", "tiny", "--out", "o", "--widths", "32", "--l0", "9"]
        + ["--afrac", "1.5"],
        ["fit-bridges", "--sparse", "s", "--dense", "d", "--out", "o", "--afrac", "0"],
        ["fit-bridges", "--sparse", "s", "--dense", "d", "--out", "o", "--checkpoint-every", "0"],
        ["report", "s", "--out", "o", "--windows", "0"],
        ["bridge-report", "--sparse", "s", "--dense", "d", "--bridges", "b", "--task", "t"]
        + ["--out", "o", "--n", "-1"],
    ],
)
def test_numeric_options_are_range_checked_by_the_parser(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "must be" in _err(capsys)


def test_custom_task_whose_candidate_merges_with_the_context(tmp_path, tokenizer):
    ctx, cand = "print(", '"'
    assert tokenizer.encode(ctx + cand) != tokenizer.encode(ctx) + tokenizer.encode(cand)
    path = tmp_path / "t.jsonl"
    good = {"context": "x = [1, 2", "correct": "],", "incorrect": "]"}
    path.write_text(
        json.dumps(good) + "\n" + json.dumps({"context": ctx, "correct": cand, "incorrect": "'"})
    )
    with pytest.raises(ValueError, match=r"t.jsonl:2: correct '\"' merges"):
        load_custom_task(path, tokenizer)


# -- 8. a crafted config cannot make loading allocate ---------------------------------------------
@pytest.fixture
def no_real_build(monkeypatch):
    """Fail if a model is built off the meta device (the allocation a crafted config causes)."""
    init = HookedSparseTransformer.__init__

    def guarded(self, cfg, *a, **kw):
        if cfg.d_vocab > 10_000 and torch.get_default_device().type != "meta":
            raise AssertionError(f"built a model with d_vocab {cfg.d_vocab} before checking")
        init(self, cfg, *a, **kw)

    monkeypatch.setattr(HookedSparseTransformer, "__init__", guarded)


def test_crafted_d_vocab_is_refused_before_building(model_dir, no_real_build):
    cfg = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps(cfg | {"d_vocab": 300_000}))
    with pytest.raises(ValueError, match="has shape .*config.json implies"):
        HookedSparseTransformer.from_pretrained(model_dir)


def test_crafted_vocab_size_in_circuit_sparsity_import(no_real_build):
    config = dict(
        n_layer=1, n_head=2, d_model=8, vocab_size=300_000, block_size=8, rms_norm=True, bias=False
    )
    sd = {
        "transformer.wte.weight": torch.zeros(16, 8),
        "transformer.h.0.ln_1.weight": torch.ones(8),
        "transformer.h.0.ln_2.weight": torch.ones(8),
        "transformer.h.0.attn.c_attn.weight": torch.zeros(24, 8),
        "transformer.h.0.attn.c_proj.weight": torch.zeros(8, 8),
        "transformer.h.0.mlp.c_fc.weight": torch.zeros(32, 8),
        "transformer.h.0.mlp.c_proj.weight": torch.zeros(8, 32),
        "transformer.ln_f.weight": torch.ones(8),
        "lm_head.weight": torch.zeros(16, 8),
    }
    with pytest.raises(ValueError, match="shape"):
        from_circuit_sparsity(sd, config)


# -- 9. errors a person can act on ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c: [c], "JSON list"),
        (lambda c: None, "JSON NoneType"),
        (lambda c: c | {"afrac": "0.25"}, "afrac must be a number, got '0.25'"),
        (lambda c: c | {"act_sparse_sites": 3}, "act_sparse_sites must be a list of strings"),
        (lambda c: c | {"dtype": "int64"}, "int64"),
    ],
)
def test_malformed_config_is_one_line_naming_file_and_value(model_dir, edit, match, capsys):
    cfg = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps(edit(cfg)))
    with pytest.raises(ValueError, match=match) as e:
        HookedSparseTransformer.from_pretrained(model_dir)
    assert "config.json" in str(e.value)
    assert main(["tasks", str(model_dir)]) == 2
    err = _err(capsys)
    assert err.count("\n") == 1 and "config.json" in err


@pytest.fixture(scope="module")
def halted_run(tmp_path_factory, data, tokenizer):
    """A run killed (``halt_after``) after two checkpoints (steps 2 and 4)."""
    cfg = build_cfg(d_vocab=tokenizer.vocab_size, n_ctx=16, weight_density=0.5, seed=0)
    run = tmp_path_factory.mktemp("halted") / "run"
    model = HookedSparseTransformer(cfg, tokenizer=tokenizer)
    train(model, data, _tcfg(), run, halt_after=5, progress=False)
    return cfg, run


def _resume(halted, data, tokenizer, run):
    cfg, _ = halted
    model = HookedSparseTransformer(cfg, tokenizer=tokenizer)
    return train(model, data, _tcfg(), run, resume=True, progress=False)


def _copy(run: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run, tmp_path / "run"))


def test_corrupt_trainer_state_offers_the_previous_checkpoint(
    halted_run, data, tokenizer, tmp_path
):
    run = _copy(halted_run[1], tmp_path)
    (run / "checkpoints" / "step-0000004" / "trainer.pt").write_bytes(b"garbage")
    with pytest.raises(
        ValueError,
        match="corrupt.*delete .*step-0000004 to resume from the previous checkpoint step-0000002",
    ):
        _resume(halted_run, data, tokenizer, run)
    import shutil

    shutil.rmtree(run / "checkpoints" / "step-0000004")  # as the message says
    _resume(halted_run, data, tokenizer, run)
    assert (run / "final" / "config.json").is_file()


def test_truncated_metrics_on_resume(halted_run, data, tokenizer, tmp_path):
    run = _copy(halted_run[1], tmp_path)
    metrics = run / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"step": 5, "train_lo')  # killed mid-line
    _resume(halted_run, data, tokenizer, run)
    lines = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert [r["step"] for r in lines] == sorted(r["step"] for r in lines)
    run = _copy(halted_run[1], tmp_path / "b")
    metrics = run / "metrics.jsonl"
    metrics.write_text("{oops\n" + metrics.read_text())
    with pytest.raises(ValueError, match="metrics.jsonl:1 is corrupt"):
        _resume(halted_run, data, tokenizer, run)


@pytest.mark.parametrize(
    ("pointer", "match"),
    [
        ({"step": 4, "dir": "../../elsewhere"}, "not a checkpoint folder of this run"),
        ({"step": 4, "dir": "/tmp"}, "not a checkpoint folder of this run"),
        ({"step": 4}, "lacks 'step' or 'dir'"),
        ([1, 2], "lacks 'step' or 'dir'"),
    ],
)
def test_latest_pointer_is_checked(halted_run, data, tokenizer, tmp_path, pointer, match):
    run = _copy(halted_run[1], tmp_path)
    (run / "checkpoints" / "latest.json").write_text(json.dumps(pointer))
    with pytest.raises(ValueError, match=match):
        _resume(halted_run, data, tokenizer, run)


def test_truncated_dense_weights(tmp_path):
    from sparse_lens.training.dense_baseline import load_dense

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(ValueError, match="model.safetensors.*corrupt or truncated"):
        load_dense(tmp_path)


def test_truncated_means_cache_entry_is_rebuilt(tmp_path):
    model = build_model()
    windows = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(0))
    means = ablation_means(model, windows, cache_dir=tmp_path)
    (entry,) = tmp_path.glob("means-*.safetensors")
    entry.write_bytes(entry.read_bytes()[:50])
    again = ablation_means(model, windows, cache_dir=tmp_path)
    assert all(torch.equal(means[k], again[k]) for k in means)
    assert load_file(str(entry)).keys() == means.keys()


def _file(path: Path) -> Path:
    path.write_text("x")
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


@pytest.mark.parametrize(
    ("make", "kind", "match"),
    [
        (lambda t: _file(t / "f"), "train", "is an existing file"),
        (lambda t: t / ("x" * 300), "train", "longer than 255"),
        (lambda t: t.joinpath(*["a" * 200] * 25), "train", "longer than 4096"),
        (lambda t: Path("/proc/sparse_lens_out"), "train", "cannot write"),
        (lambda t: _file(t / "f") / "sub", "train", "is a file"),
        (lambda t: _folder(t / "d"), "prune", "is a folder"),
        (lambda t: t / ("x" * 300 + ".json"), "prune", "longer than 255"),
        (lambda t: Path("/proc/sparse_lens_c.json"), "prune", "cannot write"),
        (lambda t: _file(t / "f"), "report", "is an existing file"),
    ],
)
def test_bad_out_is_refused_before_any_work(
    tmp_path, model_dir, monkeypatch, make, kind, match, capsys
):
    import sparse_lens.data.token_data

    def no_work(*a, **kw):
        raise AssertionError("work started before --out was checked")

    monkeypatch.setattr(sparse_lens.data.token_data, "prepare_data", no_work)
    monkeypatch.setattr(HookedSparseTransformer, "from_pretrained", no_work)
    out = str(make(tmp_path))
    argv = {
        "train": ["train", "--preset", "tiny", "--out", out],
        "prune": ["prune", str(model_dir), "--task", "bracket_counting", "--out", out],
        "report": ["report", str(model_dir), "--out", out],
    }[kind]
    assert main(argv) == 2
    err = _err(capsys)
    assert match in err and err.count("\n") == 1


def test_model_api_refuses_empty_input():
    model = build_model()
    with pytest.raises(ValueError, match="empty batch"):
        model(torch.zeros(0, 5, dtype=torch.long))
    model.tokenizer = tiny_tokenizer()
    with pytest.raises(ValueError, match="empty list of strings"):
        model.to_tokens([])
    with pytest.raises(ValueError, match="empty list of strings"):
        model([])


def test_report_refuses_its_own_source_folder(tmp_path, model_dir, capsys):
    src = tmp_path / "demo"
    (src / "run").mkdir(parents=True)
    os.replace(model_dir, src / "run" / "final")
    for out in (src, src / "run" / "final", src / "run" / "final" / "r", src / "circuits"):
        assert main(["report", str(src), "--out", str(out)]) == 2
        err = _err(capsys)
        assert "source folder" in err or "inside the model folder" in err
    assert sorted(p.name for p in src.iterdir()) == ["run"]


def _all_actions():
    from analyses.cli.parser import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command, p in sub.choices.items():
        for action in p._actions:
            yield command, action


def test_every_numeric_option_of_every_command_is_range_checked():
    """The whole class: no command takes a bare int/float (which accepts -5, 0, inf, nan)."""
    bare = [
        f"{command} {action.option_strings}"
        for command, action in _all_actions()
        if action.type in (int, float)
    ]
    assert not bare, f"options without a range check: {bare}"


def test_every_out_option_refuses_an_empty_path():
    from analyses.cli.options import out_path

    loose = [
        command
        for command, action in _all_actions()
        if "--out" in action.option_strings and action.type is not out_path
    ]
    assert not loose, f"--out options that accept an empty path: {loose}"


@pytest.mark.parametrize(
    ("field", "value"),
    [("nodes", []), ("extra", None), ("extra", []), ("hparams", []), ("loss", "abc"),
     ("target_loss", "x"), ("freeze_norms", 1), ("edges", {}), ("test_loss", "0.1")],
)  # fmt: skip
def test_circuit_fields_of_the_wrong_type_are_named(tmp_path, field, value):
    model = HookedSparseTransformer(SparseTransformerConfig.tiny(seed=0))
    kept = {loc.hook: [0] for loc in node_locations(model.cfg)}
    values = {loc.hook: torch.zeros(loc.size) for loc in node_locations(model.cfg)}
    path = Circuit.from_nodes(model, kept, values, task="t").save(tmp_path / "c.json")
    data = json.loads(path.read_text())
    data[field] = value
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=f"field '{field}'"):
        Circuit.load(path, model=model)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 0.0])
@pytest.mark.parametrize("field", ["eps", "init_std"])
def test_config_floats_must_be_finite_and_positive(field, value):
    with pytest.raises(ValueError, match=field):
        SparseTransformerConfig.tiny(**{field: value})


def test_model_folder_files_are_readable_by_others(tmp_path):
    """Whole-folder writes leave the files 0644 and the folder 0755 (safetensors and mkdtemp
    would leave 0600 / 0700, so a shared run folder could not be read by a colleague)."""
    folder = build_model().save_pretrained(tmp_path / "m")
    assert folder.stat().st_mode & 0o777 == 0o755
    for f in folder.iterdir():
        assert f.stat().st_mode & 0o777 == 0o644, f.name


@pytest.mark.parametrize("text", ["[]", '{"extra": [1]}', "3"])
def test_report_of_a_json_that_is_not_a_circuit_is_a_clear_error(tmp_path, text):
    from analyses.report_sources import find_sources

    path = tmp_path / "c.json"
    path.write_text(text)
    with pytest.raises(ValueError, match="not a circuit file"):
        find_sources(path)


@pytest.mark.parametrize("text", ["[]", '{"config": 3}', '"x"'])
def test_sweep_settings_that_are_not_an_object_are_refused_by_name(tmp_path, text):
    from sparse_lens.sweep.grid import SweepConfig
    from sparse_lens.sweep.jobs import check_settings

    (tmp_path / "sweep.json").write_text(text)
    with pytest.raises(ValueError, match="not a readable sweep settings file"):
        check_settings(tmp_path, SweepConfig(preset="tiny", widths=(32,), l0s=(1,)))


def test_a_command_refused_before_writing_leaves_the_folder_unclaimed(tmp_path, capsys):
    """A refused command (here: an unknown idiom kind, found after --out was taken) must not leave
    the folder owned by it: another command can then use the folder."""
    out = tmp_path / "out"
    argv = ["train", "--preset", "tiny", "--idiom-kinds", "poems", "--idiom-frac", "0.2"]
    assert main([*argv, "--out", str(out)]) == 2
    assert "poems" in capsys.readouterr().err
    assert not (out / ".sparse_lens-owner.json").exists()
    from sparse_lens.files.outputs import claim_output

    with claim_output(out, "report") as p:  # another command takes it
        (p / "index.html").write_text("x")
    with pytest.raises(ValueError, match="was written by 'report'"), claim_output(out, "train"):
        pass


def test_a_file_output_inside_another_commands_folder_is_refused(tmp_path):
    """``prune --out RUN/c.json`` inside a training run would block ``train --resume``."""
    from sparse_lens.files.outputs import claim_output

    run = tmp_path / "run"
    with claim_output(run, "train") as p:
        (p / "run.json").write_text("{}")
    refused = pytest.raises(ValueError, match="'prune' is inside .*'train' writes")
    with refused, claim_output(run / "c.json", "prune", kind="file"):
        pass
    assert not (run / "c.json").exists() and not (run / ".c.json.lock").exists()
    for deeper in ("sub/c.json", "checkpoints/c.json", "final/x/c.json"):  # at any depth
        with refused, claim_output(run / deeper, "prune", kind="file"):
            pass
    folder_refused = pytest.raises(ValueError, match="inside .*'train' writes")
    with folder_refused, claim_output(run / "final" / "report", "report"):  # folders too
        pass
    assert sorted(e.name for e in run.iterdir()) == sorted(
        [".sparse_lens-owner.json", ".sparse_lens.lock", "run.json"]
    )  # nothing was created inside the run
    with claim_output(run, "train"):  # the run is still the training run's
        pass
    demo = tmp_path / "demo"  # a command nesting its own outputs
    with claim_output(demo, "demo"), claim_output(demo / "run", "train", within=("demo",)) as r:
        (r / "run.json").write_text("{}")


def test_a_refused_claim_removes_the_folders_it_created(tmp_path):
    """A command refused after its --out was created leaves no empty folder (with a lock file)
    behind, but never removes a folder that was there or that someone wrote into."""
    from sparse_lens.files.outputs import claim_output

    new = tmp_path / "a" / "b" / "out"
    with pytest.raises(RuntimeError), claim_output(new, "train"):
        raise RuntimeError("refused")
    assert not (tmp_path / "a").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    with pytest.raises(RuntimeError), claim_output(kept, "train"):
        raise RuntimeError("refused")
    assert kept.is_dir() and not (kept / ".sparse_lens-owner.json").exists()
    with pytest.raises(RuntimeError), claim_output(tmp_path / "f" / "x.json", "prune", kind="file"):
        raise RuntimeError("refused")
    assert not (tmp_path / "f").exists()


@pytest.mark.parametrize(
    ("marker", "argv"),
    [
        ("run.json", ["train", "--preset", "tiny", "--steps", "2"]),
        ("sweep.json", ["sweep", "--preset", "tiny", "--widths", "32", "--l0", "40000"]),
    ],
)
@pytest.mark.parametrize("text", ['{"mine": 1}', "[1]", "x", '{"version": 1, "config": {}}'])
def test_a_users_file_named_like_an_old_marker_is_never_adopted(
    tmp_path, capsys, marker, argv, text
):
    """A folder holding only the user's own ``run.json``/``sweep.json`` (not one this package
    wrote: it lacks the keys every old one held) is refused, untouched and with no lock left."""
    (tmp_path / marker).write_text(text)
    assert main([*argv, "--out", str(tmp_path), "--cache-dir", "/nonexistent-cache"]) == 2
    assert f"is not a {marker} that" in _err(capsys)
    assert [p.name for p in tmp_path.iterdir()] == [marker]
    assert (tmp_path / marker).read_text() == text


def test_a_circuit_written_before_the_settings_digest_loads_with_a_warning(circuit_file, caplog):
    """A file from before the settings digest: read, and the log says its settings (target,
    ablation, norms...) are not checked; a file with every digest loads without a warning."""
    model, path = circuit_file
    with caplog.at_level(logging.WARNING):
        assert Circuit.load(path, model=model).unchecked_fields == ()
    assert "digest" not in caplog.text
    d = json.loads(path.read_text())
    del d["derived_from"]["settings"]
    d["target_loss"] = 0.5  # unchecked in such a file: the warning says so
    path.write_text(json.dumps(d))
    with caplog.at_level(logging.WARNING):
        loaded = Circuit.load(path, model=model)
    assert "written before the settings digest(s)" in caplog.text
    assert loaded.unchecked_fields == ("settings",)
    from analyses.circuit_view import unchecked_banner

    assert "Unchecked file" in unchecked_banner(loaded.unchecked_fields)
    assert unchecked_banner(()) == ""
