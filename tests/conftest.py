import pytest
import torch

from sparse_lens.data.corpus import load_corpus
from sparse_lens.data.token_data import TokenData
from tests.helpers import TEXTS, tiny_tokenizer


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tokenizer():
    """A 300-token BPE trained on a few lines of Python (read-only)."""
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def data(tmp_path_factory, tokenizer):
    """Token data of a 30-file fake corpus under the ``tokenizer`` fixture (read-only)."""
    root = tmp_path_factory.mktemp("corpus")
    for i in range(30):
        (root / f"m{i}.py").write_text(TEXTS[i % 5] * (3 + i % 4))
    corpus = load_corpus(root, val_frac=0.2)
    return TokenData.build(corpus, tokenizer, tmp_path_factory.mktemp("cache"))
