import json
import os

import pytest
import torch

from sparse_lens.data.corpus import load_corpus
from sparse_lens.data.tokenizer import cached_tokenizer
from sparse_lens.tasks.task import (
    SPLITS,
    TASK_NAMES,
    TaskBatch,
    TaskExample,
    binary_task_loss,
    evaluate_task,
    get_task,
    load_custom_task,
    task_batch,
    task_metrics,
    tokenize_examples,
)

PAPER_TASKS = [
    "single_double_quote",
    "final_kwarg",
    "set_or_string",
    "set_or_string_fixedvarname",
    "class_init",
    "with_as",
    "bracket_brace",
    "with_open",
    "bracket_counting",
    "for_while",
    "else_elif",
    "fstring_brace",
    "if_ternary",
    "var_swap",
    "indent_for",
    "lambda_func",
    "if_equals",
    "enumerate_range",
    "var_if",
    "while_return_true",
]


@pytest.fixture(scope="session")
def project_tokenizer(tmp_path_factory):
    """The project tokenizer: the 2048-token BPE trained on the standard library."""
    corpus = load_corpus()
    texts = [t for _, t in corpus.documents("train")]
    return cached_tokenizer(texts, corpus.fingerprint, tmp_path_factory.mktemp("tok"))


def test_all_twenty_paper_tasks_exist():
    assert list(TASK_NAMES) == PAPER_TASKS


@pytest.mark.parametrize("name", PAPER_TASKS)
def test_task_pairs_are_minimal_single_token_and_deterministic(name, project_tokenizer):
    task = get_task(name)
    pairs = task.pairs("test", 30, seed=0)
    assert pairs == task.pairs("test", 30, seed=0)
    assert pairs != task.pairs("test", 30, seed=1)
    assert len({p.a for p in pairs}) > 20  # varied contexts, not one string
    for p in pairs:
        assert p.a_target != p.b_target and p.a != p.b
        # minimal: apart from a common prefix and suffix, the contexts differ in a few characters
        pre = len(os.path.commonprefix([p.a, p.b]))
        suf = len(os.path.commonprefix([p.a[pre:][::-1], p.b[pre:][::-1]]))
        assert max(len(p.a), len(p.b)) - pre - suf <= 32, (p.a, p.b)
    batch = task_batch(task, project_tokenizer, 256, "test", 60)
    assert len(batch) >= 40, f"{batch.n_dropped} dropped"
    for c, w in zip(batch.correct.tolist(), batch.incorrect.tolist(), strict=True):
        assert c != w
        assert len(project_tokenizer.encode(project_tokenizer.decode([c]))) == 1
    # each kept context continues with its candidate at a natural token boundary
    for ctx, c, last, row in zip(
        batch.contexts, batch.correct, batch.last, batch.tokens, strict=True
    ):
        assert project_tokenizer.encode(ctx + project_tokenizer.decode([int(c)]))[-1] == int(c)
        assert row[0] == project_tokenizer.eot_id and int(last) == len(
            project_tokenizer.encode(ctx)
        )


@pytest.mark.parametrize("name", ["single_double_quote", "bracket_counting", "var_swap"])
def test_splits_do_not_overlap(name):
    task = get_task(name)
    sets = {s: {(p.a, p.b) for p in task.pairs(s, 40, seed=0)} for s in SPLITS}
    assert sets["train"].isdisjoint(sets["test"])
    assert sets["train"].isdisjoint(sets["val"])
    assert sets["val"].isdisjoint(sets["test"])
    other_seed = {(p.a, p.b) for p in task.pairs("train", 40, seed=7)}
    assert other_seed.isdisjoint(sets["test"])


def test_unknown_task_name():
    with pytest.raises(ValueError, match="did you mean"):
        get_task("single_double_quotes")


class FakeModel:
    """Returns fixed logits: every position gets the same row."""

    def __init__(self, row):
        self.row = row
        self.W_E = torch.zeros(1)

    def run_with_hooks(self, tokens, fwd_hooks=()):
        return self.row.expand(tokens.shape[0], tokens.shape[1], -1).clone()


def test_loss_matches_hand_computation():
    batch = TaskBatch(
        tokens=torch.zeros(2, 3, dtype=torch.long),
        last=torch.tensor([2, 1]),
        correct=torch.tensor([0, 1]),
        incorrect=torch.tensor([1, 0]),
        contexts=["a", "b"],
    )
    row = torch.tensor([2.0, 0.0, 5.0])
    # sequence 1: correct logit 2 vs 0 -> -log(e^2/(e^2+1)); sequence 2: correct 0 vs 2
    l1 = -torch.log(torch.tensor(2.0).exp() / (torch.tensor(2.0).exp() + 1))
    l2 = -torch.log(1 / (torch.tensor(2.0).exp() + 1))
    out = evaluate_task(FakeModel(row), batch)
    assert out["loss"] == pytest.approx(float((l1 + l2) / 2), rel=1e-6)
    assert out["accuracy"] == 0.5
    m = task_metrics(row.expand(2, 3, 3), batch)
    assert m["loss"] == pytest.approx(out["loss"])
    assert binary_task_loss(torch.tensor([[0.0, 0.0]])).item() == pytest.approx(0.6931, rel=1e-3)


def test_custom_tasks_validate_and_name_the_line(tmp_path, tokenizer):
    good = tmp_path / "mine.jsonl"
    recs = [{"context": f'print("x{i}', "correct": '")', "incorrect": "')"} for i in range(50)]
    good.write_text("\n".join(json.dumps(r) for r in recs))
    task = load_custom_task(good, tokenizer)
    assert task.name == "mine" and len(task.fixed) == 50
    test = task.examples("test", 100)
    train = task.examples("train", 100)
    assert test and train and not {e.context for e in test} & {e.context for e in train}
    batch = tokenize_examples(test, tokenizer, 32, require_boundary=False)
    assert len(batch) == len(test)
    for bad, msg in [
        ({"context": "x", "correct": "a", "incorrect": "a"}, "equal"),
        ({"context": "x", "correct": "hello world again", "incorrect": "')"}, "not one"),
        ({"context": "x", "correct": '")'}, "string fields"),
    ]:
        path = tmp_path / "bad.jsonl"
        path.write_text(json.dumps(recs[0]) + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(ValueError, match=rf"bad.jsonl:2: .*{msg}"):
            load_custom_task(path, tokenizer)


def test_tokenize_drops_pairs_a_tokenizer_cannot_express(tokenizer):
    exs = [TaskExample("x = ", "zzzqqq", "'"), TaskExample("y = ", "'", "zzzqqq")]
    with pytest.raises(ValueError, match="no example survives"):
        tokenize_examples(exs, tokenizer, 16, task="t")


def test_too_many_examples_of_a_small_split_names_the_most_there_are():
    """``tasks --split val`` with the default --n once stopped at lambda_func's 74 validation
    pairs with no way forward; the error says how many examples there are."""
    import re

    from sparse_lens.tasks.task import get_task

    task = get_task("lambda_func")
    with pytest.raises(ValueError, match=r"ask for at most \d+ examples") as e:
        task.pairs("val", 1000)
    most = int(re.search(r"at most (\d+) examples", str(e.value)).group(1))  # type: ignore[union-attr]
    assert len(task.pairs("val", most // 2)) == most // 2


def test_answer_logits_match_full_forward_for_sparse_and_other_models():
    from sparse_lens.tasks.task import answer_logits, binary_logits
    from tests.helpers import build_model

    model = build_model()
    tokens = torch.randint(0, model.cfg.d_vocab, (4, 6), generator=torch.Generator().manual_seed(0))
    batch = TaskBatch(
        tokens=tokens,
        last=torch.tensor([5, 2, 4, 1]),
        correct=torch.tensor([1, 2, 3, 4]),
        incorrect=torch.tensor([5, 6, 7, 8]),
        contexts=["a", "b", "c", "d"],
    )

    class Plain(torch.nn.Module):  # a model without logits_at (as a TL dense model)
        def __init__(self) -> None:
            super().__init__()
            self.inner = model
            self.W_E = model.W_E

        def run_with_hooks(self, tokens, fwd_hooks):
            return self.inner.run_with_hooks(tokens, fwd_hooks=fwd_hooks)

    with torch.no_grad():
        full = model(tokens)
        want = binary_logits(full, batch)
        for m in (model, Plain()):
            got = answer_logits(m, batch)
            assert got.shape == (4, model.cfg.d_vocab)
            torch.testing.assert_close(binary_logits(got, batch), want, rtol=1e-5, atol=1e-5)


def test_answer_logits_leaves_hooks_installed_around_it_in_place():
    """Mask training installs its mask hooks once (``model.hooks``) and computes each step's
    loss with ``answer_logits`` inside: the hooks ``answer_logits`` adds go on return, the outer
    ones stay and act on that forward pass too."""
    from sparse_lens.tasks.task import answer_logits
    from tests.helpers import build_model

    model = build_model()
    tokens = torch.randint(0, model.cfg.d_vocab, (2, 5), generator=torch.Generator().manual_seed(1))
    batch = TaskBatch(
        tokens=tokens,
        last=torch.tensor([4, 2]),
        correct=torch.tensor([1, 2]),
        incorrect=torch.tensor([3, 4]),
        contexts=["a", "b"],
    )
    seen: list[str] = []
    outer = ("hook_embed", lambda x, hook: seen.append("outer") or x * 0)
    inner = ("blocks.0.hook_resid_pre", lambda x, hook: seen.append("inner") or x)
    with torch.no_grad(), model.hooks(fwd_hooks=[outer]):
        got = answer_logits(model, batch, [inner])
        assert seen == ["outer", "inner"]
        model(tokens)  # after return only the outer hook fires
        assert seen == ["outer", "inner", "outer"]
        want = model(tokens)[torch.arange(2), batch.last]
    torch.testing.assert_close(got, want)
    with torch.no_grad():
        assert not torch.allclose(model(tokens)[torch.arange(2), batch.last], want)
