"""The paper's ``tinypython_2k`` tokenizer from its GPT-2 format files (arXiv 2511.13653, App. A).

OpenAI publishes the tokenizer of its released models as two files in GPT-2's "data gym" format:

* ``encoder.json``: token (bytes spelled with GPT-2's byte-to-unicode table) -> id;
* ``vocab.bpe``: a ``#version`` line, then one merge ``"left right"`` per line, in rank order.

Their reader (tiktoken's ``data_gym_to_mergeable_bpe_ranks``) gives the 256 single bytes ranks
0..255 in the table's order and merge ``i`` rank ``256 + i``, and requires ``encoder.json`` to
agree; rank is the token id. ``<|endoftext|>`` is a special token (id 2047 for tinypython_2k).
Text is split before BPE with the tinypython pattern below (not GPT-2's).

``load_gpt2_bpe(directory)`` reads the pair into the project's ``Tokenizer`` through the HF
``tokenizers`` library (byte-level BPE), after the same consistency check. Nothing is
downloaded: the user fetches the files (see the README).
"""

from pathlib import Path

from tokenizers import Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from sparse_lens.data.tokenizer import EOT, Tokenizer, byte_alphabet
from sparse_lens.files.atomic import read_json

VOCAB_BPE = "vocab.bpe"
ENCODER_JSON = "encoder.json"
# The split pattern of the tinypython_2k encoding (OpenAI's circuit_sparsity tokenizer plugin).
TINYPYTHON_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _expected_ids(merges: list[tuple[str, str]]) -> dict[str, int]:
    """Token -> id as tiktoken derives it: bytes in table order, then merges in file order."""
    alphabet = byte_alphabet()
    printable_first = sorted(range(256), key=lambda b: (ord(alphabet[b]) >= 256, b))
    ids = {alphabet[b]: i for i, b in enumerate(printable_first)}
    for left, right in merges:
        if left + right in ids:
            raise ValueError(f"merge {left!r} {right!r} makes {left + right!r} a second time")
        ids[left + right] = len(ids)
    return ids


def read_merges(path: Path) -> list[tuple[str, str]]:
    """The merges of a ``vocab.bpe`` file, in rank order.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: a line is not two space-separated tokens (the line number is named).
    """
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file {str(path)!r} is missing")
    lines = path.read_text(encoding="utf-8").split("\n")
    if not lines or not lines[0].startswith("#version"):
        raise ValueError(f"{path}: the first line must be '#version: ...', got {lines[0]!r}")
    merges = []
    for number, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"{path}: line {number} is not a merge 'left right': {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


def load_gpt2_bpe(directory: str | Path, pattern: str = TINYPYTHON_PATTERN) -> Tokenizer:
    """Read ``vocab.bpe`` + ``encoder.json`` from ``directory`` into a ``Tokenizer``.

    ``<|endoftext|>`` keeps its id if ``encoder.json`` lists it, else takes the next id (2047
    for tinypython_2k's 2047 BPE tokens). ``pattern`` is the pre-split regex.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: the files are malformed, or ``encoder.json`` does not give every byte and
            merge the id its rank implies (the first disagreeing token is named).
    """
    directory = Path(directory)
    merges = read_merges(directory / VOCAB_BPE)
    encoder = read_json(directory / ENCODER_JSON, "tokenizer")
    if not isinstance(encoder, dict) or not all(isinstance(v, int) for v in encoder.values()):
        raise ValueError(f"{directory / ENCODER_JSON}: expected an object of token -> int id")
    vocab = {k: v for k, v in encoder.items() if k not in (EOT, "<|startoftext|>")}
    try:
        expected = _expected_ids(merges)
    except ValueError as e:
        raise ValueError(f"{directory / VOCAB_BPE}: {e}") from e
    for token in sorted(set(vocab) | set(expected), key=lambda t: expected.get(t, 1 << 30)):
        if vocab.get(token) != expected.get(token):
            raise ValueError(
                f"{directory}: {ENCODER_JSON} gives {token!r} id {vocab.get(token)}, but "
                f"{VOCAB_BPE} implies {expected.get(token)} (the files do not belong together)"
            )
    if EOT in encoder:
        vocab[EOT] = encoder[EOT]  # a special token, but its id is kept
    tok = HFTokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOT])  # keeps encoder.json's id if it has one, else the next id
    return Tokenizer(tok)
