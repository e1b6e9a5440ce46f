"""README.md's Python example of a task batch and its task loss runs as written, on a small
model folder in place of ``runs/demo/run/final`` (the README's numbers are the demo model's)."""

import math
import random
import re
from pathlib import Path

import pytest

from sparse_lens import HookedSparseTransformer
from sparse_lens.data.tokenizer import train_bpe
from sparse_lens.tasks.task import get_task, task_batch, task_loss
from tests.helpers import build_cfg

README = Path(__file__).resolve().parents[1] / "README.md"
DEMO_MODEL = "runs/demo/run/final"


def _task_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    found = [b for b in blocks if "task_batch(" in b and "task_loss(" in b]
    assert len(found) == 1, f"README.md has {len(found)} task_batch + task_loss examples"
    return found[0]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A small model whose tokenizer, trained on ``else_elif`` examples, keeps them whole."""
    rng, generate = random.Random(0), get_task("else_elif").generator
    assert generate is not None
    pairs = [generate(rng) for _ in range(100)]
    tok = train_bpe([p.a + p.a_target for p in pairs] + [p.b + p.b_target for p in pairs], 400)
    path = tmp_path_factory.mktemp("readme") / "final"
    HookedSparseTransformer(build_cfg(d_vocab=tok.vocab_size), tokenizer=tok).save_pretrained(path)
    return path


def test_the_readme_task_batch_example_runs(model_dir):
    code = _task_example()
    assert f'"{DEMO_MODEL}"' in code
    scope: dict = {}
    exec(code.replace(DEMO_MODEL, str(model_dir)), scope)  # noqa: S102 - the README's own code
    model, batch = scope["model"], scope["batch"]
    assert (len(batch), batch.n_dropped) == (200, 0)
    again = task_batch(get_task("else_elif"), model.tokenizer, model.cfg.n_ctx, "test", 200)
    assert batch.contexts == again.contexts
    loss = task_loss(model, batch)
    assert math.isfinite(loss) and loss > 0
