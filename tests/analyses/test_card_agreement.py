"""One circuit, one card: the report page's card and ``sparse-lens explain``'s, each with its
command's default settings, are the same numbers (they were not: -3.7 sd on the page, -3.6 sd
from explain, and other top pretraining tokens, from two different pretraining samples)."""

import json
from html import escape as html_escape

import pytest

import analyses.cli.explain as cli_explain
import analyses.report
import analyses.report_sources
import sparse_lens.data.token_data
from analyses.cli import main
from analyses.cli.parser import build_parser
from analyses.report import ReportConfig
from sparse_lens import HookedSparseTransformer
from sparse_lens.circuits.ablation import ablation_means
from sparse_lens.circuits.circuit import Circuit
from sparse_lens.circuits.explain import DEFAULT_WINDOWS
from sparse_lens.circuits.explain.sample import DEFAULT_SPLIT, SAMPLE_SPLITS, sample_text
from sparse_lens.circuits.nodes import node_locations
from sparse_lens.tasks.task import get_task, task_batch
from tests.helpers import build_cfg, tiny_tokenizer

TASK = "single_double_quote"
RUN = {"corpus": {"source": "stdlib", "fingerprint": "f" * 16}}


def _run_folder(root, data):  # noqa: ANN001, ANN202 - a demo-like folder of a tiny model
    tok = tiny_tokenizer()
    model = HookedSparseTransformer(build_cfg(d_vocab=tok.vocab_size, n_ctx=64), tokenizer=tok)
    model.save_pretrained(root / "run" / "final")
    (root / "run" / "run.json").write_text(json.dumps(RUN))
    (root / "tasks.json").write_text(json.dumps({TASK: {"loss": 0.5, "accuracy": 0.5, "n": 8}}))
    nodes = {loc.hook: list(range(0, loc.size, 29)) for loc in node_locations(model.cfg)}
    circuit = Circuit.from_nodes(
        model.eval(), nodes, ablation_means(model, data.val_windows(8, 64)), task=TASK
    )
    circuit.extra["model_dir"] = str(root / "run" / "final")
    circuit.extra["n_test"] = 16  # both commands measure the file's own test pairs
    return circuit.save(root / "circuits" / f"{TASK}.json")


@pytest.fixture(scope="module")
def cards(tmp_path_factory, data):
    """The card ``sparse-lens explain`` writes and the one the report's page shows (caught on
    its way into the page), both with the commands' defaults, on the ``data`` corpus."""
    root = tmp_path_factory.mktemp("agree")
    path = _run_folder(root, data)
    page_cards = []
    explain = analyses.report.explain

    def spy(*args, **kw):  # noqa: ANN002, ANN003, ANN202
        page_cards.append(explain(*args, **kw))
        return page_cards[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sparse_lens.data.token_data, "model_token_data", lambda *a: data)
        mp.setattr(analyses.report_sources, "model_token_data", lambda *a: data, raising=False)
        mp.setattr(analyses.report, "explain", spy)
        assert main(["explain", str(path), "--out", str(root / "cards"), "--quiet"]) == 0
        assert main(["report", str(root), "--out", str(root / "report"), "--quiet"]) == 0
    explained = json.loads((root / "cards" / f"{TASK}.card.json").read_text())
    (page,) = page_cards
    html = (root / "report" / "circuits" / f"{TASK}.html").read_text()
    return explained, json.loads(json.dumps(page.to_json())), html


def test_explain_and_the_report_draw_the_same_sample_by_default():
    """The defaults that decide the sample and the examples agree: windows, their split and
    the examples' split and count."""
    parser = build_parser()
    explain = parser.parse_args(["explain", "c.json"])
    report = parser.parse_args(["report", "src", "--out", "o"])
    assert explain.windows == report.windows == ReportConfig().n_windows == DEFAULT_WINDOWS
    assert explain.windows_split == DEFAULT_SPLIT == "val"  # the report's: validation windows
    assert cli_explain.SAMPLE_SPLITS == SAMPLE_SPLITS  # the CLI's copies (no torch at parse)
    assert explain.split == "test" and explain.examples is None is report.examples
    assert explain.seed == ReportConfig().seed


def _without_sample(card: dict) -> dict:
    prov = {k: v for k, v in card["provenance"].items() if k != "pretraining_sample"}
    return card | {"provenance": prov}


def test_the_page_card_and_the_explain_card_are_the_same_numbers(cards):
    explained, page = (_without_sample(c) for c in cards[:2])
    explained_sample = cards[0]["provenance"]["pretraining_sample"]
    page_sample = cards[1]["provenance"]["pretraining_sample"]
    assert page == explained  # every node's contrasts, sd units, top tokens, knockouts, roles
    assert explained["provenance"]["split"] == "test" and explained["provenance"]["n_examples"]
    assert all(n["corpus"] is not None for n in explained["nodes"])
    assert page_sample["n_windows"] == explained_sample["n_windows"] == DEFAULT_WINDOWS
    assert explained_sample["split"] == "val" and explained_sample["corpus_fingerprint"] == "f" * 16


def test_both_cards_measure_the_circuit_files_own_test_pairs(cards, data):
    explained, page, _ = cards
    assert explained["provenance"]["n_examples"] == page["provenance"]["n_examples"]
    tok = tiny_tokenizer()
    assert explained["provenance"]["n_examples"] == len(
        task_batch(get_task(TASK), tok, 64, "test", 16, 0)
    )


def test_the_page_card_names_the_sample_explain_names(cards):
    explained, page, _ = cards
    assert page["provenance"]["pretraining_sample"] == explained["provenance"]["pretraining_sample"]


def test_the_page_says_in_words_which_sample_its_card_and_contexts_come_from(cards):
    """The page named its corpus contexts only as "N pretraining windows": the card's
    "Computed on" line and the node section now give the sample as explain's card does."""
    explained, _, html = cards
    words = sample_text(explained["provenance"]["pretraining_sample"])
    assert words.startswith(f"{DEFAULT_WINDOWS} windows of 64 tokens, evenly spaced over the")
    assert f"Node statistics and top contexts: {html_escape(words)}." in html
    assert f"Corpus contexts come from {html_escape(words)};" in html
