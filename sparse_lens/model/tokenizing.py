"""The tokenizer surface of ``HookedSparseTransformer`` (TransformerLens's names): strings to
token ids and back, and the checks every token input passes before the forward pass.

``TokenizingMixin`` is a base class of ``HookedSparseTransformer`` only; it reads the model's
``cfg``, ``tokenizer`` and ``embed`` (for the device).
"""

from typing import Any, Literal, TypeGuard, cast, get_args

import torch
from jaxtyping import Int
from torch import Tensor, nn

from sparse_lens.data.tokenizer import Tokenizer
from sparse_lens.model.components import Embed
from sparse_lens.model.config import SparseTransformerConfig

PaddingSide = Literal["left", "right"]
TokenPosition = Literal["first", "last"]  # get_token_position's mode


class TokenizingMixin(nn.Module):
    """``to_tokens``, ``to_string``, ``to_str_tokens``, ``to_single_token``,
    ``to_single_str_token``, ``get_token_position``, ``get_attention_mask`` and the input checks
    of the forward pass."""

    # set by HookedSparseTransformer.__init__
    cfg: SparseTransformerConfig
    tokenizer: Tokenizer | None
    embed: Embed

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
        if not all(isinstance(t, str) for t in texts):  # pyright: ignore[reportUnnecessaryIsInstance]  # run-time check of the caller's input
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

    # Any (here and in to_str_tokens): a numpy array or any other array-like torch.as_tensor takes
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
            return [tok.decode(row.tolist()) for row in ids]  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType]  # torch types tolist as a bare list
        if ids.ndim != 1:
            raise ValueError(f"to_string takes 0-, 1- or 2-d ids, got shape {tuple(ids.shape)}")
        return tok.decode(ids.tolist())  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType]  # as above

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
        elif _is_str_list(input):
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
        # run-time check of the caller's value
        if not isinstance(int_token, int) or not 0 <= int_token < self.cfg.d_vocab:  # pyright: ignore[reportUnnecessaryIsInstance]
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


def _is_str_list(x: object) -> TypeGuard[list[str]]:
    """Whether ``x`` is a non-empty list of strings."""
    if not isinstance(x, list):
        return False
    items = cast(list[object], x)  # isinstance leaves the items unknown; checked one by one here
    return len(items) > 0 and all(isinstance(t, str) for t in items)
