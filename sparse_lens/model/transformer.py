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

This module holds construction, the hooks and the forward pass, in reading order. The rest of TL's
surface sits beside it, in base classes of ``HookedSparseTransformer``: the tokenizer surface and
input checks (``tokenizing.py``), TL's weight surface, weight processing and sparsity accounting
(``weights.py``) and ``generate`` (``generation.py``).
"""

import difflib
import logging
import math
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any, Literal, cast, overload

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import ActivationCache, HookedRootModule
from transformer_lens.hook_points import HookPoint

# TL re-exports Slice here without listing it in __all__ (the public path since TL 3)
from transformer_lens.utilities import Slice  # pyright: ignore[reportPrivateImportUsage]

from sparse_lens.data.tokenizer import Tokenizer
from sparse_lens.model.activation_cache import ReadoutAdapter, SparseActivationCache
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
from sparse_lens.model.generation import GenerationMixin
from sparse_lens.model.kv_cache import KVCache
from sparse_lens.model.tokenizing import PaddingSide
from sparse_lens.model.weights import WeightSurfaceMixin

logger = logging.getLogger(__name__)

ReturnType = Literal["logits", "loss", "both"] | None
TokensInput = str | list[str] | Tensor  # token tensors are validated by _validate_tokens
ModelInput = TokensInput | Float[Tensor, "batch pos d_model"]  # a residual with start_at_layer
Logits = Float[Tensor, "batch pos d_vocab"]
Loss = Float[Tensor, "..."]  # a scalar, or [batch pos-1] with loss_per_token
Residual = Float[Tensor, "batch pos d_model"]
# A TL hook function, called as fn(activation, hook=hook_point); a tensor it returns replaces the
# activation. Any: it may return anything (None included); TL's HookFunction protocol also fixes
# the first parameter's name, which the functions users pass as hooks do not follow.
HookFn = Callable[..., Any]
# (hook name, caching hook) pairs, as get_caching_hooks returns them for fwd_hooks/bwd_hooks.
CachingHooks = list[tuple[str, Callable[..., None]]]

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


class HookedSparseTransformer(GenerationMixin, WeightSurfaceMixin, HookedRootModule):
    """A weight-sparse decoder-only transformer with TransformerLens hooks.

    The tokenizer surface, TL's weight surface and ``generate`` come from the base classes
    ``TokenizingMixin``, ``WeightSurfaceMixin`` and ``GenerationMixin`` (sibling modules).

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
        # a run-time check of the caller's value
        if not isinstance(cfg, SparseTransformerConfig):  # pyright: ignore[reportUnnecessaryIsInstance]
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

    def _enable_hook_with_name(self, name: str, hook: HookFn, dir: Literal["fwd", "bwd"]) -> None:
        self._resolve_hook_name(name)
        # TL annotates hook as a bare Callable (its type arguments unknown)
        super()._enable_hook_with_name(name, hook, dir)  # pyright: ignore[reportUnknownMemberType]

    def check_hooks_to_add(
        self, hook_point: HookPoint, hook_point_name: str, *args: object, **kw: object
    ) -> None:
        """``add_hook`` refuses a hook that would never fire (see ``inactive_hook_reason``)."""
        self._resolve_hook_name(hook_point_name)

    # add_hook takes fewer positional parameters than TL's (callers use keywords, as TL's own
    # code does); run_with_cache returns a SparseActivationCache where TL declares a dict.
    def add_hook(  # pyright: ignore[reportIncompatibleMethodOverride]
        self,
        name: str | Callable[[str], bool],
        hook: HookFn,
        dir: Literal["fwd", "bwd"] = "fwd",
        **kwargs: Any,
    ) -> None:
        """TL's ``add_hook``: a name refuses a hook that cannot fire; a filter function selects
        only the hook points that fire under the current config."""
        # Any: TL's add_hook keywords (is_permanent: bool, level: int | None, prepend: bool)
        if callable(name) and not isinstance(name, str):
            chosen = name
            name = lambda n: chosen(n) and self.inactive_hook_reason(n) is None  # noqa: E731
        super().add_hook(name, hook, dir=dir, **kwargs)

    def _enable_hooks_for_points(
        self,
        hook_points: Iterable[tuple[str, HookPoint]],
        enabled: Callable[[str], object],
        hook: HookFn,
        dir: Literal["fwd", "bwd"],
    ) -> None:
        # A name filter selects only the hook points that fire under the current config.
        active = [(n, hp) for n, hp in hook_points if self.inactive_hook_reason(n) is None]
        # TL annotates enabled and hook as bare Callables (their type arguments unknown)
        super()._enable_hooks_for_points(active, enabled, hook, dir)  # pyright: ignore[reportUnknownMemberType]

    def hook_pos_dim(self, name: str) -> int | None:
        """Position axis of hook ``name``'s batched activation (``None``: it has none).

        Attention scores, patterns and ``hook_sink_prob`` are ``[batch head_index query_pos ...]``
        (the query axis, 2); every other activation of this model has positions at axis 1.
        """
        if name.endswith(("hook_attn_scores", "hook_pattern", "hook_sink_prob")):
            return 2
        return 1

    def _names_filter(self, names_filter: object) -> Callable[[str], object]:
        """``get_caching_hooks``' ``names_filter`` as a function of a hook name.

        Raises:
            KeyError: an unknown hook name in a list or string filter (named).
            ValueError: a name that would never fire, or a ``names_filter`` that is not a string,
                a list of strings or a function.
        """
        if isinstance(names_filter, str):
            names_filter = [names_filter]
        if isinstance(names_filter, list | tuple):
            # hook names: isinstance leaves the items unknown; _resolve_hook_name checks each
            names = cast(list[str] | tuple[str, ...], names_filter)
            wanted = {self._resolve_hook_name(n) for n in names}
            return wanted.__contains__
        if names_filter is None:
            return lambda name: True
        if not callable(names_filter):
            raise ValueError("names_filter must be a string, a list of strings or a function")
        return names_filter

    def get_caching_hooks(
        self,
        names_filter: object = None,
        incl_bwd: bool = False,
        device: str | torch.device | None = None,
        remove_batch_dim: bool = False,
        cache: dict[str, Tensor] | None = None,
        pos_slice: Any = None,
    ) -> tuple[dict[str, Tensor], CachingHooks, CachingHooks]:
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
        # names_filter: TL's NamesFilter (None, a name, a list of names or a function of a name);
        # anything else raises. Any (pos_slice): whatever TL's Slice.unwrap takes (a Slice, an
        # int, a list or tuple of ints, a tensor, a Python slice ...).
        selects = self._names_filter(names_filter)
        pos = Slice.unwrap(pos_slice)
        cache = {} if cache is None else cache
        active = [n for n in self.hook_dict if self.inactive_hook_reason(n) is None]
        aliases: dict[str, list[str]] = {}
        for name, module in self.mod_dict.items():
            if isinstance(module, HookPoint) and module.name != name:
                aliases.setdefault(_hook_name(module), []).append(name)
        # A filter function may test a legacy name: a hook is chosen under any of its names.
        chosen = [n for n in active if any(selects(a) for a in [n, *aliases.get(n, [])])]
        if chosen:
            chosen += [n for n in active if n.endswith("hook_out_mask") and n not in chosen]

        def save_hook(tensor: Tensor, hook: HookPoint, is_backward: bool = False) -> None:
            value = tensor.detach().to(device) if device is not None else tensor.detach()
            dim = self.hook_pos_dim(_hook_name(hook))
            if remove_batch_dim and value.ndim > 0 and value.shape[0] == 1:
                value = value[0]
                dim = None if dim is None else dim - 1
            if dim is not None and value.ndim > dim and pos.mode != "empty":
                value = pos.apply(value, dim=dim)
            cache[_hook_name(hook) + ("_grad" if is_backward else "")] = value

        self.is_caching = True
        fwd: CachingHooks = [(n, partial(save_hook, is_backward=False)) for n in chosen]
        bwd: CachingHooks = (
            [(n, partial(save_hook, is_backward=True)) for n in chosen] if incl_bwd else []
        )
        return cache, fwd, bwd

    def add_caching_hooks(
        self,
        names_filter: object = None,
        incl_bwd: bool = False,
        device: str | torch.device | None = None,
        remove_batch_dim: bool = False,
        cache: dict[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
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
        # Any: the forward's arguments and TL's run_with_cache keywords, passed on; the forward's
        # output for them (logits, loss, both or None). TL leaves the cache dict's types unknown:
        # it holds get_caching_hooks' tensors by hook name.
        out, cache_dict = cast(
            tuple[Any, dict[str, Tensor]],
            super().run_with_cache(*model_args, remove_batch_dim=remove_batch_dim, **kwargs),
        )
        if return_cache_object:
            return out, SparseActivationCache(cache_dict, self, has_batch_dim=not remove_batch_dim)
        return out, cache_dict

    # ------------------------------------------------------------------ forward
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
        elif isinstance(input, Tensor):  # pyright: ignore[reportUnnecessaryIsInstance]  # else: a run-time check
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

    # Overloads on return_type as TL's; with stop_at_layer the residual stream is returned.
    @overload
    def forward(
        self,
        input: ModelInput,
        return_type: Literal["logits"] = "logits",
        loss_per_token: bool = False,
        prepend_bos: bool | None = None,
        padding_side: PaddingSide | None = None,
        start_at_layer: int | None = None,
        tokens: Int[Tensor, "batch pos"] | None = None,
        stop_at_layer: None = None,
        attention_mask: Int[Tensor, "batch pos"] | None = None,
        past_kv_cache: KVCache | None = None,
        logits_at: Tensor | None = None,  # [batch] int positions, checked with a ValueError
    ) -> Logits: ...
    @overload
    def forward(
        self,
        input: ModelInput,
        return_type: Literal["loss"],
        loss_per_token: bool = False,
        prepend_bos: bool | None = None,
        padding_side: PaddingSide | None = None,
        start_at_layer: int | None = None,
        tokens: Int[Tensor, "batch pos"] | None = None,
        stop_at_layer: None = None,
        attention_mask: Int[Tensor, "batch pos"] | None = None,
        past_kv_cache: KVCache | None = None,
    ) -> Loss: ...
    @overload
    def forward(
        self,
        input: ModelInput,
        return_type: Literal["both"],
        loss_per_token: bool = False,
        prepend_bos: bool | None = None,
        padding_side: PaddingSide | None = None,
        start_at_layer: int | None = None,
        tokens: Int[Tensor, "batch pos"] | None = None,
        stop_at_layer: None = None,
        attention_mask: Int[Tensor, "batch pos"] | None = None,
        past_kv_cache: KVCache | None = None,
    ) -> tuple[Logits, Loss]: ...
    @overload
    def forward(
        self,
        input: ModelInput,
        return_type: None,
        loss_per_token: bool = False,
        prepend_bos: bool | None = None,
        padding_side: PaddingSide | None = None,
        start_at_layer: int | None = None,
        tokens: Int[Tensor, "batch pos"] | None = None,
        stop_at_layer: None = None,
        attention_mask: Int[Tensor, "batch pos"] | None = None,
        past_kv_cache: KVCache | None = None,
    ) -> None: ...
    @overload
    def forward(
        self,
        input: ModelInput,
        return_type: ReturnType = "logits",
        loss_per_token: bool = False,
        prepend_bos: bool | None = None,
        padding_side: PaddingSide | None = None,
        start_at_layer: int | None = None,
        tokens: Int[Tensor, "batch pos"] | None = None,
        *,
        stop_at_layer: int,
        attention_mask: Int[Tensor, "batch pos"] | None = None,
        past_kv_cache: KVCache | None = None,
    ) -> Residual: ...
    def forward(
        self,
        input: ModelInput,
        return_type: ReturnType = "logits",
        loss_per_token: bool = False,
        prepend_bos: bool | None = None,
        padding_side: PaddingSide | None = None,
        start_at_layer: int | None = None,
        tokens: Int[Tensor, "batch pos"] | None = None,
        stop_at_layer: int | None = None,
        attention_mask: Int[Tensor, "batch pos"] | None = None,
        past_kv_cache: KVCache | None = None,
        logits_at: Tensor | None = None,  # [batch] int positions, checked with a ValueError
    ) -> Logits | Loss | tuple[Logits, Loss] | Residual | None:
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
            logits_at: one position per sequence ``[batch]``: the logits are computed there only
                and returned as ``[batch 1 d_vocab]`` (what a task loss reads, without the
                unembedding of every position). Hooks before ``ln_final``'s output see every
                position; ``bigram.hook_logits`` sees ``[batch 1 d_vocab]``. Only with
                ``return_type="logits"``.

        Raises:
            ValueError: on bad input shapes, ids, masks, or a missing ``tokens``.
        """
        if return_type not in ("logits", "loss", "both", None):
            raise ValueError(f"return_type must be logits, loss, both or None, got {return_type!r}")
        if past_kv_cache is not None and (start_at_layer, stop_at_layer) != (None, None):
            raise ValueError("past_kv_cache cannot be combined with start_at_layer/stop_at_layer")
        if logits_at is not None and (return_type != "logits" or stop_at_layer is not None):
            raise ValueError(
                f"logits_at needs return_type='logits' and no stop_at_layer, got "
                f"return_type={return_type!r}, stop_at_layer={stop_at_layer!r}"
            )
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
        normalized = self.ln_final(resid)
        if logits_at is not None:
            normalized, tokens = _at_positions(normalized, tokens, logits_at)
        logits = self.unembed(normalized)
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


def _at_positions(
    x: Float[Tensor, "batch pos d_model"],
    tokens: Int[Tensor, "batch pos"] | None,
    at: object,  # [batch] integer positions; anything else is refused here with a ValueError
) -> tuple[Float[Tensor, "batch 1 d_model"], Int[Tensor, "batch 1"] | None]:
    """``x`` (and ``tokens``) at one position per sequence, ``at``.

    Raises:
        ValueError: ``at`` is not one integer position per sequence inside ``pos`` (named).
    """
    batch, n_pos = x.shape[0], x.shape[1]
    if not isinstance(at, Tensor) or at.dtype.is_floating_point or at.dtype == torch.bool:
        got = f"a {at.dtype} tensor" if isinstance(at, Tensor) else repr(at)
        raise ValueError(f"logits_at must be an integer tensor [batch], got {got}")
    if at.shape != (batch,):
        raise ValueError(
            f"logits_at must hold one position per sequence, shape ({batch},), "
            f"got shape {tuple(at.shape)}"
        )
    at = at.to(x.device)
    if batch and (int(at.min()) < 0 or int(at.max()) >= n_pos):
        raise ValueError(f"logits_at must lie in [0, {n_pos}), got {at}")
    rows = torch.arange(batch, device=x.device)
    return x[rows, at][:, None], None if tokens is None else tokens[rows, at][:, None]


__all__ = ["HookedSparseTransformer", "lm_cross_entropy"]
