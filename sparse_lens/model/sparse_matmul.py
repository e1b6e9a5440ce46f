"""Products with projected weight matrices through sparse (CSR) kernels: same maths, less work.

After the top-k projection a block matrix keeps 1/64 of its entries at the paper's densities.
A training step needs three products per matrix ``M [d_in d_out]``: the forward ``y = x M``,
the input gradient ``gx = gy M^T`` and the weight gradient ``gM = x^T gy``. The first two only
touch ``M``'s nonzeros, so they run as CSR x dense products; the weight gradient stays dense,
because the recipe needs it at every entry (a zeroed weight can grow back into the top-k at the
next projection; the paper's systems notes, App. B).

The CSR copies are built from the weight's nonzeros (a function of the weight alone, so resumed
and uninterrupted runs compute alike) and remember the weight's in-place version counter: any
change to the weight after the build (an optimizer step, ``load_state_dict``, a user's edit)
makes the component fall back to its dense product, which is always correct. The results equal
the dense product up to float summation order.

When it pays (2 CPU cores, torch 2.13 with MKL; forward + input gradient, sparse / dense time,
512 and 2048 tokens): ``[1024 4096]`` at 1/64: 0.16-0.27; at 1/16: 0.38-0.60; ``[256 2048]`` at
1/16: 0.65-1.00; ``[1024 256]`` at 1/64: 0.41-1.19; ``[128 512]`` at 1/16: 0.95-1.72, at 1/8:
slower still. Hence the defaults: matrices of at least 2^20 entries at density <= 1/16. The
kernels are only used on CPU; on other devices the products stay dense (not measured there).
"""

import warnings
from dataclasses import dataclass
from typing import Protocol, cast

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx

# The products this module can take over, by parameter name, and how each weight reads as a
# matrix [d_in d_out] (TL layout): "in_out" as it is; "heads_in" [n_heads d_model d_head] ->
# [d_model (n_heads d_head)]; "heads_out" [n_heads d_head d_model] -> [(n_heads d_head) d_model].
LAYOUTS: dict[str, str] = {
    "W_Q": "heads_in",
    "W_K": "heads_in",
    "W_V": "heads_in",
    "W_O": "heads_out",
    "W_in": "in_out",
    "W_out": "in_out",
    "W_U": "in_out",
}
DEFAULT_MAX_DENSITY = 1 / 16
DEFAULT_MIN_NUMEL = 2**20


def as_matrix(W: Float[Tensor, "..."], layout: str) -> Float[Tensor, "d_in d_out"]:
    """``W`` as the matrix its product multiplies by (a copy for ``heads_in``).

    Raises:
        ValueError: an unknown ``layout`` (named).
    """
    if layout == "in_out":
        return W
    if layout == "heads_in":
        h, d, e = W.shape
        return W.permute(1, 0, 2).reshape(d, h * e)
    if layout == "heads_out":
        h, e, d = W.shape
        return W.reshape(h * e, d)
    raise ValueError(f"unknown layout {layout!r}; known: in_out, heads_in, heads_out")


def _from_matrix(grad: Float[Tensor, "d_in d_out"], layout: str, shape: torch.Size) -> Tensor:
    if layout == "heads_in":
        h, d, e = shape
        return grad.view(d, h, e).permute(1, 0, 2).contiguous()
    return grad.view(shape)


@dataclass(frozen=True, kw_only=True)
class CSRWeight:
    """CSR copies of one weight matrix ``M [d_in d_out]`` at one version of the weight."""

    fwd: Tensor  # M^T [d_out d_in]: y^T = fwd @ x^T
    bwd: Tensor  # M [d_in d_out]: gx^T = bwd @ gy^T
    layout: str
    version: int

    def matches(self, W: Tensor, x: Tensor) -> bool:
        """Whether this copy still holds ``W``'s values and can multiply ``x``."""
        return (
            W._version == self.version
            and x.device == self.fwd.device
            and x.dtype == self.fwd.dtype
            and x.shape[-1] == self.fwd.shape[1]
        )


def _crow(rows: Int[Tensor, " nnz"], n_rows: int) -> Int[Tensor, " n_rows_plus_1"]:
    crow = torch.zeros(n_rows + 1, dtype=torch.int64, device=rows.device)
    crow[1:] = torch.bincount(rows, minlength=n_rows).cumsum(0)
    return crow


def _csr(crow: Tensor, col: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support")
        # torch's stub leaves the element type of its list alternatives open; we pass tensors
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)  # pyright: ignore[reportUnknownMemberType]


@torch.no_grad()
def csr_weight(W: Float[Tensor, "..."], layout: str) -> CSRWeight:
    """Both CSR copies of ``W``'s matrix, holding exactly its nonzero entries."""
    M = as_matrix(W.detach(), layout).contiguous()
    d_in, d_out = M.shape
    flat = M.view(-1).nonzero().squeeze(1)
    rows, cols = flat // d_out, flat % d_out
    values = M.view(-1)[flat]
    order = (cols * d_in + rows).argsort()
    return CSRWeight(
        fwd=_csr(_crow(cols, d_out), rows[order], values[order], (d_out, d_in)),
        bwd=_csr(_crow(rows, d_in), cols, values, (d_in, d_out)),
        layout=layout,
        version=W._version,
    )


class _CSRMatmulCtx(Protocol):
    """``_CSRMatmul``'s ``ctx``: torch's ``FunctionCtx`` (at run time a node of the autograd
    graph, with ``saved_tensors`` and ``needs_input_grad``) plus the two attributes the forward
    sets on it for the backward."""

    csr: CSRWeight
    w_shape: torch.Size
    saved_tensors: tuple[Tensor, ...]
    needs_input_grad: tuple[bool, ...]

    def save_for_backward(self, *tensors: Tensor) -> None: ...


class _CSRMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, W: Tensor, csr: CSRWeight) -> Tensor:
        saved = cast(_CSRMatmulCtx, ctx)  # FunctionCtx declares none of the attributes set here
        saved.save_for_backward(x)
        saved.csr, saved.w_shape = csr, W.shape
        return torch.mm(csr.fwd, x.t()).t()

    @staticmethod
    # torch declares backward(ctx, *grad_outputs); one output, one gradient: the documented form
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:  # pyright: ignore[reportIncompatibleMethodOverride]
        saved = cast(_CSRMatmulCtx, ctx)  # as filled by forward
        (x,) = saved.saved_tensors
        csr = saved.csr
        gx = torch.mm(csr.bwd, grad.t()).t() if saved.needs_input_grad[0] else None
        gW = None
        if saved.needs_input_grad[1]:
            gW = _from_matrix(x.t() @ grad, csr.layout, saved.w_shape)
        return gx, gW, None


def csr_matmul(
    x: Float[Tensor, "... d_in"], W: Float[Tensor, "..."], csr: CSRWeight
) -> Float[Tensor, "... d_out"]:
    """``x @ as_matrix(W)`` through ``csr`` (built from ``W``); the gradient reaches ``W`` whole.

    Not twice differentiable."""
    x2d = x.reshape(-1, x.shape[-1])
    # torch types Function.apply's result as unknown; this one returns the [rows d_out] product
    out = cast(Tensor, _CSRMatmul.apply(x2d, W, csr))  # pyright: ignore[reportUnknownMemberType]
    return out.reshape(*x.shape[:-1], out.shape[-1])


def usable(store: dict[str, CSRWeight], name: str, W: Tensor, x: Tensor) -> CSRWeight | None:
    """The CSR copy of weight ``name`` if one is stored and still matches ``W`` and ``x``."""
    csr = store.get(name)
    return csr if csr is not None and csr.matches(W, x) else None


def matmul(
    x: Float[Tensor, "... d_in"],
    W: Float[Tensor, "d_in d_out"],
    store: dict[str, CSRWeight],
    name: str,
) -> Float[Tensor, "... d_out"]:
    """``x @ W`` for an ``in_out`` weight: through its CSR copy ``store[name]`` while that still
    matches ``W``, else dense."""
    csr = usable(store, name, W, x)
    return x @ W if csr is None else csr_matmul(x, W, csr)


@torch.no_grad()
def refresh_csr_weights(
    model: nn.Module,
    *,
    max_density: float = DEFAULT_MAX_DENSITY,
    min_numel: int = DEFAULT_MIN_NUMEL,
) -> int:
    """Rebuild the CSR copy of every weight of ``model`` that is sparse and large enough (on CPU);
    drop the others. Modules opt in by holding a ``csr_weights`` dict. Returns how many are in use.

    A copy whose weight is unchanged since its build is kept, so calling this before every
    training step rebuilds only what the last step changed.

    Raises:
        ValueError: ``max_density`` outside ``[0, 1]`` or a negative ``min_numel`` (named).
    """
    if not 0.0 <= max_density <= 1.0:
        raise ValueError(f"max_density must be in [0, 1], got {max_density!r}")
    if min_numel < 0:
        raise ValueError(f"min_numel must be >= 0, got {min_numel!r}")
    in_use = 0
    for module in model.modules():
        store = getattr(module, "csr_weights", None)
        if not isinstance(store, dict):
            continue
        store = cast(dict[str, CSRWeight], store)  # a component's csr_weights (by weight name)
        for name, layout in LAYOUTS.items():
            # the module's own parameter of that name (not a buffer or attribute, not a child's)
            W = module._parameters.get(name)  # pyright: ignore[reportPrivateUsage]
            if W is None:
                continue
            old = store.pop(name, None)
            if W.device.type != "cpu" or W.numel() < min_numel or max_density <= 0:
                continue
            if old is not None and old.version == W._version and old.fwd.device == W.device:
                nnz = old.fwd._nnz()
            else:
                old, nnz = None, int(torch.count_nonzero(W))
            if nnz > max_density * W.numel():
                continue
            store[name] = old if old is not None else csr_weight(W, layout)
            in_use += 1
    return in_use


def clear_csr_weights(model: nn.Module) -> None:
    """Drop every CSR copy: all products dense again."""
    for module in model.modules():
        store = getattr(module, "csr_weights", None)
        if isinstance(store, dict):
            store.clear()
