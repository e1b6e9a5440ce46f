"""``sparse_lens.vocab``: one torch-free spelling of the node sites and the enumerated settings."""

import json
import subprocess
import sys
from pathlib import Path

from sparse_lens import vocab
from sparse_lens.circuits.nodes import node_locations
from sparse_lens.model.config import SparseTransformerConfig
from sparse_lens.training.presets import PRESETS, get_preset

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys
import sparse_lens.vocab
sys.stderr.write(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in sys.argv[1:])))
"""


def test_vocab_imports_without_torch():
    """A fresh interpreter that imports the vocabulary holds no torch, TL, numpy or library
    module but the vocabulary and its package."""
    roots = ["torch", "transformer_lens", "numpy", "sparse_lens", "hooks", "analyses"]
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *roots], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stderr.strip().splitlines()[-1]) == ["sparse_lens", "sparse_lens.vocab"]


def test_node_kinds_are_the_paper_sites_plus_final():
    """Each node kind but ``final`` sits at one paper AbsTopK site, each paper site under one kind."""
    sites = [vocab.NODE_KIND_SITE[kind] for kind in vocab.NODE_KINDS]
    assert set(vocab.NODE_KIND_SITE) == set(vocab.NODE_KINDS)
    assert [k for k, s in vocab.NODE_KIND_SITE.items() if s is None] == ["final"]
    assert sorted(s for s in sites if s is not None) == sorted(vocab.PAPER_ACT_SITES)
    assert set(vocab.PAPER_ACT_SITES) < set(vocab.ACT_SITES)


def test_every_node_location_has_a_vocabulary_kind():
    cfg = SparseTransformerConfig.tiny(seed=0)
    assert {loc.kind for loc in node_locations(cfg)} == set(vocab.NODE_KINDS)


def test_every_preset_name_is_a_preset():
    """The CLI offers ``PRESET_NAMES``; each one loads, and no preset goes unnamed."""
    assert sorted(PRESETS) == sorted(vocab.PRESET_NAMES)
    for name in vocab.PRESET_NAMES:
        assert get_preset(name).name == name


def test_every_default_target_is_the_papers_one_constant():
    """The paper's target loss 0.15 (App. A.5) is spelled once, ``vocab.PAPER_TARGET``; every
    default target of the library and the command line is that constant (seven modules once
    held their own 0.15)."""
    import inspect

    from analyses.cli.parser import build_parser
    from analyses.cli.prune import PruneSettings
    from sparse_lens.circuits.circuit import Circuit
    from sparse_lens.circuits.masks import PruneConfig
    from sparse_lens.circuits.prune_task import prune
    from sparse_lens.openai_models.viz_circuit import circuit_from_viz_data
    from sparse_lens.sweep.grid import SweepConfig
    from sparse_lens.tasks.selection import PAPER_TARGET

    assert vocab.PAPER_TARGET == PAPER_TARGET == 0.15
    fields = {c: c.__dataclass_fields__["target_loss"].default for c in (PruneConfig, SweepConfig)}
    fields[PruneSettings] = PruneSettings.__dataclass_fields__["target_loss"].default
    assert set(fields.values()) == {vocab.PAPER_TARGET}, fields
    for fn in (prune, circuit_from_viz_data, Circuit.from_nodes):
        assert inspect.signature(fn).parameters["target_loss"].default == vocab.PAPER_TARGET
    subs = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for cmd in ("prune", "sweep", "tasks"):
        action = next(a for a in subs[cmd]._actions if "--target-loss" in a.option_strings)
        assert action.default == vocab.PAPER_TARGET, cmd
