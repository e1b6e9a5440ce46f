"""Circuits: nodes, edges, mask-training pruning, search, clean-up and faithfulness checks."""
