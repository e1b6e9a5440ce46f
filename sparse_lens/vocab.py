"""The library's vocabulary: node sites and enumerated settings, in one torch-free module.

The model (``model/config.py``), the circuits (``circuits/nodes.py``) and the command line's
parser (``analyses/cli``) import these names from here, so each is spelled once and
``sparse-lens --help`` answers without importing torch. This module imports nothing but
``typing`` and ``math``.

Sites (Gao et al. 2025, arXiv 2511.13653, App. A and A.5): an AbsTopK site (``ActSite``) is where
the model keeps the largest-magnitude fraction of an activation; a circuit node kind
(``NodeKind``) is where pruning masks channels. The eight paper sites are the same places under
both names (``NODE_KIND_SITE``); the circuit adds ``final``, the residual stream the unembedding
reads, and the model two residual-stream sites the paper's models leave off.

| ``NodeKind`` | ``ActSite`` | TL hook of the node |
|---|---|---|
| ``attn_in`` | ``attn_in`` | ``blocks.{l}.attn.hook_in`` |
| ``q``, ``k``, ``v`` | ``attn_q``, ``attn_k``, ``attn_v`` | ``blocks.{l}.attn.hook_{q,k,v}`` |
| ``attn_out`` | ``attn_out`` | ``blocks.{l}.hook_attn_out`` |
| ``mlp_in`` | ``mlp_in`` | ``blocks.{l}.mlp.hook_in`` |
| ``neuron`` | ``mlp_neuron`` | ``blocks.{l}.mlp.hook_post`` |
| ``mlp_out`` | ``mlp_out`` | ``blocks.{l}.hook_mlp_out`` |
| ``final`` | (none) | ``blocks.{L-1}.hook_resid_post`` |
| (none) | ``resid_post_attn``, ``resid_post_mlp`` | (not a node) |
"""

import math
from typing import Literal, get_args

ActSite = Literal[
    "attn_in",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_out",
    "mlp_in",
    "mlp_neuron",
    "mlp_out",
    "resid_post_attn",
    "resid_post_mlp",
]
ACT_SITES: tuple[ActSite, ...] = get_args(ActSite)
PAPER_ACT_SITES: tuple[ActSite, ...] = (
    "attn_in",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_out",
    "mlp_in",
    "mlp_neuron",
    "mlp_out",
)

NodeKind = Literal["attn_in", "q", "k", "v", "attn_out", "mlp_in", "neuron", "mlp_out", "final"]
NODE_KINDS: tuple[NodeKind, ...] = get_args(NodeKind)
# The AbsTopK site at each node kind's place (the table above); final has none.
NODE_KIND_SITE: dict[NodeKind, ActSite | None] = {
    "attn_in": "attn_in",
    "q": "attn_q",
    "k": "attn_k",
    "v": "attn_v",
    "attn_out": "attn_out",
    "mlp_in": "mlp_in",
    "neuron": "mlp_neuron",
    "mlp_out": "mlp_out",
    "final": None,
}

# What a pruned-away node's channels hold (App. A.5: mean ablation over the task's data).
AblationKind = Literal["mean", "zero", "resample"]
ABLATIONS: tuple[AblationKind, ...] = get_args(AblationKind)
# How the circuit search picks its hyperparameters (circuits.find).
SearchMethod = Literal["optuna", "grid", "none"]
SEARCH_METHODS: tuple[SearchMethod, ...] = get_args(SearchMethod)
# Where a sweep's jobs run: submitit's local processes, SLURM, or this process.
Cluster = Literal["local", "slurm", "debug"]
CLUSTERS: tuple[Cluster, ...] = get_args(Cluster)
# A task's example splits.
TaskSplit = Literal["train", "val", "test"]
SPLITS: tuple[TaskSplit, ...] = get_args(TaskSplit)
# The named model + training settings of ``sparse-lens train --preset`` (training.presets).
PresetName = Literal["demo", "paper", "study", "tiny"]
PRESET_NAMES: tuple[PresetName, ...] = get_args(PresetName)

# Every task is a choice between two candidate tokens, so ln 2 nats is a coin flip's loss.
CHANCE_LOSS = math.log(2)

PAPER_TARGET = 0.15
"""The paper's target task loss for a circuit (App. A.5), in nats per sequence; a task whose
full-model loss is at most this counts as *solved* (``sparse_lens.tasks.selection.is_solved``)."""

SAMPLE_WINDOWS = 32
"""Pretraining windows a circuit card's node statistics and top contexts are measured on, by
default: ``sparse-lens explain --windows``, ``sparse-lens report --windows`` (and the demo's
report), so a card on a report page and one from ``explain`` are the same numbers."""

__all__ = [
    "ABLATIONS",
    "ACT_SITES",
    "CHANCE_LOSS",
    "CLUSTERS",
    "NODE_KINDS",
    "NODE_KIND_SITE",
    "PAPER_ACT_SITES",
    "PAPER_TARGET",
    "SAMPLE_WINDOWS",
    "PRESET_NAMES",
    "SEARCH_METHODS",
    "SPLITS",
    "AblationKind",
    "ActSite",
    "Cluster",
    "NodeKind",
    "PresetName",
    "SearchMethod",
    "TaskSplit",
]
