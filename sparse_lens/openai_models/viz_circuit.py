"""Import a circuit OpenAI published for circuit_sparsity (``viz/<model>/<task>/.../viz_data.pt``).

The format, as OpenAI's public visualiser (``circuit_sparsity/viz.py`` in
github.com/openai/circuit_sparsity) and public readers of the released quote and bracket
circuits describe it: a dict with

* ``circuit_data``: a location ``"{layer}.{attn|mlp}.{name}"`` or ``final_resid`` (~97 on
  ``csp_yolo1``) -> a 1-D integer tensor of the kept channel indices there. q/k/v indices run
  over the projected space ``n_head * d_head`` (head ``i // d_head``), ``act_in`` and
  ``resid_delta`` over the residual space ``d_model``; optionally a ``prune_config`` entry.
* ``importances``: ``loss`` (the unpruned model) and ``interv_loss`` (the circuit), stored as
  twice the per-sequence task loss (the visualiser halves every stored loss);
  ``ch_interv_losses`` (location -> one loss per kept channel), ``loc_interv_losses``,
  ``task_samples`` (``(tokens [n, T] right-padded with id 0, activations)``),
  ``pair_data`` / ``pair_data_connections`` (``[matrix, sources, targets, (src, tgt)]``, a source
  list possibly ending in ``"bias"``), ``beeg_model_config``.
* ``prune_config``, ``all_loss`` (the pruning curve), ``num_total_nodes``, ``samples``.

The locations are the paper's node locations (App. A.5), which are ours (``circuits/nodes.py``):

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
pretraining windows (the file does not store them), and the file's own node and edge counts
beside (``file_counts``). Written from that reading code without a released file at hand: an
entry it does not describe is an error naming it.
"""

from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from sparse_lens.circuits.circuit import Circuit
from sparse_lens.circuits.nodes import node_locations
from sparse_lens.model.transformer import HookedSparseTransformer
from sparse_lens.openai_models.weights import safe_torch_load
from sparse_lens.vocab import PAPER_TARGET

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


def _indices(key: str, value: Any) -> list[int]:
    """The channel indices stored at ``key``: integers only (a float is refused, not cut)."""
    if isinstance(value, Tensor | np.ndarray):
        kind = value.dtype
        if isinstance(value, np.ndarray):
            integer = bool(np.issubdtype(value.dtype, np.integer))
        else:
            integer = not (value.is_floating_point() or value.is_complex() or kind == torch.bool)
        if not integer:
            raise ValueError(
                f"circuit_data[{key!r}] holds {kind} values {value.reshape(-1)[:5].tolist()}; "
                "channel indices must be integers"
            )
        return [int(i) for i in value.reshape(-1).tolist()]
    items = list(value) if isinstance(value, list | tuple) else [value]
    bad = [v for v in items if not isinstance(v, int | np.integer) or isinstance(v, bool)]
    if bad:
        raise ValueError(
            f"circuit_data[{key!r}] holds {bad[:5]!r}; channel indices must be integers"
        )
    return [int(i) for i in items]


def viz_nodes(circuit_data: dict[str, Any], n_layers: int) -> dict[str, list[int]]:
    """Kept channels per sparse_lens hook from ``circuit_data``.

    Raises:
        ValueError: a location that is not one of the table's, or an index that is not an
            integer (named with the value).
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
        nodes[hook] = sorted(set(_indices(key, value)))
    return nodes


def file_counts(viz: dict[str, Any]) -> tuple[int, int | None]:
    """The file's own node and edge counts: kept channels in ``circuit_data``, and nonzero
    entries of ``importances.pair_data_connections`` (``[matrix [n_src(+1), n_tgt], sources,
    targets, (src, tgt)]``; a source list ending in ``"bias"`` has a bias row, not counted),
    ``None`` when the file has none.

    Source: ``build_figure`` in ``circuit_sparsity/viz.py`` (github.com/openai/circuit_sparsity)
    and ``_save_edges`` in ``scripts/pt_to_parquet.py`` (github.com/michaelwaves/circuit_sparsity).

    Raises:
        ValueError: a ``pair_data_connections`` entry of another shape (named).
    """
    data = viz["circuit_data"]
    n_nodes = sum(len(_indices(k, v)) for k, v in data.items() if k != "prune_config")
    pairs = (viz.get("importances") or {}).get("pair_data_connections")
    if pairs is None:
        return n_nodes, None
    n_edges = 0
    for i, entry in enumerate(pairs):
        if not isinstance(entry, list | tuple) or len(entry) != 4:
            raise ValueError(f"pair_data_connections[{i}] is not [matrix, sources, targets, locs]")
        matrix, sources = torch.as_tensor(np.asarray(entry[0])), list(entry[1])
        rows = len(sources) - 1 if sources and sources[-1] == "bias" else len(sources)
        if matrix.numel() and (matrix.dim() != 2 or matrix.shape[0] < rows):
            raise ValueError(
                f"pair_data_connections[{i}] {entry[3]}: matrix {tuple(matrix.shape)} for "
                f"{len(sources)} sources"
            )
        n_edges += int((matrix[:rows] != 0).sum()) if matrix.numel() else 0
    return n_nodes, n_edges


def task_sample_ends(tokens: Int[Tensor, "n T"]) -> list[int]:
    """Index of the last real token of each of OpenAI's ``task_samples`` ``[n, T]`` (right-padded
    with id 0, a real token: as OpenAI's visualiser does, the padding is the run of zeros at
    the end), i.e. where the answer is read.

    Source: the task tab of ``circuit_sparsity/viz.py`` (github.com/openai/circuit_sparsity).

    Raises:
        ValueError: a sample is all padding.
    """
    nonzero = tokens != 0
    width = tokens.shape[1]
    last = width - 1 - nonzero.flip(1).int().argmax(1)
    empty = (~nonzero.any(1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"task_samples {empty[:5]} are all padding (id 0)")
    return last.tolist()


def _check_importances(
    imp: dict[str, Any], data: dict[str, Any], cfg: Any
) -> Int[Tensor, "n T"] | None:
    """Check the file's ``importances`` against its nodes and the model; returns the task
    samples' tokens (``None`` if the file has none)."""
    for loc, losses in (imp.get("ch_interv_losses") or {}).items():
        kept = data.get(loc)
        if kept is not None and len(losses) != len(_indices(loc, kept)):
            raise ValueError(
                f"importances.ch_interv_losses[{loc!r}] has {len(losses)} entries for "
                f"{len(_indices(loc, kept))} kept channels"
            )
    samples = imp.get("task_samples")
    if samples is None:
        return None
    tokens = torch.as_tensor(np.asarray(samples[0]))
    if tokens.dim() != 2 or tokens.is_floating_point() or tokens.dtype == torch.bool:
        raise ValueError(f"task_samples tokens: expected [n, T] integers, got {tokens.dtype}")
    if int(tokens.max()) >= cfg.d_vocab or tokens.shape[1] > cfg.n_ctx:
        raise ValueError(
            f"task_samples {tuple(tokens.shape)} with token ids up to {int(tokens.max())} do "
            f"not fit this model (vocab {cfg.d_vocab}, n_ctx {cfg.n_ctx}): another model's file?"
        )
    return tokens


def task_sample_agreement(
    model: HookedSparseTransformer, circuit: Circuit, tokens: Int[Tensor, "n T"]
) -> dict[str, Any]:
    """On OpenAI's own task samples: the answer positions (``task_sample_ends``) and the fraction
    of samples where the circuit's top next token there is the full model's.

    Raises:
        ValueError: a sample is all padding, or the circuit does not fit ``model``.
    """
    ends = torch.tensor(task_sample_ends(tokens))
    rows = torch.arange(len(ends))
    with torch.no_grad():
        full = model(tokens)[rows, ends].argmax(-1)
        kept = circuit.to_model(model)(tokens)[rows, ends].argmax(-1)
    agree = float((full == kept).float().mean())
    return {"n": len(ends), "answer_positions": ends.tolist(), "circuit_top1_agrees": agree}


def circuit_from_viz_data(
    viz: dict[str, Any],
    model: HookedSparseTransformer,
    ablation_values: dict[str, Tensor],
    *,
    task: str,
    target_loss: float = PAPER_TARGET,
) -> Circuit:
    """A ``Circuit`` of ``model`` keeping the nodes of ``viz["circuit_data"]``.

    ``ablation_values`` are the mean-ablation values per hook (``circuits.ablation.ablation_means``). The
    file's losses (halved, per sequence) go to ``loss`` / ``full_loss``; its ``prune_config``,
    raw numbers, own node and edge counts (``file_counts``) and, on its task samples, how
    often the circuit's top token at the answer position is the model's
    (``task_sample_agreement``) to ``extra``.

    Raises:
        ValueError: an unknown location, a channel index that is not an integer or lies outside
            its location, per-channel losses that do not match the kept channels, or task
            samples that do not fit the model (named).
    """
    cfg = model.cfg
    sizes = {loc.hook: loc.size for loc in node_locations(cfg)}
    nodes = viz_nodes(viz["circuit_data"], cfg.n_layers)
    for hook, chans in nodes.items():
        bad = [c for c in chans if not 0 <= c < sizes[hook]]
        if bad:
            raise ValueError(f"{hook}: channels {bad[:5]} outside 0..{sizes[hook] - 1}")
    imp = viz.get("importances", {}) or {}
    tokens = _check_importances(imp, viz["circuit_data"], cfg)
    file_nodes, file_edges = file_counts(viz)

    def halved(key: str) -> float:
        value = imp.get(key)
        return float(value) / 2 if isinstance(value, int | float | Tensor) else float("nan")

    prune_config = viz["circuit_data"].get("prune_config", viz.get("prune_config"))
    circuit = Circuit.from_nodes(
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
            "oai_file_nodes": file_nodes,
            "oai_file_edges": file_edges,
            "oai_num_total_nodes": _plain(viz.get("num_total_nodes")),
            "oai_loc_interv_losses": _plain(imp.get("loc_interv_losses")),
            "total_nodes": sum(sizes.values()),
        },
    )
    if tokens is not None:
        circuit.extra["oai_task_samples"] = task_sample_agreement(model, circuit, tokens)
    return circuit


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
