"""GPT-2 format tokenizer files (vocab.bpe + encoder.json) read into the project's Tokenizer."""

import json

import pytest

from sparse_lens.data.gpt2_bpe import load_gpt2_bpe
from sparse_lens.tasks.task import TASK_NAMES, get_task, non_single_candidates
from tests.helpers import TEXTS
from tests.oai_files import reference_encode, write_gpt2_bpe

SAMPLES = [
    'print("hello world")\n',
    "def f(a, b=None):\n    return a + b\n\n\n",
    "x = [[1, 2], [3, 44444]]\r\n\ttabs\t and  double  spaces   \n",
    "with open('data.txt') as f:  # café, naïve, 日本語, emoji 🐍\n",
    "",
    " leading space and trailing   ",
    "<|endoftext|>def g():\n    pass<|endoftext|>",
    "\x00\x7f byte soup \u00a0\u2028",
]


@pytest.fixture(scope="module")
def bpe_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpt2bpe")
    ranks = write_gpt2_bpe(root, TEXTS, n_merges=120)
    return root, ranks


@pytest.mark.parametrize("text", SAMPLES)
def test_round_trip_and_ids_match_tiktoken_algorithm(bpe_files, text):
    root, ranks = bpe_files
    tok = load_gpt2_bpe(root)
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    if "<|endoftext|>" not in text:
        assert ids == reference_encode(text, ranks)
    else:  # the special token is matched whole, the rest as usual
        parts = text.split("<|endoftext|>")
        want = reference_encode(parts[0], ranks)
        for p in parts[1:]:
            want += [tok.eot_id, *reference_encode(p, ranks)]
        assert ids == want


def test_vocabulary_and_special_token(bpe_files, tmp_path):
    root, ranks = bpe_files
    tok = load_gpt2_bpe(root)
    assert tok.eot_id == len(ranks) and tok.vocab_size == len(ranks) + 1
    # without <|endoftext|> in encoder.json it takes the next id, as in tinypython_2k (2047)
    write_gpt2_bpe(tmp_path, TEXTS, n_merges=120, eot_in_encoder=False)
    tok2 = load_gpt2_bpe(tmp_path)
    assert tok2.eot_id == len(ranks) and tok2.encode(SAMPLES[0]) == tok.encode(SAMPLES[0])


def test_bad_files_are_named(bpe_files, tmp_path):
    root, _ = bpe_files
    with pytest.raises(FileNotFoundError, match="vocab.bpe"):
        load_gpt2_bpe(tmp_path)
    (tmp_path / "vocab.bpe").write_text((root / "vocab.bpe").read_text())
    with pytest.raises(FileNotFoundError, match="encoder.json"):
        load_gpt2_bpe(tmp_path)
    enc = json.loads((root / "encoder.json").read_text())
    swapped = dict(enc)
    a, b = list(enc)[300:302]
    swapped[a], swapped[b] = enc[b], enc[a]
    (tmp_path / "encoder.json").write_text(json.dumps(swapped))
    with pytest.raises(ValueError, match="do not belong together"):
        load_gpt2_bpe(tmp_path)
    (tmp_path / "encoder.json").write_text(json.dumps(enc))
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\nab\n")
    with pytest.raises(ValueError, match="line 2"):
        load_gpt2_bpe(tmp_path)


def test_candidate_check_names_the_missing_tokens(bpe_files):
    root, _ = bpe_files
    tok = load_gpt2_bpe(root)
    missing = non_single_candidates(tok, [get_task(n) for n in TASK_NAMES])
    assert set(missing) <= set(TASK_NAMES)
    for name, cands in missing.items():
        assert cands and all(len(tok.encode(c)) > 1 for c in cands), name
    for task in (get_task(n) for n in TASK_NAMES):
        for pair in task.pairs("train", 20):
            for cand in (pair.a_target, pair.b_target):
                if len(tok.encode(cand)) != 1:
                    assert cand in missing[task.name], (task.name, cand)
    assert missing, "a vocabulary this small was expected to miss some candidates"


def test_byte_alphabet_is_gpt2s_bytes_to_unicode():
    """One table for the reader and the tokenizer: printable bytes (not space) spell themselves,
    the 68 others ``chr(256 + n)`` in byte order, and its inverse decodes token strings."""
    from sparse_lens.data.gpt2_bpe import byte_alphabet as reader_table
    from sparse_lens.data.tokenizer import _unicode_to_byte, byte_alphabet

    table = byte_alphabet()
    assert reader_table is byte_alphabet and len(set(table)) == 256
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    assert all(table[b] == chr(b) for b in printable)
    others = [b for b in range(256) if b not in printable]
    assert [table[b] for b in others] == [chr(256 + n) for n in range(len(others))]
    assert _unicode_to_byte() == {c: b for b, c in enumerate(table)}
