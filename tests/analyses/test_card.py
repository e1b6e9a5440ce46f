"""The Markdown circuit card of the planted circuit."""

from analyses.card import card_markdown, cell, code
from sparse_lens.circuits.explain import ExplainConfig, explain
from tests.circuits.test_explain import planted_circuit
from tests.circuits.test_masks import planted_batch, planted_model, pretrain_windows


def test_card_reads_like_a_caption():
    model = planted_model()
    card = explain(model, planted_circuit(model), planted_batch(16, 5), windows=pretrain_windows())
    text = card_markdown(card)
    assert "- **Layer 0 attention input channel 1 (detector)**: fires at the marked token" in text
    assert "- **Layer 0 head 0 value channel 0 (mover)**: its head attends" in text
    assert "1 node(s) with no measurable role: `0.mlp.neuron.3`." in text  # collapsed
    assert "| 0.0 | mover |" in text and "marked 6" in text
    assert "split caller's batch, n=32" in text and "[[<1>]]" in text
    assert text.index("### 1. Layer 0 attention") < text.index("### 3. Final residual")


def test_markdown_escapes():
    assert cell("a|b") == "a\\|b"
    assert code("x") == "`x`" and code("`") == "`` ` ``"


def test_card_names_its_pretraining_sample():
    """The card said "Pretraining sample: data the report's pretraining windows, n_windows 32":
    which corpus, split and seed was not said. It names the whole draw (``draw_sample``)."""
    model = planted_model()
    windows = pretrain_windows()
    sample = {
        "corpus": "stdlib",
        "corpus_fingerprint": "e95a495a93fa07c4",
        "split": "train",
        "sampling": "random",
        "seed": 5,
        "n_windows": len(windows),
        "n_ctx": windows.shape[1],
        "digest": "380df64bc2a0490e",
    }
    card = explain(
        model,
        planted_circuit(model),
        planted_batch(16, 5),
        windows=windows,
        windows_source=sample,
        config=ExplainConfig(n_permutations=49),
    )
    assert (
        "- **Pretraining sample:** 64 windows of 12 tokens, drawn at random (seed 5) from the "
        "training split of corpus stdlib (fingerprint e95a495a93fa07c4); windows digest "
        "380df64bc2a0490e.\n" in card_markdown(card)
    )
