"""``generate`` of ``HookedSparseTransformer``: sampling or greedy decoding with a KV cache.

``GenerationMixin`` is a base class of ``HookedSparseTransformer`` only; each step calls the
model's forward pass (``self(...)``) with a ``KVCache``.
"""

import math
from typing import Literal, overload

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sparse_lens.model.kv_cache import KVCache
from sparse_lens.model.tokenizing import TokenizingMixin

GenerateReturn = Literal["input", "str", "tokens"]


def next_tokens(
    logits: Float[Tensor, "batch d_vocab"],
    do_sample: bool,
    temperature: float,
    top_k: int | None,
    generator: torch.Generator | None,
) -> Int[Tensor, " batch"]:
    """The next token of each row: the argmax, or a sample at ``temperature`` from the ``top_k``
    most likely (all if ``None``), drawn on the CPU with ``generator``."""
    if not do_sample:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    probs = logits.softmax(-1).cpu()
    return torch.multinomial(probs, 1, generator=generator)[:, 0].to(logits.device)


class GenerationMixin(TokenizingMixin):
    """TL's ``generate``."""

    # Overloads as TL's: "input" returns what came in (strings for strings, else tokens).
    @overload
    def generate(
        self,
        input: str,
        max_new_tokens: int = 10,
        stop_at_eos: bool = True,
        eos_token_id: int | None = None,
        do_sample: bool = True,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        prepend_bos: bool | None = None,
        return_type: Literal["input", "str"] = "input",
        verbose: bool = False,
        use_past_kv_cache: bool = True,
    ) -> str: ...
    @overload
    def generate(
        self,
        input: list[str],
        max_new_tokens: int = 10,
        stop_at_eos: bool = True,
        eos_token_id: int | None = None,
        do_sample: bool = True,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        prepend_bos: bool | None = None,
        return_type: Literal["input", "str"] = "input",
        verbose: bool = False,
        use_past_kv_cache: bool = True,
    ) -> list[str]: ...
    @overload
    def generate(
        self,
        input: Int[Tensor, "batch pos"],
        max_new_tokens: int = 10,
        stop_at_eos: bool = True,
        eos_token_id: int | None = None,
        do_sample: bool = True,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        prepend_bos: bool | None = None,
        return_type: Literal["input", "tokens"] = "input",
        verbose: bool = False,
        use_past_kv_cache: bool = True,
    ) -> Int[Tensor, "batch pos_plus_new_tokens"]: ...
    @overload
    def generate(
        self,
        input: str | list[str],
        max_new_tokens: int = 10,
        stop_at_eos: bool = True,
        eos_token_id: int | None = None,
        do_sample: bool = True,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        prepend_bos: bool | None = None,
        *,
        return_type: Literal["tokens"],
        verbose: bool = False,
        use_past_kv_cache: bool = True,
    ) -> Int[Tensor, "batch pos_plus_new_tokens"]: ...
    @overload
    def generate(
        self,
        input: Int[Tensor, "batch pos"],
        max_new_tokens: int = 10,
        stop_at_eos: bool = True,
        eos_token_id: int | None = None,
        do_sample: bool = True,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        prepend_bos: bool | None = None,
        *,
        return_type: Literal["str"],
        verbose: bool = False,
        use_past_kv_cache: bool = True,
    ) -> list[str]: ...

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
        return_type: GenerateReturn = "input",
        verbose: bool = False,
        use_past_kv_cache: bool = True,
    ) -> str | list[str] | Int[Tensor, "batch pos_plus_new_tokens"]:
        """Extend ``input`` by up to ``max_new_tokens`` tokens (greedy if ``do_sample=False``).

        With ``use_past_kv_cache`` each step runs only the new token against cached keys and
        values (``KVCache``; the same logits as rerunning the prefix). With
        ``stop_at_eos`` a sequence that emits ``eos_token_id`` (default ``<|endoftext|>``) keeps
        emitting it; generation stops once all have. A list of prompts is left-padded and
        masked, so each continues as if run alone (its strings keep no padding).
        ``return_type="input"`` returns strings for string input and tokens otherwise.
        ``verbose`` is accepted for TL compatibility.

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
            # nn.Module.__call__ is typed Any; the forward returns [batch pos d_vocab] logits
            logits: Tensor = self(step, attention_mask=step_mask, past_kv_cache=cache)
            nxt = next_tokens(logits[:, -1].float(), do_sample, temperature, top_k, generator)
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
        tok = self.require_tokenizer()
        real = torch.ones_like(tokens, dtype=torch.bool) if mask is None else mask.bool()
        # each row without its left padding
        # torch types tolist as a bare list (here of ints)
        text = [tok.decode(row[m].tolist()) for row, m in zip(tokens, real, strict=True)]  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType]
        return text[0] if isinstance(input, str) else text
