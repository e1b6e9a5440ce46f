"""The tokenizer's fingerprint: one SHA-256 of its JSON, the same for the object and its file."""

import hashlib

from sparse_lens.data.tokenizer import json_sha256
from tests.helpers import tiny_tokenizer


def test_sha256_is_the_digest_of_the_json_and_of_the_saved_file(tmp_path):
    tok = tiny_tokenizer()
    text = tok.to_json()
    assert tok.sha256() == json_sha256(text) == hashlib.sha256(text.encode("utf-8")).hexdigest()
    tok.save(tmp_path / "tokenizer.json")
    assert json_sha256((tmp_path / "tokenizer.json").read_text(encoding="utf-8")) == tok.sha256()
