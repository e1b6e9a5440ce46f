"""``SparseActivationCache``: TL's ``ActivationCache`` made exact under AbsTopK on residual writes.

With AbsTopK at ``attn_out`` (or ``mlp_out``) a layer writes ``m * (sum_h z_h W_O[h] + b_O)``
where ``m`` is the data-dependent 0/1 mask of kept channels. TL's decompositions assume the
unmasked sum, so they would not add up. The model exposes ``m`` at ``hook_out_mask``; this cache
reuses that frozen forward mask:

* per-head results (``stack_head_results``) are ``m * (z_h W_O[h])``;
* per-neuron results (``get_neuron_results``) are ``m * (post_n W_out[n])``;
* ``get_full_resid_decomposition`` adds ``(m - 1) * b`` for each masked bias to its ``bias`` row
  (the model's ``accumulated_bias`` is the unmasked, position-independent sum).

A cache of a model with a write site on but without its mask raises ``KeyError`` in these
methods instead of returning the unmasked sum (``HookedSparseTransformer.run_with_cache`` caches
the masks whenever it caches anything). Every method that returns a new cache returns this class.
With AbsTopK on the residual stream itself (``resid_post_attn``/``resid_post_mlp``, off in the
paper's models) the stream is not a sum of components, and the decompositions refuse.
``logit_lens`` adds the bigram table's logits (``bigram.hook_logits``), so its last entry is the
model's logits.
"""

import functools
import inspect
from collections.abc import Callable, Generator
from contextlib import contextmanager
from typing import Any, Protocol, cast

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import ActivationCache

# TL re-exports Slice here without listing it in __all__ (the public path since TL 3)
from transformer_lens.utilities import Slice  # pyright: ignore[reportPrivateImportUsage]

from sparse_lens.model.components import ChannelOverride, TransformerBlocks
from sparse_lens.model.config import SparseTransformerConfig


class ReadoutAdapter:
    """What TL's logit readouts (``logit_lens``, ``logit_readout``) apply to the
    ``ln_final -> unembed`` logits of each row (``apply_output_logits_transform``).

    The bigram table adds a token-dependent row that a residual vector alone cannot give, so with
    the table on a readout refuses, except inside ``adding_rows`` (used by
    ``SparseActivationCache.logit_lens``), which adds the cached table rows in TL's row order.
    """

    def __init__(self, cfg_of: Callable[[], SparseTransformerConfig]) -> None:
        self._cfg_of = cfg_of
        self._rows: Tensor | None = None
        self._next = 0

    @contextmanager
    def adding_rows(self, rows: Float[Tensor, "n d_vocab"]) -> Generator[None, None, None]:
        self._rows, self._next = rows, 0
        try:
            yield
        finally:
            self._rows, self._next = None, 0

    def apply_output_logits_transform(self, logits: Tensor) -> Tensor:
        """``logits`` plus the bigram table's rows being added (see ``adding_rows``), cycling over
        positions; unchanged without a bigram table.

        Raises:
            ValueError: the model has a bigram table and no rows are being added (a bare
                ``ln_final -> unembed`` readout, which would leave out the bigram logits).
        """
        if not self._cfg_of().use_bigram_table:
            return logits
        if self._rows is None:
            raise ValueError(
                "this readout maps residual vectors through ln_final -> unembed only and would "
                "leave out the bigram table's logits (bigram.hook_logits), so it is not the "
                "model's prediction; use cache.logit_lens() of a SparseActivationCache"
            )
        index = torch.arange(self._next, self._next + logits.shape[0]) % self._rows.shape[0]
        self._next += logits.shape[0]
        return logits + self._rows[index.to(self._rows.device)].to(logits.dtype)


class _SparseModel(Protocol):
    """What the cache reads of ``HookedSparseTransformer`` (whose module imports this one; only
    that model builds this cache). Used in ``cast`` only: beartype cannot check a Protocol."""

    cfg: SparseTransformerConfig
    blocks: TransformerBlocks
    override_final: ChannelOverride
    adapter: ReadoutAdapter


class SparseActivationCache(ActivationCache):
    """An ``ActivationCache`` that applies cached AbsTopK write masks in decompositions."""

    def _mask(self, layer: int, part: str) -> torch.Tensor | None:
        key = f"blocks.{layer}.{part}.hook_out_mask"
        mask = self.cache_dict.get(key)
        site = "attn_out" if part == "attn" else "mlp_out"
        if mask is None and cast(_SparseModel, self.model).cfg.act_sparse(site):
            raise KeyError(
                f"this cache has no {key}: AbsTopK at {site} masks layer {layer}'s residual write, "
                "so the per-head/per-neuron decomposition needs that mask. Cache it (run_with_cache "
                "of HookedSparseTransformer does whenever it caches anything)."
            )
        return mask

    def _require_additive_residual(self, method: str) -> None:
        sites = [
            s
            for s in ("resid_post_attn", "resid_post_mlp")
            if cast(_SparseModel, self.model).cfg.act_sparse(s)
        ]
        if sites:
            raise ValueError(
                f"{method}: AbsTopK on the residual stream ({', '.join(sites)}) masks the sum of "
                "all earlier components, so the residual stream is not their sum; use "
                "accumulated_resid, or the components' own writes (stack_head_results, "
                "get_neuron_results, the cached attn_out/mlp_out)"
            )

    def _require_no_override(self, method: str, final: bool = False) -> None:
        """Refuse when a baked-in circuit (``Circuit.to_model``) overrides channels of a residual
        write (``attn_out``/``mlp_out``) or, with ``final``, of the stream the unembedding
        reads: those channels hold the ablation value, which no component wrote."""
        model = cast(_SparseModel, self.model)
        if not model.cfg.circuit_overrides:
            return
        modules = [
            (f"blocks.{i}.attn_out", b.override_attn_out) for i, b in enumerate(model.blocks)
        ]
        modules += [(f"blocks.{i}.mlp_out", b.override_mlp_out) for i, b in enumerate(model.blocks)]
        if final:
            modules.append(("final", model.override_final))
        overridden = [
            name
            for name, m in modules
            if isinstance(m, ChannelOverride) and bool((m.keep != 1).any())
        ]
        if overridden:
            raise ValueError(
                f"{method}: this circuit model overrides removed channels of {overridden} with "
                "their ablation values, so per-component results do not add up to what the model "
                "computed; decompose the full model with the circuit's hooks instead"
            )

    def decompose_resid(self, *args: Any, **kwargs: Any) -> Any:
        """TL's ``decompose_resid``; refused under AbsTopK on the residual stream."""
        # Any: TL's arguments and result (a stack, or a stack and its labels), passed through
        self._require_additive_residual("decompose_resid")
        return super().decompose_resid(*args, **kwargs)

    def _ensure_head_results(self) -> bool:
        self._require_no_override("per-head results")
        masks = [self._mask(layer, "attn") for layer in range(self.model.cfg.n_layers)]
        all_cached = super()._ensure_head_results()
        if all_cached:
            return True
        # Masks are 0/1, so re-masking a result the model already masked changes nothing.
        for layer, mask in enumerate(masks):
            if mask is not None:
                key = f"blocks.{layer}.attn.hook_result"
                self.cache_dict[key] = self.cache_dict[key] * mask.unsqueeze(-2)
        return False

    def _stack_neuron_results_apply_ln_projected(
        self,
        layer: int,
        pos_slice: Slice,
        neuron_slice: Slice,
        project_2d: torch.Tensor,
        mlp_input: bool = False,
    ) -> torch.Tensor:
        """TL's fused LN + projection path, with the write masks (RMSNorm: no centering, so
        ``LN(r) @ p = (r @ p) / scale``)."""
        scale = self._get_cached_ln_scale(layer, mlp_input=mlp_input, pos_slice=pos_slice)
        parts = [
            self.get_neuron_results(i, neuron_slice, pos_slice, project_2d) / scale[..., None]
            for i in range(layer)
        ]
        if not parts:
            empty = pos_slice.apply(self["hook_embed"], dim=-2)
            return empty.new_zeros(0, *empty.shape[:-1], project_2d.shape[-1])
        return torch.cat(parts, dim=-2).movedim(-2, 0)

    def logit_lens(self, **kwargs: Any) -> Any:
        """TL's ``logit_lens`` with the bigram table's logits added at each position, so the
        final entry equals the model's logits. Needs ``bigram.hook_logits`` in the cache.

        Raises:
            KeyError: the model has a bigram table and ``bigram.hook_logits`` is not in the cache.
        """
        # Any: TL's own logit_lens signature (keywords and result passed through)
        model = cast(_SparseModel, self.model)
        self._require_no_override("logit_lens", final=True)
        if not model.cfg.use_bigram_table:
            return super().logit_lens(**kwargs)
        if "bigram.hook_logits" not in self.cache_dict:
            raise KeyError("logit_lens needs bigram.hook_logits in the cache (the bigram table)")
        rows = self.cache_dict["bigram.hook_logits"]
        pos = kwargs.get("positions", -1)  # TL's default: the last position
        rows = (pos if isinstance(pos, Slice) else Slice(pos)).apply(rows, dim=-2)
        batch = kwargs.get("batch_slice")
        if self.has_batch_dim:
            rows = (batch if isinstance(batch, Slice) else Slice(batch)).apply(rows, dim=0)
        with model.adapter.adding_rows(rows.reshape(-1, rows.shape[-1])):
            return super().logit_lens(**kwargs)

    def get_neuron_results(
        self,
        layer: int,
        neuron_slice: Any = None,
        pos_slice: Any = None,
        project_output_onto: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``m * (post_n W_out[n])`` per neuron; with ``project_output_onto`` ``p`` it is
        ``post_n * (W_out[n] @ (m * p))``, never forming ``[..., d_mlp, d_model]``."""
        # Any (the slices): whatever TL's Slice takes (a Slice, an int, a list or tuple of ints,
        # a tensor, a Python slice ...); TL's declared SliceInput leaves some of them out
        self._require_no_override("get_neuron_results")
        mask = self._mask(layer, "mlp")
        if mask is None:
            return super().get_neuron_results(layer, neuron_slice, pos_slice, project_output_onto)
        pos_slice = pos_slice if isinstance(pos_slice, Slice) else Slice(pos_slice)
        neuron_slice = neuron_slice if isinstance(neuron_slice, Slice) else Slice(neuron_slice)
        mask = pos_slice.apply(mask, dim=-2)
        post = neuron_slice.apply(pos_slice.apply(self[("post", layer, "mlp")], dim=-2), dim=-1)
        W_out = neuron_slice.apply(cast(_SparseModel, self.model).blocks[layer].mlp.W_out, dim=0)
        one = W_out.ndim == 1  # an int neuron_slice drops the neuron axis, as in TL
        post, W_out = (post[..., None], W_out[None]) if one else (post, W_out)
        p = project_output_onto
        if p is None:
            out = post[..., None] * W_out * mask[..., None, :]
        else:
            # [..., d_mlp, n_outs] = post[..., n] * sum_d W_out[n, d] (m[..., d] p[d, o]): the
            # mask is folded into the projection first, so no [..., d_mlp, d_model] is built
            p2 = p[:, None] if p.ndim == 1 else p
            masked_p = mask[..., :, None] * p2.to(mask.dtype)  # [..., d_model, n_outs]
            out = post[..., None] * (W_out @ masked_p)
            out = out.squeeze(-1) if p.ndim == 1 else out
        return out.squeeze(post.ndim - 1) if one else out

    def logit_attrs(self, *args: Any, **kwargs: Any) -> Any:
        """TL's ``logit_attrs``; refused on a circuit model whose final stream is overridden."""
        # Any: TL's arguments and result, passed through
        self._require_no_override("logit_attrs", final=True)
        return super().logit_attrs(*args, **kwargs)

    def masked_bias_correction(
        self, layer: int, mlp_input: bool = False, include_mlp_biases: bool = True
    ) -> torch.Tensor | None:
        """``sum (m - 1) * b`` over the masked output biases before ``layer``; ``None`` if none."""
        blocks = cast(_SparseModel, self.model).blocks
        sites: list[tuple[int, str, torch.Tensor]] = []
        for i in range(layer):
            sites.append((i, "attn", blocks[i].attn.b_O))
            if include_mlp_biases:
                sites.append((i, "mlp", blocks[i].mlp.b_out))
        if mlp_input:
            sites.append((layer, "attn", blocks[layer].attn.b_O))
        correction = None
        for i, part, bias in sites:
            mask = self._mask(i, part)
            if mask is None:
                continue
            term = (mask - 1.0) * bias
            correction = term if correction is None else correction + term
        return correction

    def get_full_resid_decomposition(
        self,
        layer: int | None = None,
        mlp_input: bool = False,
        expand_neurons: bool = True,
        apply_ln: bool = False,
        pos_slice: Any = None,
        return_labels: bool = False,
        project_output_onto: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, list[str]]:
        """TL's ``get_full_resid_decomposition`` (the stack, and its labels with
        ``return_labels``), with the bias row corrected for the write masks."""
        # Any (pos_slice): as in get_neuron_results
        self._require_additive_residual("get_full_resid_decomposition")
        self._require_no_override("get_full_resid_decomposition", final=True)
        if layer is None or layer == -1:
            layer = self.model.cfg.n_layers
        # return_labels=True: TL returns (stack, labels)
        stack, labels = cast(
            tuple[torch.Tensor, list[str]],
            super().get_full_resid_decomposition(
                layer,
                mlp_input,
                expand_neurons,
                apply_ln,
                pos_slice,
                True,
                project_output_onto,
            ),
        )
        correction = self.masked_bias_correction(
            layer, mlp_input, include_mlp_biases=expand_neurons
        )
        if correction is not None:
            pos_slice = pos_slice if isinstance(pos_slice, Slice) else Slice(pos_slice)
            row = pos_slice.apply(correction, dim=-2)[None]
            if apply_ln:
                row = self.apply_ln_to_stack(row, layer, pos_slice=pos_slice, mlp_input=mlp_input)
            if project_output_onto is not None:
                row = row @ project_output_onto
            i = labels.index("bias")
            stack = stack.clone()
            stack[i] = stack[i] + row[0]
        return (stack, labels) if return_labels else stack


# Any: wraps every ActivationCache method, whatever its arguments and result
def _keep_class(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(self: ActivationCache, *args: Any, **kwargs: Any) -> Any:
        out = method(self, *args, **kwargs)
        if type(out) is ActivationCache:  # a new cache built by TL's code: keep our class
            out.__class__ = type(self)
        return out

    return wrapper


# Every public ActivationCache method that returns a new cache (apply_slice_to_batch_dim, ...)
# returns a SparseActivationCache, without listing them: wrap them all.
for _name, _value in list(vars(ActivationCache).items()):
    if not _name.startswith("__") and inspect.isfunction(_value):
        setattr(SparseActivationCache, _name, _keep_class(getattr(SparseActivationCache, _name)))
