"""Bridges between a dense model and the sparse model (arXiv 2511.13653, App. A.3).

One bridge per sublayer site, on the pre-norm residual before each attention
(``blocks.{l}.hook_resid_pre``) and each MLP (``blocks.{l}.hook_resid_mid``): an encoder
dense -> sparse (linear, then AbsTopK) and a decoder sparse -> dense (linear). Both models use
these TL hook names, so a hybrid pass is one forward of the finishing model with its residual at
the site replaced through a hook.

Losses (App. A.3): ``nmse`` = sum over sites of NMSE(enc(h_d), h_s) + NMSE(dec(h_s), h_d);
``kl_d2s`` = sum over sites of KL(p_dense || p(dense to site i, encode, finish sparse));
``kl_s2d`` = the same with sparse to site i, decode, finish dense; plus the sparse model's CE.
The dense model is frozen (its logits are the target).

Choices where the paper is silent (App. A.3 does not specify them):
* NMSE is the fraction of variance unexplained, ``|pred - tgt|^2 / |tgt - mean(tgt)|^2`` over all
  tokens of the batch, the denominator detached (as in Drori's replication);
* all loss weights 1.0; KL direction KL(p_dense || p_hybrid), averaged over tokens;
* encoder AbsTopK fraction 0.25 (``BridgeConfig.afrac``);
* the sparse model's bigram table stays in hybrid passes that finish in the sparse model (it is
  part of its unembedding path, fed by the tokens).
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, cast, get_args

import torch
from jaxtyping import Float, Int
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformer_lens.ActivationCache import ActivationCache

from hooks import record, replace
from hooks.topk import abs_topk
from sparse_lens.files.atomic import atomic_dir, read_json
from sparse_lens.validation import require_min

BRIDGES_VERSION = 1

# "d2s": dense model up to the site, encoder, sparse model after; "s2d" the other way round.
BridgeDirection = Literal["d2s", "s2d"]


def bridge_sites(n_layers: int) -> list[str]:
    """The bridged residual sites in forward order: before each attention and each MLP."""
    return [f"blocks.{i}.hook_resid_{k}" for i in range(n_layers) for k in ("pre", "mid")]


@dataclass(frozen=True, kw_only=True)
class BridgeConfig:
    """Widths, depth, encoder sparsity and loss weights of a set of bridges."""

    d_dense: int
    d_sparse: int
    n_layers: int
    afrac: float = 0.25
    nmse_coef: float = 1.0
    kl_d2s_coef: float = 1.0
    kl_s2d_coef: float = 1.0
    ce_coef: float = 1.0

    def __post_init__(self) -> None:
        require_min(self, ("d_dense", "d_sparse", "n_layers"), 1)
        if not 0.0 < self.afrac <= 1.0:
            raise ValueError(f"afrac must be in (0, 1], got {self.afrac}")
        require_min(self, ("nmse_coef", "kl_d2s_coef", "kl_s2d_coef", "ce_coef"), 0)

    @property
    def k(self) -> int:
        return max(1, round(self.afrac * self.d_sparse))


class Bridges(nn.Module):
    """Encoders ``[d_dense -> d_sparse]`` (with AbsTopK) and decoders ``[d_sparse -> d_dense]``."""

    def __init__(self, cfg: BridgeConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.sites = bridge_sites(cfg.n_layers)
        self.encoders = nn.ModuleList(nn.Linear(cfg.d_dense, cfg.d_sparse) for _ in self.sites)
        self.decoders = nn.ModuleList(nn.Linear(cfg.d_sparse, cfg.d_dense) for _ in self.sites)

    def index(self, site: str) -> int:
        """Position of ``site`` in ``self.sites``.

        Raises:
            KeyError: ``site`` is not a bridge site (named, with the sites).
        """
        if site not in self.sites:
            raise KeyError(f"unknown bridge site {site!r}; sites are {self.sites}")
        return self.sites.index(site)

    def encode(
        self, site: str, h_dense: Float[Tensor, "... d_dense"]
    ) -> Float[Tensor, "... d_sparse"]:
        return abs_topk(self.encoders[self.index(site)](h_dense), self.cfg.k)

    def decode(
        self, site: str, h_sparse: Float[Tensor, "... d_sparse"]
    ) -> Float[Tensor, "... d_dense"]:
        return self.decoders[self.index(site)](h_sparse)

    @classmethod
    @torch.no_grad()
    def identity(cls, cfg: BridgeConfig) -> "Bridges":
        """Identity bridges (same widths, no AbsTopK): hybrid passes equal the plain models.

        Raises:
            ValueError: ``cfg`` has ``d_dense != d_sparse`` or ``afrac != 1``.
        """
        if cfg.d_dense != cfg.d_sparse or cfg.afrac != 1.0:
            raise ValueError("identity bridges need d_dense == d_sparse and afrac == 1")
        out = cls(cfg)
        for lin in cast(list[nn.Linear], [*out.encoders, *out.decoders]):
            lin.weight.copy_(torch.eye(cfg.d_dense))
            lin.bias.zero_()
        return out

    @torch.no_grad()
    def init_least_squares(
        self,
        dense_resid: dict[str, Tensor],
        sparse_resid: dict[str, Tensor],
        ridge: float = 1e-3,
    ) -> None:
        """Set every encoder and decoder to the ridge-regression fit of one residual onto the
        other (``[... d]`` activations per site): the best linear bridges before AbsTopK, from
        which gradient training of the KL terms starts (used by ``fit_bridges``)."""
        for site in self.sites:
            x = dense_resid[site].reshape(-1, self.cfg.d_dense).double()
            y = sparse_resid[site].reshape(-1, self.cfg.d_sparse).double()
            for lin, a, b in (
                (self.encoders[self.index(site)], x, y),
                (self.decoders[self.index(site)], y, x),
            ):
                lin = cast(nn.Linear, lin)  # the ModuleLists hold only nn.Linear
                ma, mb = a.mean(0), b.mean(0)
                ac, bc = a - ma, b - mb
                gram = ac.T @ ac + ridge * ac.pow(2).sum() / len(ac) * torch.eye(
                    a.shape[1], dtype=a.dtype
                )
                w = torch.linalg.solve(gram, ac.T @ bc)  # [in out]
                lin.weight.copy_(w.T.float())
                lin.bias.copy_((mb - ma @ w).float())

    def save(self, path: str | Path) -> Path:
        """Write the folder whole (``files.atomic.atomic_dir``): complete or absent after a kill."""
        path = Path(path)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_dir(path, replaces=("bridges.safetensors", "bridges.json")) as tmp:
            save_file(tensors, str(tmp / "bridges.safetensors"))
            info = {"bridges_version": BRIDGES_VERSION} | asdict(self.cfg)
            (tmp / "bridges.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Bridges":
        """Load bridges saved by ``save`` from the folder ``path`` (strict loading).

        Raises:
            FileNotFoundError: ``bridges.json`` or ``bridges.safetensors`` is missing.
            ValueError: ``bridges.json`` is corrupt, malformed or of another ``bridges_version``, or
                the weights do not match it.
        """
        path = Path(path)
        info = read_json(path / "bridges.json", "bridges config")
        if info.pop("bridges_version", None) != BRIDGES_VERSION:
            raise ValueError(f"{path}: unsupported bridges_version")
        try:
            out = cls(BridgeConfig(**info))
        except TypeError as e:
            raise ValueError(f"{path}/bridges.json: malformed ({e})") from e
        weights = path / "bridges.safetensors"
        if not weights.is_file():
            raise FileNotFoundError(f"bridges weights {str(weights)!r} are missing")
        try:
            out.load_state_dict(load_file(str(weights)), strict=True)
        except (RuntimeError, OSError, SafetensorError) as e:
            raise ValueError(f"{weights}: does not match bridges.json ({e})") from e
        return out


def check_pair(dense: Any, sparse: Any, bridges: Bridges | None = None) -> None:
    """Raise ``ValueError`` if the two models (and bridges) cannot be bridged.

    Raises:
        ValueError: the models' ``d_vocab``, ``n_layers`` or tokenizers differ, or ``bridges``
            do not fit the models' widths and depth (the mismatch is named).
    """
    if dense.cfg.d_vocab != sparse.cfg.d_vocab:
        raise ValueError(
            f"vocabularies differ: dense d_vocab {dense.cfg.d_vocab}, sparse {sparse.cfg.d_vocab}"
        )
    if dense.cfg.n_layers != sparse.cfg.n_layers:
        raise ValueError(
            f"depths differ: dense {dense.cfg.n_layers} layers, sparse {sparse.cfg.n_layers}"
        )
    if getattr(dense, "tokenizer", None) is not None and sparse.tokenizer is not None:
        theirs = dense.tokenizer.get_vocab()
        ours = sparse.tokenizer.to_hf().get_vocab()
        if theirs != ours:
            raise ValueError("the dense and sparse models use different tokenizers")
    if bridges is not None:
        c = bridges.cfg
        if (c.d_dense, c.d_sparse, c.n_layers) != (
            dense.cfg.d_model,
            sparse.cfg.d_model,
            sparse.cfg.n_layers,
        ):
            raise ValueError(
                f"bridges are {c.d_dense}->{c.d_sparse} x {c.n_layers} layers; models are "
                f"{dense.cfg.d_model}->{sparse.cfg.d_model} x {sparse.cfg.n_layers} layers"
            )


def run_sites(
    model: Any, tokens: Int[Tensor, "batch pos"], sites: list[str]
) -> tuple[Float[Tensor, "batch pos d_vocab"], dict[str, Tensor]]:
    """Logits and the residual at each site, with gradients when enabled."""
    store: dict[str, Tensor] = {}
    # keyed by the name asked for: on a TransformerBridge, hook.name is the canonical name of
    # an alias such as blocks.0.hook_resid_pre (blocks.0.hook_in)
    hooks = [(s, record(store, s, detach=False)) for s in sites]
    logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
    return logits, {s: store[s] for s in sites}


def finish_from(
    model: Any, tokens: Int[Tensor, "batch pos"], site: str, resid: Tensor
) -> Float[Tensor, "batch pos d_vocab"]:
    """``model``'s logits with its residual at ``site`` replaced by ``resid``."""
    return model.run_with_hooks(tokens, fwd_hooks=[(site, replace(resid))])


def hybrid_forward(
    dense: Any,
    sparse: Any,
    bridges: Bridges,
    tokens: Int[Tensor, "batch pos"],
    site: str,
    direction: BridgeDirection = "d2s",
) -> tuple[Float[Tensor, "batch pos d_vocab"], ActivationCache]:
    """Run one model up to ``site``, cross the bridge, finish in the other. ``direction`` "d2s"
    starts dense and finishes sparse; "s2d" the reverse. The cache holds both models' hooks,
    prefixed ``dense.`` and ``sparse.`` (the finishing model's with the replaced residual).

    Raises:
        ValueError: ``direction`` is not "d2s" or "s2d" (named).
    """
    if direction not in get_args(BridgeDirection):
        raise ValueError(f"direction must be one of {get_args(BridgeDirection)}, got {direction!r}")
    bridges.index(site)
    first, second = (dense, sparse) if direction == "d2s" else (sparse, dense)
    cross = bridges.encode if direction == "d2s" else bridges.decode
    _, first_cache = first.run_with_cache(tokens)
    moved = cross(site, first_cache[site])
    with second.hooks(fwd_hooks=[(site, replace(moved))]):  # removed on exit, errors too
        logits, second_cache = second.run_with_cache(tokens)
    first_name, second_name = ("dense", "sparse") if direction == "d2s" else ("sparse", "dense")
    merged = {f"{first_name}.{k}": v for k, v in first_cache.items()}
    merged |= {f"{second_name}.{k}": v for k, v in second_cache.items()}
    return logits, ActivationCache(merged, second)


def nmse(pred: Tensor, target: Tensor) -> Tensor:
    """Fraction of variance unexplained over all tokens, the denominator detached."""
    t = target.reshape(-1, target.shape[-1])
    p = pred.reshape(-1, pred.shape[-1])
    denom = (t - t.mean(dim=0)).pow(2).sum().detach().clamp_min(1e-12)
    return (p - t).pow(2).sum() / denom


def kl_div(p_logits: Tensor, q_logits: Tensor) -> Tensor:
    """Mean over tokens of KL(softmax(p) || softmax(q))."""
    lp = p_logits.float().log_softmax(dim=-1)
    lq = q_logits.float().log_softmax(dim=-1)
    return (lp.exp() * (lp - lq)).sum(dim=-1).mean()


def bridge_losses(
    dense: Any,
    sparse: Any,
    bridges: Bridges,
    tokens: Int[Tensor, "batch pos"],
    *,
    hybrid: bool = True,
) -> dict[str, Any]:
    """Every loss term: ``total``, ``ce``, ``nmse``, ``kl_d2s``, ``kl_s2d`` (tensors) and
    ``per_site`` (floats: ``nmse_d2s``, ``nmse_s2d``, ``kl_d2s``, ``kl_s2d`` per site).
    ``hybrid=False`` skips the 2 x n_sites hybrid passes (NMSE and CE only)."""
    c = bridges.cfg
    sites = bridges.sites
    with torch.no_grad():
        d_logits, d_resid = run_sites(dense, tokens, sites)
    s_logits, s_resid = run_sites(sparse, tokens, sites)
    ce = nn.functional.cross_entropy(
        s_logits[:, :-1].reshape(-1, s_logits.shape[-1]).float(), tokens[:, 1:].reshape(-1)
    )
    per: dict[str, dict[str, float]] = {s: {} for s in sites}
    total_nmse = torch.zeros(())
    total_d2s, total_s2d = torch.zeros(()), torch.zeros(())
    for site in sites:
        n_d2s = nmse(bridges.encode(site, d_resid[site]), s_resid[site])
        n_s2d = nmse(bridges.decode(site, s_resid[site]), d_resid[site])
        total_nmse = total_nmse + n_d2s + n_s2d
        per[site] |= {"nmse_d2s": float(n_d2s.detach()), "nmse_s2d": float(n_s2d.detach())}
        if hybrid:
            k_d2s = kl_div(
                d_logits, finish_from(sparse, tokens, site, bridges.encode(site, d_resid[site]))
            )
            k_s2d = kl_div(
                d_logits, finish_from(dense, tokens, site, bridges.decode(site, s_resid[site]))
            )
            total_d2s, total_s2d = total_d2s + k_d2s, total_s2d + k_s2d
            per[site] |= {"kl_d2s": float(k_d2s.detach()), "kl_s2d": float(k_s2d.detach())}
    total = c.ce_coef * ce + c.nmse_coef * total_nmse
    total = total + c.kl_d2s_coef * total_d2s + c.kl_s2d_coef * total_s2d
    return {
        "total": total,
        "ce": ce,
        "nmse": total_nmse,
        "kl_d2s": total_d2s,
        "kl_s2d": total_s2d,
        "per_site": per,
    }
