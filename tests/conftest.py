import pytest
import torch

from tests.helpers import tiny_tokenizer


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tokenizer():
    """A 300-token BPE trained on a few lines of Python (read-only)."""
    return tiny_tokenizer()
