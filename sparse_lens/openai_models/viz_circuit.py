"""Import a circuit OpenAI published for circuit_sparsity (``viz/<model>/<task>/.../viz_data.pt``).

The format, as OpenAI's public visualiser (``circuit_sparsity/viz.py``) reads it: a dict with
``circuit_data`` mapping a location ``"{layer}.{attn|mlp}.{name}"`` to a 1-D tensor of the kept
channel indices at that location (q/k/v indices run over ``n_head * d_head``, head ``i //
d_head``), optionally with a ``prune_config`` entry; and ``importances`` with ``loss`` (the
unpruned model) and ``interv_loss`` (the circuit), stored as twice the per-sequence task loss
(the visualiser halves every stored loss). Their locations are the paper's node locations
(App. A.5), which are ours (``circuits/nodes.py``):

| viz_data location | sparse_lens hook |
|---|---|
| ``{l}.attn.act_in`` | ``blocks.{l}.attn.hook_in`` |
| ``{l}.attn.q`` / ``k`` / ``v`` | ``blocks.{l}.attn.hook_q`` / ``hook_k`` / ``hook_v`` |
| ``{l}.attn.resid_delta`` | ``blocks.{l}.hook_attn_out`` |
| ``{l}.mlp.act_in`` | ``blocks.{l}.mlp.hook_in`` |
| ``{l}.mlp.post_act`` | ``blocks.{l}.mlp.hook_post`` |
| ``{l}.mlp.resid_delta`` | ``blocks.{l}.hook_mlp_out`` |
| ``final_resid`` | ``blocks.{L-1}.hook_resid_post`` |

``circuit_from_viz_data`` turns the kept nodes into a ``Circuit`` of an imported model (edges
counted our way, from that model's weights), with mean-ablation values computed by us over
pretraining windows (the file does not store them). Written from the visualiser's reading code
without a released file at hand: an entry it does not describe is an error naming it.
"""

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sparse_lens.circuits.circuit import Circuit
from sparse_lens.circuits.nodes import node_locations
from sparse_lens.model.transformer import HookedSparseTransformer
from sparse_lens.openai_models.weights import safe_torch_load

_PARTS = {
    "attn.act_in": "attn.hook_in",
    "attn.q": "attn.hook_q",
    "attn.k": "attn.hook_k",
    "attn.v": "attn.hook_v",
    "attn.resid_delta": "hook_attn_out",
    "mlp.act_in": "mlp.hook_in",
    "mlp.post_act": "mlp.hook_post",
    "mlp.resid_delta": "hook_mlp_out",
}


def load_viz_data(path: str | Path) -> dict[str, Any]:
    """``viz_data.pt`` read with ``torch.load(weights_only=True)`` (NumPy arrays allowed, as
    plain data); a file needing any other code to unpickle is refused.

    Raises:
        FileNotFoundError, UnsafeCheckpointError, ValueError (corrupt or not a dict).
    """
    import numpy as np
    from numpy._core.multiarray import _reconstruct

    # NumPy arrays as data; pickles from NumPy 1.x name the function numpy.core.multiarray
    numpy_data: list[Any] = [np.ndarray, np.dtype, _reconstruct]
    numpy_data += [(_reconstruct, "numpy.core.multiarray._reconstruct")]
    numpy_data += [type(np.dtype(t)) for t in ("float32", "float64", "int64", "int32", "bool")]
    path = Path(path)
    obj = safe_torch_load(path, "viz_data file", tuple(numpy_data))
    if not isinstance(obj, dict) or "circuit_data" not in obj:
        raise ValueError(f"{path}: expected a dict with 'circuit_data' (OpenAI's viz_data.pt)")
    return obj


def viz_nodes(circuit_data: dict[str, Any], n_layers: int) -> dict[str, list[int]]:
    """Kept channels per sparse_lens hook from ``circuit_data``.

    Raises:
        ValueError: a location that is not one of the table's (named).
    """
    nodes: dict[str, list[int]] = {}
    for key, value in circuit_data.items():
        if key == "prune_config":
            continue
        if key == "final_resid":
            hook = f"blocks.{n_layers - 1}.hook_resid_post"
        else:
            layer, _, part = key.partition(".")
            if not layer.isdigit() or part not in _PARTS or int(layer) >= n_layers:
                raise ValueError(
                    f"circuit_data location {key!r} is not one of "
                    f"'{{layer < {n_layers}}}.{{{','.join(_PARTS)}}}' or 'final_resid'"
                )
            hook = f"blocks.{int(layer)}.{_PARTS[part]}"
        nodes[hook] = sorted({int(i) for i in torch.as_tensor(value).reshape(-1).tolist()})
    return nodes


def circuit_from_viz_data(
    viz: dict[str, Any],
    model: HookedSparseTransformer,
    ablation_values: dict[str, Tensor],
    *,
    task: str,
    target_loss: float = 0.15,
) -> Circuit:
    """A ``Circuit`` of ``model`` keeping the nodes of ``viz["circuit_data"]``.

    ``ablation_values`` are the mean-ablation values per hook (``circuits.masks.ablation_means``). The
    file's losses (halved, per sequence) go to ``loss`` / ``full_loss``; its ``prune_config``
    and raw numbers to ``extra``.

    Raises:
        ValueError: an unknown location, or a channel index outside its location (named).
    """
    cfg = model.cfg
    sizes = {loc.hook: loc.size for loc in node_locations(cfg)}
    nodes = viz_nodes(viz["circuit_data"], cfg.n_layers)
    for hook, chans in nodes.items():
        bad = [c for c in chans if not 0 <= c < sizes[hook]]
        if bad:
            raise ValueError(f"{hook}: channels {bad[:5]} outside 0..{sizes[hook] - 1}")
    imp = viz.get("importances", {}) or {}

    def halved(key: str) -> float:
        value = imp.get(key)
        return float(value) / 2 if isinstance(value, int | float | Tensor) else float("nan")

    prune_config = viz["circuit_data"].get("prune_config", viz.get("prune_config"))
    return Circuit.from_nodes(
        model,
        nodes,
        ablation_values,
        task=task,
        ablation="mean",
        target_loss=target_loss,
        loss=halved("interv_loss"),
        full_loss=halved("loss"),
        extra={
            "source": "OpenAI viz_data.pt",
            "prune_config": _plain(prune_config),
            "oai_stored_loss": _plain(imp.get("loss")),
            "oai_stored_interv_loss": _plain(imp.get("interv_loss")),
            "total_nodes": sum(sizes.values()),
        },
    )


def _plain(value: Any) -> Any:
    """JSON-ready copy of small config values (tensors become lists)."""
    if isinstance(value, Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)
