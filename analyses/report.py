"""Offline HTML circuit reports: one page per circuit, an index page, and a ``.dot`` per circuit.

``circuit_page_data`` runs the model for what a circuit page shows (``CircuitPageData``,
``analyses/page_data.py``); ``render_circuit_page`` (``analyses/circuit_view.py``) renders it. The
page shows the circuit card (``sparse_lens.circuits.explain`` on the page's test examples: every
node's role, knockouts in the circuit and the empty circuit's loss, which define the core view),
the graph (core view and full graph, ``sparse_lens.circuits.graph_view``), the task loss against circuit size
from the bisection, the faithfulness report, the circuit's heads (attention patterns on task
examples with their sink mass, circuitsvis ``attention_heads``) and a panel per important node
(ranked by knockout effect): its top-activating pretraining contexts (``topk_samples``) and its
values on one example of each answer (``colored_tokens``). The index page (``index_page``) shows
the training curves (each loss named by the data it is measured on), the full model's task
tables (each with its split and n; the one that chose the pruned tasks says so) against the
solved target, and every circuit with its loss-vs-size curve. All pages are self-contained
(``analyses/html.py``).
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import circuitsvis.attention
import circuitsvis.tokens
import circuitsvis.topk_samples
import torch
from jaxtyping import Float, Int
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from analyses.html import Page, RawHTML, circuitsvis_html, esc
from analyses.html import table as table_html
from analyses.node_panels import (
    attribution_effects,
    circuit_patterns,
    node_values,
    top_contexts,
)
from analyses.page_data import (
    CircuitFacts,
    CircuitPageData,
    ExampleView,
    HeadsData,
    HeadSink,
    NodePanelData,
    TaskTable,
)
from analyses.plots import Series, bar_chart, chart_html, line_chart, nice_log_limits
from sparse_lens.circuits.circuit import Circuit, NodeRef
from sparse_lens.circuits.explain import CircuitCard, circuit_knockouts, explain, sample_text
from sparse_lens.circuits.graph_view.card_html import card_view
from sparse_lens.circuits.graph_view.graph import CORE_SHARE
from sparse_lens.circuits.graph_view.show import graph_of
from sparse_lens.model.transformer import HookedSparseTransformer
from sparse_lens.tasks.selection import LEGACY_SELECTION, SELECTION, TABLE_USES, is_solved
from sparse_lens.tasks.task import Task, TaskBatch, task_batch
from sparse_lens.training.sparse import recorded_idiom_frac
from sparse_lens.validation import require_min
from sparse_lens.vocab import CHANCE_LOSS, PAPER_TARGET, SAMPLE_WINDOWS

log = logging.getLogger(__name__)
DEFAULT_EXAMPLES = 64  # test pairs of a circuit page when its file records none


def examples_for(circuit: Circuit, requested: int | None) -> int:
    """How many test examples a circuit's page or card measures: ``requested`` unless None, else
    the circuit file's own test pairs (``extra["n_test"]``: one loss, one n), else
    ``DEFAULT_EXAMPLES``."""
    return requested or int(circuit.extra.get("n_test") or DEFAULT_EXAMPLES)


@dataclass(frozen=True, kw_only=True)
class ReportConfig:
    """How much a report computes: task examples, corpus windows, node panels, heads shown."""

    n_examples: int | None = None  # None: the circuit's own test pairs (extra["n_test"]), else 64
    n_windows: int = SAMPLE_WINDOWS
    max_node_panels: int = 24
    n_contexts: int = 5
    max_heads: int = 12
    n_exact_knockouts: int = 48
    seed: int = 0
    contexts_exclude_separators: bool = True  # no top context peaks at <|endoftext|>
    core_share: float = CORE_SHARE  # core view: share of the empty-circuit gap a knockout costs

    def __post_init__(self) -> None:
        require_min(self, ("n_windows", "n_contexts", "max_heads", "n_exact_knockouts"), 1)
        if self.n_examples is not None and self.n_examples < 1:
            raise ValueError(f"n_examples must be >= 1, got {self.n_examples!r}")
        require_min(self, ("max_node_panels",), 0)
        if not 0 < self.core_share <= 1:
            raise ValueError(f"core_share must be in (0, 1], got {self.core_share!r}")


def _class_examples(batch: TaskBatch) -> list[int]:
    """One example per answer token (up to two), so a page contrasts the two answers."""
    seen: dict[int, int] = {}
    for i, c in enumerate(batch.correct.tolist()):
        seen.setdefault(c, i)
    return list(seen.values())[:2] or [0]


def _tokens_of(model: HookedSparseTransformer, batch: TaskBatch, i: int) -> list[str]:
    return [
        model.require_tokenizer().token_str(t)
        for t in batch.tokens[i, : int(batch.last[i]) + 1].tolist()
    ]


@dataclass(frozen=True)
class _Effects:
    """Per kept node: knockout effects (exact for ``exact``, else the attribution estimate),
    the hover facts of the graph, the nodes by effect; the circuit's loss on the batch."""

    loss: float
    attribution: dict[str, float]
    knockouts: dict[str, float]
    exact: list[str]
    effects: dict[str, float]
    info: dict[str, dict[str, float]]
    ranked: list[NodeRef]


def circuit_facts(circuit: Circuit, task: Task) -> CircuitFacts:
    """What ``circuit``'s file records, for its page."""
    extra = circuit.extra
    faith = extra.get("faithfulness")
    return CircuitFacts(
        task=circuit.task,
        description=task.description,
        n_nodes=circuit.n_nodes,
        n_total=sum(circuit.sizes.values()),
        n_edges=circuit.n_edges,
        target_loss=circuit.target_loss,
        loss=circuit.loss,
        test_loss=circuit.test_loss,
        full_loss=circuit.full_loss,
        ablation=circuit.ablation,
        freeze_norms=circuit.freeze_norms,
        model_fingerprint=circuit.model_fingerprint,
        calibrated_loss=circuit.calibrated_loss,
        prune_seconds=extra.get("prune_seconds"),
        chosen_hparams=circuit.hparams.get("chosen") or None,
        curve=tuple(circuit.curve),
        search=circuit.hparams.get("search") or None,
        stages=tuple(extra.get("stages") or ()),
        attribution=extra.get("attribution") or None,
        seeds=extra.get("seeds") or None,
        faithfulness=faith,
        failed_checks=tuple(faith.get("failed", [])) if isinstance(faith, dict) else (),
        n_val=extra.get("n_val"),
        n_test=extra.get("n_test"),
        unchecked=circuit.unchecked_fields,
    )


def circuit_page_data(
    model: HookedSparseTransformer,
    circuit: Circuit,
    task: Task,
    windows: Int[torch.Tensor, "batch pos"],
    rcfg: ReportConfig | None = None,
    *,
    progress: bool = False,
    windows_source: dict[str, Any] | None = None,
) -> CircuitPageData:
    """Run ``model`` as ``circuit`` on ``task``'s test examples and on the pretraining
    ``windows`` for everything the circuit page shows (``render_circuit_page``).

    The circuit card (``explain``) runs on the same test examples and ``windows``; a circuit it
    cannot explain (resample ablation, one answer class) gets a page without a card and with
    the full graph only, saying why.

    Raises:
        ValueError: ``model`` has no tokenizer.
    """
    rcfg = rcfg or ReportConfig()
    if model.tokenizer is None:
        raise ValueError("a circuit report needs a model with a tokenizer")
    n = examples_for(circuit, rcfg.n_examples)
    batch = task_batch(task, model.tokenizer, model.cfg.n_ctx, "test", n, rcfg.seed)
    card, card_note = _card(model, circuit, batch, windows, progress, windows_source)
    fx = _node_effects(model, circuit, batch, rcfg.n_exact_knockouts, card)
    sub = batch.subset(_class_examples(batch))
    heads = _heads_data(model, circuit, sub, rcfg, fx.effects)
    shown = fx.ranked[: rcfg.max_node_panels]
    corpus_vals = node_values(model, shown, windows)
    task_vals = node_values(model, shown, sub.tokens)
    panels = tuple(
        _node_panel_data(
            model, circuit, r, fx, (corpus_vals[r.label], windows), task_vals[r.label], sub, rcfg
        )
        for r in tqdm(shown, desc="node panels", disable=not progress)
    )
    graph, _ = graph_of(circuit, model.cfg, card, core_share=rcfg.core_share)
    return CircuitPageData(
        facts=circuit_facts(circuit, task),
        graph=graph,
        card=card_view(
            card,
            examples="test split; the knockouts and node panels below use the same examples",
            sample=sample_text(card.provenance.get("pretraining_sample")),
        )
        if card is not None
        else None,
        card_note=card_note,
        node_info=fx.info,
        circuit_loss=fx.loss,
        n_test=len(batch),
        n_exact=len(fx.exact),
        knockout_effects=fx.knockouts,
        attribution_effects=fx.attribution,
        heads=heads,
        n_windows=rcfg.n_windows,
        panels=panels,
        windows_sample=sample_text(windows_source) if windows_source is not None else "",
    )


def _card(
    model: HookedSparseTransformer,
    circuit: Circuit,
    batch: TaskBatch,
    windows: Int[torch.Tensor, "batch pos"],
    progress: bool,
    windows_source: dict[str, Any] | None = None,
) -> tuple[CircuitCard | None, str]:
    """The explain card of ``circuit`` on ``batch`` and ``windows``, or None and why not."""
    source = windows_source or {"data": "the report's pretraining windows"}
    try:
        card = explain(
            model,
            circuit,
            batch,
            windows=windows,
            windows_source=source,
            progress=progress,
            batch_split="test",
        )
    except ValueError as e:
        log.warning("no circuit card for %s: %s", circuit.task, e)
        return None, str(e)
    return card, ""


def _node_effects(
    model: HookedSparseTransformer,
    circuit: Circuit,
    batch: TaskBatch,
    n_exact: int,
    card: CircuitCard | None,
) -> _Effects:
    """Attribution estimates for every kept node and exact knockouts: the card's (every node,
    on the same ``batch``) or, without a card, for the ``n_exact`` with the largest estimate."""
    attribution = attribution_effects(model, circuit, batch)
    refs = circuit.node_refs(model.cfg)
    if card is not None:
        loss = card.losses["circuit"]
        knockouts = {n.label: n.knockout_circuit for n in card.nodes}
    else:
        by_estimate = sorted(refs, key=lambda r: -abs(attribution[r.label]))
        labels = [r.label for r in by_estimate[:n_exact]]
        loss, knockouts = circuit_knockouts(model, circuit, batch, labels)
    exact = [r.label for r in refs if r.label in knockouts]
    ranked = sorted(refs, key=lambda r: -abs(knockouts.get(r.label, attribution[r.label])))
    effects = {r.label: knockouts.get(r.label, attribution[r.label]) for r in refs}
    info = {
        r.label: {
            "effect": effects[r.label],
            "ablation value": circuit.baselines[r.hook][r.channel],
            "attribution estimate": attribution[r.label],
        }
        for r in refs
    }
    return _Effects(loss, attribution, knockouts, exact, effects, info, ranked)


def _heads_data(
    model: HookedSparseTransformer,
    circuit: Circuit,
    sub: TaskBatch,
    rcfg: ReportConfig,
    effects: dict[str, float],
) -> HeadsData:
    """Sink masses of the circuit's heads and, per example of ``sub``, the attention patterns
    of the ``rcfg.max_heads`` heads with the largest summed knockout effect."""
    patterns, sinks = circuit_patterns(model, circuit, sub.tokens)
    if not patterns:
        return HeadsData()
    rows = []
    for (layer, head), sink in sinks.items():
        last = sink[torch.arange(len(sub)), sub.last]
        rows.append(
            HeadSink(
                head=f"L{layer}H{head}",
                sink_mass_last=float(last.mean()),
                sink_mass_mean=float(sink.mean()),
            )
        )
    weight = {h: 0.0 for h in patterns}
    for r in circuit.node_refs(model.cfg):
        if r.head is not None:
            weight[(r.layer, r.head)] += abs(effects[r.label])
    chosen = sorted(sorted(patterns, key=lambda h: -weight[h])[: rcfg.max_heads])
    examples = []
    for i in range(len(sub)):
        n = int(sub.last[i]) + 1
        names = [
            f"L{layer}H{head} (sink {float(sinks[(layer, head)][i, n - 1]):.2f})"
            for layer, head in chosen
        ]
        view = circuitsvis_html(
            circuitsvis.attention.attention_heads,
            attention=torch.stack([patterns[h][i, :n, :n] for h in chosen]),
            tokens=_tokens_of(model, sub, i),
            attention_head_names=names,
        )
        answer = model.require_tokenizer().token_str(int(sub.correct[i]))
        examples.append(ExampleView(answer=answer, view=view))
    return HeadsData(
        sinks=tuple(rows), n_heads=len(patterns), n_shown=len(chosen), examples=tuple(examples)
    )


def _node_panel_data(
    model: HookedSparseTransformer,
    circuit: Circuit,
    ref: NodeRef,
    fx: _Effects,
    corpus: tuple[Float[torch.Tensor, "window n_ctx"], Int[torch.Tensor, "window n_ctx"]],
    task_vals: Float[torch.Tensor, "batch pos"],
    sub: TaskBatch,
    rcfg: ReportConfig,
) -> NodePanelData:
    """One node's panel: ``corpus`` is its values on the pretraining windows and the windows,
    ``task_vals`` its values on the examples of ``sub``."""
    tok = model.require_tokenizer()
    values, windows = corpus
    skip = (tok.eot_id,) if rcfg.contexts_exclude_separators else ()
    ctx = top_contexts(
        values, windows, lambda ids: tok.token_str(ids[0]), k=rcfg.n_contexts, exclude_ids=skip
    )
    contexts = circuitsvis_html(
        circuitsvis.topk_samples.topk_samples,
        tokens=[[[c.tokens for c in ctx]]],
        activations=[[[c.values for c in ctx]]],
        zeroth_dimension_name="Node",
        first_dimension_name="Channel",
        zeroth_dimension_labels=[ref.label],
        first_dimension_labels=[ref.hook],
    )
    on_task = []
    for i in range(len(sub)):
        n = int(sub.last[i]) + 1
        view = circuitsvis_html(
            circuitsvis.tokens.colored_tokens,
            tokens=_tokens_of(model, sub, i),
            values=task_vals[i, :n].tolist(),
        )
        on_task.append(ExampleView(answer=tok.token_str(int(sub.correct[i])), view=view))
    return NodePanelData(
        label=ref.label,
        hook=ref.hook,
        effect=fx.effects[ref.label],
        attribution=fx.attribution[ref.label],
        ablation_value=circuit.baselines[ref.hook][ref.channel],
        n_in=sum(1 for _, d, _ in circuit.edges if d == ref.label),
        n_out=sum(1 for s, _, _ in circuit.edges if s == ref.label),
        contexts=contexts,
        on_task=tuple(on_task),
    )


# -- index page and training curves -----------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class LossStreams:
    """What the two loss curves of a run are measured on: their legend names and a caption."""

    train: str
    val: str
    caption: str


def loss_streams(run_info: dict[str, Any] | None) -> LossStreams:
    """Name the training and validation loss curves by the data each is measured on, from a
    run's ``run.json`` (training batches mix in idiom windows at the recorded share; the
    validation windows are held-out corpus documents only); generic names without it."""
    if not run_info:
        return LossStreams(
            train="train: batches",
            val="val: held-out windows",
            caption="Next-token cross-entropy, nats per token. train: the loss of the logged "
            "training batch; val: fixed windows of held-out documents.",
        )
    tcfg, cfg = run_info.get("train_config", {}), run_info.get("model_config", {})
    share = recorded_idiom_frac(run_info)
    source = run_info.get("corpus", {}).get("source", "corpus")
    n_ctx, batch = cfg.get("n_ctx", "?"), tcfg.get("batch_size", "?")
    mix = f"{share:.0%} idiom windows, the rest {source} training documents"
    train = f"train: batches, {share:.0%} idioms" if share > 0 else "train: batches"
    val = f"val: held-out {source}" + (", no idioms" if share > 0 else "")
    caption = (
        f"Next-token cross-entropy, nats per token. train: the loss of the logged step's "
        f"training batch ({batch} windows of {n_ctx} tokens"
        + (f": {mix})" if share > 0 else f" of {source} training documents)")
        + f"; val: {tcfg.get('val_windows', '?')} fixed windows of {n_ctx} tokens from "
        f"held-out {source} documents"
        + (" (no idiom windows)" if share > 0 else "")
        + f", every {tcfg.get('eval_every', '?')} steps and at the end."
    )
    if share > 0:
        caption += (
            " The curves are measured on different data, so the gap between them is not a "
            "generalisation gap: only the training batches hold idiom windows."
        )
    return LossStreams(train=train, val=val, caption=caption)


def l0_points(records: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """``(step, nonzero parameters)`` of each record that logs ``l0_total``, in step order."""
    return sorted((float(r["step"]), float(r["l0_total"])) for r in records if "l0_total" in r)


def l0_chart(records: list[dict[str, Any]]) -> Figure | None:
    """Nonzero parameters against step on a log axis whose limits reach past the data to a
    labelled tick at each end (``nice_log_limits``), the final L0 marked and labelled with its
    value; ``None`` when no record logs a positive L0."""
    pts = [(x, y) for x, y in l0_points(records) if y > 0]
    if not pts:
        return None
    final = pts[-1][1]
    ys = [y for _, y in pts]
    return line_chart(
        [Series(name="L0 total", points=pts)],
        title="Nonzero parameters (L0)",
        xlabel="step",
        ylabel="nonzero parameters (log)",
        ylog=True,
        ylim=nice_log_limits(min(ys), max(ys)),
        hlines=[(final, f"final {final:,.0f}")],
    )


def training_plots(
    records: list[dict[str, Any]],
    png_dir: Path | None = None,
    run_info: dict[str, Any] | None = None,
) -> str:
    """Loss, L0 and learning-rate curves of a run (PNGs into ``png_dir`` when given), the loss
    curves named by what they are measured on (``loss_streams`` of ``run_info``)."""
    if not records:
        return '<p class="note">no metrics recorded</p>'

    def pts(key: str) -> list[tuple[float, float]]:
        return [(float(r["step"]), float(r[key])) for r in records if key in r]

    streams = loss_streams(run_info)
    loss = line_chart(
        [
            Series(name=streams.train, points=pts("train_loss")),
            Series(name=streams.val, points=pts("val_loss")),
        ],
        title="Loss",
        xlabel="step",
        ylabel="cross-entropy (nats per token)",
    )
    lr = line_chart(
        [Series(name="lr", points=pts("lr"))], title="Learning rate", xlabel="step", ylabel="lr"
    )
    return (
        chart_html(loss, "training-loss", "Loss", png_dir)
        + chart_html(l0_chart(records), "training-l0", "Nonzero parameters", png_dir)
        + chart_html(lr, "training-lr", "Learning rate", png_dir)
        + f'<p class="note">{esc(streams.caption)}</p>'
    )


SPLIT_WORDS = {"train": "training", "val": "validation", "test": "test"}
SELECTION_KEYS = (SELECTION, LEGACY_SELECTION)  # tasks.json's key of the choosing table


def task_tables_of(record: Any, source: str = "tasks.json") -> tuple[TaskTable, ...]:  # noqa: ANN401 - JSON
    """The task tables of a ``tasks.json`` record, the reporting (test) table first: a demo's
    ``{"test": table, "selection" (or, older, "validation"): table}``, each table with its
    ``split``, ``n``, ``losses`` and perhaps ``use`` and ``target_loss``; or one flat
    ``{task: row}`` table (a sweep point's, or a demo's from before the splits were recorded),
    which is the test split's.

    Raises:
        ValueError: ``record`` is not a JSON object (``source`` names it).
    """
    if not isinstance(record, dict):
        raise ValueError(f"{source}: a task table is a JSON object, not a JSON {json_kind(record)}")
    tables = []
    for key in ("test", *SELECTION_KEYS):
        t = record.get(key)
        if not isinstance(t, dict) or not isinstance(t.get("losses"), dict):
            continue
        chose = key in SELECTION_KEYS
        use = TABLE_USES[SELECTION if chose else "test"]
        target = t.get("target_loss")
        tables.append(
            TaskTable(
                rows=t["losses"],
                split=str(t.get("split", "val" if chose else "test")),
                n=t.get("n"),
                use=str(t.get("use") or use),
                chose_tasks=chose,
                target_loss=float(target) if isinstance(target, int | float) else None,
            )
        )
        if chose:
            break  # a file has one choosing table; "validation" is its older name
    return tuple(tables) or (TaskTable(rows=record),)


def json_kind(value: Any) -> str:  # noqa: ANN401 - any JSON value
    """The JSON name of ``value``'s type (``list``, ``number``, ...), for error messages."""
    kinds = {list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def solved_target(tables: Sequence[TaskTable], circuits: Sequence[Circuit]) -> tuple[float, str]:
    """The target task loss (nats) at which a task counts as solved, and where it is recorded:
    the task tables' ``target_loss``, else the one target every circuit was pruned to, else the
    paper's ``PAPER_TARGET``."""
    recorded = {t.target_loss for t in tables if t.target_loss is not None}
    if len(recorded) == 1:
        return recorded.pop(), "tasks.json"
    targets = {c.target_loss for c in circuits}
    if len(targets) == 1:
        return targets.pop(), "the circuit files"
    return PAPER_TARGET, "the paper's"


def task_chart(table: TaskTable, target: tuple[float, str]) -> Figure | None:
    """``table``'s losses as bars (lowest first), the tasks at or below the target loss green,
    with dashed lines at the target (``(value in nats, where it is recorded)``) and at chance
    (ln 2)."""
    rows = sorted(table.rows.items(), key=lambda kv: kv[1]["loss"])
    value, where = target
    return bar_chart(
        [(name, r["loss"]) for name, r in rows],
        title=f"Full model, {_split_and_n(table)}",
        xlabel="task loss (nats per example)",
        references=[(value, f"target {value:g} ({where})"), (CHANCE_LOSS, "chance (ln 2)")],
        mark_at_most=(value, f"solved (loss <= {value:g})"),
    )


def _split_and_n(table: TaskTable) -> str:
    """``test split, n = 200 per task``: the n asked when the table records it, else the rows'
    n when they all agree, else no n."""
    n = table.n
    if n is None:
        ns = {r.get("n") for r in table.rows.values()}
        n = ns.pop() if len(ns) == 1 else None
    per_task = f", n = {n} per task" if n is not None else ""
    return f"{SPLIT_WORDS.get(table.split, table.split)} split{per_task}"


def task_table_section(
    table: TaskTable,
    target: tuple[float, str],
    pruned: dict[str, float],
    png_dir: Path | None = None,
    chart: bool = True,
) -> str:
    """One task table under a heading with its split and n (and, for the table that chose the
    pruned tasks, saying so), a note with its recorded use and the tasks ``pruned`` from it
    (task -> target, nats), a bar chart when ``chart``, and the table: loss, accuracy, the
    row's n, solved (at most the target ``(value, where recorded)``), pruned."""
    value, _ = target
    title = f"Task loss of the full model ({_split_and_n(table)})"
    heading = title + (": chose the pruned tasks" if table.chose_tasks else "")
    note = f"Used for: {table.use}." if table.use else ""
    if table.chose_tasks:
        names = ", ".join(f"{k} (target {v:g})" for k, v in sorted(pruned.items()))
        note += f" Pruned from it: {names or 'no circuit on this page'}."
    parts = [f"<h3>{esc(heading)}</h3>"] + ([f'<p class="note">{esc(note)}</p>'] if note else [])
    if chart:
        name = "task-loss-selection" if table.chose_tasks else "task-loss"
        parts.append(chart_html(task_chart(table, target), name, title, png_dir))
    rows = sorted(table.rows.items(), key=lambda kv: kv[1]["loss"])
    header = ["task", "loss (nats)", "accuracy", "n", f"solved (loss <= {value:g})"]
    header += ["pruned"] if table.chose_tasks else []
    body = [
        [
            name,
            r["loss"],
            r["accuracy"],
            r.get("n", "-"),
            "yes" if is_solved(r["loss"], value) else "",
        ]
        + ([f"target {pruned[name]:g}" if name in pruned else ""] if table.chose_tasks else [])
        for name, r in rows
    ]
    return "".join(parts) + table_html(header, body)


def task_section(
    task_table: dict[str, dict[str, Any]], png_dir: Path | None = None, split: str = "test"
) -> str:
    """The full model's loss per task on ``split`` (the library's name: train, val or test),
    a bar chart and a table, against the paper's target."""
    return task_table_section(
        TaskTable(rows=task_table, split=split), (PAPER_TARGET, "the paper's"), {}, png_dir
    )


def index_page(
    *,
    title: str,
    run_info: dict[str, Any] | None,
    metrics: list[dict[str, Any]] | None,
    task_table: dict[str, dict[str, Any]] | None = None,
    circuits: list[tuple[Circuit, str]],
    task_split: str = "test",
    task_tables: Sequence[TaskTable] = (),
    notes: Sequence[str] = (),
    png_dir: Path | None = None,
) -> str:
    """The summary page: run facts, training curves, task tables (``task_tables``, the first
    charted; or the one ``task_table`` of ``task_split``), circuits (with page links); every
    chart is inline SVG, and a PNG in ``png_dir`` when given."""
    page = Page(title=title)
    for note in notes:
        page.p(note, "note")
    if run_info:
        page.h2("Model", "model")
        page.add(table_html(["", ""], _run_facts(run_info)))
    if metrics is not None:
        page.h2("Training", "training")
        page.add(training_plots(metrics, png_dir, run_info))
    if not task_tables and task_table:
        task_tables = (TaskTable(rows=task_table, split=task_split),)
    target = solved_target(task_tables, [c for c, _ in circuits])
    if task_tables:
        page.h2("Tasks", "tasks")
        pruned = {c.task: c.target_loss for c, _ in circuits}
        for i, t in enumerate(task_tables):
            page.add(task_table_section(t, target, pruned, png_dir, chart=i == 0))
    page.h2("Circuits", "circuits")
    for part in _circuits_section(circuits, png_dir):
        page.add(part)
    return page.render()


_MODEL_FACTS = (
    "n_layers",
    "d_model",
    "n_heads",
    "d_head",
    "d_mlp",
    "n_ctx",
    "d_vocab",
    "weight_density",
    "embed_density",
    "afrac",
    "act_sparse_sites",
    "attn_sinks",
)


def _run_facts(run_info: dict[str, Any]) -> list[list[Any]]:
    """The index page's model table: the model's shape and sparsity, preset, corpus and
    training length, from a run's ``run.json``."""
    cfg = run_info.get("model_config", {})
    facts = [[k, cfg[k]] for k in _MODEL_FACTS if k in cfg]
    facts = [[k, ", ".join(v) if isinstance(v, list) else v] for k, v in facts]
    facts += [["preset", run_info.get("preset", "-")]]
    corpus = run_info.get("corpus", {})
    facts += [["corpus", f"{corpus.get('source', '-')} ({corpus.get('fingerprint', '-')})"]]
    tcfg = run_info.get("train_config", {})
    if tcfg:
        tokens = tcfg["steps"] * tcfg["batch_size"] * cfg.get("n_ctx", 0)
        facts += [["training", f"{tcfg['steps']} steps x {tcfg['batch_size']} windows"]]
        facts += [["tokens", f"{tokens:,}"]]
        share = recorded_idiom_frac(run_info)
        facts += [["idiom share", f"{share:.0%} of each batch"]]
    return facts


def _failed_checks(circuit: Circuit) -> Any:  # noqa: ANN401 - a table cell
    """The index's verdict cell: the failed checks in red, "none" when every check that ran
    passed, "not run" without a faithfulness report."""
    report = circuit.extra.get("faithfulness")
    if not isinstance(report, dict) or "verdicts" not in report:
        return "not run"
    failed = report.get("failed") or []
    if not failed:
        return RawHTML('<span class="good">none</span>')
    return RawHTML(f'<span class="bad">{esc(", ".join(failed))}</span>')


def _circuits_section(circuits: list[tuple[Circuit, str]], png_dir: Path | None) -> list[str]:
    """The circuits' table (each linked to its page) and their loss-vs-size curves."""
    parts = [] if circuits else ['<p class="note">No circuits.</p>']
    rows = [
        [
            RawHTML(f'<a href="{esc(link)}">{esc(c.task)}</a>'),
            c.n_nodes,
            c.n_edges,
            c.target_loss,
            c.loss,
            c.test_loss if c.test_loss is not None else "-",
            c.full_loss,
            _failed_checks(c),
        ]
        for c, link in circuits
    ]
    header = ["task", "nodes", "edges", "target", "loss (val)", "loss (test)", "full model (val)",
              "faithfulness checks failed"]  # fmt: skip
    parts.append(table_html(header, rows))
    if circuits:
        kept = [c for c, _ in circuits]
        parts.append(f'<p class="note">{esc(circuit_splits_note(kept))}</p>')
        fig = circuit_size_chart(kept)
        parts.append(chart_html(fig, "circuit-sizes", "Task loss vs circuit size", png_dir))
        parts.append(f'<p class="note">{esc(circuit_curve_note(kept))}</p>')
    return parts


def circuit_splits_note(circuits: Sequence[Circuit]) -> str:
    """Which examples the circuit table's losses are on: each circuit file's own validation
    and test examples (their n as recorded), not the task tables above."""

    def ns(key: str) -> str:
        found = sorted({str(c.extra[key]) for c in circuits if key in c.extra})
        return f"n = {' / '.join(found)}" if found else "n not recorded"

    return (
        f"val: the pruner's own validation examples ({ns('n_val')}), which it bisects and "
        f"cleans up on; test: the circuit file's test examples ({ns('n_test')}); neither is "
        "the task tables' examples, so the full model's loss here differs from theirs."
    )


def circuit_size_chart(circuits: Sequence[Circuit]) -> Figure | None:
    """Each circuit's bisection curve (task loss in nats against nodes kept, both log) with a
    dashed line at each target loss; ``None`` when no curve has a point to draw."""
    series = [
        Series(name=c.task, points=sorted((float(k), v) for k, v in c.curve if k > 0))
        for c in circuits
    ]
    return line_chart(
        series,
        title="Task loss vs circuit size",
        xlabel="nodes kept (log)",
        ylabel="task loss, nats per example (log)",
        xlog=True,
        ylog=True,
        hlines=circuit_target_lines(circuits),
    )


def circuit_target_lines(circuits: Sequence[Circuit]) -> list[tuple[float, str]]:
    """One dashed line per distinct target loss of ``circuits`` (nats), labelled with the
    target and, when the circuits differ, the tasks pruned to it."""
    targets = sorted({c.target_loss for c in circuits})
    if len(targets) == 1:
        return [(targets[0], f"target {targets[0]:g}")]
    return [
        (t, f"target {t:g}: " + ", ".join(c.task for c in circuits if c.target_loss == t))
        for t in targets
    ]


def circuit_curve_note(circuits: Sequence[Circuit]) -> str:
    """The caption of the loss-vs-size chart: what a point is (split, examples, ablation,
    units), the dashed target, and where each kept circuit lies."""
    n_val = sorted({str(c.extra.get("n_val", "?")) for c in circuits})
    ablations = sorted({c.ablation for c in circuits})
    targets = ", ".join(f"{t:g}" for t in sorted({c.target_loss for c in circuits}))
    kept = "; ".join(f"{c.task}: {c.n_nodes} nodes, validation loss {c.loss:.3f}" for c in circuits)
    return (
        "Each line: one circuit's task loss (binary cross-entropy of the two answers, nats per "
        f"example, log axis) on its task's validation split ({'/'.join(n_val)} examples, the "
        "circuit file's n_val) with the k nodes of largest learned mask kept and every other "
        f"node {'/'.join(ablations)}-ablated, as the bisection tried k (k = 0 is off the log "
        f"axis). Dashed: the target loss ({targets} nats) the pruning had to reach. The circuits "
        f"kept: {kept}; the table above gives their test loss."
    )
