"""Key/value cache for incremental decoding (``HookedSparseTransformer.generate``).

Every operation of the model except attention acts on one position at a time (RMSNorm, AbsTopK
over a token's own vector, MLP, bigram table), so a new token's forward pass needs only the
earlier positions' keys and values of each layer. Outputs equal the full rerun's exactly.
"""

from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor


@dataclass
class KVEntry:
    """One layer's keys and values so far, ``[batch pos head_index d_head]``."""

    k: Tensor | None = None
    v: Tensor | None = None

    def extend(
        self, k: Float[Tensor, "batch new h e"], v: Float[Tensor, "batch new h e"]
    ) -> tuple[Tensor, Tensor]:
        """Append the new positions' ``k``, ``v``; return all keys and values."""
        if self.k is not None and self.v is not None:
            k, v = torch.cat([self.k, k], dim=1), torch.cat([self.v, v], dim=1)
        self.k, self.v = k, v
        return k, v


@dataclass
class KVCache:
    """Per-layer ``KVEntry`` and the attention mask of every position seen (1 = real token)."""

    entries: list[KVEntry]
    mask: Int[Tensor, "batch pos"] | None = field(default=None)

    @classmethod
    def empty(cls, n_layers: int) -> "KVCache":
        return cls([KVEntry() for _ in range(n_layers)])

    @property
    def n_pos(self) -> int:
        return 0 if self.mask is None else int(self.mask.shape[1])

    def extend_mask(self, new: Int[Tensor, "batch new"]) -> Int[Tensor, "batch pos"]:
        """Append the new positions' mask; return the mask of all positions."""
        self.mask = new if self.mask is None else torch.cat([self.mask, new], dim=1)
        return self.mask
