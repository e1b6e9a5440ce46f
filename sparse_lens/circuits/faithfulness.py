"""Is a pruned circuit faithful? Every check with a verdict: pass or fail, its threshold, why.

The paper's checks (arXiv 2511.13653 §6.1, App. A.5, App. E) and those of its critique (Drori
2026, "Weight-Sparse Circuits May Be Interpretable Yet Unfaithful"), computed on the task's
test split by ``circuits/checks.py`` and ``circuits/controls.py``:

| check | passes when |
|---|---|
| ``sufficiency`` | circuit loss <= target |
| ``frozen_norms`` | circuit loss with every RMSNorm scale frozen at the full model's <= target |
| ``norm_scale`` | final-norm scale ratio circuit/full in ``NORM_BAND`` (below: the norm amplifies) |
| ``logit_diff`` | logit-difference ratio circuit/full in ``LOGIT_DIFF_BAND`` |
| ``necessity`` | ablating the circuit alone costs more than ``MIN_NECESSITY_SHARE`` of random node sets of the same size per location |
| ``specificity`` | ablating the circuit raises another task's loss by at most ``MAX_OTHER_SHARE`` of what it raises its own task's |
| ``node_agreement`` | at most ``MAX_FVU_SHARE`` of kept nodes have FVU above 0.5 |
| ``interchange`` | KL(full, circuit) on the two candidates <= ``MAX_KL`` nats at every patched fraction |
| ``partial_complement_random`` | worst loss over random partial ablations of the complement <= (1 + ``PARTIAL_SLACK``) x max(target, circuit loss) |
| ``partial_complement_adversarial`` | likewise over adversarially chosen partial ablations |
| ``random_control`` | a permuted-weight model's masks at the circuit's size miss the target, and reaching it needs > ``CONTROL_FACTOR`` x the nodes |
| ``nonsense_control`` | likewise for the nonsense rule on this model |

A check that could not run (no final nodes, an unbalanced nonsense rule) says "not run" with
the reason, never "pass". The report's ``failed`` lists the failing checks. ``mib`` holds the
field's yardstick, MIB's faithfulness curve with CPR and CMD (``circuits/mib.py``): a measure
to set beside circuits other tools find, with no verdict of its own.
"""

import dataclasses
import math
from typing import Any, Literal

from torch import Tensor

from sparse_lens.circuits import checks, controls
from sparse_lens.circuits.ablation import Ablation, make_ablation
from sparse_lens.circuits.checks import (
    interchange,
    necessity,
    necessity_baseline,
    node_agreement,
    partial_complement,
    specificity,
)
from sparse_lens.circuits.circuit import Circuit
from sparse_lens.circuits.controls import nonsense_batch, permuted_model
from sparse_lens.circuits.find import attribution_scores
from sparse_lens.circuits.masks import PruneConfig, Pruner
from sparse_lens.circuits.mib import faithfulness_curve
from sparse_lens.model.transformer import HookedSparseTransformer
from sparse_lens.tasks.task import Task, TaskBatch, task_batch
from sparse_lens.vocab import CHANCE_LOSS

__all__ = [
    "faithfulness_report",
    "interchange",
    "necessity",
    "necessity_baseline",
    "node_agreement",
    "nonsense_batch",
    "partial_complement",
    "permuted_model",
    "verdict",
]

NORM_BAND = (0.8, 1.25)
LOGIT_DIFF_BAND = (2 / 3, 1.5)
MAX_KL = 0.1
MIN_NECESSITY_SHARE = 0.75
MAX_OTHER_SHARE = 0.5
MAX_FVU_SHARE = 0.2
CONTROL_FACTOR = 2.0
# partial complement: the worst loss may exceed the larger of the target and the circuit's own
# loss by this share of it (a circuit bisected to just under its target is not failed by a
# 0.004-nat wobble; one that leans on the whole complement being ablated rises by nats)
PARTIAL_SLACK = 0.1
MIN_RULE_BALANCE = 0.2
Status = Literal["pass", "fail", "not run"]


def verdict(check: str, passed: bool | None, value: Any, threshold: str, reason: str) -> dict:
    """One check's verdict as recorded: ``status`` pass / fail / not run (``passed`` None)."""
    status: Status = "not run" if passed is None else "pass" if passed else "fail"
    return {
        "check": check,
        "status": status,
        "value": value,
        "threshold": threshold,
        "reason": reason,
    }


def verdict_lines(report: dict[str, Any]) -> list[str]:
    """One line per verdict of a faithfulness report (a check not run gives its reason, not a
    value), then the computed-on line and the failed checks (``[]`` for a report without
    verdicts)."""
    lines = []
    for v in report.get("verdicts", []):
        if v["status"] == "not run":
            lines.append(f"{'NOT RUN':8} {v['check']:18} ({v['reason']})")
            continue
        value = f"{v['value']:.4g}" if isinstance(v["value"], float) else v["value"]
        lines.append(f"{v['status'].upper():8} {v['check']:18} {value} ({v['threshold']})")
    if lines:
        on = report.get("computed_on", {})
        lines.append(f"computed on the {on.get('split')} split, n = {on.get('n')}")
        lines.append(f"failed: {', '.join(report.get('failed', [])) or 'none'}")
    return lines


def _in_band(x: float, band: tuple[float, float]) -> bool:
    return math.isfinite(x) and band[0] <= x <= band[1]


def model_verdicts(report: dict[str, Any], target: float) -> list[dict]:
    """Verdicts of the checks on the circuit itself (not the controls)."""
    suff, frozen = report["sufficiency"], report["frozen_norms"]
    nec, agree = report["necessity"], report["node_agreement"]
    inter, part = report["interchange"], report["partial_complement"]
    worst_kl = max(r["kl"] for r in inter["fractions"].values())
    limit, limit_text = partial_limit(target, suff["loss"])
    norm_checks = [
        verdict("frozen_norms", frozen["loss"] <= target, frozen["loss"], f"<= target {target}",
                "circuit with every RMSNorm scale frozen at the full model's: a circuit that "
                "reaches the target only through the norm's rescaling fails"),
        verdict("norm_scale", _in_band(suff["norm_scale_ratio"], NORM_BAND),
                suff["norm_scale_ratio"], f"in {NORM_BAND}",
                "final-norm scale circuit/full at the answer; below the band the final norm "
                "amplifies the circuit's writes"),
    ]  # fmt: skip
    if report.get("norms") == "frozen":  # equal to sufficiency and to 1 by construction
        why = ("the circuit runs with the full model's norm scales (pruned with frozen norms), so "
               "the norm cannot rescale it; this check applies to live-norm circuits")  # fmt: skip
        norm_checks = [verdict(v["check"], None, v["value"], "-", why) for v in norm_checks]
    sufficiency = verdict(
        "sufficiency",
        suff["loss"] <= target,
        suff["loss"],
        f"<= target {target}",
        "circuit alone, every other node ablated",
    )
    if target >= CHANCE_LOSS:  # a target at chance is met by a circuit that knows nothing
        sufficiency = verdict(
            "sufficiency",
            None,
            suff["loss"],
            f"target < {CHANCE_LOSS:.3f}",
            f"the target {target} is at or above chance (ln 2): reaching it "
            "says nothing about the task",
        )
    return [
        sufficiency,
        *norm_checks,
        verdict("logit_diff", _in_band(suff["logit_diff_ratio"], LOGIT_DIFF_BAND),
                suff["logit_diff_ratio"], f"in ({LOGIT_DIFF_BAND[0]:.3g}, {LOGIT_DIFF_BAND[1]})",
                "mean logit difference circuit/full: a circuit far more (or less) confident "
                "than its model does not reproduce it"),
        verdict("necessity", nec["random_below"] >= MIN_NECESSITY_SHARE, nec["random_below"],
                f">= {MIN_NECESSITY_SHARE} of random same-mix sets cost less",
                f"only the circuit ablated (loss {nec['loss']:.4g}) against {nec['sets']} random "
                "node sets of the same size per location"),
        verdict("node_agreement", agree["fraction_fvu_above_0.5"] <= MAX_FVU_SHARE,
                agree["fraction_fvu_above_0.5"], f"<= {MAX_FVU_SHARE} of nodes with FVU > 0.5",
                "kept nodes' activations in the circuit against the full model"),
        verdict("interchange", worst_kl <= MAX_KL, worst_kl, f"KL <= {MAX_KL} nats",
                "random fractions of the circuit's non-final nodes take the full model's "
                "values, norms frozen; distance from the full model"),
        verdict("partial_complement_random", part["worst_random"]["loss"] <= limit,
                part["worst_random"]["loss"], limit_text,
                f"worst loss over {part['patterns']} random parts of the complement ablated "
                "(norms live)"),
        _adversarial_verdict(part, limit, limit_text),
    ]  # fmt: skip


# Checks that say something about a circuit only through its nodes: with none kept, each would
# pass vacuously (no node disagrees, nothing to patch, nothing of the circuit to ablate).
NODE_CHECKS = (
    "necessity", "node_agreement", "interchange", "partial_complement_random",
    "partial_complement_adversarial", "specificity",
)  # fmt: skip


def empty_circuit_verdicts(verdicts: list[dict], n_nodes: int) -> list[dict]:
    """``verdicts`` with every check of ``NODE_CHECKS`` "not run" when the circuit keeps no
    node: the task is then met (or not) by the ablation values alone, and a check of the
    circuit's nodes would pass with nothing to test."""
    if n_nodes > 0:
        return verdicts
    why = "the circuit keeps no node: nothing of it to test (its loss is the ablation values')"
    return [
        verdict(v["check"], None, v["value"], "-", why) if v["check"] in NODE_CHECKS else v
        for v in verdicts
    ]


def partial_limit(target: float, circuit_loss: float) -> tuple[float, str]:
    """The partial-complement checks' threshold (nats) and how it is stated: the larger of the
    target and the circuit's own loss, plus ``PARTIAL_SLACK`` of it."""
    base = max(target, circuit_loss)
    limit = (1 + PARTIAL_SLACK) * base
    return limit, (
        f"<= {limit:.4g} ({1 + PARTIAL_SLACK:g} x max(target {target}, circuit {circuit_loss:.4g}))"
    )


def _adversarial_verdict(part: dict[str, Any], limit: float, limit_text: str) -> dict:
    worst = part["worst_adversarial"]
    if worst is None:
        return verdict("partial_complement_adversarial", None, None, "-", "no adversary asked")
    return verdict(
        "partial_complement_adversarial",
        worst["loss"] <= limit,
        worst["loss"],
        limit_text,
        f"worst loss over {part['adversarial']} complement patterns chosen by gradient ascent on "
        "the task loss: whether the circuit's loss relies on the complement being ablated all "
        "together (ablation effects that cancel)",
    )


def specificity_verdict(report: dict[str, Any]) -> dict:
    """Verdict of ``report["specificity"]`` against the circuit's own necessity increase."""
    spec = report.get("specificity")
    if not spec or "not_run" in spec:
        reason = spec["not_run"] if spec else "no other task given"
        return verdict("specificity", None, None, "-", reason)
    own = report["necessity"]["loss"] - report["full_model_loss"]
    return verdict(
        "specificity",
        spec["increase"] <= MAX_OTHER_SHARE * own,
        spec["increase"],
        f"<= {MAX_OTHER_SHARE * own:.4g} ({MAX_OTHER_SHARE} x the own task's increase {own:.4g})",
        f"loss increase of task {spec['task']!r} when only the circuit is ablated",
    )


def other_task_specificity(
    model: HookedSparseTransformer, circuit: Circuit, other_task: Task, n: int, seed: int
) -> dict[str, Any]:
    """``checks.specificity`` on ``n`` test pairs of ``other_task``, with the ``split`` and
    ``n`` (pairs it had) it was computed on: the report's ``computed_on`` is the circuit's own
    task's.

    Raises:
        ValueError: ``model`` has no tokenizer, or ``other_task`` cannot be built with it.
    """
    tok = model.require_tokenizer()
    other = task_batch(other_task, tok, model.cfg.n_ctx, "test", n, seed)
    return specificity(model, circuit, other, other_task.name) | {"split": "test", "n": len(other)}


def control_verdict(name: str, ctl: dict[str, Any], target: float, real_nodes: int) -> dict:
    """A control passes when its masks miss the target at the real circuit's size and any
    circuit that reaches the target is over ``CONTROL_FACTOR`` times larger."""
    if ctl.get("not_run"):
        return verdict(name, None, None, "-", ctl["not_run"])
    small = ctl["reached_target"] and ctl["nodes"] <= CONTROL_FACTOR * real_nodes
    passed = ctl["loss_at_real_size"] > target and not small
    value = ctl["nodes"] if ctl["reached_target"] else ctl["loss_at_real_size"]
    return verdict(
        name,
        passed,
        value,
        f"loss at {real_nodes} nodes > {target}, nodes at target > {CONTROL_FACTOR:g}x",
        "the same pruning where there is nothing to find: nodes at the target if reached, "
        "else its loss at the real circuit's size",
    )


def circuit_checks(
    model: HookedSparseTransformer, circuit: Circuit, test: TaskBatch, seed: int
) -> dict[str, Any]:
    """Every measurement of ``circuits/checks.py`` on the ``test`` pairs."""
    tokens = test.tokens.to(model.W_E.device)
    full = checks.readout(model, test, [])
    hooks = circuit.fwd_hooks(model, tokens)
    frozen = checks.frozen_norm_hooks(model, circuit, tokens)
    return {
        "full_model_loss": checks.compare(full, full)["loss"],
        "sufficiency": checks.compare(full, checks.readout(model, test, hooks)),
        "frozen_norms": checks.compare(full, checks.readout(model, test, frozen + hooks)),
        "necessity": necessity_baseline(model, circuit, test, seed=seed),
        "node_agreement": node_agreement(model, circuit, test),
        "interchange": interchange(model, circuit, test, seed=seed),
        "partial_complement": partial_complement(model, circuit, test, seed=seed),
        "norms": "frozen" if circuit.freeze_norms else "live",
    }


def faithfulness_report(
    model: HookedSparseTransformer,
    circuit: Circuit,
    task: Task,
    ablation: Ablation,
    pcfg: PruneConfig,
    pretrain_windows: Tensor,
    *,
    n: int = 128,
    controls: bool = True,
    other_task: Task | None = None,
) -> dict[str, Any]:
    """All checks of the module docstring for ``circuit`` on ``n`` test pairs of ``task``
    (and of ``other_task`` for specificity: "not run" without one),
    each with its verdict (``verdicts``; ``failed`` names the failing ones) and what the
    numbers were computed on (``computed_on``: split, n, ablation source, seed).

    ``pcfg``: the circuit's chosen pruning settings, which the controls reuse with the
    circuit's own train / val sizes (``circuit.extra``, else ``n``).

    Raises:
        ValueError: ``model`` has no tokenizer, or does not match the circuit.
    """
    tok = model.tokenizer
    if tok is None:
        raise ValueError("the faithfulness report needs a model with a tokenizer")
    circuit = circuit.checked_on(model)  # once: every check below runs the circuit
    test = task_batch(task, tok, model.cfg.n_ctx, "test", n, pcfg.seed)
    report = circuit_checks(model, circuit, test, pcfg.seed)
    report["n_nodes"] = circuit.n_nodes
    report["computed_on"] = {
        "split": "test",
        "n": len(test),
        "ablation": circuit.ablation,
        "ablation_source": circuit.extra.get("ablation_source", ablation.source),
        "seed": pcfg.seed,
    }
    if other_task is not None:
        report["specificity"] = other_task_specificity(model, circuit, other_task, n, pcfg.seed)
    verdicts = [*model_verdicts(report, circuit.target_loss), specificity_verdict(report)]
    verdicts = empty_circuit_verdicts(verdicts, circuit.n_nodes)
    sizes = (circuit.extra.get("n_train", n), circuit.extra.get("n_val", n))
    batches = [task_batch(task, tok, model.cfg.n_ctx, s, k, pcfg.seed)
               for s, k in zip(("train", "val"), sizes, strict=True)]  # fmt: skip
    report["mib"] = mib_curve(model, circuit, batches, ablation, pcfg, test)
    if controls:
        report |= run_controls(model, circuit, batches, ablation, pcfg, pretrain_windows)
        for name in ("random_control", "nonsense_control"):
            verdicts.append(
                control_verdict(name, report[name], circuit.target_loss, circuit.n_nodes)
            )
    report["verdicts"] = verdicts
    report["failed"] = [v["check"] for v in verdicts if v["status"] == "fail"]
    return report


def mib_curve(
    model: HookedSparseTransformer,
    circuit: Circuit,
    batches: list[TaskBatch],
    ablation: Ablation,
    pcfg: PruneConfig,
    test: TaskBatch,
) -> dict[str, Any]:
    """MIB's faithfulness curve, CPR and CMD (``circuits/mib.py``) with nodes ranked by their
    attribution on the train pairs; ``{"not_run": reason}`` where it is undefined."""
    if ablation.per_example:
        return {"not_run": "MIB's curve needs fixed ablation values (mean or zero)"}
    pruner = Pruner(model, batches[0], batches[1], ablation, pcfg)
    try:
        scores = attribution_scores(pruner, pruner.train)
        return faithfulness_curve(model, circuit, scores, test)
    except (RuntimeError, ValueError) as e:
        return {"not_run": str(e)}


def run_controls(
    model: HookedSparseTransformer,
    circuit: Circuit,
    batches: list[TaskBatch],
    ablation: Ablation,
    pcfg: PruneConfig,
    pretrain_windows: Tensor,
) -> dict[str, Any]:
    """The random-weight and nonsense controls (``circuits/controls.py``) on the circuit's
    train / val batches, with the circuit's chosen settings ``pcfg`` and its target."""
    train, val = batches
    pcfg = dataclasses.replace(pcfg, target_loss=circuit.target_loss)
    shuffled = permuted_model(model, pcfg.seed)
    rand_abl = make_ablation(
        "zero" if ablation.kind == "zero" else "mean",
        shuffled,
        pretrain_windows,
        exclude_separators=pcfg.mean_excludes_separators,
    )
    out: dict[str, Any] = {
        "random_control": controls.control_run(
            shuffled, train, val, rand_abl, pcfg, circuit.n_nodes
        )
        | {"model": "trained weights, nonzero values permuted per tensor"}
    }
    balance = min(controls.rule_balance(train), controls.rule_balance(val))
    if balance < MIN_RULE_BALANCE:
        out["nonsense_control"] = {
            "not_run": f"the nonsense rule (parity of the last token id) is unbalanced on this "
            f"task's pairs: {balance:.2f} in the smaller class, under {MIN_RULE_BALANCE}",
            "balance": balance,
        }
        return out
    out["nonsense_control"] = controls.control_run(
        model, nonsense_batch(train), nonsense_batch(val), ablation, pcfg, circuit.n_nodes
    ) | {"rule": "lower-id candidate right where the last token id is even", "balance": balance}
    return out
