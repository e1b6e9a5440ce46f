"""The bridge page's analyses: bridge quality per site, steering through a bridge, and activation
patching and attention sinks side by side on the sparse and the dense model, with the attention
patterns of corresponding heads. ``bridge_page_data`` runs both models and returns the page's
data (``BridgePageData``); ``render_bridge_page`` (``analyses/bridge_view.py``) renders it."""

from typing import Any

import circuitsvis.attention
import torch

from analyses.html import circuitsvis_html
from analyses.page_data import (
    BridgePageData,
    Grid,
    HeadPairView,
    ModelFacts,
    PatchingGrids,
    SinkGrids,
    SteeringView,
)
from analyses.side_by_side import corresponding_heads, patching_pair, sink_profile
from analyses.steering import SteeringResult, paired_batches, pick_read_node, steering_curve
from sparse_lens.bridges.maps import Bridges, check_pair
from sparse_lens.bridges.train import evaluate_bridges
from sparse_lens.circuits.circuit import Circuit
from sparse_lens.data.tokenizer import Tokenizer
from sparse_lens.model.transformer import HookedSparseTransformer
from sparse_lens.tasks.task import Task, TaskBatch, task_batch

HeadPair = tuple[tuple[int, int], tuple[int, int], float]  # sparse head, dense head, similarity
DenseModel = (
    Any  # a TL model with ``cfg`` and ``run_with_cache``: ``load_dense``'s TransformerBridge
)


def bridge_page_data(
    dense: DenseModel,
    sparse: HookedSparseTransformer,
    bridges: Bridges,
    task: Task,
    windows: torch.Tensor,
    *,
    circuit: Circuit | None = None,
    n: int = 64,
    seed: int = 0,
    max_heads: int = 4,
) -> BridgePageData:
    """Every number and view the bridge page shows, on ``n`` test examples of ``task`` and the
    corpus ``windows``; the steered node is the residual read (of ``circuit``'s, if given) that
    best separates the task's answers; ``max_heads`` corresponding head pairs are shown.

    Raises:
        ValueError: the models and bridges do not pair (``check_pair``), ``circuit`` is not of
            ``sparse``, or the task has no equal-length pairs.
    """
    check_pair(dense, sparse, bridges)
    tok = sparse.require_tokenizer()
    batch = task_batch(task, tok, sparse.cfg.n_ctx, "test", n, seed)
    hook, channel, score = pick_read_node(sparse, batch, _reads(sparse, circuit))
    steer = steering_curve(dense, sparse, bridges, batch, hook, channel, windows, seed=seed)
    quality = evaluate_bridges(dense, sparse, bridges, windows)
    patching = {"sparse": _patching(sparse, batch, tok), "dense": _patching(dense, batch, tok)}
    sinks = {
        "sparse": _sinks(sink_profile(sparse, batch, windows, learned=bool(sparse.cfg.attn_sinks))),
        "dense": _sinks(sink_profile(dense, batch, windows, learned=False)),
    }
    pairs = corresponding_heads(sparse, dense, batch)[:max_heads]
    return BridgePageData(
        task=task.name,
        sparse=_facts(sparse, quality["ce"]),
        dense=_facts(dense, quality["dense_ce"]),
        bridges=quality,
        steering=steering_view(steer, score, batch, tok),
        patching=patching,
        sinks=sinks,
        heads=_head_pairs(sparse, dense, batch, pairs, tok),
    )


def _reads(sparse: HookedSparseTransformer, circuit: Circuit | None) -> dict[str, list[int]]:
    """The residual reads a steered node is picked from: all, or the circuit's kept ones."""
    reads = {
        f"blocks.{i}.{k}.hook_in": list(range(sparse.cfg.d_model))
        for i in range(sparse.cfg.n_layers)
        for k in ("attn", "mlp")
    }
    if circuit is not None:
        circuit.check_model(sparse)
        reads = {h: circuit.nodes.get(h, []) for h in reads}
    return reads


def _facts(model: Any, ce: float) -> ModelFacts:
    cfg = model.cfg
    return ModelFacts(
        class_name=type(model).__name__,
        n_layers=cfg.n_layers,
        d_model=cfg.d_model,
        n_heads=cfg.n_heads,
        ce=ce,
    )


def _grid(t: torch.Tensor) -> Grid:
    return tuple(tuple(float(v) for v in row) for row in t)


def _patching(model: Any, batch: TaskBatch, tok: Tokenizer) -> PatchingGrids:
    res = patching_pair(model, batch)
    resid = _grid(res["resid_pre"])
    tokens = tuple(tok.token_str(t) for t in res["tokens"])[: len(resid[0])]
    return PatchingGrids(resid_pre=resid, head_out=_grid(res["head_out"]), tokens=tokens)


def _sinks(profile: dict[str, torch.Tensor]) -> SinkGrids:
    keys = ("corpus_sink_mass", "task_sink_mass", "removal_effect", "threshold_score")
    return SinkGrids(**{k: _grid(profile[k]) for k in keys})


def steering_view(
    s: SteeringResult, score: float, batch: TaskBatch, tok: Tokenizer
) -> SteeringView:
    """The page data of one steering curve (``analyses.steering.steering_curve``): the node and
    its separation ``score``, the answers it moves between, the probabilities per strength."""
    shown, counterfactual = paired_batches(batch)  # the pairs the steering curve is over
    return SteeringView(
        node=s.node,
        site=s.site,
        node_score=score,
        target=tok.token_str(int(counterfactual.correct[0])),
        presented=tok.token_str(int(shown.correct[0])),
        strengths=tuple(s.strengths),
        p_target=tuple(s.p_target),
        p_target_random=tuple(s.p_target_random),
        p_presented=tuple(s.p_presented),
        n_pairs=s.n_pairs,
    )


@torch.no_grad()
def _head_pairs(
    sparse: HookedSparseTransformer,
    dense: DenseModel,
    batch: TaskBatch,
    pairs: list[HeadPair],
    tok: Tokenizer,
) -> tuple[HeadPairView, ...]:
    """Each pair's two attention patterns on the first presented context, as one view."""
    shown, _ = paired_batches(batch)
    n = int(shown.last[0]) + 1
    tokens = [tok.token_str(t) for t in shown.tokens[0, :n].tolist()]
    one = shown.tokens[:1, :n]
    _, s_cache = sparse.run_with_cache(one)
    _, d_cache = dense.run_with_cache(one)
    views = []
    for (sl, sh), (dl, dh), sim in pairs:
        attn = torch.stack(
            [
                s_cache[f"blocks.{sl}.attn.hook_pattern"][0, sh],
                d_cache[f"blocks.{dl}.attn.hook_pattern"][0, dh],
            ]
        )
        view = circuitsvis_html(
            circuitsvis.attention.attention_heads,
            attention=attn,
            tokens=tokens,
            attention_head_names=[f"sparse L{sl}H{sh}", f"dense L{dl}H{dh}"],
        )
        views.append(HeadPairView(sparse=(sl, sh), dense=(dl, dh), similarity=sim, view=view))
    return tuple(views)
