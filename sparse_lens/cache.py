"""``SparseActivationCache``: TL's ``ActivationCache`` made exact under AbsTopK on residual writes.

With AbsTopK at ``attn_out`` (or ``mlp_out``) a layer writes ``m * (sum_h z_h W_O[h] + b_O)``
where ``m`` is the data-dependent 0/1 mask of kept channels. TL's decompositions assume the
unmasked sum, so they would not add up. The model exposes ``m`` at ``hook_out_mask``; this cache
reuses that frozen forward mask:

* per-head results (``stack_head_results``) are ``m * (z_h W_O[h])``;
* per-neuron results (``get_neuron_results``) are ``m * (post_n W_out[n])``;
* ``get_full_resid_decomposition`` adds ``(m - 1) * b`` for each masked bias to its ``bias`` row
  (the model's ``accumulated_bias`` is the unmasked, position-independent sum).

Without masks in the cache (dense model, or the sites off) everything is TL's own code.
"""

from typing import Any

import torch
from transformer_lens import ActivationCache
from transformer_lens.utilities import Slice


class SparseActivationCache(ActivationCache):
    """An ``ActivationCache`` that applies cached AbsTopK write masks in decompositions."""

    def _mask(self, layer: int, part: str) -> torch.Tensor | None:
        return self.cache_dict.get(f"blocks.{layer}.{part}.hook_out_mask")

    def _ensure_head_results(self) -> bool:
        all_cached = super()._ensure_head_results()
        if all_cached:
            return True
        # Masks are 0/1, so re-masking a result the model already masked changes nothing.
        for layer in range(self.model.cfg.n_layers):
            mask = self._mask(layer, "attn")
            if mask is not None:
                key = f"blocks.{layer}.attn.hook_result"
                self.cache_dict[key] = self.cache_dict[key] * mask.unsqueeze(-2)
        return False

    def get_neuron_results(
        self,
        layer: int,
        neuron_slice: Any = None,
        pos_slice: Any = None,
        project_output_onto: torch.Tensor | None = None,
    ) -> torch.Tensor:
        mask = self._mask(layer, "mlp")
        if mask is None:
            return super().get_neuron_results(layer, neuron_slice, pos_slice, project_output_onto)
        results = super().get_neuron_results(layer, neuron_slice, pos_slice, None)
        pos_slice = pos_slice if isinstance(pos_slice, Slice) else Slice(pos_slice)
        results = results * pos_slice.apply(mask, dim=-2).unsqueeze(-2)
        if project_output_onto is None:
            return results
        projected = results @ project_output_onto
        return projected.squeeze(-1) if project_output_onto.ndim == 1 else projected

    def masked_bias_correction(
        self, layer: int, mlp_input: bool = False, include_mlp_biases: bool = True
    ) -> torch.Tensor | None:
        """``sum (m - 1) * b`` over the masked output biases before ``layer``; ``None`` if none."""
        blocks = self.model.blocks
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
    ) -> Any:
        if layer is None or layer == -1:
            layer = self.model.cfg.n_layers
        stack, labels = super().get_full_resid_decomposition(
            layer,
            mlp_input,
            expand_neurons,
            apply_ln,
            pos_slice,
            True,
            project_output_onto,
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
