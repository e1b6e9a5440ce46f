"""``HookedSparseTransformer``: the weight-sparse GPT of Gao et al. 2025 as a TransformerLens model.

It subclasses TL's ``HookedRootModule`` and follows TransformerLens's model
conventions: TL hook names and weight layout, ``run_with_cache``
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Literal, cast, get_args

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import ActivationCache, FactoredMatrix, HookedRootModule
from transformer_lens.hook_points import HookPoint

# TL re-exports Slice here without listing it in __all__ (the public path since TL 3)
from transformer_lens.utilities import Slice  # pyright: ignore[reportPrivateImportUsage]

from sparse_lens.data.tokenizer import Tokenizer
from sparse_lens.model.activation_cache import SparseActivationCache
from sparse_lens.model.checkpoint import load_pretrained, save_pretrained
from sparse_lens.model.components import (
    BigramTable,
    ChannelOverride,
    Embed,
    PosEmbed,
    RMSNorm,
    TransformerBlock,
    TransformerBlocks,
    Unembed,
)
from sparse_lens.model.config import SparseTransformerConfig
from sparse_lens.model.kv_cache import KVCache
from sparse_lens.model.sparsity import param_role

logger = logging.getLogger(__name__)

ReturnType = Literal["logits", "loss", "both"] | None
PaddingSide = Literal["left", "right"]
TokenPosition = Literal["first", "last"]  # get_token_position's mode
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


def _hook_name(hook: HookPoint) -> str:
    """A hook point's full name; ``HookRootModule.setup()`` sets it on every hook point."""
    if hook.name is None:
        raise RuntimeError("hook point has no name: the model's setup() did not run")
    return hook.name


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
    def adding_rows(self, rows: Float[Tensor, "n d_vocab"]) -> Iterator[None]:
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


class HookedSparseTransformer(HookedRootModule):
    """A weight-sparse decoder-only transformer with TransformerLens hooks.

    Args:
        cfg: the architecture.
        tokenizer: optional ``sparse_lens.data.tokenizer.Tokenizer``; needed for string input.
    """

    def __init__(self, cfg: SparseTransformerConfig, tokenizer: Tokenizer | None = None) -> None:
        """Build the model with fresh weights for ``cfg``; ``tokenizer`` is optional.

        Raises:
            TypeError: ``cfg`` is not a ``SparseTransformerConfig`` (its type is named).
            ValueError: ``tokenizer``'s vocabulary size is not ``cfg.d_vocab`` (both named).
        """
        super().__init__()
        if not isinstance(cfg, SparseTransformerConfig):
            raise TypeError(f"cfg must be a SparseTransformerConfig, got {type(cfg).__name__}")
        if tokenizer is not None and tokenizer.vocab_size != cfg.d_vocab:
            raise ValueError(
                f"tokenizer has {tokenizer.vocab_size} tokens but cfg.d_vocab is {cfg.d_vocab}"
            )
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.adapter = ReadoutAdapter(lambda: self.cfg)
        self.embed = Embed(cfg)
        self.hook_embed = HookPoint()  # [batch pos d_model]
        if cfg.positional_embedding == "learned":
            self.pos_embed = PosEmbed(cfg)
            self.hook_pos_embed = HookPoint()
        self.blocks = TransformerBlocks([TransformerBlock(cfg, i) for i in range(cfg.n_layers)])
        if cfg.circuit_overrides:
            self.override_final = ChannelOverride(cfg.d_model, cfg.dtype)
        self.ln_final = RMSNorm(cfg, cfg.d_model)
        self.unembed = Unembed(cfg)
        if cfg.use_bigram_table:
            self.bigram = BigramTable(cfg)
        self.init_weights(torch.Generator().manual_seed(cfg.seed) if cfg.seed is not None else None)
        if cfg.device is not None and self.embed.W_E.device.type != "meta":  # meta: shapes only
            self.to(cfg.device)
        self.setup()
        for name, hook_point in self.hook_dict.items():  # TL's declared position axis
            hook_point.pos_dim = self.hook_pos_dim(name)
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
                # torch types Module.__setattr__'s value as Tensor | Module; plain attributes work
                module.cfg = cfg  # pyright: ignore[reportArgumentType]

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
    def inactive_hook_reason(self, name: str) -> str | None:
        """Why hook ``name`` cannot fire under the current config (``None`` if it fires).

        Adding a hook that cannot fire raises ``ValueError`` with this reason instead of
        silently doing nothing.
        """
        cfg = self.cfg
        leaf = name.rsplit(".", 1)[-1]
        if name.endswith("attn.hook_result") and not cfg.use_attn_result:
            return "it fires only after model.set_use_attn_result(True)"
        if leaf in ("hook_q_input", "hook_k_input", "hook_v_input") and not cfg.use_split_qkv_input:
            return "it fires only after model.set_use_split_qkv_input(True)"
        if leaf == "hook_attn_in" and not cfg.use_attn_in:
            return "it fires only after model.set_use_attn_in(True)"
        if leaf == "hook_mlp_in" and not cfg.use_hook_mlp_in:
            return "it fires only after model.set_use_hook_mlp_in(True)"
        if leaf == "hook_out_mask":
            site = "attn_out" if ".attn." in name else "mlp_out"
            if not cfg.act_sparse(site):
                return f"AbsTopK at {site} is off in this model's config (act_sparse_sites, afrac)"
        if leaf == "hook_sink_prob" and not cfg.attn_sinks:
            return "this model has no attention sinks (cfg.attn_sinks is False)"
        return None

    def _resolve_hook_name(self, name: str) -> str:
        hook_point = self.mod_dict.get(name)
        if not isinstance(hook_point, HookPoint):
            close = difflib.get_close_matches(name, list(self.hook_dict), n=3)
            hint = f"; did you mean {close}?" if close else ""
            raise KeyError(f"unknown hook name {name!r}{hint}")
        canonical = _hook_name(hook_point)
        reason = self.inactive_hook_reason(canonical)
        if reason is not None:
            raise ValueError(f"hook {name!r} would never fire: {reason}")
        return canonical

    def _enable_hook_with_name(self, name: str, hook: Any, dir: Literal["fwd", "bwd"]) -> None:
        self._resolve_hook_name(name)
        super()._enable_hook_with_name(name, hook, dir)

    def check_hooks_to_add(
        self, hook_point: Any, hook_point_name: str, *args: Any, **kw: Any
    ) -> None:
        """``add_hook`` refuses a hook that would never fire (see ``inactive_hook_reason``)."""
        self._resolve_hook_name(hook_point_name)

    # add_hook takes fewer positional parameters than TL's (callers use keywords, as TL's own
    # code does); run_with_cache returns a SparseActivationCache where TL declares a dict.
    def add_hook(  # pyright: ignore[reportIncompatibleMethodOverride]
        self, name: Any, hook: Any, dir: Literal["fwd", "bwd"] = "fwd", **kwargs: Any
    ) -> None:
        """TL's ``add_hook``: a name refuses a hook that cannot fire; a filter function selects
        only the hook points that fire under the current config."""
        if callable(name) and not isinstance(name, str):
            chosen = name
            name = lambda n: chosen(n) and self.inactive_hook_reason(n) is None  # noqa: E731
        super().add_hook(name, hook, dir=dir, **kwargs)

    def _enable_hooks_for_points(self, hook_points: Any, enabled: Any, hook: Any, dir: Any) -> None:
        # A name filter selects only the hook points that fire under the current config.
        active = [(n, hp) for n, hp in hook_points if self.inactive_hook_reason(n) is None]
        super()._enable_hooks_for_points(active, enabled, hook, dir)

    def hook_pos_dim(self, name: str) -> int | None:
        """Position axis of hook ``name``'s batched activation (``None``: it has none).

        Attention scores, patterns and ``hook_sink_prob`` are ``[batch head_index query_pos ...]``
        (the query axis, 2); every other activation of this model has positions at axis 1.
        """
        if name.endswith(("hook_attn_scores", "hook_pattern", "hook_sink_prob")):
            return 2
        return 1

    def get_caching_hooks(
        self,
        names_filter: Any = None,
        incl_bwd: bool = False,
        device: Any = None,
        remove_batch_dim: bool = False,
        cache: dict | None = None,
        pos_slice: Any = None,
    ) -> tuple[dict, list, list]:
        """TL's caching hooks with this model's layouts.

        Differences from TL: ``pos_slice`` cuts each hook's own position axis (``hook_pos_dim``);
        legacy names (``blocks.0.hook_q_input``) in a list or string filter cache under their
        canonical name; an unknown or never-firing name in a list or string raises; only hooks
        that fire are hooked; and the AbsTopK write masks (``hook_out_mask``) are cached
        whenever anything is, because exact decompositions need them.

        Raises:
            KeyError: an unknown hook name in a list or string filter (named).
            ValueError: a name that would never fire (named, with the reason), or a ``names_filter``
                that is not a string, a list of strings or a function.
        """
        if isinstance(names_filter, str):
            names_filter = [names_filter]
        if isinstance(names_filter, list | tuple):
            wanted = {self._resolve_hook_name(n) for n in names_filter}
            names_filter = wanted.__contains__
        elif names_filter is None:
            names_filter = lambda name: True  # noqa: E731
        elif not callable(names_filter):
            raise ValueError("names_filter must be a string, a list of strings or a function")
        pos_slice = Slice.unwrap(pos_slice)
        cache = {} if cache is None else cache
        active = [n for n in self.hook_dict if self.inactive_hook_reason(n) is None]
        aliases: dict[str, list[str]] = {}
        for name, module in self.mod_dict.items():
            if isinstance(module, HookPoint) and module.name != name:
                aliases.setdefault(_hook_name(module), []).append(name)
        # A filter function may test a legacy name: a hook is chosen under any of its names.
        chosen = [n for n in active if any(names_filter(a) for a in [n, *aliases.get(n, [])])]
        if chosen:
            chosen += [n for n in active if n.endswith("hook_out_mask") and n not in chosen]

        def save_hook(tensor: Tensor, hook: HookPoint, is_backward: bool = False) -> None:
            value = tensor.detach().to(device) if device is not None else tensor.detach()
            dim = self.hook_pos_dim(_hook_name(hook))
            if remove_batch_dim and value.ndim > 0 and value.shape[0] == 1:
                value = value[0]
                dim = None if dim is None else dim - 1
            if dim is not None and value.ndim > dim and pos_slice.mode != "empty":
                value = pos_slice.apply(value, dim=dim)
            cache[_hook_name(hook) + ("_grad" if is_backward else "")] = value

        self.is_caching = True
        fwd = [(n, partial(save_hook, is_backward=False)) for n in chosen]
        bwd = [(n, partial(save_hook, is_backward=True)) for n in chosen] if incl_bwd else []
        return cache, fwd, bwd

    def add_caching_hooks(
        self,
        names_filter: Any = None,
        incl_bwd: bool = False,
        device: Any = None,
        remove_batch_dim: bool = False,
        cache: dict | None = None,
    ) -> dict:
        """TL's ``add_caching_hooks`` with ``get_caching_hooks``' rules (masks, layouts)."""
        cache, fwd, bwd = self.get_caching_hooks(
            names_filter, incl_bwd, device, remove_batch_dim=remove_batch_dim, cache=cache
        )
        for name, fn in fwd:
            self.hook_dict[name].add_hook(fn, "fwd")
        for name, fn in bwd:
            self.hook_dict[name].add_hook(fn, "bwd")
        return cache

    def run_with_cache(  # pyright: ignore[reportIncompatibleMethodOverride]
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

    def _check_mask(self, attention_mask: Tensor | None, tokens: Tensor) -> Tensor | None:
        if attention_mask is None:
            return None
        if attention_mask.shape != tokens.shape:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)}, tokens "
                f"{tuple(tokens.shape)}"
            )
        bad = attention_mask[(attention_mask != 0) & (attention_mask != 1)]
        if bad.numel():
            raise ValueError(f"attention_mask must be 0/1, got {bad[0].item()!r}")
        return attention_mask.to(tokens.device, torch.long)

    def _left_padding_mask(self, tokens: Tensor, prepend_bos: bool | None) -> Tensor | None:
        """Mask of left-padded ``tokens`` (as TL infers it): the leading run of end-of-text ids
        is padding, except its last id when a BOS was prepended (pad and BOS are one id)."""
        pad = self.require_tokenizer().eot_id
        bos = self.cfg.default_prepend_bos if prepend_bos is None else prepend_bos
        leading = (tokens == pad).long().cumprod(dim=-1)  # 1 on the leading run of pads
        if bos:
            n_pad = leading.sum(-1, keepdim=True)
            last = torch.arange(tokens.shape[1], device=tokens.device) == (n_pad - 1)
            leading = leading * ~last
        return 1 - leading

    def input_to_embed(
        self,
        input: TokensInput,
        prepend_bos: bool | None = None,
        padding_side: PaddingSide | None = None,
        attention_mask: Int[Tensor, "batch pos"] | None = None,
        past_kv_cache: KVCache | None = None,
    ) -> tuple[Float[Tensor, "batch pos d_model"], Tensor, None, Tensor | None]:
        """``(residual, tokens, None, attention_mask)`` as TL's ``input_to_embed``.

        String lists are padded on ``padding_side`` and get their attention mask; learned
        positions count real tokens only, so left padding does not shift them. The third entry
        (TL's shortformer positional embedding) is always ``None``. With ``past_kv_cache`` the
        input continues the cached positions and the returned mask covers all of them.

        Raises:
            TypeError: ``input`` is not a string, list of strings or token tensor.
            ValueError: cached plus new positions exceed ``n_ctx`` (both named), or a bad
                ``attention_mask``.
        """
        if isinstance(input, str | list):
            tokens, mask = self._tokenize(input, prepend_bos, padding_side or "right")
            attention_mask = mask if attention_mask is None else attention_mask
        elif isinstance(input, Tensor):
            tokens = self._validate_tokens(input)
            if attention_mask is None and padding_side == "left":
                attention_mask = self._left_padding_mask(tokens, prepend_bos)
        else:
            raise TypeError(f"input must be str, list[str] or a token tensor, got {type(input)}")
        attention_mask = self._check_mask(attention_mask, tokens)
        if past_kv_cache is not None:
            if past_kv_cache.n_pos + tokens.shape[1] > self.cfg.n_ctx:
                raise ValueError(
                    f"{past_kv_cache.n_pos} cached + {tokens.shape[1]} new positions exceed "
                    f"n_ctx={self.cfg.n_ctx}"
                )
            new = torch.ones_like(tokens) if attention_mask is None else attention_mask
            attention_mask = past_kv_cache.extend_mask(new)
        resid = self.hook_embed(self.embed(tokens))
        if self.cfg.positional_embedding == "learned":
            positions = None
            if attention_mask is not None:
                positions = (attention_mask.cumsum(-1) - 1).clamp_min(0)[:, -tokens.shape[1] :]
            resid = resid + self.hook_pos_embed(self.pos_embed(tokens, positions))
        return resid, tokens, None, attention_mask

    def forward(
        self,
        input: TokensInput | Float[Tensor, "batch pos d_model"],
        return_type: ReturnType = "logits",
        loss_per_token: bool = False,
        prepend_bos: bool | None = None,
        padding_side: PaddingSide | None = None,
        start_at_layer: int | None = None,
        tokens: Int[Tensor, "batch pos"] | None = None,
        stop_at_layer: int | None = None,
        attention_mask: Int[Tensor, "batch pos"] | None = None,
        past_kv_cache: KVCache | None = None,
    ) -> Any:
        """Run the model.

        Args:
            input: a string, a list of strings, or token ids ``[batch pos]`` (or ``[pos]``); with
                ``start_at_layer`` the residual stream ``[batch pos d_model]`` entering that layer.
            return_type: ``"logits"``, ``"loss"`` (next-token CE), ``"both"`` or ``None``.
            loss_per_token: return the loss per position ``[batch pos-1]`` instead of its mean.
            prepend_bos: for string input; defaults to ``cfg.default_prepend_bos``.
            padding_side: for a list of strings, ``"right"`` (default) or ``"left"``; for a token
                tensor without ``attention_mask``, ``"left"`` infers the mask of
                ``to_tokens(..., padding_side="left")`` (leading end-of-text ids are padding).
            start_at_layer: run blocks ``start_at_layer..`` on the residual ``input``; needs
                ``tokens`` for the bigram table and the loss.
            tokens: the token ids of a residual ``input`` (with ``start_at_layer``).
            stop_at_layer: return the residual stream entering this block (``hook_resid_pre``);
                ``return_type`` is then ignored, as in TL.
            attention_mask: ``[batch pos]`` 1 for real tokens, 0 for padding (inferred for
                string lists). Padded keys are hidden and padded targets left out of the loss.
            past_kv_cache: a ``KVCache`` (``KVCache.empty(n_layers)``) that ``input`` continues;
                it is extended in place. Not with ``start_at_layer``/``stop_at_layer``.

        Raises:
            ValueError: on bad input shapes, ids, masks, or a missing ``tokens``.
        """
        if return_type not in ("logits", "loss", "both", None):
            raise ValueError(f"return_type must be logits, loss, both or None, got {return_type!r}")
        if past_kv_cache is not None and (start_at_layer, stop_at_layer) != (None, None):
            raise ValueError("past_kv_cache cannot be combined with start_at_layer/stop_at_layer")
        if start_at_layer is None:
            resid, tokens, _, attention_mask = self.input_to_embed(
                input, prepend_bos, padding_side, attention_mask, past_kv_cache
            )
        else:
            if not isinstance(input, Tensor) or not input.is_floating_point() or input.ndim != 3:
                raise ValueError(
                    "with start_at_layer, input must be a residual [batch pos d_model]"
                )
            resid = input
            if tokens is not None:
                tokens = self._validate_tokens(tokens)
                attention_mask = self._check_mask(attention_mask, tokens)
        entries = [None] * self.cfg.n_layers if past_kv_cache is None else past_kv_cache.entries
        blocks = list(zip(self.blocks, entries, strict=True))[start_at_layer:stop_at_layer]
        for block, past in blocks:  # None and negative layers as in TL
            resid = block(resid, attention_mask, past)
        if stop_at_layer is not None:
            return resid
        if self.cfg.circuit_overrides:
            resid = self.override_final(resid)
        logits = self.unembed(self.ln_final(resid))
        if self.cfg.use_bigram_table:
            if tokens is None:
                raise ValueError("the bigram table needs tokens=...: pass the input's token ids")
            logits = logits + self.bigram(tokens)
        if return_type is None:
            return None
        if return_type == "logits":
            return logits
        if tokens is None:
            raise ValueError("a loss needs tokens=...: pass the input's token ids")
        if attention_mask is not None:
            attention_mask = attention_mask[:, -tokens.shape[1] :]  # the new positions' mask
        loss = self.loss_fn(logits, tokens, attention_mask, per_token=loss_per_token)
        return loss if return_type == "loss" else (logits, loss)

    def loss_fn(
        self,
        logits: Float[Tensor, "batch pos d_vocab"],
        tokens: Int[Tensor, "batch pos"],
        attention_mask: Int[Tensor, "batch pos"] | None = None,
        per_token: bool = False,
    ) -> Float[Tensor, "..."]:
        """Next-token cross-entropy as TL's ``loss_fn``; with ``attention_mask`` padded targets
        are left out (per-token losses there are 0, the mean is over real targets).

        Raises:
            ValueError: ``tokens`` has fewer than 2 positions.
        """
        if tokens.shape[1] < 2:
            raise ValueError("a loss needs at least 2 positions")
        loss = lm_cross_entropy(logits, tokens, per_token=True)
        if attention_mask is None:
            return loss if per_token else loss.mean()
        keep = (attention_mask[:, 1:] * attention_mask[:, :-1]).to(loss.dtype)
        loss = loss * keep
        return loss if per_token else loss.sum() / keep.sum().clamp_min(1)

    @torch.no_grad()
    def generate(
        self,
        input: str | list[str] | Int[Tensor, "batch pos"],
        max_new_tokens: int = 10,
        stop_at_eos: bool = True,
        eos_token_id: int | None = None,
        do_sample: bool = True,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        prepend_bos: bool | None = None,
        return_type: Literal["input", "str", "tokens"] = "input",
        verbose: bool = False,
        use_past_kv_cache: bool = True,
    ) -> Any:
        """Extend ``input`` by up to ``max_new_tokens`` tokens (greedy if ``do_sample=False``).

        With ``use_past_kv_cache`` each step runs only the new token against cached keys and
        values (``KVCache``; the same logits as rerunning the prefix). With
        ``stop_at_eos`` a sequence that emits ``eos_token_id`` (default ``<|endoftext|>``) keeps
        emitting it; generation stops once all have. A list of prompts is left-padded and
        masked, so each continues as if run alone (its strings keep no padding).
        ``return_type="input"`` returns strings for string input and tokens otherwise. ``verbose`` is accepted for TL compatibility.

        Raises:
            ValueError: if the output would exceed ``n_ctx``, or on a bad setting.
        """
        bad_t = not math.isfinite(temperature) or temperature <= 0
        if max_new_tokens < 0 or bad_t or (top_k is not None and top_k < 1):
            raise ValueError(
                f"bad generate settings: max_new_tokens={max_new_tokens}, "
                f"temperature={temperature}, top_k={top_k}"
            )
        if isinstance(input, str | list):
            # prompts of different lengths are left-padded and masked, so each continues its own
            tokens, mask = self._tokenize(input, prepend_bos, "left")
        else:
            tokens, mask = self._validate_tokens(input), None
        if tokens.shape[1] + max_new_tokens > self.cfg.n_ctx:
            raise ValueError(
                f"{tokens.shape[1]} input + {max_new_tokens} new tokens exceed n_ctx={self.cfg.n_ctx}"
            )
        if eos_token_id is None and stop_at_eos:
            if self.tokenizer is None:
                raise ValueError("stop_at_eos needs eos_token_id=... or a model with a tokenizer")
            eos_token_id = self.tokenizer.eot_id
        done = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
        cache = KVCache.empty(self.cfg.n_layers) if use_past_kv_cache else None
        step, step_mask = tokens, mask
        for _ in range(max_new_tokens):
            if cache is None:
                step, step_mask = tokens, mask
            logits = self(step, attention_mask=step_mask, past_kv_cache=cache)[:, -1].float()
            if not do_sample:
                nxt = logits.argmax(-1)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, -math.inf)
                probs = logits.softmax(-1).cpu()
                nxt = torch.multinomial(probs, 1, generator=generator)[:, 0].to(tokens.device)
            if stop_at_eos and eos_token_id is not None:  # set above when stop_at_eos
                nxt = torch.where(done, torch.full_like(nxt, eos_token_id), nxt)
                done = done | (nxt == eos_token_id)
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
            step = nxt[:, None]
            if mask is not None:
                step_mask = torch.ones_like(mask[:, :1])
                mask = torch.cat([mask, step_mask], dim=1)
            if stop_at_eos and bool(done.all()):
                break
        if return_type == "tokens" or (return_type == "input" and isinstance(input, Tensor)):
            return tokens
        if mask is not None:  # drop the left padding of each prompt
            text = [self.to_string(row[m.bool()]) for row, m in zip(tokens, mask, strict=True)]
        else:
            text = self.to_string(tokens)
        return text[0] if isinstance(input, str) else text

    # ------------------------------------------------------------------ tokenizer surface
    def require_tokenizer(self) -> Tokenizer:
        """``self.tokenizer``; ``ValueError`` if the model has none.

        Raises:
            ValueError: the model has no tokenizer.
        """
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer; pass token ids or set model.tokenizer")
        return self.tokenizer

    def _tokenize(
        self, input: str | list[str], prepend_bos: bool | None, padding_side: PaddingSide
    ) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"] | None]:
        """Tokens and, for a list of strings of different lengths, the attention mask."""
        if padding_side not in get_args(PaddingSide):
            raise ValueError(
                f"padding_side must be one of {get_args(PaddingSide)}, got {padding_side!r}"
            )
        tok = self.require_tokenizer()
        bos = self.cfg.default_prepend_bos if prepend_bos is None else prepend_bos
        texts = [input] if isinstance(input, str) else list(input)
        if not texts:
            raise ValueError("to_tokens got an empty list of strings; pass at least one string")
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("input must be a string or a list of strings")
        seqs = [([tok.eot_id] if bos else []) + tok.encode(t) for t in texts]
        seqs = [s[: self.cfg.n_ctx] for s in seqs]
        if any(len(s) == 0 for s in seqs):
            raise ValueError("an input string tokenised to no tokens")
        width = max(len(s) for s in seqs)
        out = torch.full((len(seqs), width), tok.eot_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            cols = slice(0, len(s)) if padding_side == "right" else slice(width - len(s), width)
            out[i, cols] = torch.tensor(s)
            mask[i, cols] = 1
        device = self.embed.W_E.device
        return out.to(device), (None if bool(mask.all()) else mask.to(device))

    def to_tokens(
        self,
        input: str | list[str],
        prepend_bos: bool | None = None,
        padding_side: PaddingSide | None = None,
        move_to_device: bool = True,
        truncate: bool = True,
    ) -> Int[Tensor, "batch pos"]:
        """Tokenise ``input`` to ``[batch pos]``; lists are padded with the end-of-text id on
        ``padding_side`` (default right). Pass ``attention_mask=model.get_attention_mask(...)``
        or the strings themselves to the forward so padding is masked. ``truncate=False``
        raises instead of cutting at ``n_ctx``.

        Raises:
            ValueError: with ``truncate=False``, an input longer than ``n_ctx`` (both named); or the
                model has no tokenizer.
        """
        tokens, _ = self._tokenize(input, prepend_bos, padding_side or "right")
        if not truncate:
            tok = self.require_tokenizer()
            texts = [input] if isinstance(input, str) else input
            bos = self.cfg.default_prepend_bos if prepend_bos is None else prepend_bos
            longest = max(len(tok.encode(t)) + int(bos) for t in texts)
            if longest > self.cfg.n_ctx:
                raise ValueError(f"input has {longest} tokens, more than n_ctx={self.cfg.n_ctx}")
        return tokens if move_to_device else tokens.cpu()

    def get_attention_mask(
        self,
        input: str | list[str],
        prepend_bos: bool | None = None,
        padding_side: PaddingSide | None = None,
    ) -> Int[Tensor, "batch pos"]:
        """The ``[batch pos]`` 0/1 mask of real tokens that ``to_tokens`` pads around."""
        tokens, mask = self._tokenize(input, prepend_bos, padding_side or "right")
        return torch.ones_like(tokens) if mask is None else mask

    def to_string(self, tokens: Int[Tensor, "..."] | list[int] | int | Any) -> str | list[str]:
        """Decode one id, a ``[pos]`` sequence (tensor, list or numpy array) to a string, or
        ``[batch pos]`` to a list of strings.

        Raises:
            ValueError: ``ids`` has more than 2 dimensions (its shape is named), or the model has no
                tokenizer.
        """
        tok = self.require_tokenizer()
        ids = torch.as_tensor(tokens)
        if ids.ndim == 0:
            return tok.decode([int(ids)])
        if ids.ndim == 2:
            return [tok.decode(row.tolist()) for row in ids]
        if ids.ndim != 1:
            raise ValueError(f"to_string takes 0-, 1- or 2-d ids, got shape {tuple(ids.shape)}")
        return tok.decode(ids.tolist())

    def to_str_tokens(
        self,
        input: str | list[str] | Int[Tensor, "..."] | list[int] | Any,
        prepend_bos: bool | None = None,
    ) -> list[str] | list[list[str]]:
        """The text of each token (``Tokenizer.token_str``: a partial UTF-8 character shows its
        bytes escaped). A string or ``[pos]``/``[1 pos]`` ids (tensor, list, numpy) give
        ``list[str]``; a list of strings or ``[batch pos]`` ids give one list per row."""
        tok = self.require_tokenizer()
        if isinstance(input, str):
            ids = self.to_tokens(input, prepend_bos=prepend_bos)[0]
        elif isinstance(input, list) and input and all(isinstance(t, str) for t in input):
            # each string gives a list[str]
            return [cast(list[str], self.to_str_tokens(t, prepend_bos=prepend_bos)) for t in input]
        else:
            ids = torch.as_tensor(input)
        if ids.ndim == 2 and ids.shape[0] == 1:  # [1 pos] is one sequence, as in TL
            ids = ids[0]
        if ids.ndim == 2:
            return [[tok.token_str(int(i)) for i in row] for row in ids]
        return [tok.token_str(int(i)) for i in ids.reshape(-1)]

    def to_single_token(self, string: str) -> int:
        """The id of ``string``; raises ``ValueError`` if it is not exactly one token.

        Raises:
            ValueError: ``string`` is not exactly one token (its ids are named).
        """
        ids = self.require_tokenizer().encode(string)
        if len(ids) != 1:
            raise ValueError(f"{string!r} is {len(ids)} tokens, not one: {ids}")
        return ids[0]

    def to_single_str_token(self, int_token: int) -> str:
        """The text of token id ``int_token`` (see ``to_str_tokens``).

        Raises:
            ValueError: ``int_token`` is not an ``int`` in ``[0, d_vocab)`` (named).
        """
        if not isinstance(int_token, int) or not 0 <= int_token < self.cfg.d_vocab:
            raise ValueError(
                f"int_token must be an id in [0, {self.cfg.d_vocab}), got {int_token!r}"
            )
        return self.require_tokenizer().token_str(int_token)

    def get_token_position(
        self,
        single_token: str | int,
        input: str | Int[Tensor, "..."],
        mode: TokenPosition = "first",
        prepend_bos: bool | None = None,
    ) -> int:
        """Position of ``single_token`` in ``input`` (one sequence), its first or last match.

        Raises:
            ValueError: if the token does not occur, or ``input`` has more than one sequence.
        """
        if mode not in get_args(TokenPosition):
            raise ValueError(f"mode must be one of {get_args(TokenPosition)}, got {mode!r}")
        tokens = self.to_tokens(input, prepend_bos=prepend_bos) if isinstance(input, str) else input
        tokens = torch.as_tensor(tokens)
        if tokens.ndim == 2 and tokens.shape[0] == 1:
            tokens = tokens[0]
        if tokens.ndim != 1:
            raise ValueError(f"input must be one sequence, got shape {tuple(tokens.shape)}")
        token = (
            self.to_single_token(single_token) if isinstance(single_token, str) else single_token
        )
        hits = (tokens == token).nonzero()[:, 0]
        if len(hits) == 0:
            raise ValueError(f"token {single_token!r} does not occur in the input")
        return int(hits[0] if mode == "first" else hits[-1])

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

    def fold_layer_norm(self, *args: Any, **kwargs: Any) -> None:
        self._no_weight_processing(
            "fold_layer_norm",
            "the RMSNorm gains act before AbsTopK at attn_in/mlp_in, so folding them into "
            "W_Q/W_K/W_V/W_in changes which entries AbsTopK keeps; tokens_to_residual_directions "
            "folds ln_final's gain instead",
        )

    def center_writing_weights(self, *args: Any, **kwargs: Any) -> None:
        self._no_weight_processing(
            "center_writing_weights",
            "RMSNorm does not subtract the mean, so centering residual writes changes every "
            "later layer, and it would make the sparse W_O/W_out/W_E dense",
        )

    def center_unembed(self, *args: Any, **kwargs: Any) -> None:
        self._no_weight_processing(
            "center_unembed", "it would make the weight-sparse W_U dense and shift every logit"
        )

    def fold_value_biases(self, *args: Any, **kwargs: Any) -> None:
        self._no_weight_processing(
            "fold_value_biases",
            "with attention sinks the pattern rows sum to 1 - sink probability (not 1), and "
            "AbsTopK at attn_v selects on the biased values, so b_V is not a constant write",
        )

    def refactor_factored_attn_matrices(self, *args: Any, **kwargs: Any) -> None:
        self._no_weight_processing(
            "refactor_factored_attn_matrices",
            "AbsTopK at attn_q/attn_k/attn_v selects channels in the stored basis; a change of "
            "basis changes the outputs",
        )

    def process_weights(self, *args: Any, **kwargs: Any) -> None:
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
        return save_pretrained(self, directory)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: str | torch.device = "cpu"
    ) -> "HookedSparseTransformer":
        """Load a folder written by ``save_pretrained``; strict, with errors naming the file."""
        return load_pretrained(directory, cls, device=device)


__all__ = ["HookedSparseTransformer", "lm_cross_entropy"]
