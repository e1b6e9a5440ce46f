"""``HookedSparseTransformer``: the weight-sparse GPT of Gao et al. 2025 as a TransformerLens model.

It subclasses TL's ``HookedRootModule`` and follows the checklist of
``shared/reference/transformerlens.md`` §1.3: TL hook names and weight layout, ``run_with_cache``
returning an ``ActivationCache`` (``SparseActivationCache``), the tokenizer surface, ``set_use_*``
switches, ``accumulated_bias`` and ``tokens_to_residual_directions`` with ``ln_final.w`` folded.

Note:
    Call ``model.eval()`` before TL's patching functions (TL 4 refuses train mode). Never run TL
    weight processing that folds value biases: with attention sinks, pattern rows do not sum to 1
    and folding changes the outputs.

Init scheme (OpenAI's ``gpt.py``):

| parameter | init |
|---|---|
| ``W_E W_pos W_U W_Q W_K W_V W_in`` | N(0, init_std) |
| ``W_O W_out`` (residual writes) | N(0, init_std / sqrt(2 n_layers)) |
| biases, sinks | 0 |
| norm gains ``w`` | 1 |
| bigram table ``W_bigram`` | U[0, init_std) |
"""

import difflib
import logging
import math
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens import ActivationCache, FactoredMatrix, HookedRootModule
from transformer_lens.hook_points import HookPoint

from sparse_lens.cache import SparseActivationCache
from sparse_lens.components import (
    BigramTable,
    ChannelOverride,
    Embed,
    PosEmbed,
    RMSNorm,
    TransformerBlock,
    Unembed,
)
from sparse_lens.config import SparseTransformerConfig
from sparse_lens.sparsity import param_role
from sparse_lens.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

ReturnType = Literal["logits", "loss", "both"] | None
TokensInput = str | list[str] | Tensor  # token tensors are validated by _validate_tokens

# HookedTransformer 2.x/3.x names of the split-QKV forks, kept as lookups for old user code.
_LEGACY_ALIASES = {
    "hook_q_input": "attn.hook_q_input",
    "hook_k_input": "attn.hook_k_input",
    "hook_v_input": "attn.hook_v_input",
    "hook_attn_in": "attn.hook_attn_in",
}


def lm_cross_entropy(
    logits: Float[Tensor, "batch pos d_vocab"],
    tokens: Int[Tensor, "batch pos"],
    per_token: bool = False,
) -> Float[Tensor, "..."]:
    """Next-token cross-entropy of ``logits[:, :-1]`` against ``tokens[:, 1:]``."""
    logprobs = logits[:, :-1].float().log_softmax(dim=-1)
    loss = -logprobs.gather(-1, tokens[:, 1:, None]).squeeze(-1)
    return loss if per_token else loss.mean()


class HookedSparseTransformer(HookedRootModule):
    """A weight-sparse decoder-only transformer with TransformerLens hooks.

    Args:
        cfg: the architecture.
        tokenizer: optional ``sparse_lens.tokenizer.Tokenizer``; needed for string input.
    """

    def __init__(self, cfg: SparseTransformerConfig, tokenizer: Tokenizer | None = None) -> None:
        super().__init__()
        if not isinstance(cfg, SparseTransformerConfig):
            raise TypeError(f"cfg must be a SparseTransformerConfig, got {type(cfg).__name__}")
        if tokenizer is not None and tokenizer.vocab_size != cfg.d_vocab:
            raise ValueError(
                f"tokenizer has {tokenizer.vocab_size} tokens but cfg.d_vocab is {cfg.d_vocab}"
            )
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.embed = Embed(cfg)
        self.hook_embed = HookPoint()  # [batch pos d_model]
        if cfg.positional_embedding == "learned":
            self.pos_embed = PosEmbed(cfg)
            self.hook_pos_embed = HookPoint()
        self.blocks = nn.ModuleList([TransformerBlock(cfg, i) for i in range(cfg.n_layers)])
        if cfg.circuit_overrides:
            self.override_final = ChannelOverride(cfg.d_model, cfg.dtype)
        self.ln_final = RMSNorm(cfg, cfg.d_model)
        self.unembed = Unembed(cfg)
        if cfg.use_bigram_table:
            self.bigram = BigramTable(cfg)
        self.init_weights(torch.Generator().manual_seed(cfg.seed) if cfg.seed is not None else None)
        self.setup()
        for i in range(cfg.n_layers):
            for legacy, target in _LEGACY_ALIASES.items():
                self.mod_dict[f"blocks.{i}.{legacy}"] = self.mod_dict[f"blocks.{i}.{target}"]

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """(Re)initialise every parameter; see the module docstring for the scheme."""
        std = self.cfg.init_std
        out_std = std / math.sqrt(2 * self.cfg.n_layers)
        for name, p in self.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("W_O", "W_out"):
                p.normal_(0.0, out_std, generator=generator)
            elif leaf.startswith("W_") and leaf != "W_bigram":
                p.normal_(0.0, std, generator=generator)
            elif leaf == "W_bigram":
                p.uniform_(0.0, std, generator=generator)
            elif leaf == "w":
                p.fill_(1.0)
            else:  # biases, sinks
                p.zero_()

    # ------------------------------------------------------------------ config switches
    def _set_cfg(self, cfg: SparseTransformerConfig) -> None:
        self.cfg = cfg
        for module in self.modules():
            if module is not self and hasattr(module, "cfg"):
                module.cfg = cfg

    def set_use_attn_result(self, use_attn_result: bool) -> None:
        """Fire ``attn.hook_result`` (per-head residual writes)."""
        self._set_cfg(self.cfg.replace(use_attn_result=use_attn_result))

    def set_use_split_qkv_input(self, use_split_qkv_input: bool) -> None:
        """Fork per-head q/k/v inputs at ``attn.hook_{q,k,v}_input`` (before ``ln1``)."""
        self._set_cfg(self.cfg.replace(use_split_qkv_input=use_split_qkv_input))

    def set_use_attn_in(self, use_attn_in: bool) -> None:
        """Fork a per-head attention input at ``attn.hook_attn_in`` (before ``ln1``)."""
        self._set_cfg(self.cfg.replace(use_attn_in=use_attn_in))

    def set_use_hook_mlp_in(self, use_hook_mlp_in: bool) -> None:
        """Fire ``blocks.{l}.hook_mlp_in`` on a copy of the MLP's residual input."""
        self._set_cfg(self.cfg.replace(use_hook_mlp_in=use_hook_mlp_in))

    # ------------------------------------------------------------------ hooks
    def _enable_hook_with_name(self, name: str, hook: Any, dir: Literal["fwd", "bwd"]) -> None:
        if name not in self.mod_dict or not isinstance(self.mod_dict[name], HookPoint):
            close = difflib.get_close_matches(name, list(self.hook_dict), n=3)
            hint = f"; did you mean {close}?" if close else ""
            raise KeyError(f"unknown hook name {name!r}{hint}")
        super()._enable_hook_with_name(name, hook, dir)

    def run_with_cache(  # type: ignore[override]
        self,
        *model_args: Any,
        return_cache_object: bool = True,
        remove_batch_dim: bool = False,
        **kwargs: Any,
    ) -> tuple[Any, ActivationCache | dict[str, Tensor]]:
        """TL's ``run_with_cache`` returning a ``SparseActivationCache`` (an ``ActivationCache``)."""
        out, cache_dict = super().run_with_cache(
            *model_args, remove_batch_dim=remove_batch_dim, **kwargs
        )
        if return_cache_object:
            return out, SparseActivationCache(cache_dict, self, has_batch_dim=not remove_batch_dim)
        return out, cache_dict

    # ------------------------------------------------------------------ forward
    def _validate_tokens(self, tokens: Tensor) -> Tensor:
        if tokens.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise TypeError(f"tokens must be an integer tensor, got dtype {tokens.dtype}")
        if tokens.ndim == 1:
            tokens = tokens.unsqueeze(0)
        if tokens.ndim != 2:
            raise ValueError(f"tokens must have shape [batch, pos], got {tuple(tokens.shape)}")
        if tokens.shape[0] == 0:
            raise ValueError(
                "tokens is an empty batch (shape [0, pos]); pass at least one sequence"
            )
        if tokens.shape[1] == 0:
            raise ValueError("tokens has no positions")
        if tokens.shape[1] > self.cfg.n_ctx:
            raise ValueError(f"sequence length {tokens.shape[1]} exceeds n_ctx={self.cfg.n_ctx}")
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= self.cfg.d_vocab:
            bad = lo if lo < 0 else hi
            raise ValueError(f"token id {bad} is out of range [0, {self.cfg.d_vocab})")
        return tokens.long().to(self.embed.W_E.device)

    def forward(
        self,
        input: TokensInput,
        return_type: ReturnType = "logits",
        loss_per_token: bool = False,
        prepend_bos: bool | None = None,
    ) -> Any:
        """Run the model.

        Args:
            input: a string, a list of strings, or token ids ``[batch pos]`` (or ``[pos]``).
            return_type: ``"logits"``, ``"loss"`` (next-token CE), ``"both"`` or ``None``.
            loss_per_token: return the loss per position ``[batch pos-1]`` instead of its mean.
            prepend_bos: for string input; defaults to ``cfg.default_prepend_bos``.
        """
        if return_type not in ("logits", "loss", "both", None):
            raise ValueError(f"return_type must be logits, loss, both or None, got {return_type!r}")
        if isinstance(input, str | list):
            tokens = self.to_tokens(input, prepend_bos=prepend_bos)
        elif isinstance(input, Tensor):
            tokens = self._validate_tokens(input)
        else:
            raise TypeError(f"input must be str, list[str] or a token tensor, got {type(input)}")
        resid = self.hook_embed(self.embed(tokens))
        if self.cfg.positional_embedding == "learned":
            resid = resid + self.hook_pos_embed(self.pos_embed(tokens))
        for block in self.blocks:
            resid = block(resid)
        if self.cfg.circuit_overrides:
            resid = self.override_final(resid)
        logits = self.unembed(self.ln_final(resid))
        if self.cfg.use_bigram_table:
            logits = logits + self.bigram(tokens)
        if return_type is None:
            return None
        if return_type == "logits":
            return logits
        if tokens.shape[1] < 2:
            raise ValueError("a loss needs at least 2 positions")
        loss = lm_cross_entropy(logits, tokens, per_token=loss_per_token)
        return loss if return_type == "loss" else (logits, loss)

    # ------------------------------------------------------------------ tokenizer surface
    def _require_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer; pass token ids or set model.tokenizer")
        return self.tokenizer

    def to_tokens(
        self,
        input: str | list[str],
        prepend_bos: bool | None = None,
        padding_side: Literal["left", "right"] = "right",
        truncate: bool = True,
    ) -> Int[Tensor, "batch pos"]:
        """Tokenise ``input`` to ``[batch pos]``; lists are padded with the end-of-text id."""
        tok = self._require_tokenizer()
        bos = self.cfg.default_prepend_bos if prepend_bos is None else prepend_bos
        texts = [input] if isinstance(input, str) else list(input)
        if not texts:
            raise ValueError("to_tokens got an empty list of strings; pass at least one string")
        seqs = [([tok.eot_id] if bos else []) + tok.encode(t) for t in texts]
        if truncate:
            seqs = [s[: self.cfg.n_ctx] for s in seqs]
        if any(len(s) == 0 for s in seqs):
            raise ValueError("an input string tokenised to no tokens")
        width = max(len(s) for s in seqs)
        out = torch.full((len(seqs), width), tok.eot_id, dtype=torch.long)
        for i, s in enumerate(seqs):
            if padding_side == "right":
                out[i, : len(s)] = torch.tensor(s)
            else:
                out[i, width - len(s) :] = torch.tensor(s)
        return out.to(self.embed.W_E.device)

    def to_string(self, tokens: Int[Tensor, "..."] | list[int] | int) -> str | list[str]:
        """Decode ``[pos]`` (or an id) to a string, ``[batch pos]`` to a list of strings."""
        tok = self._require_tokenizer()
        if isinstance(tokens, int):
            return tok.decode([tokens])
        if isinstance(tokens, Tensor) and tokens.ndim == 2:
            return [tok.decode(row.tolist()) for row in tokens]
        ids = tokens.tolist() if isinstance(tokens, Tensor) else list(tokens)
        return tok.decode(ids)

    def to_str_tokens(
        self, input: str | Int[Tensor, "..."] | list[int], prepend_bos: bool | None = None
    ) -> list[str]:
        """The string of each token of ``input`` (a string or a 1-D/``[1 pos]`` token tensor)."""
        tok = self._require_tokenizer()
        if isinstance(input, str):
            ids = self.to_tokens(input, prepend_bos=prepend_bos)[0].tolist()
        elif isinstance(input, Tensor):
            if input.ndim == 2 and input.shape[0] != 1:
                raise ValueError(f"to_str_tokens takes one sequence, got shape {input.shape}")
            ids = input.reshape(-1).tolist()
        else:
            ids = list(input)
        return [tok.decode([i]) for i in ids]

    def to_single_token(self, string: str) -> int:
        """The id of ``string``; raises ``ValueError`` if it is not exactly one token."""
        ids = self._require_tokenizer().encode(string)
        if len(ids) != 1:
            raise ValueError(f"{string!r} is {len(ids)} tokens, not one: {ids}")
        return ids[0]

    # ------------------------------------------------------------------ TL weight surface
    @property
    def W_E(self) -> Float[Tensor, "d_vocab d_model"]:
        return self.embed.W_E

    @property
    def W_pos(self) -> Float[Tensor, "n_ctx d_model"]:
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
        position; ``SparseActivationCache`` adds that correction."""
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
        directions = self.W_U[:, tokens.to(self.W_U.device)]  # [d_model ...]
        return directions.movedim(0, -1) * self.ln_final.w

    # ------------------------------------------------------------------ sparsity accounting
    @torch.no_grad()
    def sparsity_stats(self) -> dict[str, Any]:
        """Nonzeros and density per parameter and in total, and dead neurons/channels.

        A neuron is dead when its input or its output weights are all zero (it can never write);
        a q/k/v channel when its input weights are all zero, a v channel also when its ``W_O``
        row is all zero; a residual channel when no embedding or block writes to it.
        """
        params: dict[str, dict[str, Any]] = {}
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

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``model.safetensors``, ``config.json`` and ``tokenizer.json`` atomically."""
        from sparse_lens.checkpoint import save_pretrained

        return save_pretrained(self, directory)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: str | torch.device = "cpu"
    ) -> "HookedSparseTransformer":
        """Load a folder written by ``save_pretrained``; strict, with errors naming the file."""
        from sparse_lens.checkpoint import load_pretrained

        return load_pretrained(directory, device=device)


__all__ = ["HookedSparseTransformer", "lm_cross_entropy"]
