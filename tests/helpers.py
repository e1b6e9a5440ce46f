"""Builders shared by the tests: tiny configs, models and a tiny BPE tokenizer."""

from typing import Any

import torch

from sparse_lens import HookedSparseTransformer, SparseTransformerConfig
from sparse_lens.data.tokenizer import Tokenizer, train_bpe

TEXTS = [
    'print("hello world")\nx = [1, 2, [3, 4]]\n',
    "def f(a, b=None):\n    return a + b\n",
    "for i in range(10):\n    if i == 3:\n        break\n",
    "with open('data.txt') as f:\n    data = f.read()\n",
    "values = [[5, 3, 11], [2, 7]]\nd = {'a': 1, \"b\": 2}\n",
] * 20


def build_cfg(**overrides: Any) -> SparseTransformerConfig:
    base: dict[str, Any] = dict(seed=0)
    base.update(overrides)
    return SparseTransformerConfig.tiny(**base)


def build_model(**overrides: Any) -> HookedSparseTransformer:
    model = HookedSparseTransformer(build_cfg(**overrides))
    # Non-zero biases and sinks so every code path (masked biases, sink mass) is exercised.
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.rsplit(".", 1)[-1].startswith("b_") or name.endswith("sinks"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
            if name.endswith(".w"):
                p.copy_(1 + torch.randn(p.shape, generator=gen) * 0.2)
    return model.eval()


def tiny_tokenizer(vocab_size: int = 300) -> Tokenizer:
    return train_bpe(TEXTS, vocab_size=vocab_size)


def random_tokens(
    n_batch: int = 2, n_pos: int = 10, d_vocab: int = 64, seed: int = 0
) -> torch.Tensor:
    return torch.randint(
        0, d_vocab, (n_batch, n_pos), generator=torch.Generator().manual_seed(seed)
    )
