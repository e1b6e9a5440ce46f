"""``Circuit``: the kept nodes of a pruned model, its edges, and ways to run it.

Edges follow ``circuits/nodes.py``: a nonzero weight between two kept nodes of the same block
(``attn_in -> q/k/v``, ``v -> attn_out``, ``mlp_in -> neuron``, ``neuron -> mlp_out``);
embeddings, unembeddings, biases, residual identity paths and q-k pairings are not counted.

``circuit.fwd_hooks(model)`` runs the model as the circuit through ``run_with_hooks``;
``circuit.to_model(model)`` returns a standalone ``HookedSparseTransformer`` with the ablation
baked in: removed residual reads and neurons are folded into the next biases (their outgoing
weights zeroed), and every removed node is overwritten by its ablation value by the model's
``ChannelOverride`` buffers, placed exactly where the pruning hooks act, so AbsTopK downstream
of a removed q/k/v or residual-write channel sees the same values as under the hooks.
"""

import copy
import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from hooks import node_mask
from hooks.types import HookList
from sparse_lens.circuits.ablation import (
    ABLATIONS,
    PER_EXAMPLE,
    AblationKind,
    model_fingerprint,
    norm_scale_hooks,
)
from sparse_lens.circuits.circuit_format import (
    CIRCUIT_VERSION,
    check_edge_direction,
    check_field_types,
    check_structure,
    read_circuit_dict,
)
from sparse_lens.circuits.edges import Edge, edge_hooks, fold_removed_edges
from sparse_lens.circuits.nodes import Location, NodeKind, node_label, node_locations
from sparse_lens.files.atomic import atomic_write_json
from sparse_lens.model.config import SparseTransformerConfig
from sparse_lens.model.transformer import HookedSparseTransformer
from sparse_lens.vocab import PAPER_TARGET

log = logging.getLogger(__name__)


def _by_hook(cfg: SparseTransformerConfig) -> dict[str, Location]:
    return {loc.hook: loc for loc in node_locations(cfg)}


@torch.no_grad()
def circuit_edges(
    model: HookedSparseTransformer, nodes: dict[str, list[int]]
) -> list[tuple[str, str, float]]:
    """``(source label, destination label, weight)`` of every edge between kept nodes."""
    cfg = model.cfg
    locs = _by_hook(cfg)
    edges: list[tuple[str, str, float]] = []

    def add(src_hook: str, dst_hook: str, weight: Tensor) -> None:
        # weight: [src channels, dst channels]
        src, dst = nodes.get(src_hook, []), nodes.get(dst_hook, [])
        if not src or not dst:
            return
        sub = weight[src][:, dst]
        for i, j in sub.nonzero().tolist():
            edges.append(
                (
                    node_label(locs[src_hook], src[i], cfg),
                    node_label(locs[dst_hook], dst[j], cfg),
                    float(sub[i, j]),
                )
            )

    hd = cfg.n_heads * cfg.d_head
    for layer, block in enumerate(model.blocks):
        b = f"blocks.{layer}"
        for kind, W in (("q", block.attn.W_Q), ("k", block.attn.W_K), ("v", block.attn.W_V)):
            # [n_heads d_model d_head] -> [d_model n_heads*d_head]
            add(f"{b}.attn.hook_in", f"{b}.attn.hook_{kind}", W.permute(1, 0, 2).reshape(-1, hd))
        add(f"{b}.attn.hook_v", f"{b}.hook_attn_out", block.attn.W_O.reshape(hd, -1))
        add(f"{b}.mlp.hook_in", f"{b}.mlp.hook_post", block.mlp.W_in)
        add(f"{b}.mlp.hook_post", f"{b}.hook_mlp_out", block.mlp.W_out)
    return edges


def node_masks(
    sizes: Mapping[str, int], nodes: Mapping[str, Sequence[int]]
) -> dict[str, Float[Tensor, " channels"]]:
    """0/1 masks per hook of ``sizes`` (hook -> channels) keeping ``nodes`` (hook -> kept
    channels; a hook it does not name keeps none)."""
    out = {}
    for hook, size in sizes.items():
        m = torch.zeros(size)
        m[torch.tensor(list(nodes.get(hook, [])), dtype=torch.long)] = 1.0
        out[hook] = m
    return out


@dataclass(frozen=True, kw_only=True)
class NodeRef:
    """One kept node: its label, hook and channel, location kind, layer and (q/k/v) head."""

    label: str
    hook: str
    channel: int
    kind: NodeKind
    layer: int
    head: int | None


@dataclass
class Circuit:
    """A pruned circuit for one task on one model."""

    task: str
    target_loss: float
    ablation: AblationKind
    freeze_norms: bool
    nodes: dict[str, list[int]]
    sizes: dict[str, int]
    baselines: dict[str, list[float]]
    edges: list[tuple[str, str, float]]
    loss: float
    full_loss: float
    model_fingerprint: str
    calibrated_loss: float | None = None
    calibration: dict[str, float] | None = None
    test_loss: float | None = None
    curve: list[tuple[int, float]] = field(default_factory=list)
    hparams: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    removed_edges: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def from_nodes(
        cls,
        model: HookedSparseTransformer,
        nodes: dict[str, list[int]],
        baselines: dict[str, Tensor],
        *,
        task: str,
        ablation: AblationKind = "mean",
        freeze_norms: bool = False,
        target_loss: float = PAPER_TARGET,
        loss: float = float("nan"),
        full_loss: float = float("nan"),
        removed_edges: list[tuple[str, str]] | None = None,
        **fields: Any,
    ) -> "Circuit":
        """A circuit keeping ``nodes`` (hook -> channels) of ``model``; edges are computed, less
        ``removed_edges`` (``(source label, destination label)`` pairs, see ``circuits/edges.py``)."""
        locs = node_locations(model.cfg)
        nodes = {loc.hook: sorted(nodes.get(loc.hook, [])) for loc in locs}
        gone = {(source, target) for source, target in removed_edges or []}
        edges = [e for e in circuit_edges(model, nodes) if (e[0], e[1]) not in gone]
        return cls(
            task=task,
            target_loss=target_loss,
            ablation=ablation,
            freeze_norms=freeze_norms,
            nodes=nodes,
            sizes={loc.hook: loc.size for loc in locs},
            baselines={h: v.tolist() for h, v in baselines.items() if v.ndim == 1},
            edges=edges,
            removed_edges=sorted(gone),
            loss=loss,
            full_loss=full_loss,
            model_fingerprint=model_fingerprint(model),
            **fields,
        )

    @property
    def n_nodes(self) -> int:
        return sum(len(v) for v in self.nodes.values())

    @property
    def n_edges(self) -> int:
        return len(self.edges)

    def node_refs(self, cfg: SparseTransformerConfig) -> list["NodeRef"]:
        """Every kept node, in the order of ``nodes``."""
        locs = _by_hook(cfg)
        return [
            NodeRef(
                label=node_label(locs[h], c, cfg),
                hook=h,
                channel=c,
                kind=locs[h].kind,
                layer=locs[h].layer,
                head=c // cfg.d_head if locs[h].kind in ("q", "k", "v") else None,
            )
            for h, chans in self.nodes.items()
            for c in chans
        ]

    def node_labels(self, cfg: SparseTransformerConfig) -> list[str]:
        return [r.label for r in self.node_refs(cfg)]

    # -- persistence ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The circuit as JSON, with the counts and ``derived_from`` (digests of the nodes, the
        removed edges, the edges and the losses, which were computed together), checked on
        load: a file edited by hand is refused rather than reported with stale numbers."""
        return {
            "circuit_version": CIRCUIT_VERSION,
            "n_nodes": self.n_nodes,
            "n_edges": self.n_edges,
            "derived_from": _derived_from(self),
        } | asdict(self)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        atomic_write_json(path, self.to_dict())
        return path

    @classmethod
    def load(
        cls,
        path: str | Path,
        model: HookedSparseTransformer | None = None,
        *,
        unchecked: bool = False,
    ) -> "Circuit":
        """Read a circuit file; with ``model``, also check it against the model (``validate``).

        The fields derived from the nodes are checked too (``check_derived``): the counts, the
        digests of the nodes and removed edges the edges and losses were computed for (a file
        edited by hand is refused, not reported with stale edges and loss), edges only within a
        block in the forward direction, and with ``model`` the edges recomputed from its weights.
        A file without any digest is refused unless ``unchecked`` (then, as for a file older than
        some digests, ``unchecked_fields`` names what could not be checked and pages say so).

        Raises:
            FileNotFoundError: no such file.
            ValueError: not a circuit file of this version, malformed (a channel that is not an
                integer, ...), derived fields that do not match the nodes, or (with ``model``)
                an entry that does not exist in the model; the file and the field named.
        """
        d = read_circuit_dict(path)
        recorded = {k: d.pop(k, None) for k in ("n_nodes", "n_edges", "derived_from")}
        d = {k: v for k, v in d.items() if k != "circuit_version"}
        check_field_types(d, path)
        check_structure(d, path)
        try:
            d["edges"] = [(s, t, float(w)) for s, t, w in d["edges"]]
            d["curve"] = [(k, float(v)) for k, v in d.get("curve", [])]
            d["removed_edges"] = [(s, t) for s, t in d.get("removed_edges", [])]
            circuit = cls(**d)
        except (TypeError, KeyError, ValueError) as e:
            raise ValueError(f"{path}: malformed circuit file: {e}") from e
        if model is not None:
            circuit.validate(model.cfg, where=str(path))
        circuit.check_derived(recorded, where=str(path), model=model, unchecked=unchecked)
        return circuit

    def check_derived(
        self,
        recorded: dict[str, Any],
        *,
        where: str = "circuit",
        model: HookedSparseTransformer | None = None,
        unchecked: bool = False,
    ) -> None:
        """Check what a circuit file derives from its nodes against the nodes: every edge
        within one block and in the forward direction (``EDGE_KINDS``), ``recorded``
        ``n_nodes``/``n_edges`` (when given) against the lists, the ``derived_from`` digests
        (when given; files written before them have none) against the nodes, removed edges,
        edges and losses, and with ``model`` (the one the circuit was extracted from) the edges
        against those its weights give for the nodes.

        Raises:
            ValueError: naming ``where`` and the first field that does not match.
        """
        stale = (
            "the file was edited by hand: its edges and losses are stale; prune again or restore it"
        )
        for i, (src, dst, _) in enumerate(self.edges):
            check_edge_direction(i, src, dst, where)
        for name, got in (("n_nodes", self.n_nodes), ("n_edges", self.n_edges)):
            if recorded.get(name) is not None and recorded[name] != got:
                raise ValueError(
                    f"{where}: field {name!r} is {recorded[name]!r} but the file lists {got}; "
                    + stale
                )
        self._check_digests(recorded.get("derived_from"), where, stale, unchecked)
        if model is not None:
            self._check_edges_against(model, where, stale)

    def _check_digests(self, digests: Any, where: str, stale: str, unchecked: bool) -> None:
        """``derived_from`` against the fields now. A file without it is refused unless
        ``unchecked``; one older than some of ``LATER_DIGESTS`` is read. Either way a logged
        warning and ``unchecked_fields`` name what is not checked."""
        now = _derived_from(self)
        if digests is None:
            if not unchecked:
                raise ValueError(
                    f"{where}: records no digests (derived_from): written before circuit files "
                    "had them, or edited by hand with them removed, so its losses and settings "
                    "cannot be checked against its nodes; prune again, or read it with "
                    "Circuit.load(path, unchecked=True), which every page then marks unchecked"
                )
            self.__dict__["_unchecked"] = tuple(now)
            log.warning("%s: read without digests: %s are not checked", where, ", ".join(now))
            return
        if not isinstance(digests, dict):
            raise ValueError(
                f"{where}: field 'derived_from' must be an object, got {digests!r:.60}"
            )
        missing = [name for name in LATER_DIGESTS if name not in digests]
        self.__dict__["_unchecked"] = tuple(missing)
        if missing:
            log.warning(
                "%s: written before the %s digest(s): those fields are not checked",
                where,
                ", ".join(missing),
            )
        for name, digest in now.items():
            if name in missing:
                continue
            if digests.get(name) != digest:
                what = (
                    f"one of the fields {', '.join(SETTING_FIELDS)} does"
                    if name == "settings"
                    else f"field {name!r} does"
                )
                raise ValueError(
                    f"{where}: {what} not match the digest recorded when the circuit was "
                    "computed "
                    f"(derived_from.{name} {str(digests.get(name))[:12]!r}, now {digest[:12]!r}): "
                    + stale
                )

    @property
    def unchecked_fields(self) -> tuple[str, ...]:
        """The digests (``derived_from`` names: ``losses``, ``settings``, ...) this circuit's
        file did not carry, so what they cover was not checked on load (empty: all checked, or
        not read from a file)."""
        return self.__dict__.get("_unchecked", ())

    def _check_edges_against(self, model: HookedSparseTransformer, where: str, stale: str) -> None:
        if model_fingerprint(model) != self.model_fingerprint:
            return  # another model's weights say nothing of the file (check_model refuses it)
        gone = set(self.removed_edges)
        want = {(s, t): w for s, t, w in circuit_edges(model, self.nodes) if (s, t) not in gone}
        have = {(s, t): w for s, t, w in self.edges}
        missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
        if missing or extra:
            said = f"{len(missing)} missing (e.g. {missing[:1]}), {len(extra)} extra (e.g. {extra[:1]})"
            raise ValueError(
                f"{where}: field 'edges' does not match the model's weights between the kept "
                f"nodes ({said}); " + stale
            )
        for key, w in have.items():
            if not math.isclose(w, want[key], rel_tol=1e-5, abs_tol=1e-8):
                raise ValueError(
                    f"{where}: field 'edges' gives {key[0]} -> {key[1]} weight {w}, the model "
                    f"{want[key]}; " + stale
                )

    def validate(self, cfg: SparseTransformerConfig, where: str = "circuit") -> None:
        """Check every entry against a model of ``cfg``: known hooks with their sizes, channels
        in range and without duplicates, a baseline per hook (mean/zero ablation) of its size,
        finite numbers, and edges only between kept nodes.

        Raises:
            ValueError: naming the first bad entry.
        """
        locs = _by_hook(cfg)
        if self.ablation not in ABLATIONS:
            raise ValueError(f"{where}: unknown ablation {self.ablation!r}")
        for table in ("nodes", "sizes", "baselines"):
            for hook in getattr(self, table):
                if hook not in locs:
                    raise ValueError(
                        f"{where}: {table} names hook {hook!r}, which this model does not have "
                        f"(it has e.g. {next(iter(locs))!r})"
                    )
        for hook, loc in locs.items():
            if self.sizes.get(hook) != loc.size:
                raise ValueError(
                    f"{where}: sizes[{hook!r}] is {self.sizes.get(hook)!r}, the model has {loc.size}"
                )
        for hook, chans in self.nodes.items():
            self._check_channels(hook, chans, locs[hook].size, where)
        if self.ablation not in PER_EXAMPLE:  # per-channel values are in the file
            for hook, loc in locs.items():
                base = self.baselines.get(hook)
                if not isinstance(base, list) or len(base) != loc.size:
                    got = len(base) if isinstance(base, list) else base
                    raise ValueError(
                        f"{where}: baselines[{hook!r}] has {got!r} values, not {loc.size}"
                    )
                if not all(isinstance(v, int | float) and math.isfinite(v) for v in base):
                    raise ValueError(f"{where}: baselines[{hook!r}] holds a non-finite value")
        kept = set(self.node_labels(cfg))
        for i, (src, dst, w) in enumerate(self.edges):
            for end in (src, dst):
                if end not in kept:
                    raise ValueError(
                        f"{where}: edges[{i}] ({src} -> {dst}) joins {end!r}, not a kept node"
                    )
            if not math.isfinite(w):
                raise ValueError(f"{where}: edges[{i}] has weight {w}")
        for i, (src, dst) in enumerate(self.removed_edges):
            for end in (src, dst):
                if end not in kept:
                    raise ValueError(
                        f"{where}: removed edge {i} ({src} -> {dst}) joins {end!r}, not a kept node"
                    )

    @staticmethod
    def _check_channels(hook: str, chans: Any, size: int, where: str) -> None:
        if not isinstance(chans, list):
            raise ValueError(f"{where}: nodes[{hook!r}] must be a list of channels, got {chans!r}")
        seen: set[int] = set()
        for c in chans:
            if not isinstance(c, int) or isinstance(c, bool) or not 0 <= c < size:
                raise ValueError(
                    f"{where}: nodes[{hook!r}] has channel {c!r}, outside 0..{size - 1}"
                )
            if c in seen:
                raise ValueError(f"{where}: nodes[{hook!r}] lists channel {c} twice")
            seen.add(c)

    # -- running -------------------------------------------------------------------------------
    def check_model(self, model: HookedSparseTransformer) -> None:
        """Raise ``ValueError`` unless ``model`` is the model this circuit was extracted from.

        Raises:
            ValueError: ``model``'s fingerprint is not the circuit's, or its config does not fit
                the circuit (``validate``).
        """
        got = model_fingerprint(model)
        if got != self.model_fingerprint:
            raise ValueError(
                f"circuit was extracted from model {self.model_fingerprint}, not this one ({got})"
            )
        self.validate(model.cfg, where=f"circuit for {self.task!r}")

    def masks(self) -> dict[str, Float[Tensor, " channels"]]:
        """0/1 node masks per hook (1 keeps the node)."""
        return node_masks(self.sizes, self.nodes)

    def mask_hooks(self, masks: Mapping[str, Tensor]) -> HookList:
        """``node_mask`` hooks for ``masks`` (hook -> ``[channels]``, 1 keeps, 0 takes the
        circuit's ablation value): every node-mask intervention on a circuit."""
        return [(h, node_mask(m, torch.tensor(self.baselines[h]))) for h, m in masks.items()]

    def checked_on(self, model: HookedSparseTransformer) -> "Circuit":
        """This circuit, checked once against ``model`` (``check_model``, which hashes every
        weight), as a copy whose ``fwd_hooks`` on that model skip the check: for the many runs
        of one report, while the model's weights do not change.

        Raises:
            ValueError: as ``check_model``.
        """
        self.check_model(model)
        checked = copy.copy(self)
        checked.__dict__["_checked_on"] = model
        return checked

    def fwd_hooks(
        self,
        model: HookedSparseTransformer,
        tokens: Tensor | None = None,
        *,
        patches: HookList | None = None,
        masks: dict[str, Tensor] | None = None,
    ) -> HookList:
        """Hooks running ``model`` as this circuit. ``tokens`` is needed with frozen norms.

        ``patches`` (e.g. full-model values for some kept nodes) run after the node masks and
        before the removed edges' hooks, so a removed edge carries the patched value's ablation,
        never the patch; ``masks`` (hook -> ``[channels]``, 1 keeps) replaces ``self.masks()``
        (e.g. a partly ablated complement). The model is checked (``check_model``) unless this
        circuit came from ``checked_on(model)``.

        Raises:
            ValueError: ``model`` does not match the circuit, the circuit's ablation values are
                per example (resample: use the ``Pruner``), or it freezes norms and ``tokens`` is
                None.
        """
        if self.__dict__.get("_checked_on") is not model:
            self.check_model(model)
        if self.ablation in PER_EXAMPLE:
            raise ValueError(
                f"a {self.ablation}-ablated circuit needs its per-example values; use the Pruner"
            )
        hooks: HookList = []
        if self.freeze_norms:
            if tokens is None:
                raise ValueError("this circuit freezes norm scales: pass the tokens it will run on")
            hooks += norm_scale_hooks(model, tokens)
        hooks += self.mask_hooks(self.masks() if masks is None else masks)
        hooks += patches or []
        return hooks + edge_hooks(model, self.removed_edge_refs(model.cfg), self._fills())

    def _fills(self) -> dict[str, Tensor]:
        return {h: torch.tensor(v) for h, v in self.baselines.items()}

    def removed_edge_refs(self, cfg: SparseTransformerConfig) -> list[Edge]:
        """``removed_edges`` as ``(source hook, channel, destination hook, channel)``.

        Raises:
            ValueError: a removed edge names a node the circuit does not keep.
        """
        refs = {r.label: r for r in self.node_refs(cfg)}
        try:
            return [
                (refs[s].hook, refs[s].channel, refs[t].hook, refs[t].channel)
                for s, t in self.removed_edges
            ]
        except KeyError as e:
            raise ValueError(f"removed edge names a node the circuit does not keep: {e}") from e

    @torch.no_grad()
    def to_model(self, model: HookedSparseTransformer) -> HookedSparseTransformer:
        """A standalone model computing this circuit (see the module docstring).

        Raises:
            ValueError: ``model`` does not match the circuit, or the circuit is resample-ablated,
                freezes norms, or removes a ``v -> attn_out`` edge in a model with attention
                sinks (none of these bakes into weights).
            RuntimeError: the weights do not transfer to the new model (missing/unexpected keys
                named).
        """
        self.check_model(model)
        if self.ablation in PER_EXAMPLE or self.freeze_norms:
            raise ValueError(
                "only mean- or zero-ablated circuits without frozen norms bake into weights"
            )
        new = HookedSparseTransformer(model.cfg.replace(circuit_overrides=True), model.tokenizer)
        missing, unexpected = new.load_state_dict(model.state_dict(), strict=False)
        if unexpected or any("override" not in k for k in missing):
            raise RuntimeError(
                f"weight transfer failed: missing {missing}, unexpected {unexpected}"
            )
        locs = _by_hook(model.cfg)
        for hook, mask in self.masks().items():
            loc = locs[hook]
            target = self._override_module(new, loc)
            target.keep.copy_(mask)
            target.fill.copy_(torch.tensor(self.baselines[hook]))
            fill = target.fill  # on the model's device, in its dtype
            removed = (mask == 0).nonzero().squeeze(-1)
            if len(removed) == 0:
                continue
            block = new.blocks[loc.layer]
            if loc.kind == "attn_in":
                for W, b in (
                    (block.attn.W_Q, block.attn.b_Q),
                    (block.attn.W_K, block.attn.b_K),
                    (block.attn.W_V, block.attn.b_V),
                ):
                    b += torch.einsum("i,hie->he", fill[removed], W[:, removed, :])
                    W[:, removed, :] = 0
            elif loc.kind == "mlp_in":
                block.mlp.b_in += fill[removed] @ block.mlp.W_in[removed]
                block.mlp.W_in[removed] = 0
            elif loc.kind == "neuron":
                block.mlp.b_out += fill[removed] @ block.mlp.W_out[removed]
                block.mlp.W_out[removed] = 0
        fold_removed_edges(new, self.removed_edge_refs(model.cfg), self._fills())
        return new.eval()

    @staticmethod
    def _override_module(model: HookedSparseTransformer, loc: Location) -> Any:
        block = model.blocks[loc.layer]
        return {
            "attn_in": lambda: block.attn.override_in,
            "q": lambda: block.attn.override_q,
            "k": lambda: block.attn.override_k,
            "v": lambda: block.attn.override_v,
            "attn_out": lambda: block.override_attn_out,
            "mlp_in": lambda: block.mlp.override_in,
            "neuron": lambda: block.mlp.override_post,
            "mlp_out": lambda: block.override_mlp_out,
            "final": lambda: model.override_final,
        }[loc.kind]()

    def summary(self) -> str:
        cal = (
            f", logit-calibrated {self.calibrated_loss:.3f} (not a faithfulness measure)"
            if self.calibrated_loss is not None
            else ""
        )
        n_val = self.extra.get("n_val")
        on = f" on the pruner's validation examples (n = {n_val})" if n_val is not None else ""
        return (
            f"{self.task}: {self.n_nodes} nodes, {self.n_edges} edges, loss {self.loss:.3f}{cal} "
            f"(target {self.target_loss}, full model {self.full_loss:.3f}, {self.ablation} "
            f"ablation){on}"
        )

    def explain(self, model: HookedSparseTransformer, *args: Any, **kwargs: Any) -> Any:
        """Every kept node's measurements and role on this circuit's task, as a
        ``CircuitCard``: ``sparse_lens.circuits.explain.explain(model, self, ...)``."""
        from sparse_lens.circuits.explain import explain

        return explain(model, self, *args, **kwargs)

    def show(self, model: HookedSparseTransformer | None = None, **kwargs: Any) -> Any:
        """The circuit's graph inline in a notebook (core view and, with ``model``, the explain
        card), offline: ``sparse_lens.circuits.graph_view.show.show(self, model, ...)``."""
        from sparse_lens.circuits.graph_view.show import show

        return show(self, model, **kwargs)


def dumps(circuit: Circuit) -> str:
    return json.dumps(circuit.to_dict(), indent=2)


def _derived_from(circuit: "Circuit") -> dict[str, str]:
    """SHA-256 digests (hex) of what was computed together: the nodes, the removed edges, the
    edges, the losses (``LOSS_FIELDS``), the settings they were computed under
    (``SETTING_FIELDS``) and the faithfulness report, each as JSON writes it."""

    def digest(value: Any) -> str:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    return {
        "nodes": digest(circuit.nodes),
        "removed_edges": digest([list(e) for e in circuit.removed_edges]),
        "edges": digest([list(e) for e in circuit.edges]),
        "losses": digest({name: getattr(circuit, name) for name in LOSS_FIELDS}),
        # what the losses mean: the target, the ablation and its values, the norms, the model
        "settings": digest({name: getattr(circuit, name) for name in SETTING_FIELDS}),
        # the faithfulness report with its verdicts: a verdict edited by hand is refused too
        "faithfulness": digest(circuit.extra.get("faithfulness")),
    }


LOSS_FIELDS = ("loss", "full_loss", "test_loss", "calibrated_loss", "curve")
SETTING_FIELDS = (
    "task",
    "target_loss",
    "ablation",
    "freeze_norms",
    "sizes",
    "baselines",
    "model_fingerprint",
    "calibration",
    "hparams",
)
LATER_DIGESTS = ("faithfulness", "settings")  # digests added after the first; older files lack them
