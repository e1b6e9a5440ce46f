"""Automatic node roles and a circuit card (``explain``); see ``build`` for what is measured
and ``roles`` for the rules."""

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
from sparse_lens.circuits.explain.stats import Contrast

__all__ = [
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
    "Role",
    "Stage",
    "circuit_knockouts",
    "empty_circuit_loss",
    "explain",
    "full_knockouts",
]
