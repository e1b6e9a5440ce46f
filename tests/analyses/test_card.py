"""The Markdown circuit card of the planted circuit."""

from analyses.card import card_markdown, cell, code
from sparse_lens.circuits.explain import explain
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
