"""sparse_lens: weight-sparse transformers (Gao et al. 2025) as TransformerLens models.

>>> import torch
>>> from sparse_lens import HookedSparseTransformer, SparseTransformerConfig
>>> model = HookedSparseTransformer(SparseTransformerConfig.tiny(seed=0))
>>> model(torch.zeros(1, 4, dtype=torch.long)).shape
torch.Size([1, 4, 64])
"""

from hooks.topk import abs_topk
from sparse_lens.model.config import ACT_SITES, PAPER_ACT_SITES, SparseTransformerConfig
from sparse_lens.model.sparsity import project_weights_
from sparse_lens.model.transformer import HookedSparseTransformer

__version__ = "0.1.0"

__all__ = [
    "ACT_SITES",
    "PAPER_ACT_SITES",
    "HookedSparseTransformer",
    "SparseTransformerConfig",
    "abs_topk",
    "from_circuit_sparsity",
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
