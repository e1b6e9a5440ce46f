"""TransformerLens's weight surface of ``HookedSparseTransformer``: the stacked ``W_Q``/``W_K``/...
properties, ``QK``/``OV``, ``accumulated_bias``, ``tokens_to_residual_directions``, TL's weight
processing (refused, with the reason), and the sparsity accounting.

``WeightSurfaceMixin`` is a base class of ``HookedSparseTransformer`` only; it reads the model's
submodules (``embed``, ``pos_embed``, ``blocks``, ``ln_final``, ``unembed``).
"""

from typing import TypedDict

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import FactoredMatrix

from sparse_lens.model.components import PosEmbed, RMSNorm, TransformerBlocks, Unembed
from sparse_lens.model.sparsity import ParamRole, param_role
from sparse_lens.model.tokenizing import TokenizingMixin


class ParamStats(TypedDict):
    """One parameter's entry in ``sparsity_stats()["params"]``."""

    role: ParamRole
    numel: int
    nonzero: int
    density: float  # nonzero / numel


class SparsityStats(TypedDict):
    """``sparsity_stats()``: nonzeros (the paper's L0) per parameter and in total, and the dead
    units (see ``WeightSurfaceMixin.sparsity_stats``)."""

    params: dict[str, ParamStats]
    total_params: int
    total_nonzero: int
    density: float
    sparse_params: int  # the parameters whose role is not "dense"
    sparse_nonzero: int
    sparse_density: float
    dead_neurons: int
    dead_q_channels: int
    dead_k_channels: int
    dead_v_channels: int
    dead_residual_channels: int
    n_neurons: int
    n_qkv_channels: int


class WeightSurfaceMixin(TokenizingMixin):
    """TL's ``W_*``/``b_*`` properties (stacked over layers), ``QK``, ``OV`` and the readouts
    built on them."""

    # set by HookedSparseTransformer.__init__ (pos_embed only with learned positions)
    blocks: TransformerBlocks
    pos_embed: PosEmbed
    ln_final: RMSNorm
    unembed: Unembed

    # ------------------------------------------------------------------ TL weight surface
    @property
    def W_E(self) -> Float[Tensor, "d_vocab d_model"]:
        return self.embed.W_E

    @property
    def W_pos(self) -> Float[Tensor, "n_ctx d_model"]:
        """The learned positional embedding ``[n_ctx d_model]`` (TL's ``W_pos``).

        Raises:
            AttributeError: the model has no positional embedding (``positional_embedding='none'``).
        """
        if self.cfg.positional_embedding != "learned":
            raise AttributeError(
                "this model has no positional embedding (positional_embedding='none')"
            )
        return self.pos_embed.W_pos

    @property
    def W_U(self) -> Float[Tensor, "d_model d_vocab"]:
        return self.unembed.W_U

    @property
    def b_U(self) -> Float[Tensor, " d_vocab"]:
        return self.unembed.b_U

    def _stack(self, part: str, name: str) -> Tensor:
        return torch.stack([getattr(getattr(b, part), name) for b in self.blocks], dim=0)

    @property
    def b_Q(self) -> Float[Tensor, "n_layers n_heads d_head"]:
        return self._stack("attn", "b_Q")

    @property
    def b_K(self) -> Float[Tensor, "n_layers n_heads d_head"]:
        return self._stack("attn", "b_K")

    @property
    def b_V(self) -> Float[Tensor, "n_layers n_heads d_head"]:
        return self._stack("attn", "b_V")

    @property
    def b_O(self) -> Float[Tensor, "n_layers d_model"]:
        return self._stack("attn", "b_O")

    @property
    def b_in(self) -> Float[Tensor, "n_layers d_mlp"]:
        return self._stack("mlp", "b_in")

    @property
    def b_out(self) -> Float[Tensor, "n_layers d_model"]:
        return self._stack("mlp", "b_out")

    @property
    def W_Q(self) -> Float[Tensor, "n_layers n_heads d_model d_head"]:
        return self._stack("attn", "W_Q")

    @property
    def W_K(self) -> Float[Tensor, "n_layers n_heads d_model d_head"]:
        return self._stack("attn", "W_K")

    @property
    def W_V(self) -> Float[Tensor, "n_layers n_heads d_model d_head"]:
        return self._stack("attn", "W_V")

    @property
    def W_O(self) -> Float[Tensor, "n_layers n_heads d_head d_model"]:
        return self._stack("attn", "W_O")

    @property
    def W_in(self) -> Float[Tensor, "n_layers d_model d_mlp"]:
        return self._stack("mlp", "W_in")

    @property
    def W_out(self) -> Float[Tensor, "n_layers d_mlp d_model"]:
        return self._stack("mlp", "W_out")

    @property
    def QK(self) -> FactoredMatrix:
        return FactoredMatrix(self.W_Q, self.W_K.transpose(-2, -1))

    @property
    def OV(self) -> FactoredMatrix:
        return FactoredMatrix(self.W_V, self.W_O)

    def all_head_labels(self) -> list[str]:
        return [
            f"L{layer}H{h}" for layer in range(self.cfg.n_layers) for h in range(self.cfg.n_heads)
        ]

    def tl_parameters(self) -> dict[str, Tensor]:
        """Parameters under TL names (used by ``SVDInterpreter``)."""
        return dict(self.named_parameters()) | {"unembed.W_U": self.W_U}

    def accumulated_bias(
        self, layer: int, mlp_input: bool = False, include_mlp_biases: bool = True
    ) -> Float[Tensor, " d_model"]:
        """Sum of the output biases (``b_O``, ``b_out``) written before ``layer``'s attention
        (or MLP if ``mlp_input``). Under AbsTopK at a write site the written bias is masked per
        position; ``SparseActivationCache`` adds that correction.

        Raises:
            ValueError: ``mlp_input`` with ``layer >= n_layers``.
        """
        bias = torch.zeros(self.cfg.d_model, dtype=self.cfg.dtype, device=self.W_E.device)
        for i in range(layer):
            bias = bias + self.blocks[i].attn.b_O
            if include_mlp_biases:
                bias = bias + self.blocks[i].mlp.b_out
        if mlp_input:
            if layer >= self.cfg.n_layers:
                raise ValueError("mlp_input=True needs layer < n_layers")
            bias = bias + self.blocks[layer].attn.b_O
        return bias

    def tokens_to_residual_directions(
        self, tokens: str | int | Int[Tensor, "..."]
    ) -> Float[Tensor, "... d_model"]:
        """Unembedding directions of ``tokens`` with the final RMSNorm gain folded in, so that
        direct logit attribution on ``hook_scale``-normalised residuals is exact."""
        if isinstance(tokens, str):
            tokens = self.to_single_token(tokens)
        if isinstance(tokens, int):
            return self.W_U[:, tokens] * self.ln_final.w
        if tokens.numel() == 1:  # one token, whatever its shape: [d_model], as TL returns
            return self.W_U[:, int(tokens.reshape(-1)[0])] * self.ln_final.w
        directions = self.W_U[:, tokens.to(self.W_U.device)]  # [d_model ...]
        return directions.movedim(0, -1) * self.ln_final.w

    # ------------------------------------------------------------------ TL weight processing
    def _no_weight_processing(self, name: str, why: str) -> None:
        raise NotImplementedError(
            f"{name} does not apply to HookedSparseTransformer: {why}. The model's outputs and "
            "decompositions are exact without it."
        )

    def fold_layer_norm(self, *args: object, **kwargs: object) -> None:
        self._no_weight_processing(
            "fold_layer_norm",
            "the RMSNorm gains act before AbsTopK at attn_in/mlp_in, so folding them into "
            "W_Q/W_K/W_V/W_in changes which entries AbsTopK keeps; tokens_to_residual_directions "
            "folds ln_final's gain instead",
        )

    def center_writing_weights(self, *args: object, **kwargs: object) -> None:
        self._no_weight_processing(
            "center_writing_weights",
            "RMSNorm does not subtract the mean, so centering residual writes changes every "
            "later layer, and it would make the sparse W_O/W_out/W_E dense",
        )

    def center_unembed(self, *args: object, **kwargs: object) -> None:
        self._no_weight_processing(
            "center_unembed", "it would make the weight-sparse W_U dense and shift every logit"
        )

    def fold_value_biases(self, *args: object, **kwargs: object) -> None:
        self._no_weight_processing(
            "fold_value_biases",
            "with attention sinks the pattern rows sum to 1 - sink probability (not 1), and "
            "AbsTopK at attn_v selects on the biased values, so b_V is not a constant write",
        )

    def refactor_factored_attn_matrices(self, *args: object, **kwargs: object) -> None:
        self._no_weight_processing(
            "refactor_factored_attn_matrices",
            "AbsTopK at attn_q/attn_k/attn_v selects channels in the stored basis; a change of "
            "basis changes the outputs",
        )

    def process_weights(self, *args: object, **kwargs: object) -> None:
        self._no_weight_processing(
            "process_weights",
            "it runs fold_layer_norm, center_writing_weights, center_unembed "
            "and fold_value_biases, none of which applies (see each)",
        )

    process_weights_ = process_weights

    def load_and_process_state_dict(
        self,
        state_dict: dict[str, Tensor],
        fold_ln: bool = False,
        center_writing_weights: bool = False,
        center_unembed: bool = False,
        fold_value_biases: bool = False,
        refactor_factored_attn_matrices: bool = False,
    ) -> None:
        """Load ``state_dict`` strictly. Each processing flag, if set, raises the
        ``NotImplementedError`` of its method (none applies here; TL's defaults are True)."""
        steps = {
            "fold_layer_norm": fold_ln,
            "center_writing_weights": center_writing_weights,
            "center_unembed": center_unembed,
            "fold_value_biases": fold_value_biases,
            "refactor_factored_attn_matrices": refactor_factored_attn_matrices,
        }
        for name, wanted in steps.items():
            if wanted:
                getattr(self, name)()
        self.load_state_dict(state_dict, strict=True)

    # ------------------------------------------------------------------ sparsity accounting
    @torch.no_grad()
    def sparsity_stats(self) -> SparsityStats:
        """Nonzeros and density per parameter and in total, and dead neurons/channels.

        A neuron is dead when its input or its output weights are all zero (it can never write);
        a q/k/v channel when its input weights are all zero, a v channel also when its ``W_O``
        row is all zero; a residual channel when no embedding or block writes to it.
        """
        params: dict[str, ParamStats] = {}
        total = nonzero = 0
        sparse_total = sparse_nonzero = 0
        for name, p in self.named_parameters():
            nnz = int((p != 0).sum())
            role = param_role(name)
            params[name] = {
                "role": role,
                "numel": p.numel(),
                "nonzero": nnz,
                "density": nnz / p.numel(),
            }
            total += p.numel()
            nonzero += nnz
            if role != "dense":
                sparse_total += p.numel()
                sparse_nonzero += nnz
        dead_neurons = dead_q = dead_k = dead_v = 0
        written = (self.W_E != 0).any(0)
        for b in self.blocks:
            fan_in = (b.mlp.W_in != 0).any(0) | (b.mlp.b_in != 0)
            fan_out = (b.mlp.W_out != 0).any(1)
            dead_neurons += int((~(fan_in & fan_out)).sum())
            dead_q += int((~((b.attn.W_Q != 0).any(1) | (b.attn.b_Q != 0))).sum())
            dead_k += int((~((b.attn.W_K != 0).any(1) | (b.attn.b_K != 0))).sum())
            v_in = (b.attn.W_V != 0).any(1) | (b.attn.b_V != 0)
            dead_v += int((~(v_in & (b.attn.W_O != 0).any(2))).sum())
            written = written | (b.attn.W_O != 0).flatten(0, 1).any(0) | (b.mlp.W_out != 0).any(0)
            written = written | (b.attn.b_O != 0) | (b.mlp.b_out != 0)
        return {
            "params": params,
            "total_params": total,
            "total_nonzero": nonzero,
            "density": nonzero / total,
            "sparse_params": sparse_total,
            "sparse_nonzero": sparse_nonzero,
            "sparse_density": sparse_nonzero / max(sparse_total, 1),
            "dead_neurons": dead_neurons,
            "dead_q_channels": dead_q,
            "dead_k_channels": dead_k,
            "dead_v_channels": dead_v,
            "dead_residual_channels": int((~written).sum()),
            "n_neurons": self.cfg.n_layers * self.cfg.d_mlp,
            "n_qkv_channels": self.cfg.n_layers * self.cfg.n_heads * self.cfg.d_head,
        }
