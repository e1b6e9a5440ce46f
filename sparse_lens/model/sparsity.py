"""Which parameters of a ``HookedSparseTransformer`` are sparse, and at which density
(arXiv 2511.13653 §2).

The maths (top-k, AbsTopK) and the optimizer hooks live in ``hooks`` (``hooks.topk``,
``hooks.weight_sparsity``); this module only knows the model's parameter names:

* ``param_role`` classifies a parameter by name;
* ``sparse_params`` lists the model's sparse parameters for the hooks, in two density groups
  (``"matrix"``: block matrices; ``"embed"``: embeddings, unembedding, biases);
* ``project_weights_`` projects a whole model once.
"""

from typing import Literal

import torch
from torch import nn

from hooks.weight_sparsity import NEURON_FAN_DIM, SparseParam, project_

ParamRole = Literal["matrix", "embed", "unembed", "bias", "dense"]


def param_role(name: str) -> ParamRole:
    """Sparsity role of a ``HookedSparseTransformer`` parameter, from its name.

    | role | parameters | projected to |
    |---|---|---|
    | ``matrix`` | ``W_Q W_K W_V W_O W_in W_out`` in every block | ``weight_density`` |
    | ``embed`` | ``embed.W_E``, ``pos_embed.W_pos`` | ``embed_density`` |
    | ``unembed`` | ``unembed.W_U`` | ``embed_density`` |
    | ``bias`` | every ``b_*`` | ``embed_density`` |
    | ``dense`` | norm gains ``w``, attention ``sinks``, the bigram table | never |

    Raises:
        ValueError: a name with none of these roles.
    """
    leaf = name.rsplit(".", 1)[-1]
    if leaf in NEURON_FAN_DIM:
        return "matrix"
    if leaf in ("W_E", "W_pos"):
        return "embed"
    if leaf == "W_U":
        return "unembed"
    if leaf.startswith("b_"):
        return "bias"
    if leaf in ("w", "sinks", "W_bigram"):
        return "dense"
    raise ValueError(f"no sparsity role known for parameter {name!r}")


def density_for(role: ParamRole, weight_density: float, embed_density: float) -> float:
    """Target nonzero fraction of a parameter with ``role`` (1.0 for dense roles)."""
    if role == "matrix":
        return weight_density
    if role in ("embed", "unembed", "bias"):
        return embed_density
    return 1.0


def sparse_params(model: nn.Module) -> list[SparseParam]:
    """The sparse parameters of a ``HookedSparseTransformer`` for ``hooks.weight_sparsity``:
    block matrices in group ``"matrix"`` with their neuron fan dimension (``NEURON_FAN_DIM``),
    embeddings, unembedding and biases in group ``"embed"`` without a per-neuron minimum."""
    out: list[SparseParam] = []
    for name, p in model.named_parameters():
        role = param_role(name)
        if role == "matrix":
            fan_dim = NEURON_FAN_DIM[name.rsplit(".", 1)[-1]]
            out.append(SparseParam(name=name, param=p, group="matrix", fan_dim=fan_dim))
        elif role != "dense":
            out.append(SparseParam(name=name, param=p, group="embed"))
    return out


@torch.no_grad()
def project_weights_(
    model: nn.Module,
    *,
    weight_density: float,
    embed_density: float,
    min_per_neuron: int,
) -> dict[str, int]:
    """Zero, in place, all but the top-k entries of every sparse parameter of ``model``.

    Densities at 1.0 leave a role untouched; ``dense`` parameters are never touched.

    Returns:
        Nonzeros kept per projected parameter name.

    Raises:
        ValueError: a parameter without a sparsity role, or a density too low to keep
            ``min_per_neuron`` entries per neuron.
    """
    densities = {"matrix": weight_density, "embed": embed_density}
    return project_(sparse_params(model), densities, min_per_neuron)
