"""Where ``sparse-lens explain`` writes by default: ``cards/`` beside the circuit, which for a
demo's circuit lies inside the demo's ``circuits/``. A later ``sparse-lens demo`` rerun of the
same folder neither refuses it nor removes or replaces the cards (the demo's slow steps are
stubbed out: its model, task tables, pruning and report)."""

import json
import shutil

import torch

import analyses.cli.demo as demo
import analyses.report_sources
from analyses.cli import main
from analyses.report_sources import find_sources
from sparse_lens import HookedSparseTransformer
from sparse_lens.circuits.ablation import ablation_means
from sparse_lens.circuits.circuit import Circuit
from sparse_lens.circuits.nodes import node_locations
from sparse_lens.tasks import selection
from tests.analyses.cli.test_demo import _fake_tables
from tests.helpers import build_cfg, tiny_tokenizer

TASK = demo.SMOKE_TASK  # the quick demo's one circuit


def _pruned(root, model_dir):  # noqa: ANN001, ANN202 - a tiny circuit of the demo's task
    tok = tiny_tokenizer()
    model = HookedSparseTransformer(build_cfg(d_vocab=tok.vocab_size, n_ctx=64), tokenizer=tok)
    model.save_pretrained(model_dir)
    windows = torch.randint(0, tok.vocab_size, (4, 64), generator=torch.Generator().manual_seed(3))
    nodes = {loc.hook: list(range(0, loc.size, 29)) for loc in node_locations(model.cfg)}
    circuit = Circuit.from_nodes(model.eval(), nodes, ablation_means(model, windows), task=TASK)
    circuit.extra["model_dir"] = str(model_dir)
    return circuit.save(root / "pruned.json")


def _stub_demo(monkeypatch, pruned, pruned_into):  # noqa: ANN001, ANN202
    def prune_run(settings):  # noqa: ANN001, ANN202 - the demo's prune: the circuit above
        pruned_into.append(settings.out)
        shutil.copyfile(pruned, settings.out)

    def build_report(source, out, **kw):  # noqa: ANN001, ANN003, ANN202
        page = {"core": [], "card_losses": {}, "card_warnings": []}
        (out / "circuits").mkdir(parents=True, exist_ok=True)
        (out / "circuits" / f"{TASK}.report.json").write_text(json.dumps(page))
        return out / "index.html"

    monkeypatch.setattr(demo, "check_reused_run", lambda run, preset: None)
    monkeypatch.setattr(demo, "load_model", lambda path, what: None)
    monkeypatch.setattr(selection, "task_tables", _fake_tables)
    monkeypatch.setattr(demo, "prune_run", prune_run)
    monkeypatch.setattr(analyses.report_sources, "build_report", build_report)


def test_a_demo_rerun_keeps_the_cards_explain_wrote_into_its_circuits(
    tmp_path, monkeypatch, capsys
):
    out = tmp_path / "demo"
    pruned_into = []
    _stub_demo(monkeypatch, _pruned(tmp_path, out / "run" / "final"), pruned_into)
    rerun = ["demo", "--quick", "--out", str(out), "--cache-dir", str(tmp_path / "c"), "--quiet"]
    assert main(rerun) == 0, capsys.readouterr().err
    circuit = out / "circuits" / f"{TASK}.json"
    args = ["explain", str(circuit), "--windows", "0", "--examples", "16", "--permutations", "49"]
    assert main([*args, "--quiet"]) == 0, capsys.readouterr().err
    cards = out / "circuits" / "cards"
    written = {p.name: p.read_bytes() for p in cards.glob("*.card.*")}
    assert set(written) == {f"{TASK}.card.json", f"{TASK}.card.md"}

    assert main(rerun) == 0, capsys.readouterr().err  # not refused for explain's cards/
    assert pruned_into == [circuit, circuit]  # the rerun pruned its circuit again
    assert {p.name: p.read_bytes() for p in cards.glob("*.card.*")} == written  # kept as is
    assert find_sources(out).circuits == [circuit]  # the report takes no card for a circuit
