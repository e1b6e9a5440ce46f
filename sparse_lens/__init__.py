"""sparse_lens: weight-sparse transformers (Gao et al. 2025) as TransformerLens models.

>>> import torch
>>> from sparse_lens import HookedSparseTransformer, SparseTransformerConfig
>>> model = HookedSparseTransformer(SparseTransformerConfig.tiny(seed=0))
>>> model(torch.zeros(1, 4, dtype=torch.long)).shape
torch.Size([1, 4, 64])
"""

import importlib
from typing import TYPE_CHECKING, Any

from sparse_lens.vocab import ACT_SITES, PAPER_ACT_SITES

if TYPE_CHECKING:
    from hooks.topk import abs_topk
    from sparse_lens.bridges.maps import BridgeConfig, Bridges, hybrid_forward
    from sparse_lens.bridges.train import evaluate_bridges, fit_bridges
    from sparse_lens.circuits.ablation import make_ablation
    from sparse_lens.circuits.circuit import Circuit
    from sparse_lens.circuits.explain import circuit_knockouts, explain
    from sparse_lens.circuits.faithfulness import faithfulness_report
    from sparse_lens.circuits.masks import PruneConfig
    from sparse_lens.circuits.prune_task import PruneRequest, prune, prune_task
    from sparse_lens.data.token_data import prepare_data
    from sparse_lens.model.config import SparseTransformerConfig
    from sparse_lens.model.sparsity import project_weights_
    from sparse_lens.model.transformer import HookedSparseTransformer
    from sparse_lens.tasks.selection import relaxed_target
    from sparse_lens.tasks.task import (
        binary_logits,
        get_task,
        task_batch,
        task_loss,
        task_metrics,
        task_table,
    )

__version__ = "0.1.0"

# Imported on first use (PEP 562), so that `import sparse_lens.vocab` (the command line's
# parser) does not import torch.
_LAZY = {
    "HookedSparseTransformer": "sparse_lens.model.transformer",
    "SparseTransformerConfig": "sparse_lens.model.config",
    "abs_topk": "hooks.topk",
    "project_weights_": "sparse_lens.model.sparsity",
    "Circuit": "sparse_lens.circuits.circuit",
    "explain": "sparse_lens.circuits.explain",
    "faithfulness_report": "sparse_lens.circuits.faithfulness",
    "get_task": "sparse_lens.tasks.task",
    "prune": "sparse_lens.circuits.prune_task",
    # what the tutorials use: tasks, data, pruning, knockouts, bridges
    "binary_logits": "sparse_lens.tasks.task",
    "task_batch": "sparse_lens.tasks.task",
    "task_loss": "sparse_lens.tasks.task",
    "task_metrics": "sparse_lens.tasks.task",
    "task_table": "sparse_lens.tasks.task",
    "relaxed_target": "sparse_lens.tasks.selection",
    "prepare_data": "sparse_lens.data.token_data",
    "PruneConfig": "sparse_lens.circuits.masks",
    "PruneRequest": "sparse_lens.circuits.prune_task",
    "prune_task": "sparse_lens.circuits.prune_task",
    "make_ablation": "sparse_lens.circuits.ablation",
    "circuit_knockouts": "sparse_lens.circuits.explain",
    "BridgeConfig": "sparse_lens.bridges.maps",
    "Bridges": "sparse_lens.bridges.maps",
    "hybrid_forward": "sparse_lens.bridges.maps",
    "evaluate_bridges": "sparse_lens.bridges.train",
    "fit_bridges": "sparse_lens.bridges.train",
}


def __getattr__(name: str) -> Any:
    """The curated names that need torch, imported on first access.

    Raises:
        AttributeError: ``name`` is not one of this package's names.
    """
    if name not in _LAZY:
        raise AttributeError(f"module 'sparse_lens' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "ACT_SITES",
    "PAPER_ACT_SITES",
    "BridgeConfig",
    "Bridges",
    "Circuit",
    "HookedSparseTransformer",
    "PruneConfig",
    "PruneRequest",
    "SparseTransformerConfig",
    "abs_topk",
    "binary_logits",
    "circuit_knockouts",
    "evaluate_bridges",
    "explain",
    "faithfulness_report",
    "fit_bridges",
    "from_circuit_sparsity",
    "get_task",
    "hybrid_forward",
    "load_dense",
    "make_ablation",
    "prepare_data",
    "project_weights_",
    "prune",
    "prune_task",
    "relaxed_target",
    "task_batch",
    "task_loss",
    "task_metrics",
    "task_table",
]


def from_circuit_sparsity(*args, **kwargs):  # noqa: ANN002, ANN003
    """See ``sparse_lens.openai_models.convert.from_circuit_sparsity``."""
    from sparse_lens.openai_models.convert import from_circuit_sparsity as convert

    return convert(*args, **kwargs)


def load_dense(*args, **kwargs):  # noqa: ANN002, ANN003
    """See ``sparse_lens.training.dense_baseline.load_dense``: a locally trained GPT-2 as a ``TransformerBridge``."""
    from sparse_lens.training.dense_baseline import load_dense as load

    return load(*args, **kwargs)
