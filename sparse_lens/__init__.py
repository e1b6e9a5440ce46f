"""sparse_lens: weight-sparse transformers (Gao et al. 2025) as TransformerLens models.

>>> import torch
>>> from sparse_lens import HookedSparseTransformer, SparseTransformerConfig
>>> model = HookedSparseTransformer(SparseTransformerConfig.tiny(seed=0))
>>> model(torch.zeros(1, 4, dtype=torch.long)).shape
torch.Size([1, 4, 64])
"""

from typing import TYPE_CHECKING, Any

from hooks.topk import abs_topk
from sparse_lens.model.config import ACT_SITES, PAPER_ACT_SITES, SparseTransformerConfig
from sparse_lens.model.sparsity import project_weights_
from sparse_lens.model.transformer import HookedSparseTransformer

if TYPE_CHECKING:  # imported on first use at run time (``__getattr__``)
    from sparse_lens.circuits.circuit import Circuit
    from sparse_lens.circuits.explain import explain
    from sparse_lens.circuits.faithfulness import faithfulness_report
    from sparse_lens.tasks.task import get_task

__version__ = "0.1.0"

__all__ = [
    "ACT_SITES",
    "PAPER_ACT_SITES",
    "Circuit",
    "HookedSparseTransformer",
    "SparseTransformerConfig",
    "abs_topk",
    "explain",
    "faithfulness_report",
    "from_circuit_sparsity",
    "get_task",
    "load_dense",
    "project_weights_",
]


def from_circuit_sparsity(*args, **kwargs):  # noqa: ANN002, ANN003
    """See ``sparse_lens.openai_models.convert.from_circuit_sparsity``."""
    from sparse_lens.openai_models.convert import from_circuit_sparsity as convert

    return convert(*args, **kwargs)


def load_dense(*args, **kwargs):  # noqa: ANN002, ANN003
    """See ``sparse_lens.training.dense_baseline.load_dense``: a locally trained GPT-2 as a ``TransformerBridge``."""
    from sparse_lens.training.dense_baseline import load_dense as load

    return load(*args, **kwargs)


_LAZY = {
    "Circuit": "sparse_lens.circuits.circuit",
    "explain": "sparse_lens.circuits.explain",
    "faithfulness_report": "sparse_lens.circuits.faithfulness",
    "get_task": "sparse_lens.tasks.task",
}


def __getattr__(name: str) -> Any:
    """``Circuit``, ``explain``, ``faithfulness_report`` and ``get_task``, imported on first
    use so that ``import sparse_lens`` loads the model only.

    Raises:
        AttributeError: any other name.
    """
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sparse_lens' has no attribute {name!r}")
