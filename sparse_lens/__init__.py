"""sparse_lens: weight-sparse transformers (Gao et al. 2025) as TransformerLens models.

>>> from sparse_lens import HookedSparseTransformer, SparseTransformerConfig
>>> model = HookedSparseTransformer(SparseTransformerConfig.tiny(seed=0))
>>> model(torch.zeros(1, 4, dtype=torch.long)).shape
torch.Size([1, 4, 64])
"""

from hooks.topk import abs_topk
from sparse_lens.config import ACT_SITES, PAPER_ACT_SITES, SparseTransformerConfig
from sparse_lens.model import HookedSparseTransformer
from sparse_lens.sparsity import project_weights_

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
    """See ``sparse_lens.circuit_sparsity.from_circuit_sparsity``."""
    from sparse_lens.circuit_sparsity import from_circuit_sparsity as convert

    return convert(*args, **kwargs)


def load_dense(*args, **kwargs):  # noqa: ANN002, ANN003
    """See ``sparse_lens.dense.load_dense``: a locally trained GPT-2 as a ``TransformerBridge``."""
    from sparse_lens.dense import load_dense as load

    return load(*args, **kwargs)
