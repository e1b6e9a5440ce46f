"""Automatic node roles and a circuit card (``explain``); see ``build`` for what is measured,
``roles`` for the rules and ``sample`` for the pretraining windows (one draw for ``sparse-lens
explain`` and the report)."""

from sparse_lens.circuits.explain.build import explain
from sparse_lens.circuits.explain.card import (
    ROLES,
    Attention,
    CircuitCard,
    CorpusContext,
    CorpusProfile,
    HeadExplanation,
    NodeExplanation,
    Role,
    Stage,
)
from sparse_lens.circuits.explain.measure import (
    circuit_knockouts,
    empty_circuit_loss,
    full_knockouts,
)
from sparse_lens.circuits.explain.roles import RULES, ExplainConfig
from sparse_lens.circuits.explain.sample import (
    DEFAULT_WINDOWS,
    PretrainingSample,
    draw_sample,
    load_sample,
    sample_text,
)
from sparse_lens.circuits.explain.stats import Contrast

__all__ = [
    "DEFAULT_WINDOWS",
    "ROLES",
    "RULES",
    "Attention",
    "CircuitCard",
    "Contrast",
    "CorpusContext",
    "CorpusProfile",
    "ExplainConfig",
    "HeadExplanation",
    "NodeExplanation",
    "PretrainingSample",
    "Role",
    "Stage",
    "circuit_knockouts",
    "draw_sample",
    "empty_circuit_loss",
    "explain",
    "full_knockouts",
    "load_sample",
    "sample_text",
]
