"""The building blocks of ``HookedSparseTransformer``, in TransformerLens layout and hook names.

Every activation passes through a ``HookPoint``; a hook sees the value that actually flows on,
i.e. *after* AbsTopK at that site. Where AbsTopK sits on a residual write (``attn_out``,
``mlp_out``) its 0/1 mask is exposed at ``hook_out_mask``, so decompositions into heads and
neurons can reuse the frozen forward mask and stay exact (``model/activation_cache.py``). The products that
AbsTopK follows are also hooked before it (``attn.hook_{q,k,v}_pre``, ``attn.hook_out_pre``,
``mlp.hook_out_pre``; ``mlp.hook_pre`` as in TL), where ``circuits/edges.py`` ablates single weights.

Shapes use TL's names: ``W_Q [n_heads d_model d_head]``, ``W_O [n_heads d_head d_model]``,
``W_in [d_model d_mlp]``, ``W_out [d_mlp d_model]``, ``W_E [d_vocab d_model]``,
``W_U [d_model d_vocab]``.
"""

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, cast, overload

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from hooks import blend, flat
from hooks.topk import abs_topk, abs_topk_mask
from sparse_lens.model.config import ActSite, SparseTransformerConfig
from sparse_lens.model.kv_cache import KVEntry
from sparse_lens.model.sparse_matmul import CSRWeight, csr_matmul, matmul, usable


def _site_topk(cfg: SparseTransformerConfig, site: ActSite, x: Tensor) -> Tensor:
    """AbsTopK over the last dimension if ``site`` is active, else ``x`` unchanged."""
    if not cfg.act_sparse(site):
        return x
    return abs_topk(x, cfg.act_k(x.shape[-1]))


def _write_mask(hook: HookPoint, out: Tensor, cfg: SparseTransformerConfig) -> Tensor:
    """0/1 AbsTopK mask of a residual write. It needs no gradient, except when a backward hook
    is on ``hook_out_mask``: then it requires one, so that hook fires with ``d loss / d mask``."""
    mask = abs_topk_mask(out, cfg.act_k(cfg.d_model), out.dtype)
    if hook.bwd_hooks and torch.is_grad_enabled():
        mask.requires_grad_(True)
    return mask


class ChannelOverride(nn.Module):
    """Keeps channels where ``keep`` is 1 and writes ``fill`` elsewhere (a baked-in node mask).

    Channels are the last dimension, or the last two flattened (``[... head_index d_head]``);
    the value is ``hooks.blend``'s, the same as the ``node_mask`` hooks of ``Circuit.fwd_hooks``.
    """

    keep: Tensor  # buffers [size]
    fill: Tensor

    def __init__(self, size: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.register_buffer("keep", torch.ones(size, dtype=dtype))
        self.register_buffer("fill", torch.zeros(size, dtype=dtype))

    def forward(self, x: Float[Tensor, "..."]) -> Float[Tensor, "..."]:
        return blend(flat(x, self.keep.shape[0]), self.keep, self.fill).reshape(x.shape)


def _override(cfg: SparseTransformerConfig, size: int) -> nn.Module:
    return ChannelOverride(size, cfg.dtype) if cfg.circuit_overrides else nn.Identity()


class RMSNorm(nn.Module):
    """RMSNorm with a gain ``w`` and TL's hooks: ``hook_scale`` (the RMS) and ``hook_normalized``
    (``x / scale``, before the gain), so ``ActivationCache.apply_ln_to_stack`` works."""

    def __init__(self, cfg: SparseTransformerConfig, length: int) -> None:
        super().__init__()
        self.eps = cfg.eps
        self.w = nn.Parameter(torch.ones(length, dtype=cfg.dtype))
        self.hook_scale = HookPoint()  # [batch pos 1] (or [batch pos head_index 1])
        self.hook_normalized = HookPoint()  # [batch pos length]

    def forward(self, x: Float[Tensor, "... length"]) -> Float[Tensor, "... length"]:
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized(x / scale) * self.w


class Embed(nn.Module):
    def __init__(self, cfg: SparseTransformerConfig) -> None:
        super().__init__()
        self.W_E = nn.Parameter(torch.empty(cfg.d_vocab, cfg.d_model, dtype=cfg.dtype))

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        return F.embedding(tokens, self.W_E)


class PosEmbed(nn.Module):
    def __init__(self, cfg: SparseTransformerConfig) -> None:
        super().__init__()
        self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model, dtype=cfg.dtype))

    def forward(
        self, tokens: Int[Tensor, "batch pos"], positions: Int[Tensor, "batch pos"] | None = None
    ) -> Float[Tensor, "batch pos d_model"]:
        """``W_pos`` rows ``0..pos-1``, or ``positions`` (left padding shifts them per prompt)."""
        batch, pos = tokens.shape
        if positions is not None:
            return F.embedding(positions, self.W_pos)
        return self.W_pos[:pos].unsqueeze(0).expand(batch, pos, -1)


class Unembed(nn.Module):
    """``W_U`` plus ``b_U``, a zero buffer kept for TL (the paper's unembedding has no bias)."""

    b_U: Tensor  # buffer [d_vocab]

    def __init__(self, cfg: SparseTransformerConfig) -> None:
        super().__init__()
        self.W_U = nn.Parameter(torch.empty(cfg.d_model, cfg.d_vocab, dtype=cfg.dtype))
        self.register_buffer("b_U", torch.zeros(cfg.d_vocab, dtype=cfg.dtype))
        self.csr_weights: dict[str, CSRWeight] = {}  # sparse_matmul.refresh_csr_weights
        self.hook_in = HookPoint()  # [batch pos d_model], ln_final's output
        self.hook_out = HookPoint()  # [batch pos d_vocab], before the bigram table is added

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_vocab"]:
        x = self.hook_in(x)
        return self.hook_out(matmul(x, self.W_U, self.csr_weights, "W_U") + self.b_U)


class BigramTable(nn.Module):
    """Dense ``[d_vocab d_vocab]`` table; row ``tokens[p]`` is added to the logits at ``p``."""

    def __init__(self, cfg: SparseTransformerConfig) -> None:
        super().__init__()
        self.W_bigram = nn.Parameter(torch.empty(cfg.d_vocab, cfg.d_vocab, dtype=cfg.dtype))
        self.hook_logits = HookPoint()  # [batch pos d_vocab]

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_vocab"]:
        return self.hook_logits(F.embedding(tokens, self.W_bigram))


class Attention(nn.Module):
    """Causal multi-head attention with optional per-head sinks and AbsTopK.

    The sink is an extra key with learnable logit ``sinks[h]`` and zero value: pattern rows sum
    to ``1 - hook_sink_prob``. AbsTopK runs on the normalised input (``attn_in``, per token over
    ``d_model``), on q, k and v (each over the whole ``n_heads*d_head`` vector, as OpenAI's code
    does), and on the output (``attn_out``) whose mask fires at ``hook_out_mask``.
    """

    # Parameters with use_bias, else zero buffers.
    b_Q: Tensor  # [n_heads d_head]
    b_K: Tensor
    b_V: Tensor
    b_O: Tensor  # [d_model]
    sinks: nn.Parameter  # [n_heads], only with attn_sinks
    IGNORE: Tensor  # buffer, -inf

    def __init__(self, cfg: SparseTransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        h, d, e = cfg.n_heads, cfg.d_model, cfg.d_head
        self.W_Q = nn.Parameter(torch.empty(h, d, e, dtype=cfg.dtype))
        self.W_K = nn.Parameter(torch.empty(h, d, e, dtype=cfg.dtype))
        self.W_V = nn.Parameter(torch.empty(h, d, e, dtype=cfg.dtype))
        self.W_O = nn.Parameter(torch.empty(h, e, d, dtype=cfg.dtype))
        if cfg.use_bias:
            self.b_Q = nn.Parameter(torch.zeros(h, e, dtype=cfg.dtype))
            self.b_K = nn.Parameter(torch.zeros(h, e, dtype=cfg.dtype))
            self.b_V = nn.Parameter(torch.zeros(h, e, dtype=cfg.dtype))
            self.b_O = nn.Parameter(torch.zeros(d, dtype=cfg.dtype))
        else:
            for name, shape in (("b_Q", (h, e)), ("b_K", (h, e)), ("b_V", (h, e)), ("b_O", (d,))):
                self.register_buffer(name, torch.zeros(*shape, dtype=cfg.dtype))
        if cfg.attn_sinks:
            self.sinks = nn.Parameter(torch.zeros(h, dtype=cfg.dtype))
        self.register_buffer("IGNORE", torch.tensor(-math.inf, dtype=cfg.dtype), persistent=False)
        self.csr_weights: dict[str, CSRWeight] = {}  # sparse_matmul.refresh_csr_weights
        self.override_in = _override(cfg, d)
        self.override_q = _override(cfg, h * e)
        self.override_k = _override(cfg, h * e)
        self.override_v = _override(cfg, h * e)
        self.hook_q_input = HookPoint()  # [batch pos head_index d_model], split-QKV mode only
        self.hook_k_input = HookPoint()
        self.hook_v_input = HookPoint()
        self.hook_attn_in = HookPoint()  # [batch pos head_index d_model], use_attn_in only
        # Normalised input after attn_in AbsTopK: [batch pos d_model]; with use_attn_in
        # [batch pos head_index d_model]; with use_split_qkv_input [batch pos 3 head_index d_model]
        # (the q, k and v reads stacked), so attn_in node masks apply in every mode.
        self.hook_in = HookPoint()
        self.hook_q_pre = HookPoint()  # [batch pos head_index d_head] before attn_q AbsTopK
        self.hook_k_pre = HookPoint()
        self.hook_v_pre = HookPoint()
        self.hook_q = HookPoint()  # [batch pos head_index d_head]
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()
        self.hook_attn_scores = HookPoint()  # [batch head_index query_pos key_pos], no sink
        self.hook_pattern = HookPoint()  # [batch head_index query_pos key_pos], sink dropped
        self.hook_sink_prob = HookPoint()  # [batch head_index query_pos]
        self.hook_z = HookPoint()  # [batch pos head_index d_head]
        self.hook_result = HookPoint()  # [batch pos head_index d_model], use_attn_result only
        self.hook_out_mask = HookPoint()  # [batch pos d_model] 0/1, attn_out AbsTopK only
        self.hook_out_pre = HookPoint()  # [batch pos d_model] z @ W_O + b_O, before AbsTopK

    def _read(self, x: Tensor, ln: RMSNorm) -> Tensor:
        return self.override_in(_site_topk(self.cfg, "attn_in", ln(x)))

    def _project(self, x: Tensor, name: str, b: Tensor, site: ActSite, pre: HookPoint) -> Tensor:
        W: Tensor = getattr(self, name)  # W_Q, W_K or W_V [head_index d_model d_head]
        csr = usable(self.csr_weights, name, W, x) if x.ndim == 3 else None
        if csr is not None:
            # torch's Tensor.unflatten is unannotated (its result inferred partly unknown)
            out = cast(Tensor, csr_matmul(x, W, csr).unflatten(-1, W.shape[::2])) + b
        elif x.ndim == 3:
            out = torch.einsum("bpd,hde->bphe", x, W) + b
        else:  # per-head inputs [batch pos head_index d_model]
            out = torch.einsum("bphd,hde->bphe", x, W) + b
        out = pre(out)
        if not self.cfg.act_sparse(site):
            return out
        batch, pos, h, e = out.shape
        return _site_topk(self.cfg, site, out.reshape(batch, pos, h * e)).reshape(out.shape)

    def _inputs(self, resid_pre: Tensor, ln: RMSNorm) -> tuple[Tensor, Tensor, Tensor]:
        """The q, k and v reads; ``hook_in`` fires in every mode (see its layout above)."""
        cfg = self.cfg
        if not (cfg.use_split_qkv_input or cfg.use_attn_in):
            x = self.hook_in(self._read(resid_pre, ln))
            return x, x, x
        rep = resid_pre.unsqueeze(2).expand(-1, -1, cfg.n_heads, -1)
        if cfg.use_attn_in:
            x = self.hook_in(self._read(self.hook_attn_in(rep.clone()), ln))
            return x, x, x
        forks = (self.hook_q_input, self.hook_k_input, self.hook_v_input)
        reads = torch.stack([self._read(fork(rep.clone()), ln) for fork in forks], dim=2)
        q_x, k_x, v_x = self.hook_in(reads).unbind(2)
        return q_x, k_x, v_x

    def forward(
        self,
        resid_pre: Float[Tensor, "batch pos d_model"],
        ln: RMSNorm,
        attention_mask: Int[Tensor, "batch key_pos"] | None = None,
        past: KVEntry | None = None,
    ) -> Float[Tensor, "batch pos d_model"]:
        """``attention_mask`` (1 = real token, 0 = padding) hides padded keys from every query;
        a padded query still sees itself so its row stays finite. With ``past`` (a KV cache)
        the queries are the last positions and the keys include the cached ones; the mask
        then covers every key position."""
        cfg = self.cfg
        q_x, k_x, v_x = self._inputs(resid_pre, ln)
        q = self.hook_q(
            self.override_q(self._project(q_x, "W_Q", self.b_Q, "attn_q", self.hook_q_pre))
        )
        k = self.hook_k(
            self.override_k(self._project(k_x, "W_K", self.b_K, "attn_k", self.hook_k_pre))
        )
        v = self.hook_v(
            self.override_v(self._project(v_x, "W_V", self.b_V, "attn_v", self.hook_v_pre))
        )
        if past is not None:
            k, v = past.extend(k, v)

        n_q, n_k = q.shape[1], k.shape[1]
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(cfg.d_head)
        query_at = torch.arange(n_k - n_q, n_k, device=q.device)[:, None]
        key_at = torch.arange(n_k, device=q.device)[None, :]
        allowed = key_at <= query_at  # causal
        if attention_mask is not None:
            keys = attention_mask.to(device=q.device, dtype=torch.bool)[:, None, None, :]
            allowed = allowed & (keys | (key_at == query_at))  # [batch 1 query key]
        scores = self.hook_attn_scores(scores.masked_fill(~allowed, self.IGNORE))
        sink_prob = None
        if cfg.attn_sinks:
            sink = self.sinks.view(1, -1, 1, 1).expand(scores.shape[0], -1, n_q, 1)
            probs = torch.cat([scores, sink], dim=-1).softmax(dim=-1)
            pattern = self.hook_pattern(probs[..., :-1])
            sink_prob = self.hook_sink_prob(probs[..., -1])
        else:
            pattern = self.hook_pattern(scores.softmax(dim=-1))
        z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
        if sink_prob is not None:  # attn_sinks
            # + p_sink * v_sink with the sink's zero value: no change, but hook_sink_prob is on
            # the forward path, so incl_bwd caches its (zero) gradient like every other hook's.
            z = z + sink_prob.transpose(1, 2)[..., None] * z.new_zeros(())
        z = self.hook_z(z)

        sparse_out = cfg.act_sparse("attn_out")
        if not cfg.use_attn_result:
            z_flat = z.flatten(-2)  # [batch pos (head_index d_head)]
            csr = usable(self.csr_weights, "W_O", self.W_O, z_flat)
            if csr is None:
                out = torch.einsum("bqhe,hed->bqd", z, self.W_O) + self.b_O
            else:
                out = csr_matmul(z_flat, self.W_O, csr) + self.b_O
            out = self.hook_out_pre(out)
            if not sparse_out:
                return out
            mask = self.hook_out_mask(_write_mask(self.hook_out_mask, out, cfg))
            return out * mask
        per_head = torch.einsum("bqhe,hed->bqhd", z, self.W_O)
        mask = None
        if sparse_out:
            pre = per_head.sum(dim=2) + self.b_O
            mask = self.hook_out_mask(_write_mask(self.hook_out_mask, pre, cfg))
            per_head = per_head * mask.unsqueeze(2)
        if cfg.use_attn_result:
            per_head = self.hook_result(per_head)
        bias = self.b_O if mask is None else self.b_O * mask
        return per_head.sum(dim=2) + bias


class MLP(nn.Module):
    """``W_in`` -> activation -> ``W_out`` with AbsTopK at ``mlp_in`` (on ``hook_in``),
    ``mlp_neuron`` (on ``hook_post``) and ``mlp_out`` (mask at ``hook_out_mask``)."""

    b_in: Tensor  # [d_mlp]: a parameter with use_bias, else a zero buffer
    b_out: Tensor  # [d_model]

    def __init__(self, cfg: SparseTransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.W_in = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp, dtype=cfg.dtype))
        self.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_model, dtype=cfg.dtype))
        if cfg.use_bias:
            self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp, dtype=cfg.dtype))
            self.b_out = nn.Parameter(torch.zeros(cfg.d_model, dtype=cfg.dtype))
        else:
            self.register_buffer("b_in", torch.zeros(cfg.d_mlp, dtype=cfg.dtype))
            self.register_buffer("b_out", torch.zeros(cfg.d_model, dtype=cfg.dtype))
        self.csr_weights: dict[str, CSRWeight] = {}  # sparse_matmul.refresh_csr_weights
        self.override_in = _override(cfg, cfg.d_model)
        self.override_post = _override(cfg, cfg.d_mlp)
        self.hook_in = HookPoint()  # [batch pos d_model] normalised input after mlp_in AbsTopK
        self.hook_pre = HookPoint()  # [batch pos d_mlp]
        self.hook_post = HookPoint()  # [batch pos d_mlp] after the mlp_neuron AbsTopK
        self.hook_out_mask = HookPoint()  # [batch pos d_model] 0/1, mlp_out AbsTopK only
        self.hook_out_pre = HookPoint()  # [batch pos d_model] post @ W_out + b_out, before AbsTopK

    def forward(
        self, resid_mid: Float[Tensor, "batch pos d_model"], ln: RMSNorm
    ) -> Float[Tensor, "batch pos d_model"]:
        cfg = self.cfg
        x = self.hook_in(self.override_in(_site_topk(cfg, "mlp_in", ln(resid_mid))))
        pre = self.hook_pre(matmul(x, self.W_in, self.csr_weights, "W_in") + self.b_in)
        act = F.gelu(pre) if cfg.act_fn == "gelu" else F.relu(pre)
        post = self.hook_post(self.override_post(_site_topk(cfg, "mlp_neuron", act)))
        out = self.hook_out_pre(matmul(post, self.W_out, self.csr_weights, "W_out") + self.b_out)
        if not cfg.act_sparse("mlp_out"):
            return out
        mask = self.hook_out_mask(_write_mask(self.hook_out_mask, out, cfg))
        return out * mask


class TransformerBlock(nn.Module):
    """Pre-norm block: ``resid_mid = resid_pre + attn(ln1(.))``, ``resid_post = resid_mid +
    mlp(ln2(.))``, with optional AbsTopK on the residual stream after each add."""

    # Read by TL's logit_lens / DLA readouts: this block's hook_resid_post is the stream itself.
    hook_out_is_single_residual_stream = True

    def __init__(self, cfg: SparseTransformerConfig, layer: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.layer = layer
        self.ln1 = RMSNorm(cfg, cfg.d_model)
        self.attn = Attention(cfg)
        self.ln2 = RMSNorm(cfg, cfg.d_model)
        self.mlp = MLP(cfg)
        self.override_attn_out = _override(cfg, cfg.d_model)
        self.override_mlp_out = _override(cfg, cfg.d_model)
        self.hook_resid_pre = HookPoint()  # [batch pos d_model]
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.hook_mlp_in = HookPoint()  # use_hook_mlp_in only
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def _write_obstruction(self) -> str | None:
        """The AbsTopK that acts on the head sum before (or in) the residual stream, if any."""
        for site in ("attn_out", "resid_post_attn", "resid_post_mlp"):
            if self.cfg.act_sparse(site):
                return f"abs_topk_{site}"
        return None

    @property
    def submodules(self) -> dict[str, nn.Module]:
        """TL's declared block structure. With AbsTopK at ``attn_out`` (or on the residual
        stream) a head's residual write is masked after the head sum (``hook_attn_out`` reads
        ``abs_topk_attn_out``), so TL's tools that treat ``z @ W_O`` as a head's write
        (direct-path and edge attribution patching) refuse this model instead of returning
        wrong numbers."""
        out: dict[str, nn.Module] = {"attn": self.attn, "mlp": self.mlp}
        owner = self._write_obstruction()
        if owner is not None:
            out[owner] = self.attn
        return out

    @property
    def hook_aliases(self) -> dict[str, str]:
        owner = self._write_obstruction()
        return {} if owner is None else {"hook_attn_out": f"{owner}.hook_out"}

    def forward(
        self,
        x: Float[Tensor, "batch pos d_model"],
        attention_mask: Int[Tensor, "batch key_pos"] | None = None,
        past: KVEntry | None = None,
    ) -> Float[Tensor, "batch pos d_model"]:
        cfg = self.cfg
        resid_pre = self.hook_resid_pre(x)
        attn = self.attn(resid_pre, self.ln1, attention_mask, past)
        attn_out = self.hook_attn_out(self.override_attn_out(attn))
        resid_mid = self.hook_resid_mid(_site_topk(cfg, "resid_post_attn", resid_pre + attn_out))
        mlp_in = self.hook_mlp_in(resid_mid.clone()) if cfg.use_hook_mlp_in else resid_mid
        mlp_out = self.hook_mlp_out(self.override_mlp_out(self.mlp(mlp_in, self.ln2)))
        return self.hook_resid_post(_site_topk(cfg, "resid_post_mlp", resid_mid + mlp_out))


class TransformerBlocks(nn.ModuleList):
    """``nn.ModuleList`` of ``TransformerBlock``s; only declares the element type for checkers."""

    if TYPE_CHECKING:

        @overload
        def __getitem__(self, idx: slice) -> "TransformerBlocks": ...
        @overload
        def __getitem__(self, idx: int) -> TransformerBlock: ...
        def __getitem__(self, idx: int | slice) -> "TransformerBlock | TransformerBlocks": ...
        def __iter__(self) -> Iterator[TransformerBlock]: ...
