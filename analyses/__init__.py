"""Studies built on ``sparse_lens`` and ``hooks``: attention sinks, patching, circuit reports.

Each analysis is a function returning data; commands that write pages build on those functions.
The names a notebook needs are importable from here (``from analyses import heatmap``), each
imported on first use (PEP 562), so ``import analyses`` stays light.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from analyses.attention_sinks import sink_mass
    from analyses.bridge_report import steering_view
    from analyses.bridge_view import steering_plot
    from analyses.card import card_markdown
    from analyses.cli import main as command
    from analyses.node_panels import attribution_effects, node_values, top_contexts
    from analyses.plots import embed, heatmap
    from analyses.side_by_side import corresponding_heads, patching_pair, sink_profile
    from analyses.steering import paired_batches, pick_read_node, steering_curve

_LAZY = {
    "sink_mass": ("analyses.attention_sinks", "sink_mass"),
    "steering_view": ("analyses.bridge_report", "steering_view"),
    "steering_plot": ("analyses.bridge_view", "steering_plot"),
    "command": ("analyses.cli", "main"),  # the `sparse-lens` command, in-process
    "card_markdown": ("analyses.card", "card_markdown"),
    "attribution_effects": ("analyses.node_panels", "attribution_effects"),
    "node_values": ("analyses.node_panels", "node_values"),
    "top_contexts": ("analyses.node_panels", "top_contexts"),
    "embed": ("analyses.plots", "embed"),
    "heatmap": ("analyses.plots", "heatmap"),
    "corresponding_heads": ("analyses.side_by_side", "corresponding_heads"),
    "patching_pair": ("analyses.side_by_side", "patching_pair"),
    "sink_profile": ("analyses.side_by_side", "sink_profile"),
    "paired_batches": ("analyses.steering", "paired_batches"),
    "pick_read_node": ("analyses.steering", "pick_read_node"),
    "steering_curve": ("analyses.steering", "steering_curve"),
}


def __getattr__(name: str) -> Any:
    """The notebook names, imported on first access.

    Raises:
        AttributeError: ``name`` is not one of this package's names.
    """
    if name not in _LAZY:
        raise AttributeError(f"module 'analyses' has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


__all__ = [
    "attribution_effects",
    "card_markdown",
    "command",
    "corresponding_heads",
    "embed",
    "heatmap",
    "node_values",
    "paired_batches",
    "patching_pair",
    "pick_read_node",
    "sink_mass",
    "sink_profile",
    "steering_curve",
    "steering_plot",
    "steering_view",
    "top_contexts",
]
