"""Circuit nodes: the paper's mask locations (arXiv 2511.13653, App. A.5) as TL hook names.

| kind | hook | channels |
|---|---|---|
| ``attn_in`` | ``blocks.{l}.attn.hook_in`` | ``d_model`` (residual reads after ``ln1`` and AbsTopK) |
| ``q``, ``k``, ``v`` | ``blocks.{l}.attn.hook_{q,k,v}`` | ``n_heads * d_head`` (head ``c // d_head``) |
| ``attn_out`` | ``blocks.{l}.hook_attn_out`` | ``d_model`` (residual writes) |
| ``mlp_in`` | ``blocks.{l}.mlp.hook_in`` | ``d_model`` |
| ``neuron`` | ``blocks.{l}.mlp.hook_post`` | ``d_mlp`` (post-activation, post-AbsTopK) |
| ``mlp_out`` | ``blocks.{l}.hook_mlp_out`` | ``d_model`` |
| ``final`` | ``blocks.{L-1}.hook_resid_post`` | ``d_model`` (the residual stream before ``ln_final``) |

A node is ``(hook name, channel)``. Edges are nonzero weights between two nodes of the same block:
``attn_in -> q/k/v`` (``W_Q, W_K, W_V``), ``v -> attn_out`` (``W_O``; attention mixes positions,
not channels), ``mlp_in -> neuron`` (``W_in``) and ``neuron -> mlp_out`` (``W_out``). Not counted:
residual identity paths (a write to channel c read later at channel c), token embedding and
unembedding entries, biases, and q-k pairings (a dot product, not a weight).
"""

from dataclasses import dataclass

from sparse_lens.model.config import SparseTransformerConfig
from sparse_lens.vocab import NodeKind


@dataclass(frozen=True)
class Location:
    """A mask location: ``kind`` at ``layer`` hooked at ``hook`` with ``size`` channels."""

    kind: NodeKind
    layer: int
    hook: str
    size: int


def node_locations(cfg: SparseTransformerConfig) -> list[Location]:
    """Every mask location of a model, in forward order."""
    hd = cfg.n_heads * cfg.d_head
    out = []
    for layer in range(cfg.n_layers):
        b = f"blocks.{layer}"
        out += [
            Location("attn_in", layer, f"{b}.attn.hook_in", cfg.d_model),
            Location("q", layer, f"{b}.attn.hook_q", hd),
            Location("k", layer, f"{b}.attn.hook_k", hd),
            Location("v", layer, f"{b}.attn.hook_v", hd),
            Location("attn_out", layer, f"{b}.hook_attn_out", cfg.d_model),
            Location("mlp_in", layer, f"{b}.mlp.hook_in", cfg.d_model),
            Location("neuron", layer, f"{b}.mlp.hook_post", cfg.d_mlp),
            Location("mlp_out", layer, f"{b}.hook_mlp_out", cfg.d_model),
        ]
    out.append(
        Location(
            "final", cfg.n_layers - 1, f"blocks.{cfg.n_layers - 1}.hook_resid_post", cfg.d_model
        )
    )
    return out


def node_label(loc: Location, index: int, cfg: SparseTransformerConfig) -> str:
    """Human-readable node name, e.g. ``1.attn.v.h3.c2`` or ``0.mlp.neuron.57``."""
    if loc.kind in ("q", "k", "v"):
        return f"{loc.layer}.attn.{loc.kind}.h{index // cfg.d_head}.c{index % cfg.d_head}"
    part = "attn" if loc.kind.startswith("attn") else "mlp" if loc.kind != "final" else "resid"
    return f"{loc.layer}.{part}.{loc.kind}.{index}"
