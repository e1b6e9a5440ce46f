"""A 2048-token byte-level BPE trained on the corpus with the ``tokenizers`` library.

As in the paper (arXiv 2511.13653, App. A) the vocabulary is 2048 with ``<|endoftext|>`` as the last id
(2047), and the tokens the task suite needs are single tokens (``REQUIRED_TOKENS``). The learned
BPE is checked for them; any it did not learn is added as an added token (matched before the
byte-level split) and the BPE is retrained with a correspondingly smaller budget, so the total
stays exactly ``vocab_size``.

Trained tokenizers are cached on disk under the corpus fingerprint.
"""

import hashlib
import logging
from collections.abc import Iterable
from functools import cache
from pathlib import Path

from tokenizers import AddedToken, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from sparse_lens.files.atomic import atomic_write_text

logger = logging.getLogger(__name__)

EOT = "<|endoftext|>"
REQUIRED_TOKENS: tuple[str, ...] = ('("', "('", '")', "')", "],", "]]", "]", '"', "'")


class Tokenizer:
    """Thin wrapper over a ``tokenizers.Tokenizer`` with the ids TL's surface needs."""

    def __init__(self, tok: HFTokenizer) -> None:
        """Wrap a trained ``tokenizers.Tokenizer`` whose vocabulary holds ``EOT``.

        Raises:
            ValueError: ``tok`` has no ``EOT`` token.
        """
        eot = tok.token_to_id(EOT)
        if eot is None:
            raise ValueError(f"tokenizer has no {EOT!r} token")
        self._tok = tok
        self.eot_id: int = eot
        self.vocab_size: int = tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=False)

    def token_str(self, i: int) -> str:
        """The text of token ``i`` alone. A byte-level token holding part of one UTF-8 character
        shows its bytes escaped (``'\\xe2\\x82'``) instead of decoding to ``U+FFFD``.

        Raises:
            ValueError: ``i`` is not in the vocabulary (named, with the vocabulary size).
        """
        added = self._tok.get_added_tokens_decoder()
        if i in added:
            return added[i].content
        piece = self._tok.id_to_token(i)
        if piece is None:
            raise ValueError(f"token id {i} is not in the vocabulary (size {self.vocab_size})")
        table = _unicode_to_byte()
        if not all(ch in table for ch in piece):
            return self.decode([i])
        return bytes(table[ch] for ch in piece).decode("utf-8", errors="backslashreplace")

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        return self._tok.id_to_token(i)

    def is_single_token(self, text: str) -> bool:
        return len(self.encode(text)) == 1

    def to_json(self) -> str:
        return self._tok.to_str()

    def sha256(self) -> str:
        """``json_sha256`` of ``to_json()``: this tokenizer's fingerprint."""
        return json_sha256(self.to_json())

    def save(self, path: str | Path) -> None:
        atomic_write_text(Path(path), self.to_json())

    @classmethod
    def from_json(cls, text: str) -> "Tokenizer":
        return cls(HFTokenizer.from_str(text))

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer":
        """Load a tokenizer saved as ``tokenizer.json`` at ``path``.

        Raises:
            FileNotFoundError: the file ``path`` is missing.
            ValueError: the file is not a readable tokenizer.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file {str(path)!r} is missing")
        try:
            return cls.from_json(path.read_text(encoding="utf-8"))
        except Exception as e:
            raise ValueError(f"tokenizer file {str(path)!r} is corrupt: {e}") from e

    def to_hf(self) -> object:
        """A ``transformers.PreTrainedTokenizerFast`` over the same vocabulary (for dense models)."""
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast(
            tokenizer_object=HFTokenizer.from_str(self.to_json()),
            bos_token=EOT,
            eos_token=EOT,
            unk_token=EOT,
            pad_token=EOT,
        )


@cache
def byte_alphabet() -> tuple[str, ...]:
    """GPT-2's byte -> printable character table of the byte-level pre-tokenizer: entry ``b``
    spells byte ``b``. Printable bytes spell themselves; the others (control bytes, space,
    ``0x7f``-``0xa0``, ``0xad``) get ``chr(256 + n)`` in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    chars = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + n)
            n += 1
    return tuple(chars[b] for b in range(256))


@cache
def _unicode_to_byte() -> dict[str, int]:
    """Inverse of ``byte_alphabet``."""
    return {c: b for b, c in enumerate(byte_alphabet())}


def json_sha256(text: str) -> str:
    """The SHA-256 hex digest of a tokenizer's JSON (``Tokenizer.to_json()``, or the text of a
    saved ``tokenizer.json``): the fingerprint that ties models, caches and runs to it."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _train(texts: Iterable[str], n_learned: int, added: list[str]) -> HFTokenizer:
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=n_learned,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    if tok.get_vocab_size() != n_learned:
        raise ValueError(
            f"the corpus is too small to learn {n_learned} BPE tokens "
            f"(got {tok.get_vocab_size()}); use a larger corpus or a smaller vocab_size"
        )
    if added:
        tok.add_tokens([AddedToken(t, normalized=False, single_word=False) for t in added])
    tok.add_special_tokens([EOT])
    return tok


def train_bpe(
    texts: list[str], vocab_size: int = 2048, required: tuple[str, ...] = REQUIRED_TOKENS
) -> Tokenizer:
    """Train a byte-level BPE of exactly ``vocab_size`` tokens with ``EOT`` as the last id and
    every string in ``required`` a single token.

    Raises:
        ValueError: ``vocab_size`` is below ``257 + len(required)`` (named).
        RuntimeError: the trained tokenizer breaks an invariant (a required string is not one
            token, or the size or ``EOT`` id is wrong).
    """
    if vocab_size < 257 + len(required):
        raise ValueError(f"vocab_size must be >= {257 + len(required)}, got {vocab_size}")
    tok = Tokenizer(_train(texts, vocab_size - 1, []))
    missing = [t for t in required if not tok.is_single_token(t)]
    if missing:
        logger.info("BPE did not learn %s as single tokens; adding them", missing)
        tok = Tokenizer(_train(texts, vocab_size - 1 - len(missing), missing))
    bad = [t for t in required if not tok.is_single_token(t)]
    if bad or tok.eot_id != vocab_size - 1 or tok.vocab_size != vocab_size:
        raise RuntimeError(
            f"tokenizer invariants failed: not single {bad}, eot id {tok.eot_id}, "
            f"vocab {tok.vocab_size}"
        )
    return tok


def cached_tokenizer(
    texts: list[str], fingerprint: str, cache_dir: Path, vocab_size: int = 2048
) -> Tokenizer:
    """``train_bpe`` on ``texts``, cached at ``cache_dir/tokenizer-{fingerprint}-{vocab}.json``."""
    from sparse_lens.files.outputs import cache_entry

    path = Path(cache_dir) / f"tokenizer-{fingerprint}-{vocab_size}.json"
    with cache_entry(path):
        if path.is_file():
            try:
                return Tokenizer.load(path)
            except ValueError as e:  # a corrupt entry is rebuilt, not fatal
                logger.warning("rebuilding the cached tokenizer: %s", e)
        tok = train_bpe(texts, vocab_size)
        tok.save(path)
    return tok
