"""The release as researchers get it: a blob folder with the released config keys, a Hugging
Face snapshot of ``openai/circuit-sparsity`` and a ``viz_data.pt`` with the released structure,
each built from what public code written against the real files documents (sources in
``tests/oai_files.py``): OpenAI's ``circuit_sparsity/inference/gpt.py`` and
``circuit_sparsity/viz.py`` (github.com/openai/circuit_sparsity), and
``scripts/pt_to_parquet.py`` / ``CIRCUIT_EXPLORER_PLAN.md`` (github.com/michaelwaves/circuit_sparsity).

The model has ``d_model`` 12 but ``n_head * d_head`` 18, so q/k/v indices (projected space) and
``act_in`` indices (residual space) cannot be swapped unnoticed, as they could be on
``csp_yolo1`` where both are 1024."""

import json

import numpy as np
import pytest
import torch

from analyses.cli import main
from sparse_lens import HookedSparseTransformer
from sparse_lens.circuits.circuit import Circuit
from tests.helpers import TEXTS
from tests.oai_files import (
    gpt_state_dict,
    reference_forward,
    released_config,
    released_viz_data,
    write_gpt2_bpe,
    write_hf_snapshot,
    write_hub_cache,
    write_oai_folder,
)

VOCAB = 256 + 80 + 1
CONFIG = released_config(vocab_size=VOCAB, n_head=3, d_head=6, d_model=12)
FULL = {k: v for k, v in CONFIG.items() if k != "n_mlp"} | {"d_mlp": CONFIG["n_mlp"]}
DROPPED = {"pfrac", "n_embd", "expansion_factor", "expansion_factor_mlp", "debug_exact_topk"}
DROPPED |= {"sparse_matmul_impl", "dropout", "flash", "grad_checkpointing", "tokenizer_name"}


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tinypython")
    write_gpt2_bpe(root, TEXTS, n_merges=80, eot_in_encoder=False)
    return root


def _state(seed=7):
    sd = gpt_state_dict(FULL, seed=seed)
    for name, w in sd.items():  # sparse weights, so edges are a real subset
        if name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
            w.mul_(torch.rand(w.shape, generator=torch.Generator().manual_seed(len(name))) < 0.4)
    return sd


def _import(src, out, tok_dir, capsys):
    code = main(["import-oai", str(src), "--out", str(out), "--tokenizer", str(tok_dir)])
    return code, capsys.readouterr()


def _check_logits(out, sd):
    model = HookedSparseTransformer.from_pretrained(out).eval()
    idx = torch.randint(0, VOCAB, (3, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = model(idx)
    torch.testing.assert_close(ours, reference_forward(sd, FULL, idx), atol=1e-5, rtol=1e-5)
    return model


def test_blob_folder_with_released_keys(tok_dir, tmp_path, capsys):
    sd = _state()
    src = write_oai_folder(tmp_path / "csp", CONFIG, sd)
    code, out = _import(src, tmp_path / "m", tok_dir, capsys)
    assert code == 0, out.err
    model = _check_logits(tmp_path / "m", sd)
    assert model.cfg.d_mlp == CONFIG["n_mlp"] and model.cfg.n_heads * model.cfg.d_head == 18
    record = json.loads((tmp_path / "m" / "config.json").read_text())["imported_from"]
    assert record["source"] == "blob folder"
    dropped = set(record["dropped_config_keys"])
    assert dropped >= DROPPED and not dropped & {"n_mlp", "d_model", "sink", "afrac", "bias"}
    assert "pops it" in record["dropped_config_keys"]["pfrac"]
    assert "dropped config key pfrac" in out.out


@pytest.mark.parametrize("pickled", [False, True], ids=["safetensors", "bin"])
@pytest.mark.parametrize("layout", ["snapshot", "hub_cache"])
def test_hub_snapshot_imports_without_running_its_code(
    pickled, layout, tok_dir, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    sd, marker = _state(seed=8), tmp_path / "REMOTE_CODE_RAN"
    cfg = {k: v for k, v in CONFIG.items() if k not in ("pfrac", "n_embd")}  # HF: GPTConfig's

    def write(folder):
        return write_hf_snapshot(folder, cfg, sd, marker, pickled=pickled)

    src = write(tmp_path / "snap") if layout == "snapshot" else write_hub_cache(tmp_path, write)
    code, out = _import(src, tmp_path / "m", tok_dir, capsys)
    assert code == 0, out.err
    assert not marker.exists()
    _check_logits(tmp_path / "m", sd)
    record = json.loads((tmp_path / "m" / "config.json").read_text())["imported_from"]
    assert record["source"] == "Hugging Face snapshot"
    assert {"auto_map", "architectures", "model_type"} <= set(record["dropped_config_keys"])


class _Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED_BY_HUB_BIN",))


def test_hub_bin_with_pickle_payload_is_refused(tok_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sd, marker = _state(), tmp_path / "REMOTE_CODE_RAN"
    src = write_hf_snapshot(tmp_path / "snap", CONFIG, sd, marker, pickled=True)
    tensors = {f"circuit_model.{k}": v for k, v in sd.items()}
    torch.save(tensors | {"circuit_model.evil": _Payload()}, src / "pytorch_model.bin")
    code, out = _import(src, tmp_path / "m", tok_dir, capsys)
    assert code == 2 and "refusing to load" in out.err and "pytorch_model.bin" in out.err
    assert not (tmp_path / "PWNED_BY_HUB_BIN").exists() and not marker.exists()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("bigram_table_rank", 8),
        ("unembed_rank", 16),
        ("mup", True),
        ("afrac_approx", True),
        ("scale_invariance", True),
        ("use_tied_aux_matrix", True),
        ("rms_norm", False),
        ("residual_activation_type", "relu"),
    ],
)
@pytest.mark.parametrize("hub", [False, True], ids=["blob", "hub"])
def test_unsupported_architecture_value_is_refused(key, value, hub, tok_dir, tmp_path, capsys):
    sd, cfg = _state(), CONFIG | {key: value}
    if hub:
        src = write_hf_snapshot(tmp_path / "s", cfg, sd, tmp_path / "RAN", pickled=False)
    else:
        src = write_oai_folder(tmp_path / "s", cfg, sd)
    code, out = _import(src, tmp_path / "m", tok_dir, capsys)
    assert code == 2 and not (tmp_path / "m").exists()
    assert f"{key}={value!r} is not supported" in out.err and "changes the architecture" in out.err
    assert len(out.err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"n_head": None}, "n_head=None: must be a positive integer"),
        ({"d_model": 12.5}, "d_model=12.5: must be a positive integer"),
        ({"d_model": True}, "d_model=True: must be a positive integer"),
        ({"vocab_size": str(VOCAB)}, f"vocab_size='{VOCAB}': must be a positive integer"),
        ({"block_size": -1}, "block_size=-1: must be a positive integer"),
        ({"afrac": 2}, "afrac=2: must be a number in (0, 1]"),
        ({"afrac_loctypes": 3}, "afrac_loctypes=3: must be a string"),
        ({"sink": "yes"}, "sink='yes': must be true or false"),
        ({"pfrac": "1/16"}, "pfrac='1/16'"),
        # sizes that disagree with the weights: the key and both shapes, before any reshape
        ({"d_model": 16}, "transformer.wte.weight has shape (337, 12) in the weights, but the "
         "config implies (337, 16)"),
        ({"n_head": 10**9}, "transformer.h.0.attn.c_attn.weight has shape (54, 12) in the "
         "weights, but the config implies (18000000000, 12)"),
        ({"n_mlp": 40}, "transformer.h.0.mlp.c_fc.weight has shape (24, 12) in the weights, "
         "but the config implies (40, 12)"),
    ],
)  # fmt: skip
def test_bad_config_is_one_line_naming_it(edit, message, tok_dir, tmp_path, capsys):
    src = write_oai_folder(tmp_path / "s", CONFIG | edit, _state())
    code, out = _import(src, tmp_path / "m", tok_dir, capsys)
    assert code == 2 and message in out.err, out.err
    assert len(out.err.strip().splitlines()) == 1 and "Traceback" not in out.err


# ------------------------------------------------------------------------- viz_data.pt
KEPT = {
    "0.attn.act_in": [0, 3, 7, 11],
    "0.attn.q": [1, 4, 15, 17],  # projected space: above d_model
    "0.attn.k": [1, 2, 16],
    "0.attn.v": [0, 5, 13],
    "0.attn.resid_delta": [2, 3],
    "0.mlp.post_act": [6],
    "1.mlp.act_in": [0, 1, 2, 5],
    "1.mlp.post_act": [3, 10, 20],
    "1.mlp.resid_delta": [4],
    "final_resid": [1, 4],
}
# right-padded with id 0; sample 1 holds a real 0 inside, sample 2 fills the row
TOKENS = torch.tensor(
    [[5, 6, 7, 0, 0, 0], [8, 0, 9, 10, 0, 0], [1, 2, 3, 4, 5, 6], [11, 12, 0, 0, 0, 0]]
)


@pytest.fixture(scope="module")
def released(tok_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("released")
    sd = _state(seed=9)
    src = write_oai_folder(root / "csp", CONFIG, sd)
    out = root / "model"
    assert main(["import-oai", str(src), "--out", str(out), "--tokenizer", str(tok_dir)]) == 0
    corpus = root / "corpus"
    corpus.mkdir()
    for i in range(30):
        (corpus / f"m{i}.py").write_text(TEXTS[i % 5] * 4)
    return root, sd, corpus


def _run(root, corpus, viz, out, capsys, *extra):
    torch.save(viz, out.parent / "viz_data.pt")
    args = ["import-oai-circuit", str(out.parent / "viz_data.pt"), "--model", str(root / "model")]
    args += ["--task", "var_swap", "--out", str(out), "--corpus", str(corpus)]
    code = main([*args, "--cache-dir", str(root / "cache"), *extra])
    return code, capsys.readouterr()


def test_released_viz_data_to_our_checks(released, tmp_path, capsys):
    root, sd, corpus = released
    viz = released_viz_data(FULL, sd, KEPT, TOKENS)
    faith = ("--faithfulness", "--n", "40", "--steps", "5")
    code, out = _run(root, corpus, viz, tmp_path / "c.json", capsys, *faith)
    assert code == 0, out.err
    circuit = Circuit.load(tmp_path / "c.json")
    assert circuit.nodes["blocks.0.attn.hook_q"] == [1, 4, 15, 17]
    assert circuit.nodes["blocks.1.hook_resid_post"] == [1, 4]
    n_nodes = sum(len(v) for v in KEPT.values())
    # the file's edges: nonzero weights of pair_data_connections, the "bias" rows left out
    n_edges = sum(int((m[: len(s) - (s[-1] == "bias")] != 0).sum()) for m, s, *_ in
                  viz["importances"]["pair_data_connections"])  # fmt: skip
    with_bias = sum(int((m != 0).sum()) for m, *_ in viz["importances"]["pair_data_connections"])
    assert circuit.n_nodes == n_nodes and circuit.n_edges == n_edges < with_bias
    assert f"OpenAI's file: {n_nodes} nodes, {n_edges} edges; ours: {n_nodes} nodes, " in out.out
    assert f"{n_edges} edges (nonzero weights" in out.out
    assert circuit.extra["oai_file_edges"] == n_edges
    samples = circuit.extra["oai_task_samples"]
    assert samples["answer_positions"] == [2, 3, 5, 1]  # the last real token, 0s inside kept
    # the circuit's top token at those positions against the full model's, on the same tokens
    model = HookedSparseTransformer.from_pretrained(root / "model").eval()
    rows, ends = torch.arange(4), torch.tensor([2, 3, 5, 1])
    with torch.no_grad():
        full = model(TOKENS)[rows, ends].argmax(-1)
        kept = circuit.to_model(model)(TOKENS)[rows, ends].argmax(-1)
    assert samples["circuit_top1_agrees"] == pytest.approx(float((full == kept).float().mean()))
    assert "on the file's 4 task samples the circuit's top token" in out.out
    assert circuit.extra["prune_config"] == {"k": 64, "lr": 0.01}
    assert circuit.extra["oai_num_total_nodes"] == 1234
    faith = circuit.extra["faithfulness"]
    assert "faithfulness on our task data:" in out.out and "failed: " in out.out
    for v in faith["verdicts"]:  # every verdict printed, whichever way it went
        assert f"{v['status'].upper():8} {v['check']}" in out.out
    # act_in indices are in the residual space: 13 fits q/k/v (18) but not act_in (12)
    bad = released_viz_data(FULL, sd, KEPT, TOKENS)
    bad["circuit_data"]["0.attn.act_in"] = torch.tensor([13])
    del bad["importances"]["ch_interv_losses"]["0.attn.act_in"]
    code, out = _run(root, corpus, bad, tmp_path / "c2.json", capsys)
    assert code == 2 and "blocks.0.attn.hook_in: channels [13] outside 0..11" in out.err


@pytest.mark.parametrize(
    "value",
    [torch.tensor([1.0, 4.7]), np.array([1.5, 2.0]), [1, 2.5]],
    ids=["torch", "numpy", "list"],
)
def test_float_channel_indices_are_refused(value, released, tmp_path, capsys):
    root, sd, corpus = released
    viz = released_viz_data(FULL, sd, KEPT, TOKENS)
    viz["circuit_data"]["0.attn.q"] = value
    code, out = _run(root, corpus, viz, tmp_path / "c.json", capsys)
    assert code == 2 and not (tmp_path / "c.json").exists()
    assert "circuit_data['0.attn.q']" in out.err and "must be integers" in out.err


def test_per_channel_losses_must_match_the_kept_channels(released, tmp_path, capsys):
    root, sd, corpus = released
    viz = released_viz_data(FULL, sd, KEPT, TOKENS)
    viz["importances"]["ch_interv_losses"]["0.attn.k"] = [0.1]
    code, out = _run(root, corpus, viz, tmp_path / "c.json", capsys)
    assert code == 2 and "ch_interv_losses['0.attn.k'] has 1 entries for 3 kept" in out.err
