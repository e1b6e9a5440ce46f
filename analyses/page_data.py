"""What a page shows, as plain data: the analyses build it, the views render it.

``circuit_page_data`` (``analyses/report.py``) runs the model and returns a ``CircuitPageData``;
``render_circuit_page`` (``analyses/circuit_view.py``) turns it into HTML without a model.
``bridge_page_data`` (``analyses/bridge_report.py``) and ``render_bridge_page``
(``analyses/bridge_view.py``) do the same for the sparse <-> dense bridge page; ``TaskTable`` is
one full-model task table of the index page (``analyses/report.py``). Every field is a
number, a string, a small tuple of them, a JSON record from a circuit file, or circuitsvis HTML
already rendered (``CircuitsvisHTML``): never a tensor or a model.
"""

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from analyses.html import CircuitsvisHTML
from sparse_lens.circuits.graph_view.card_html import CardView
from sparse_lens.circuits.graph_view.graph import ViewGraph

Grid = tuple[tuple[float, ...], ...]  # [row, column] values of a heatmap


@dataclass(frozen=True, kw_only=True)
class CircuitFacts:
    """What a circuit file records, as its page shows it (``Circuit`` fields and ``extra``
    records, unchanged; ``description`` is the task's, RST literals shown plain)."""

    task: str
    description: str
    n_nodes: int
    n_total: int  # nodes of the whole model
    n_edges: int
    target_loss: float
    loss: float
    test_loss: float | None
    full_loss: float
    ablation: str
    freeze_norms: bool
    model_fingerprint: str
    calibrated_loss: float | None = None
    prune_seconds: float | None = None
    chosen_hparams: Mapping[str, Any] | None = None
    curve: tuple[tuple[int, float], ...] = ()  # (nodes kept, task loss) from the bisection
    search: Mapping[str, Any] | None = None  # circuit.hparams["search"]
    stages: tuple[Mapping[str, Any], ...] = ()  # extra["stages"]: after bisection and clean-up
    attribution: Mapping[str, Any] | None = None  # extra["attribution"]: the baseline
    seeds: Mapping[str, Any] | None = None  # extra["seeds"]: core, union, Jaccard
    faithfulness: Mapping[str, Any] | None = None  # extra["faithfulness"]: the report
    failed_checks: tuple[str, ...] = ()  # extra["faithfulness"]["failed"]
    n_val: int | None = None  # extra["n_val"]: pairs of the validation loss and full loss
    n_test: int | None = None  # extra["n_test"]: pairs of the test loss
    unchecked: tuple[str, ...] = ()  # digests the file lacked (Circuit.unchecked_fields)


@dataclass(frozen=True, kw_only=True)
class ExampleView:
    """A circuitsvis view of one task example, with the example's correct answer token."""

    answer: str
    view: CircuitsvisHTML


@dataclass(frozen=True, kw_only=True)
class HeadSink:
    """One head's sink mass (attention to nothing, in [0, 1]) under the circuit, averaged over
    the examples: at the answer position and over all positions."""

    head: str  # "L{layer}H{head}"
    sink_mass_last: float
    sink_mass_mean: float


@dataclass(frozen=True, kw_only=True)
class HeadsData:
    """The heads with a kept q/k/v node: sink masses of all (``n_heads`` of them), attention
    patterns of the ``n_shown`` with the largest summed knockout effect, one view per example."""

    sinks: tuple[HeadSink, ...] = ()
    n_heads: int = 0
    n_shown: int = 0
    examples: tuple[ExampleView, ...] = ()


@dataclass(frozen=True, kw_only=True)
class NodePanelData:
    """One node's panel: its effects (task-loss increase, nats), ablation value, edge counts,
    top pretraining contexts (circuitsvis ``topk_samples``) and its values on task examples
    (circuitsvis ``colored_tokens``)."""

    label: str
    hook: str
    effect: float
    attribution: float
    ablation_value: float
    n_in: int
    n_out: int
    contexts: CircuitsvisHTML
    on_task: tuple[ExampleView, ...]


@dataclass(frozen=True, kw_only=True)
class CircuitPageData:
    """Everything a circuit page shows (``render_circuit_page``). Effects are task-loss
    increases in nats on ``n_test`` test examples when a node is removed as well (mask
    locations of arXiv 2511.13653, App. A.5): exact knockouts for the ``n_exact`` nodes with the
    largest attribution-patching estimate, that estimate for the rest. ``graph`` holds every
    node with its role and single-node knockout from the explain ``card`` (which defines the
    core view), ``card`` the card's summary and stages (None, with ``card_note`` saying why,
    when it could not be computed)."""

    facts: CircuitFacts
    graph: ViewGraph
    card: CardView | None
    card_note: str
    node_info: Mapping[str, Mapping[str, float]]  # label -> hover facts ("effect" sizes it)
    circuit_loss: float
    n_test: int
    n_exact: int
    knockout_effects: Mapping[str, float]
    attribution_effects: Mapping[str, float]
    heads: HeadsData
    n_windows: int  # pretraining windows the top contexts come from
    panels: tuple[NodePanelData, ...]
    windows_sample: str = ""  # those windows in words (explain's sample_text); "" if unknown

    @property
    def n_panels(self) -> int:
        """How many circuitsvis views the page shows."""
        examples = len(self.heads.examples)
        return examples + sum(1 + len(p.on_task) for p in self.panels)

    def numbers(self) -> dict[str, Any]:
        """The page's numbers as JSON (written beside the page as ``{task}.report.json``)."""
        return {
            "task": self.facts.task,
            "circuit_loss": self.circuit_loss,
            "knockout_effects": dict(self.knockout_effects),
            "attribution_effects": dict(self.attribution_effects),
            "heads": [dataclasses.asdict(h) for h in self.heads.sinks],
            "n_panels": self.n_panels,
            "core_share": self.graph.core_share,
            "core": [n.label for n in self.graph.core()],  # [] without a card or a gap
            "n_nodes": len(self.graph.nodes),
            "n_test": self.n_test,
            "card_losses": {"circuit": self.graph.circuit_loss, "empty": self.graph.empty_loss},
            "card_warnings": list(self.card.warnings) if self.card is not None else [],
        }


# -- the index page ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TaskTable:
    """The full model's loss per task on one split, as the index page shows it: ``rows`` maps
    a task to its ``loss`` (binary cross-entropy of the two answers, nats per example),
    ``accuracy`` and ``n`` (the examples its task kept). ``n`` is the examples asked per task
    (None when not recorded), ``use`` what the table is for as ``tasks.json`` says it,
    ``chose_tasks`` whether it chose the tasks pruned and their targets, ``target_loss`` the
    solved threshold it records (nats; None when it records none)."""

    rows: Mapping[str, Mapping[str, Any]]
    split: str = "test"  # the library's name: train, val or test
    n: int | None = None
    use: str = ""
    chose_tasks: bool = False
    target_loss: float | None = None


# -- the bridge page -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ModelFacts:
    """One model of the bridge page: its class, shape and next-token loss (nats per token) on
    the bridge windows."""

    class_name: str
    n_layers: int
    d_model: int
    n_heads: int
    ce: float


@dataclass(frozen=True, kw_only=True)
class SteeringView:
    """``steering_curve``'s result as shown: probabilities at each strength ``s``, for the
    counterfactual's answer (``target``) steered and under the random control, and for the
    presented answer."""

    node: str
    site: str
    node_score: float  # the node's separation score (``pick_read_node``)
    target: str
    presented: str
    strengths: tuple[float, ...]
    p_target: tuple[float, ...]
    p_target_random: tuple[float, ...]
    p_presented: tuple[float, ...]
    n_pairs: int


@dataclass(frozen=True, kw_only=True)
class PatchingGrids:
    """Activation patching of one model (clean-normalised logit difference, 1 = clean):
    ``resid_pre`` ``[layer, pos]`` with the clean context's ``tokens``, ``head_out``
    ``[layer, head]``."""

    resid_pre: Grid
    head_out: Grid
    tokens: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class SinkGrids:
    """Attention sinks of one model, ``[layer, head]`` each: sink mass on the corpus and at the
    task's answer position, the task-loss change without the sink, the threshold score."""

    corpus_sink_mass: Grid
    task_sink_mass: Grid
    removal_effect: Grid
    threshold_score: Grid


@dataclass(frozen=True, kw_only=True)
class HeadPairView:
    """A sparse head beside the dense head that attends most alike (cosine ``similarity`` of
    their patterns), as one circuitsvis ``attention_heads`` view."""

    sparse: tuple[int, int]  # (layer, head)
    dense: tuple[int, int]
    similarity: float
    view: CircuitsvisHTML


@dataclass(frozen=True, kw_only=True)
class BridgePageData:
    """Everything the bridge page shows (``render_bridge_page``); ``bridges`` is
    ``evaluate_bridges``'s record (``per_site`` NMSE and hybrid KL, ``ce``, ``dense_ce``)."""

    task: str
    sparse: ModelFacts
    dense: ModelFacts
    bridges: Mapping[str, Any]
    steering: SteeringView
    patching: Mapping[str, PatchingGrids]  # "sparse", "dense"
    sinks: Mapping[str, SinkGrids]  # "sparse", "dense"
    heads: tuple[HeadPairView, ...]
