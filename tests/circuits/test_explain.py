"""``explain``: the planted mechanism is recovered, the rules refuse what the numbers do not
show, and the card is JSON."""

import json

import pytest
import torch

from sparse_lens.circuits.ablation import ablation_means
from sparse_lens.circuits.circuit import Circuit
from sparse_lens.circuits.explain import ROLES, ExplainConfig, explain
from sparse_lens.circuits.explain.positions import marked_positions
from tests.circuits.test_masks import PLANTED, A, B, planted_batch, planted_model, pretrain_windows

DEAD = ("blocks.0.mlp.hook_post", 3)  # a distractor neuron: it feeds nothing the circuit keeps


def planted_circuit(model):
    nodes = {h: list(v) for h, v in PLANTED.items()}
    nodes[DEAD[0]] = [DEAD[1]]
    return Circuit.from_nodes(
        model, nodes, ablation_means(model, pretrain_windows()), task="planted"
    )


@pytest.fixture(scope="module")
def planted_card():
    model = planted_model()
    circuit = planted_circuit(model)
    batch = planted_batch(32, 5)
    card = explain(model, circuit, batch, windows=pretrain_windows(), windows_source={"seed": 9})
    return model, circuit, batch, card


def test_explain_recovers_the_planted_mechanism(planted_card):
    _, _, batch, card = planted_card
    roles = {n.label: n.role for n in card.nodes}
    # the marker channel, and the head's key that reads it: fire on the marker, A or B alike
    assert roles["0.attn.attn_in.1"] == "detector"
    assert roles["0.attn.k.h0.c0"] == "detector"
    # the quote-type channel tells the classes apart where the marker is
    assert roles["0.attn.attn_in.0"] == "classifier"
    # head 0 moves the type from the marker (position 1) to the answer position
    assert roles["0.attn.v.h0.c0"] == "mover"
    head = card.head(0, 0)
    assert head.role == "mover" and head.circuit.top_class == "marked"
    assert head.circuit.top_share >= 0.5 and head.full.top_class == "marked"
    assert marked_positions(batch).tolist() == [1] * len(batch)  # the planted source position
    assert f"`<{A}>` / `<{B}>`" in (card.marked or "")
    # its write and the final channel read by the unembedding push the right answer
    for label in ("0.attn.attn_out.2", "0.resid.final.2"):
        node = card.node(label)
        assert node.role == "output" and (node.direct_effect_circuit or 0) > 1
    assert roles["0.mlp.neuron.3"] == "no measurable role"
    assert "Head 0.0 moves information from the marked token" in card.summary


def test_numbers_state_what_they_were_computed_on(planted_card):
    _, circuit, batch, card = planted_card
    prov = card.provenance
    assert prov["n_examples"] == len(batch) and prov["split"] == "caller's batch"
    assert prov["classes_by"] == "minimal-pair side" and prov["ablation"] == "mean"
    assert prov["pretraining_sample"] == {"seed": 9, "n_windows": 64, "n_ctx": 12}
    detector = card.node("0.attn.attn_in.1")
    pos = detector.position_contrast
    assert pos is not None and pos.n_a == len(batch) and pos.p_value <= 0.002
    assert "n=64" in detector.caption and "p<=0.001" in detector.caption
    assert card.rules["knockout_threshold_nats"] > 0 and len(card.rules["rules"]) == 9
    assert card.losses["circuit"] < card.losses["empty"]
    assert [s.name for s in card.stages] == ["Layer 0 attention", "Layer 0 MLP", "Final residual"]
    text = json.dumps(card.to_json())  # plain JSON: an infinite t is written as null
    assert "Infinity" not in text and json.loads(text)["task"] == circuit.task


def test_corpus_profile_finds_the_marker_tokens(planted_card):
    *_, card = planted_card
    profile = card.node("0.attn.attn_in.1").corpus
    assert profile is not None and profile.n_ranked == 50
    tokens = {t for t, _ in profile.top_tokens[:2]}
    assert tokens <= {f"<{A}>", f"<{B}>"}
    assert 0 < profile.selectivity <= 1 and len(profile.contexts) == 3
    ctx = profile.contexts[0]
    assert ctx.tokens[ctx.peak] in (f"<{A}>", f"<{B}>")


def test_a_node_without_contrast_is_not_called_a_detector():
    """The same circuit on a model whose marker channel no longer marks anything: the rule
    that made channel 1 a detector does not hold, and the card says so."""
    model = planted_model()
    with torch.no_grad():
        model.embed.W_E[[A, B], 1] = 0.0
    circuit = planted_circuit(model)
    card = explain(model, circuit, planted_batch(32, 5))
    node = card.node("0.attn.attn_in.1")
    assert node.role != "detector"
    assert node.position_contrast is not None
    assert not node.position_contrast.significant(0.01, 1.0)
    assert card.head(0, 0).role != "mover"


def test_every_node_gets_a_role_without_a_pretraining_sample(planted_card):
    model, circuit, batch, _ = planted_card
    card = circuit.explain(model, batch, config=ExplainConfig(n_permutations=99))
    assert all(n.role in ROLES and n.corpus is None for n in card.nodes)
    assert card.provenance["pretraining_sample"] is None
    assert "task examples" in card.provenance["sd_unit"]


def test_explain_refuses_resample_circuits_and_bad_settings(planted_card):
    model, circuit, batch, _ = planted_card
    resample = Circuit.from_nodes(model, circuit.nodes, {}, task="planted", ablation="resample")
    with pytest.raises(ValueError, match="resample"):
        explain(model, resample, batch)
    with pytest.raises(ValueError, match="attention_share must be in"):
        ExplainConfig(attention_share=1.5)
    with pytest.raises(ValueError, match="n_permutations must be >= 1, got 0"):
        ExplainConfig(n_permutations=0)


def test_the_notebook_nouns_are_top_level():
    import sparse_lens
    from sparse_lens import Circuit as TopCircuit
    from sparse_lens import explain as top_explain
    from sparse_lens import faithfulness_report, get_task

    assert TopCircuit is Circuit and top_explain is explain
    assert get_task("single_double_quote").name == "single_double_quote"
    assert callable(faithfulness_report)
    assert {"Circuit", "explain", "get_task", "faithfulness_report"} <= set(sparse_lens.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        sparse_lens.nope  # noqa: B018
    import analyses

    for package in (sparse_lens, analyses):  # every exported name resolves, none is missing
        assert all(getattr(package, name) is not None for name in package.__all__)
        assert set(package._LAZY) <= set(package.__all__)
    with pytest.raises(AttributeError, match="module 'analyses' has no attribute 'nope'"):
        analyses.nope  # noqa: B018


def test_a_card_shows_itself_in_a_notebook(planted_card):
    """``circuit.explain(model)`` in Jupyter: a one-line repr (the dataclass's ran to 239,132
    characters) and the card section as HTML; the Markdown is ``analyses.card_markdown``."""
    from analyses import card_markdown

    *_, card = planted_card
    text = repr(card)
    assert len(text) < 300 and text.startswith("CircuitCard(task='planted', n_nodes=")
    assert "'mover': 1" in text and "warnings=0" in text
    html = card._repr_html_()
    assert html.startswith('<section class="circuit-card">') and "Task loss" in html
    assert card_markdown(card).startswith("# Circuit card: `planted`")


def test_the_card_warns_first_when_its_reading_is_limited(planted_card):
    """A circuit above its target, a task the full model fails, and too few examples for any
    contrast to be significant each give a warning, shown first in the Markdown and the page;
    the planted circuit on 32 examples gives none."""
    import dataclasses

    from analyses.card import card_markdown
    from sparse_lens.circuits.graph_view.card_html import card_html, card_view

    model, circuit, batch, card = planted_card
    assert card.warnings == ()
    strict = dataclasses.replace(circuit, target_loss=card.losses["circuit"] / 2)
    missed = explain(model, strict, batch)
    assert len(missed.warnings) == 1 and "misses its target" in missed.warnings[0]
    # the summary says which sd a contrast counts in: the pretraining sample's, or (without
    # one) the task examples' positions, which gives other numbers for the same node
    assert "sd over the pretraining sample" in card.summary
    assert "sd over the task examples' positions" in missed.summary
    flipped = dataclasses.replace(batch, correct=batch.incorrect, incorrect=batch.correct)
    failed = explain(model, circuit, flipped)
    assert any("full model does not solve this task" in w for w in failed.warnings)
    at_chance = explain(model, dataclasses.replace(circuit, target_loss=0.718), batch)
    assert any("at or above chance" in w for w in at_chance.warnings)
    few = explain(model, circuit, batch.subset(list(range(6))))
    assert any("smallest p-value a class contrast can reach" in w for w in few.warnings)
    md = card_markdown(missed)
    assert md.index("**Warning:**") < md.index(missed.summary)
    page = card_html(card_view(missed))
    assert page.index("card-warning") < page.index('class="summary"')
    assert "card-warning" not in card_html(card_view(card))
