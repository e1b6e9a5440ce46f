"""Faithfulness checks: each can pass and fail, on planted ground truth (a faithful circuit and
one that reaches the target only through the final norm)."""

import pytest
import torch

from sparse_lens import HookedSparseTransformer
from sparse_lens.circuits.ablation import make_ablation
from sparse_lens.circuits.checks import (
    _fvu,
    _pearson,
    interchange,
    necessity,
    necessity_baseline,
)
from sparse_lens.circuits.circuit import Circuit
from sparse_lens.circuits.controls import (
    control_run,
    nonsense_batch,
    permuted_model,
    rule_balance,
)
from sparse_lens.circuits.faithfulness import circuit_checks, control_verdict, model_verdicts
from sparse_lens.circuits.masks import PruneConfig
from sparse_lens.tasks.task import TaskBatch, mean_task_loss
from tests.circuits.test_masks import (
    ANS_A,
    ANS_B,
    BOS,
    FILLERS,
    PLANTED,
    PLANTED_LOCS,
    A,
    B,
    plain_circuit_loss,
    planted_batch,
    planted_model,
    pretrain_windows,
)

FAITHFUL = PLANTED | {
    "blocks.0.hook_attn_out": [2, 9],
    "blocks.0.hook_resid_post": [2, 8, 9],  # the signal, its weak copy and the norm anchor
}
# the weak copy alone, without the anchor: the final norm amplifies it to the target
CHEATING = PLANTED | {"blocks.0.hook_attn_out": [9], "blocks.0.hook_resid_post": [9]}


def planted_circuit(model, nodes=PLANTED):
    abl = make_ablation("mean", model, pretrain_windows())
    return Circuit.from_nodes(model, nodes, abl.values, task="planted"), abl


@pytest.fixture(scope="module")
def norm_model_reports():
    model = planted_model(norm_channels=True)
    batch = planted_batch(32, 5)
    out = {}
    for name, nodes in (("faithful", FAITHFUL), ("cheating", CHEATING)):
        circuit, _ = planted_circuit(model, nodes)
        report = circuit_checks(model, circuit, batch, seed=0)
        out[name] = (report, {v["check"]: v for v in model_verdicts(report, 0.15)})
    return out


def test_the_faithful_planted_circuit_passes_every_check(norm_model_reports):
    report, verdicts = norm_model_reports["faithful"]
    assert report["full_model_loss"] < 0.15
    assert {k: v["status"] for k, v in verdicts.items()} == dict.fromkeys(verdicts, "pass")


def test_the_cheating_circuit_reaches_its_target_and_is_flagged(norm_model_reports):
    report, verdicts = norm_model_reports["cheating"]
    # the trap: sufficiency alone passes, and the kept nodes compute what the full model does
    assert verdicts["sufficiency"]["status"] == "pass"
    assert verdicts["node_agreement"]["status"] == "pass"
    for check in (
        "frozen_norms",
        "logit_diff",
        "norm_scale",
        "partial_complement_random",
        "partial_complement_adversarial",
        "interchange",
    ):
        assert verdicts[check]["status"] == "fail", (check, verdicts[check])
    assert report["sufficiency"]["norm_scale_ratio"] < 0.5  # the final norm amplifies
    assert report["sufficiency"]["logit_diff_ratio"] > 1.5


def test_necessity_and_its_random_baseline():
    model = planted_model()
    circuit, abl = planted_circuit(model)
    batch = planted_batch(32, 5)
    others = {
        h: [c for c in range(n) if c not in PLANTED.get(h, [])] for h, n in PLANTED_LOCS.items()
    }
    nec = necessity(model, circuit, batch)
    assert nec == pytest.approx(plain_circuit_loss(model, batch, others, abl.values), abs=1e-5)

    # on the norm model the faithful circuit costs more than most random same-mix sets; a
    # "circuit" of distractor nodes with the same mix does not
    model = planted_model(norm_channels=True)
    base = necessity_baseline(model, planted_circuit(model, FAITHFUL)[0], batch)
    assert len(base["random_losses"]) == 8 and base["random_below"] >= 0.75
    fake = {h: [c for c in range(10) if c not in idx][: len(idx)] for h, idx in FAITHFUL.items()}
    fake_base = necessity_baseline(model, planted_circuit(model, fake)[0], batch)
    assert fake_base["random_below"] < 0.75


def test_interchange_keeps_final_nodes_apart_and_freezes_norms():
    model = planted_model()
    circuit, abl = planted_circuit(model)
    batch = planted_batch(32, 5)
    inter = interchange(model, circuit, batch)
    assert inter["n_final_nodes"] == 1 and inter["n_inner_nodes"] == circuit.n_nodes - 1
    assert inter["final_only"] is not None and inter["frozen_norms"]
    # fraction 0 is the circuit alone under the full model's norm scales
    frozen = plain_circuit_loss(model, batch, PLANTED, abl.values, frozen_scales=True)
    assert inter["fractions"]["0.0"]["loss"] == pytest.approx(frozen, abs=1e-5)


def test_patches_act_before_the_removed_edges():
    """A patched source of a removed edge: the edge carries the ablation value, never the
    patch (it carried the patch's difference when patches ran after the edge hooks)."""
    from tests.helpers import build_model, random_tokens

    model = build_model(attn_sinks=False)
    kept = {h: list(range(n)) for h, n in Circuit.from_nodes(model, {}, {}, task="t").sizes.items()}
    abl = make_ablation("mean", model, random_tokens(8, 12, seed=3))
    edge = next(
        (s, t)
        for s, t, _ in Circuit.from_nodes(model, kept, abl.values, task="t").edges
        if ".attn.attn_in." in s
    )
    circuit = Circuit.from_nodes(model, kept, abl.values, task="t", removed_edges=[edge])  # fmt: skip
    ref = {r.label: r for r in circuit.node_refs(model.cfg)}[edge[0]]
    keep = torch.ones(circuit.sizes[ref.hook])
    keep[ref.channel] = 0.0
    from hooks import node_mask

    patch = [(ref.hook, node_mask(keep, torch.full((circuit.sizes[ref.hook],), 3.0)))]
    tokens = random_tokens(3, 9, seed=4)
    hooked = model.run_with_hooks(tokens, fwd_hooks=circuit.fwd_hooks(model, patches=patch))
    baked = circuit.to_model(model).run_with_hooks(tokens, fwd_hooks=patch)
    torch.testing.assert_close(hooked, baked, atol=1e-5, rtol=1e-5)


def test_fvu_sees_a_rescaling_that_correlation_misses():
    a = torch.randn(50, dtype=torch.float64)
    assert _pearson(a, 2 * a) == pytest.approx(1.0)
    assert _fvu(a, 2 * a) > 0.5 and _fvu(a, a) == 0.0


def varied_batch(n_pairs: int, seed: int) -> TaskBatch:
    """Planted pairs with 4-9 fillers, right-padded (the last filler varies, so the nonsense
    rule, last-token parity, is balanced)."""
    g = torch.Generator().manual_seed(seed)
    rows, last, correct, incorrect = [], [], [], []
    for _ in range(n_pairs):
        n = int(torch.randint(4, 10, (1,), generator=g))
        fill = torch.tensor(FILLERS)[torch.randint(0, len(FILLERS), (n,), generator=g)]
        for marker, right, wrong in ((A, ANS_A, ANS_B), (B, ANS_B, ANS_A)):
            row = torch.cat([torch.tensor([BOS, marker]), fill])
            rows.append(torch.cat([row, torch.full((11 - len(row),), BOS)]))
            last.append(len(row) - 1)
            correct.append(right)
            incorrect.append(wrong)
    return TaskBatch(
        tokens=torch.stack(rows),
        last=torch.tensor(last),
        correct=torch.tensor(correct),
        incorrect=torch.tensor(incorrect),
        contexts=[str(r.tolist()) for r in rows],
    )


def test_the_nonsense_rule_is_consistent_unrelated_to_the_task_and_learnable():
    batch = varied_batch(64, 1)
    ns = nonsense_batch(batch)
    # a fixed function of the context: both members of a pair (same last token) get one
    # answer, while the task gives them opposite answers
    assert torch.equal(ns.correct[0::2], ns.correct[1::2])
    assert not torch.equal(batch.correct[0::2], batch.correct[1::2])
    assert 0.3 < rule_balance(batch) <= 0.5
    same_last = planted_batch(8, 0)
    same_last.tokens[:, -1] = FILLERS[0]
    assert rule_balance(same_last) == 0.0  # one last token everywhere: unbalanced, not run
    # positive control: a model trained on the rule solves it on held-out pairs
    model = HookedSparseTransformer(planted_model().cfg.replace(seed=3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = mean_task_loss(model(ns.tokens), ns)
        opt.zero_grad()
        loss.backward()
        opt.step()
    held_out = nonsense_batch(varied_batch(32, 2))
    with torch.no_grad():
        assert float(mean_task_loss(model.eval()(held_out.tokens), held_out)) < 0.15


def test_the_random_control_is_scale_matched_and_its_verdict_can_fail():
    model = planted_model()
    shuffled = permuted_model(model, seed=0)
    for (name, p), q in zip(
        model.state_dict().items(), shuffled.state_dict().values(), strict=True
    ):
        assert int((p != 0).sum()) == int((q != 0).sum()), name
        assert torch.equal(p[p != 0].sort().values, q[q != 0].sort().values), name
    assert not torch.equal(model.blocks[0].attn.W_K, shuffled.blocks[0].attn.W_K)
    train, val = planted_batch(32, 1), planted_batch(16, 2)
    pcfg = PruneConfig(steps=150, lr=0.01, k_coef=1e-3, batch_pairs=16)
    real_nodes = 6
    rand = control_run(
        shuffled, train, val, make_ablation("mean", shuffled, pretrain_windows()), pcfg, real_nodes
    )
    assert control_verdict("random_control", rand, 0.15, real_nodes)["status"] == "pass"
    # the check can fail: the trained model itself as a "control" reaches the target small
    same = control_run(
        model, train, val, make_ablation("mean", model, pretrain_windows()), pcfg, real_nodes
    )
    assert same["reached_target"] and same["nodes"] <= 2 * real_nodes
    assert control_verdict("random_control", same, 0.15, real_nodes)["status"] == "fail"
    not_run = control_verdict("nonsense_control", {"not_run": "unbalanced"}, 0.15, 6)
    assert not_run["status"] == "not run"


def test_mib_curve_counts_edges_exactly_and_scores_the_planted_circuit():
    from sparse_lens.circuits.circuit import circuit_edges
    from sparse_lens.circuits.mib import area, count_edges, faithfulness_curve
    from sparse_lens.circuits.nodes import node_locations

    model = planted_model(norm_channels=True)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        keep = {loc.hook: (torch.rand(loc.size, generator=g) < 0.5).float() for loc in node_locations(model.cfg)}  # fmt: skip
        nodes = {h: m.nonzero().squeeze(-1).tolist() for h, m in keep.items()}
        assert count_edges(model, keep) == len(circuit_edges(model, nodes))
    assert area([0.0, 0.5, 1.0], [0.0, 1.0, 1.0]) == pytest.approx(0.75)
    batch = planted_batch(32, 5)
    scores = {loc.hook: torch.rand(loc.size, generator=g) for loc in node_locations(model.cfg)}
    good = faithfulness_curve(model, planted_circuit(model, FAITHFUL)[0], scores, batch)
    assert 0.9 < good["circuit_f"] < 1.1 and good["points"][-1]["f"] == pytest.approx(1, abs=0.05)
    assert [p["percent"] for p in good["points"]][0] == 0.1
    assert all(p["edges"] >= p["percent"] / 100 * good["total_edges"] for p in good["points"])
    # a circuit of distractors carries none of the behaviour: small circuits score near 0
    fake = {h: [c for c in range(10) if c not in idx][: len(idx)] for h, idx in FAITHFUL.items()}
    bad = faithfulness_curve(model, planted_circuit(model, fake)[0], scores, batch)
    assert bad["circuit_f"] < 0.5 and bad["cpr"] < good["cpr"] and bad["cmd"] > good["cmd"]


def test_specificity_verdict_passes_a_specific_circuit_and_fails_a_general_one():
    from sparse_lens.circuits.checks import specificity
    from sparse_lens.circuits.faithfulness import specificity_verdict

    model = planted_model(norm_channels=True)
    circuit, _ = planted_circuit(model, FAITHFUL)
    own = planted_batch(32, 5)
    report = {"full_model_loss": 0.0, "necessity": {"loss": necessity(model, circuit, own)}}
    # another task: the same contexts asked about a token the circuit does not carry (the
    # distractor head's output): ablating the planted circuit barely moves it
    other = planted_batch(32, 6)
    other.correct, other.incorrect = (
        torch.full_like(other.correct, 6),
        torch.full_like(other.incorrect, 7),
    )
    report["specificity"] = specificity(model, circuit, other, "distractor")
    assert specificity_verdict(report)["status"] == "pass", report
    # the task itself as the "other" task: the circuit is not specific to anything else
    report["specificity"] = specificity(model, circuit, own, "itself")
    assert specificity_verdict(report)["status"] == "fail"
    assert specificity_verdict({"necessity": {}})["status"] == "not run"


def test_norm_checks_are_not_run_on_a_frozen_norm_circuit_and_mib_uses_its_norms():
    """A frozen-norm circuit equals its frozen-norm loss and has scale ratio 1 by construction:
    those checks say "not run", never a free pass; MIB's f of the circuit runs it the same way
    (it ran it with live norms and without its removed edges)."""
    from sparse_lens.circuits import checks
    from sparse_lens.circuits.mib import faithfulness_curve
    from sparse_lens.circuits.nodes import node_locations

    model = planted_model(norm_channels=True)
    abl = make_ablation("mean", model, pretrain_windows())
    batch = planted_batch(32, 5)
    frozen = Circuit.from_nodes(model, CHEATING, abl.values, task="p", freeze_norms=True)
    report = circuit_checks(model, frozen, batch, seed=0)
    verdicts = {v["check"]: v for v in model_verdicts(report, 0.15)}
    assert verdicts["frozen_norms"]["status"] == verdicts["norm_scale"]["status"] == "not run"
    assert verdicts["sufficiency"]["status"] == "fail"  # frozen, the weak copy misses
    g = torch.Generator().manual_seed(0)
    scores = {loc.hook: torch.rand(loc.size, generator=g) for loc in node_locations(model.cfg)}
    curve = faithfulness_curve(model, frozen, scores, batch)
    run = checks.readout(model, batch, frozen.fwd_hooks(model, batch.tokens))
    ld = float((run.two[:, 0] - run.two[:, 1]).mean())
    want = (ld - curve["empty_logit_diff"]) / (curve["full_logit_diff"] - curve["empty_logit_diff"])
    assert curve["circuit_f"] == pytest.approx(want, abs=1e-5)
    live = faithfulness_curve(model, planted_circuit(model, CHEATING)[0], scores, batch)
    assert live["circuit_f"] > curve["circuit_f"] + 0.3  # the live norm amplifies the weak copy


def test_a_verdict_edited_by_hand_is_refused_on_load(tmp_path):
    import json

    model = planted_model(norm_channels=True)
    circuit, _ = planted_circuit(model, CHEATING)
    report = circuit_checks(model, circuit, planted_batch(8, 5), seed=0)
    report["verdicts"] = model_verdicts(report, 0.15)
    circuit.extra["faithfulness"] = report
    path = circuit.save(tmp_path / "c.json")
    assert Circuit.load(path).extra["faithfulness"]["verdicts"] == json.loads(
        json.dumps(report["verdicts"])
    )
    d = json.loads(path.read_text())
    d["extra"]["faithfulness"]["verdicts"][1]["status"] = "pass"
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="faithfulness"):
        Circuit.load(path)


def test_a_checked_circuit_fingerprints_its_model_once(monkeypatch):
    """``checked_on`` checks the model once; its ``fwd_hooks`` (dozens per report) do not hash
    every weight again, give the same hooks, and still check any other model."""
    from sparse_lens.circuits import circuit as circuit_module

    model = planted_model()
    circuit, _ = planted_circuit(model)
    calls = []
    real = circuit_module.model_fingerprint
    monkeypatch.setattr(circuit_module, "model_fingerprint", lambda m: calls.append(m) or real(m))
    checked = circuit.checked_on(model)
    assert len(calls) == 1
    batch = planted_batch(8, 5)
    for _ in range(3):
        hooks = checked.fwd_hooks(model, batch.tokens)
    assert len(calls) == 1 and [h for h, _ in hooks] == [h for h, _ in circuit.fwd_hooks(model)]
    assert len(calls) == 2  # the unchecked circuit checks every time
    other = planted_model(norm_channels=True)
    with pytest.raises(ValueError, match="extracted from model"):
        checked.fwd_hooks(other, batch.tokens)


def test_partial_complement_allows_a_wobble_not_a_rise(norm_model_reports):
    """A circuit bisected to just under its target (0.149 at 0.15) is not failed because one
    random pattern of its complement gives 0.1541 (what the demo's else_elif circuit met); a
    rise to twice the target still fails, and so does the cheating circuit's (0.28 here)."""
    from sparse_lens.circuits.faithfulness import PARTIAL_SLACK, partial_limit

    limit, text = partial_limit(0.15, 0.149)
    assert 0.1541 <= limit < 0.3 and limit == pytest.approx(0.165)
    assert f"{1 + PARTIAL_SLACK:g} x max(target 0.15, circuit 0.149)" in text
    assert partial_limit(0.15, 0.4)[0] == pytest.approx(0.44)  # judged against its own loss
    report, verdicts = norm_model_reports["cheating"]
    worst = report["partial_complement"]["worst_random"]["loss"]
    assert worst > partial_limit(0.15, report["sufficiency"]["loss"])[0]
    assert verdicts["partial_complement_random"]["status"] == "fail"


def test_sufficiency_at_a_target_at_chance_is_not_a_pass(norm_model_reports):
    """A target at or above ln 2 is met by a circuit that knows nothing: sufficiency says
    "not run" with the reason, never "pass" (the untrained smoke demo's 0.718 was such a case)."""
    report, _ = norm_model_reports["faithful"]
    by_check = {v["check"]: v for v in model_verdicts(report, 0.718)}
    assert by_check["sufficiency"]["status"] == "not run"
    assert "at or above chance" in by_check["sufficiency"]["reason"]
    assert {v["check"]: v for v in model_verdicts(report, 0.15)}["sufficiency"]["status"] == "pass"


def test_an_empty_circuit_gets_no_vacuous_pass():
    """A circuit with no node passes node agreement, interchange, necessity ... by having
    nothing to test; those verdicts are "not run" with the reason, its loss verdict stays."""
    from sparse_lens.circuits.faithfulness import NODE_CHECKS, empty_circuit_verdicts, verdict

    verdicts = [verdict(c, True, 0.0, "t", "r") for c in ("sufficiency", *NODE_CHECKS)]
    empty = {v["check"]: v for v in empty_circuit_verdicts(verdicts, 0)}
    assert empty["sufficiency"]["status"] == "pass"
    assert all(empty[c]["status"] == "not run" for c in NODE_CHECKS)
    assert "keeps no node" in empty["node_agreement"]["reason"]
    assert empty_circuit_verdicts(verdicts, 3) == verdicts


def test_specificity_records_the_split_and_n_of_the_other_tasks_pairs():
    """The report's ``computed_on`` is the circuit's own task's; specificity runs on another
    task's pairs, so it records their split and n itself (the page showed neither)."""
    from sparse_lens.circuits.ablation import ablation_means
    from sparse_lens.circuits.faithfulness import other_task_specificity
    from sparse_lens.circuits.nodes import node_locations
    from sparse_lens.tasks.task import get_task
    from tests.helpers import build_cfg, tiny_tokenizer

    tok = tiny_tokenizer()
    model = HookedSparseTransformer(build_cfg(d_vocab=tok.vocab_size, n_ctx=64), tokenizer=tok)
    windows = torch.randint(0, tok.vocab_size, (4, 64), generator=torch.Generator().manual_seed(0))
    nodes = {loc.hook: [0] for loc in node_locations(model.cfg)}
    circuit = Circuit.from_nodes(model, nodes, ablation_means(model, windows), task="for_while")
    spec = other_task_specificity(model, circuit, get_task("single_double_quote"), 8, 0)
    assert (spec["task"], spec["split"], spec["n"]) == ("single_double_quote", "test", 8)
    assert spec["increase"] == pytest.approx(spec["ablated_loss"] - spec["full_loss"])


def test_verdict_lines_give_a_not_run_checks_reason_not_a_value():
    from sparse_lens.circuits.faithfulness import verdict, verdict_lines

    report = {
        "verdicts": [
            verdict("sufficiency", True, 0.1449, "<= 0.15", "ok"),
            verdict("frozen_norms", None, 0.1449, "-", "pruned with frozen norms"),
        ],
        "computed_on": {"split": "test", "n": 128},
        "failed": [],
    }
    lines = verdict_lines(report)
    assert lines[0].startswith("PASS") and "0.1449 (<= 0.15)" in lines[0]
    assert lines[1].startswith("NOT RUN") and lines[1].endswith("(pruned with frozen norms)")
    assert "0.1449" not in lines[1]
    assert lines[2:] == ["computed on the test split, n = 128", "failed: none"]
