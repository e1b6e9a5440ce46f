"""``sparse-lens import-oai-circuit``: a viz_data.pt as OpenAI's visualiser reads it, into a
circuit JSON of the imported model, with edges checked against OpenAI's raw weights."""

import numpy as np
import pytest
import torch

from analyses.cli import main
from sparse_lens.circuits.circuit import Circuit
from tests.helpers import TEXTS
from tests.oai_files import gpt_config, gpt_state_dict, write_gpt2_bpe, write_oai_folder

VOCAB = 256 + 80 + 1
CFG = gpt_config(vocab_size=VOCAB, n_layer=2)
KEPT = {
    "0.attn.act_in": [0, 3, 7, 11],
    "0.attn.q": [1, 4, 9],
    "0.attn.k": [1, 2],
    "0.attn.v": [0, 5, 6],
    "0.attn.resid_delta": [2, 3],
    "1.mlp.act_in": [0, 1, 2, 5],
    "1.mlp.post_act": [3, 10, 20],
    "1.mlp.resid_delta": [4],
}


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("oai_circuit")
    write_gpt2_bpe(root / "tok", TEXTS, n_merges=80, eot_in_encoder=False)
    sd = gpt_state_dict(CFG, seed=4)
    for name, w in sd.items():  # sparse weights, so edges are a real subset
        if name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
            w.mul_(torch.rand(w.shape, generator=torch.Generator().manual_seed(len(name))) < 0.4)
    src = write_oai_folder(root / "oai", CFG, sd)
    assert (
        main(
            ["import-oai", str(src), "--out", str(root / "model"), "--tokenizer", str(root / "tok")]
        )
        == 0
    )
    corpus = root / "corpus"
    corpus.mkdir()
    for i in range(30):
        (corpus / f"m{i}.py").write_text(TEXTS[i % 5] * 4)
    return root, sd, corpus


def _viz(kept):
    data = {k: torch.tensor(v) for k, v in kept.items()}
    data["prune_config"] = {"k": 19, "lr": 0.01}
    return {
        "circuit_data": data,
        "importances": {"loss": 0.2, "interv_loss": 0.3, "pair_data": [np.zeros((2, 3))]},
        "samples": {},
    }


def _run(root, corpus, viz_path, out, capsys, *extra, task="single_double_quote"):
    args = ["import-oai-circuit", str(viz_path), "--model", str(root / "model")]
    args += ["--task", task, "--out", str(out), "--corpus", str(corpus)]
    code = main([*args, "--cache-dir", str(root / "cache"), *extra])
    return code, capsys.readouterr()


def test_nodes_and_edges_follow_openai_weights(imported, tmp_path, capsys):
    root, sd, corpus = imported
    torch.save(_viz(KEPT), tmp_path / "viz_data.pt")
    code, out = _run(root, corpus, tmp_path / "viz_data.pt", tmp_path / "c.json", capsys)
    assert code == 0, out.err
    circuit = Circuit.load(tmp_path / "c.json")
    assert circuit.nodes["blocks.0.attn.hook_q"] == [1, 4, 9]
    assert circuit.nodes["blocks.1.mlp.hook_post"] == [3, 10, 20]
    assert circuit.n_nodes == sum(len(v) for v in KEPT.values())
    assert circuit.loss == pytest.approx(0.15) and circuit.full_loss == pytest.approx(0.1)
    assert circuit.extra["prune_config"] == {"k": 19, "lr": 0.01}
    # edges: nonzero OpenAI weights ([out, in]) between kept nodes of one block
    h, e, d = CFG["n_head"], CFG["d_head"], CFG["d_model"]
    w = sd["transformer.h.0.attn.c_attn.weight"]
    want = 0
    for i, kind in enumerate("qkv"):
        rows = torch.tensor(KEPT[f"0.attn.{kind}"]) + i * h * e
        want += int((w[rows][:, KEPT["0.attn.act_in"]] != 0).sum())
    proj = sd["transformer.h.0.attn.c_proj.weight"]  # [d, h*e]
    want += int((proj[KEPT["0.attn.resid_delta"]][:, KEPT["0.attn.v"]] != 0).sum())
    fc = sd["transformer.h.1.mlp.c_fc.weight"]  # [d_mlp, d]
    want += int((fc[KEPT["1.mlp.post_act"]][:, KEPT["1.mlp.act_in"]] != 0).sum())
    out_w = sd["transformer.h.1.mlp.c_proj.weight"]  # [d, d_mlp]
    want += int((out_w[KEPT["1.mlp.resid_delta"]][:, KEPT["1.mlp.post_act"]] != 0).sum())
    assert circuit.n_edges == want > 0
    assert d == len(circuit.baselines["blocks.0.hook_attn_out"])


def test_faithfulness_report_on_imported_circuit(imported, tmp_path, capsys):
    root, _, corpus = imported
    torch.save(_viz(KEPT), tmp_path / "viz_data.pt")
    faith = ("--faithfulness", "--n", "40", "--steps", "5")
    viz_path, out_path = tmp_path / "viz_data.pt", tmp_path / "c.json"
    code, out = _run(root, corpus, viz_path, out_path, capsys, *faith, task="var_swap")
    assert code == 0, out.err
    report = Circuit.load(tmp_path / "c.json").extra["faithfulness"]
    assert {"sufficiency", "necessity", "random_control", "verdicts"} <= set(report)


@pytest.mark.parametrize(
    ("kept", "message"),
    [
        ({"0.attn.z": [1]}, "0.attn.z"),
        ({"5.mlp.post_act": [1]}, "5.mlp.post_act"),
        ({"0.attn.q": [12]}, "blocks.0.attn.hook_q: channels [12]"),
    ],
)
def test_bad_locations_are_named(kept, message, imported, tmp_path, capsys):
    root, _, corpus = imported
    torch.save(_viz(kept), tmp_path / "viz_data.pt")
    code, out = _run(root, corpus, tmp_path / "viz_data.pt", tmp_path / "c.json", capsys)
    assert code == 2 and message in out.err


class _Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED_BY_VIZ",))


def test_viz_code_payload_is_refused(imported, tmp_path, capsys, monkeypatch):
    root, _, corpus = imported
    monkeypatch.chdir(tmp_path)
    torch.save(_viz(KEPT) | {"evil": _Payload()}, tmp_path / "viz_data.pt")
    code, out = _run(root, corpus, tmp_path / "viz_data.pt", tmp_path / "c.json", capsys)
    assert code == 2 and "refusing to load" in out.err
    assert not (tmp_path / "PWNED_BY_VIZ").exists()


def test_prune_and_report_accept_the_imported_model(imported, tmp_path, capsys):
    root, _, corpus = imported
    model, cache = str(root / "model"), ["--cache-dir", str(root / "cache")]
    prune = ["prune", model, "--task", "var_swap", "--out", str(tmp_path / "p.json")]
    prune += ["--steps", "3", "--no-search", "--target-loss", "5", "--corpus", str(corpus)]
    assert main([*prune, *cache, "--quiet"]) == 0, capsys.readouterr().err
    torch.save(_viz(KEPT), tmp_path / "viz_data.pt")
    viz_path, out_path = tmp_path / "viz_data.pt", tmp_path / "c.json"
    code, out = _run(root, corpus, viz_path, out_path, capsys, task="var_swap")
    assert code == 0, out.err
    report = ["report", str(tmp_path / "c.json"), "--model", model, "--out", str(tmp_path / "r")]
    report += ["--corpus", str(corpus), "--node-panels", "2", "--windows", "4", "--examples", "8"]
    assert main([*report, *cache, "--quiet"]) == 0, capsys.readouterr().err
    assert (tmp_path / "r" / "index.html").is_file()
