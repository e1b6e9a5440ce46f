"""``explain``'s parts: the statistics, the position classes and the role rules."""

import dataclasses
import math

import pytest
import torch

from sparse_lens import HookedSparseTransformer
from sparse_lens.circuits.ablation import ablation_means
from sparse_lens.circuits.circuit import Circuit
from sparse_lens.circuits.explain import ROLES, Attention, Contrast, ExplainConfig
from sparse_lens.circuits.explain.positions import (
    POSITION_CLASSES,
    answer_classes,
    is_paired,
    marked_positions,
    position_classes,
)
from sparse_lens.circuits.explain.roles import NodeFacts, assign_role, head_role
from sparse_lens.circuits.explain.stats import class_contrast, position_contrast
from sparse_lens.circuits.nodes import node_locations
from sparse_lens.tasks.task import TaskBatch
from tests.helpers import build_cfg, tiny_tokenizer


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_class_contrast_numbers():
    a, b = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([0.0, 1.0, 0.0, 1.0])
    c = class_contrast(a, b, where="answer", sd=2.0, n_permutations=999, generator=gen())
    assert c.mean_a == 2.5 and c.mean_b == 0.5 and c.contrast_sd == 1.0
    se = math.sqrt(a.var().item() / 4 + b.var().item() / 4)
    assert c.t == pytest.approx(2.0 / se)
    # of the 70 ways to split the 8 values 4/4, 6 give a difference of means as large: p ~ 6/70
    assert c.p_value == pytest.approx(6 / 70, abs=0.025) and c.n_a == c.n_b == 4
    again = class_contrast(a, b, where="answer", sd=2.0, n_permutations=999, generator=gen())
    assert again == c  # seeded


def test_a_constant_node_has_no_contrast():
    flat = torch.ones(16)
    c = class_contrast(flat, flat, where="answer", sd=0.0, n_permutations=99, generator=gen())
    assert c.p_value == 1.0 and c.contrast_sd == 0.0 and c.t == 0.0
    assert not c.significant(0.01, 1.0)
    split = class_contrast(flat, flat * 0, where="x", sd=0.0, n_permutations=99, generator=gen())
    assert math.isinf(split.contrast_sd) and split.p_value == pytest.approx(1 / 100)


def test_position_contrast_is_paired():
    at = torch.arange(10.0) + 1.0  # one more than elsewhere in every example
    c = position_contrast(at, at - 1.0, where="marked", sd=0.5, n_permutations=499, generator=gen())
    assert c.contrast_sd == 2.0 and c.test == "positions" and c.p_value == pytest.approx(1 / 500)
    with pytest.raises(ValueError, match="paired values"):
        position_contrast(at[:1], at[:1], where="m", sd=1.0, n_permutations=9, generator=gen())


def _batch(rows, last, correct, incorrect) -> TaskBatch:
    tokens = torch.tensor(rows)
    return TaskBatch(
        tokens=tokens,
        last=torch.tensor(last),
        correct=torch.tensor(correct),
        incorrect=torch.tensor(incorrect),
        contexts=[str(r) for r in rows],
    )


def test_positions_of_minimal_pairs():
    rows = [[0, 7, 5, 9], [0, 8, 5, 9], [0, 7, 6, 3], [0, 8, 6, 3]]
    batch = _batch(rows, [3, 3, 3, 2], [3, 4, 3, 4], [4, 3, 4, 3])
    assert is_paired(batch) and answer_classes(batch).tolist() == [True, False, True, False]
    marked = marked_positions(batch)
    assert marked.tolist() == [1, 1, 1, 1]
    codes = position_classes(batch, marked)
    name = [[POSITION_CLASSES[c] if c >= 0 else None for c in row] for row in codes.tolist()]
    assert name[0] == ["first", "marked", "other", "answer"]
    assert name[2] == ["first", "marked", "other", "answer"]  # token 3 is the answer position
    assert name[3] == ["first", "marked", "answer", None]  # past the answer: padding


def test_unpaired_batches_split_by_correct_token():
    rows = [[0, 5, 3], [0, 6, 5], [0, 7, 5], [0, 5, 6], [0, 5, 5]]
    batch = _batch(rows, [2] * 5, [3, 3, 4, 4, 3], [4, 4, 3, 3, 4])
    assert not is_paired(batch)
    assert answer_classes(batch).tolist() == [True, True, False, False, True]
    assert marked_positions(batch).tolist() == [-1] * 5
    codes = position_classes(batch, marked_positions(batch))
    assert POSITION_CLASSES[codes[3, 2]] == "answer" and POSITION_CLASSES[codes[0, 1]] == "other"
    one_class = _batch(rows, [2] * 5, [3] * 5, [4] * 5)
    with pytest.raises(ValueError, match="two classes"):
        answer_classes(one_class)


def _contrast(where: str, size: float, p: float, test: str = "classes") -> Contrast:
    return Contrast(
        where=where,
        test="classes" if test == "classes" else "positions",
        mean_a=size,
        mean_b=0.0,
        sd=1.0,
        contrast_sd=size,
        t=size,
        p_value=p,
        n_a=32,
        n_b=32,
        n_permutations=999,
    )


def _facts(**kw) -> NodeFacts:
    base = dict(
        kind="neuron",
        contrasts={},
        position_contrast=None,
        knockout_circuit=0.5,
        knockout_full=0.3,
        direct_effect=None,
        attention=None,
    )
    return NodeFacts(**(base | kw))


CFG = ExplainConfig()


def test_the_detector_rule_needs_a_significant_position_contrast():
    strong = _contrast("marked", 3.0, 0.001, "positions")
    assert assign_role(_facts(position_contrast=strong), CFG, 0.01)[0] == "detector"
    for weak in (
        _contrast("marked", 0.1, 0.001, "positions"),  # significant but tiny
        _contrast("marked", 3.0, 0.2, "positions"),  # large but not significant (small n)
        None,  # no marked position at all
    ):
        role, reason, _ = assign_role(_facts(position_contrast=weak), CFG, 0.01)
        assert role == "contributor" and "rule 8" in reason
    # a class contrast at the marked token makes it a classifier, not a detector
    both = _facts(position_contrast=strong, contrasts={"marked": _contrast("marked", 2.0, 0.001)})
    assert assign_role(both, CFG, 0.01)[:3:2] == ("classifier", "marked")


def test_rule_order():
    quiet = _facts(knockout_circuit=0.001, knockout_full=-0.002, kind="final", direct_effect=5.0)
    assert assign_role(quiet, CFG, 0.01)[0] == "no measurable role"
    harmful = _facts(knockout_circuit=-0.5, knockout_full=0.0)  # removing it helps a lot
    assert assign_role(harmful, CFG, 0.01)[:2] == (
        "suppressor",
        "rule 9: " + ("knockout only lowers the loss, no other rule holds"),
    )
    # the full model's knockout alone: it helps there, so it does not contribute
    assert assign_role(_facts(knockout_circuit=0.0, knockout_full=-0.3), CFG, 0.01)[0] == (
        "suppressor"
    )
    # a node that helps in the full model but only hurts in the circuit still contributes
    both = _facts(knockout_circuit=-0.2, knockout_full=0.3)
    assert assign_role(both, CFG, 0.01)[0] == "contributor"
    assert assign_role(_facts(kind="attn_out", direct_effect=-0.4), CFG, 0.01)[0] == "output"
    amp = _facts(contrasts={"answer": _contrast("answer", -2.0, 0.001)})
    assert assign_role(amp, CFG, 0.01)[0] == "amplifier"
    moving = Attention(shares={}, sink=0.0, top_class="marked", top_share=0.8, lift=8.0)
    uniform = Attention(shares={}, sink=0.0, top_class="other", top_share=0.7, lift=1.0)
    src = {"source": _contrast("source", 2.0, 0.001)}
    v = _facts(kind="v", attention=moving, contrasts=src)
    assert assign_role(v, CFG, 0.01)[0] == "mover"
    assert assign_role(_facts(kind="v", attention=uniform, contrasts=src), CFG, 0.01)[0] == (
        "classifier"
    )
    assert assign_role(_facts(kind="k", attention=moving), CFG, 0.01)[0] == "mover"
    assert head_role(moving, True, CFG) == "mover" and head_role(moving, False, CFG) == "diffuse"
    assert head_role(uniform, True, CFG) == "diffuse"
    assert set(ROLES) >= {"detector", "classifier", "mover", "amplifier", "no measurable role"}


def test_circuit_explain_builds_its_task_batch():
    """Without a batch, ``circuit.explain(model)`` tokenises the circuit's built-in task
    (``ExplainConfig.split``/``n_examples``) with the model's tokenizer."""
    tok = tiny_tokenizer()
    model = HookedSparseTransformer(build_cfg(d_vocab=tok.vocab_size, n_ctx=64), tokenizer=tok)
    model.eval()
    windows = torch.randint(0, tok.vocab_size, (4, 64), generator=gen(3))
    nodes = {loc.hook: list(range(0, loc.size, 11)) for loc in node_locations(model.cfg)}
    circuit = Circuit.from_nodes(
        model, nodes, ablation_means(model, windows), task="single_double_quote", freeze_norms=True
    )
    card = circuit.explain(model, config=ExplainConfig(n_examples=16, n_permutations=49))
    assert card.provenance["split"] == "test" and card.provenance["n_examples"] <= 16
    assert card.provenance["norms"].startswith("frozen")
    assert len(card.nodes) == circuit.n_nodes and all(n.role in ROLES for n in card.nodes)
    assert card.classes[0] != card.classes[1]
    assert [s.index for s in card.stages] == list(range(len(card.stages)))


def test_head_role_is_given_in_the_circuit_and_in_the_full_model():
    """A head whose pruned attention is diffuse while the full model's moves says so: its
    caption names both roles and calls the circuit's attention an artefact of pruning."""
    from sparse_lens.circuits.explain.captions import head_caption

    moving = Attention(shares={}, sink=0.0, top_class="marked", top_share=0.8, lift=8.0)
    uniform = Attention(shares={}, sink=0.0, top_class="other", top_share=0.4, lift=1.0)
    roles = (head_role(uniform, True, CFG), head_role(moving, True, CFG))
    assert roles == ("diffuse", "mover")
    text = head_caption("1.2", roles, uniform, moving)
    assert "(diffuse)" in text and "In the full model it is mover" in text
    assert "artefact of pruning" in text
    same = head_caption("1.2", ("mover", "mover"), moving, moving)
    assert "artefact" not in same


def test_smallest_p_value_says_when_no_contrast_can_be_significant():
    from sparse_lens.circuits.explain.stats import smallest_p_value

    # 3 vs 3 values: 20 label splits, so p cannot go below 1/20 whatever the permutations
    assert smallest_p_value("classes", 3, 3, 999) == pytest.approx(1 / 20)
    assert smallest_p_value("classes", 32, 32, 999) == pytest.approx(1 / 1000)
    assert smallest_p_value("classes", 32, 32, 50) == pytest.approx(1 / 51)
    assert smallest_p_value("positions", 4, 4, 999) == pytest.approx(2 / 16)
    # the bound is real: a perfect separation of 3 vs 3 gets p near 2/20 (two-sided), not 0.001
    a, b = torch.tensor([5.0, 6.0, 7.0]), torch.tensor([0.0, 1.0, 2.0])
    c = class_contrast(a, b, where="answer", sd=1.0, n_permutations=999, generator=gen())
    assert c.p_value >= smallest_p_value("classes", 3, 3, 999)
    with pytest.raises(ValueError, match="n_a, n_b"):
        smallest_p_value("classes", 0, 3, 999)


def test_class_text_names_every_answer_when_a_class_has_several():
    """``else_elif``'s second class is the tested variable, a different token per example: the
    card must not name one example's variable as if it were the class (``data`` vs ``name``)."""
    from sparse_lens.circuits.explain.positions import task_view

    varied = [6, 7, 8, 9, 6]
    correct, incorrect = [], []
    for v in varied:  # pairs (a, b): a answers 5 against v, b answers v against 5
        correct += [5, v]
        incorrect += [v, 5]
    n = len(correct)
    batch = TaskBatch(
        tokens=torch.randint(10, 20, (n, 6), generator=gen()),
        last=torch.full((n,), 5),
        correct=torch.tensor(correct),
        incorrect=torch.tensor(incorrect),
        contexts=[""] * n,
    )
    view = task_view(batch, lambda t: f"t{t}")
    assert view.classes == ("t5", "t6")  # the most common of each class, as the JSON keeps it
    assert view.class_text == ("`t5`", "`t6`, `t7` or 2 other tokens")
    two = dataclasses.replace(
        batch, correct=batch.correct.clamp(max=7), incorrect=batch.incorrect.clamp(max=7)
    )
    assert task_view(two, lambda t: f"t{t}").class_text[1] in ("`t7` or `t6`", "`t6` or `t7`")


def test_equal_data_gives_equal_p_values():
    """Where the marked token is the answer position (``else_elif``), the answer and marked
    contrasts read the same values and must report the same p-value (they differed by the
    permutations drawn, 0.016 against 0.015)."""
    from sparse_lens.circuits.explain.build import _contrasts
    from sparse_lens.circuits.explain.positions import task_view

    n = 16
    base = torch.randint(10, 20, (n // 2, 6), generator=gen(1))
    tokens = base.repeat_interleave(2, dim=0)
    tokens[:, 5] = torch.tensor([3, 4] * (n // 2))  # pairs differ at the last token only
    batch = TaskBatch(
        tokens=tokens,
        last=torch.full((n,), 5),
        correct=torch.tensor([5, 6] * (n // 2)),
        incorrect=torch.tensor([6, 5] * (n // 2)),
        contexts=[""] * n,
    )
    view = task_view(batch, str)
    assert view.marked.tolist() == [5] * n
    values = torch.randn(n, 6, generator=gen(2)) + view.is_a[:, None].float() * 0.8
    out = _contrasts(values, view, None, 1.0, CFG)
    assert out["answer"].p_value == out["marked"].p_value
    assert out["answer"].contrast_sd == out["marked"].contrast_sd


def test_bh_q_values_by_hand():
    from sparse_lens.circuits.explain.stats import bh_q_values

    # m = 4, sorted p 0.001, 0.01, 0.01, 0.2: p * m / rank = 0.004, 0.02, 0.0133, 0.2, then the
    # running minimum from the largest rank down: 0.004, 0.0133, 0.0133, 0.2
    q = bh_q_values([0.01, 0.001, 0.2, 0.01])
    assert q == pytest.approx([0.04 / 3, 0.004, 0.2, 0.04 / 3])
    assert bh_q_values([]) == [] and bh_q_values([0.9, 0.95]) == pytest.approx([0.95, 0.95])
    # a contrast is judged by its q when it has one: p 0.005 alone passes, q 0.02 does not
    c = _contrast("answer", 2.0, 0.005)
    assert c.significant(0.01, 1.0)
    assert not dataclasses.replace(c, q_value=0.02).significant(0.01, 1.0)


def test_many_null_nodes_give_no_significant_contrast():
    """300 nodes of pure noise at alpha 0.05 give about 15 'significant' contrasts one by one
    (12 here); over the card's q-values none survives (a fresh user saw p at its floor on
    hundreds of tests at once: significance is now controlled for the number of tests)."""
    from sparse_lens.circuits.explain.stats import bh_q_values

    g = gen(5)
    contrasts = [
        class_contrast(torch.randn(16, generator=g), torch.randn(16, generator=g), where="answer",
                       sd=1.0, n_permutations=199, generator=gen(i))
        for i in range(300)
    ]  # fmt: skip
    raw = sum(c.p_value < 0.05 for c in contrasts)
    q = bh_q_values([c.p_value for c in contrasts])
    assert raw >= 5 and min(q) > 0.05
