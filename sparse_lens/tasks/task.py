"""Tasks, their held-out splits, and the paper's task loss (arXiv 2511.13653, Table 1 and App. A.5).

A task yields *examples* ``(context, correct, incorrect)``; the 20 built-in tasks yield them in
minimal pairs (``tasks/suite.py``), a custom task reads them from JSONL. Every pair or example is
assigned to ``train`` / ``val`` / ``test`` by a hash of its text (70/10/20), so the splits never
overlap whatever the seed: pruning uses ``train``, reports use ``test``.

Task loss: binary cross-entropy at the last position restricted to the two candidate tokens,
``-log softmax([logit_correct, logit_incorrect])[0]``, averaged over sequences. This is the
per-sequence loss the paper's 0.15 target refers to (OpenAI's stored values are the sum over a
pair, twice this). Accuracy is the fraction of sequences where the correct logit is larger.

Built-in examples are kept only where the candidate is a natural token boundary: tokenising
``context + correct`` must give the context's tokens followed by the single candidate token.
"""

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from hooks.types import HookList
from sparse_lens.data.tokenizer import Tokenizer
from sparse_lens.model.transformer import HookedSparseTransformer
from sparse_lens.tasks.suite import GENERATORS, Generator, TaskPair
from sparse_lens.vocab import CHANCE_LOSS as CHANCE_LOSS  # re-exported (sweep.grid)
from sparse_lens.vocab import SPLITS, TaskSplit

TASK_NAMES: tuple[str, ...] = tuple(GENERATORS)


SPLIT_USES: dict[TaskSplit, str] = {
    "train": "70% of each task's pairs: the pruner trains its masks on them",
    "val": "10% of each task's pairs: the demo's task choice (tasks.json) scores the full model "
    "on some, a circuit search bisects on its own n_val of them",
    "test": "20% of each task's pairs: for reporting, never for choosing",
}
"""What each split of :func:`split_of_text` is for (the splits are drawn by a hash of a pair's
text, so they never overlap)."""


def split_of_text(text: str) -> TaskSplit:
    h = int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "big") / 2**64
    return "train" if h < 0.7 else "val" if h < 0.8 else "test"


@dataclass(frozen=True)
class TaskExample:
    context: str
    correct: str
    incorrect: str


@dataclass(frozen=True)
class Task:
    """A named task: a minimal-pair generator or a fixed list of examples."""

    name: str
    description: str
    generator: Generator | None = None
    fixed: tuple[TaskExample, ...] = ()

    def pairs(
        self, split: TaskSplit, n: int, seed: int = 0, *, up_to: bool = False
    ) -> list[TaskPair]:
        """``n`` distinct minimal pairs of ``split``, deterministic in ``seed``; with ``up_to``,
        all there are when the generator yields fewer (the first of them in the same order).

        Raises:
            ValueError: the task has fixed examples (no generator), ``split`` is unknown (named), or
                (without ``up_to``) the generator yields fewer than ``n`` distinct pairs of
                ``split``.
        """
        if self.generator is None:
            raise ValueError(f"task {self.name!r} has fixed examples, not pairs")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        rng = random.Random(f"{self.name}:{seed}")
        out: list[TaskPair] = []
        seen: set[tuple[str, str]] = set()
        for _ in range(200 * n + 1000):
            if len(out) == n:
                break
            pair = self.generator(rng)
            key = (pair.a, pair.b)
            if key in seen:
                continue
            seen.add(key)
            if split_of_text(pair.a + "\0" + pair.b) == split:
                out.append(pair)
        if len(out) < n and not up_to:
            raise ValueError(
                f"task {self.name!r} yields only {len(out)} distinct {split} pairs, {n} asked "
                f"({2 * n} examples); ask for at most {2 * len(out)} examples"
            )
        return out

    def examples(
        self, split: TaskSplit, n: int, seed: int = 0, *, up_to: bool = False
    ) -> list[TaskExample]:
        """``n`` examples of ``split``: ``ceil(n / 2)`` pairs, each giving the ``a`` and ``b``
        sides (an odd ``n`` is rounded up so that both sides of every pair are kept); ``up_to``:
        fewer if the task has fewer (``pairs``)."""
        if self.generator is None:
            chosen = [e for e in self.fixed if split_of_text(e.context) == split]
            return chosen[:n]
        out = []
        for p in self.pairs(split, (n + 1) // 2, seed, up_to=up_to):
            out.append(TaskExample(p.a, p.a_target, p.b_target))
            out.append(TaskExample(p.b, p.b_target, p.a_target))
        return out[:n] if n % 2 == 0 else out


def get_task(name: str) -> Task:
    """A built-in task by its paper name.

    Raises:
        ValueError: an unknown task name (named, with close matches or the known names).
    """
    if name not in GENERATORS:
        import difflib

        close = difflib.get_close_matches(name, TASK_NAMES, n=3)
        hint = f"; did you mean {close}?" if close else f"; known: {list(TASK_NAMES)}"
        raise ValueError(f"unknown task {name!r}{hint}")
    gen = GENERATORS[name]
    return Task(name=name, description=(gen.__doc__ or "").strip(), generator=gen)


def load_custom_task(path: str | Path, tokenizer: Tokenizer, name: str | None = None) -> Task:
    """A task from a JSONL file of ``{"context", "correct", "incorrect"}`` records.

    Raises:
        ValueError: naming the line, for a malformed record, equal candidates, a candidate
            that is not exactly one token, or one that merges with the context's last token.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"custom task file {str(path)!r} does not exist")
    examples = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{i}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e.msg})") from e
        if not isinstance(rec, dict) or not all(
            isinstance(rec.get(k), str) for k in ("context", "correct", "incorrect")
        ):
            raise ValueError(f'{where}: needs string fields "context", "correct", "incorrect"')
        if rec["correct"] == rec["incorrect"]:
            raise ValueError(f"{where}: correct and incorrect are equal ({rec['correct']!r})")
        for key in ("correct", "incorrect"):
            n = len(tokenizer.encode(rec[key]))
            if n != 1:
                raise ValueError(f"{where}: {key} {rec[key]!r} is {n} tokens, not one")
        if not rec["context"]:
            raise ValueError(f"{where}: empty context")
        ctx = tokenizer.encode(rec["context"])
        for key in ("correct", "incorrect"):
            if tokenizer.encode(rec["context"] + rec[key]) != ctx + tokenizer.encode(rec[key]):
                raise ValueError(
                    f"{where}: {key} {rec[key]!r} merges with the end of the context into "
                    "another token, so it cannot be scored as the next token; end the context "
                    "at a token boundary (e.g. move a space into the candidate)"
                )
        examples.append(TaskExample(rec["context"], rec["correct"], rec["incorrect"]))
    if not examples:
        raise ValueError(f"custom task file {str(path)!r} has no records")
    return Task(
        name=name or path.stem, description=f"custom task from {path.name}", fixed=tuple(examples)
    )


@dataclass
class TaskBatch:
    """Tokenised examples, right-padded; ``last`` indexes each context's final token."""

    tokens: Int[Tensor, "batch pos"]
    last: Int[Tensor, " batch"]
    correct: Int[Tensor, " batch"]
    incorrect: Int[Tensor, " batch"]
    contexts: list[str]
    n_dropped: int = 0

    def __len__(self) -> int:
        return len(self.contexts)

    def subset(self, idx: Sequence[int] | Tensor) -> "TaskBatch":
        idx_t = torch.as_tensor(idx, dtype=torch.long)
        width = int(self.last[idx_t].max()) + 1
        return TaskBatch(
            tokens=self.tokens[idx_t, :width],
            last=self.last[idx_t],
            correct=self.correct[idx_t],
            incorrect=self.incorrect[idx_t],
            contexts=[self.contexts[i] for i in idx_t.tolist()],
        )


def _single(tokenizer: Tokenizer, text: str, task: str) -> int:
    ids = tokenizer.encode(text)
    if len(ids) != 1:
        raise ValueError(
            f"task {task!r}: candidate {text!r} is {len(ids)} tokens under this tokenizer"
        )
    return ids[0]


def tokenize_examples(
    examples: Sequence[TaskExample],
    tokenizer: Tokenizer,
    n_ctx: int,
    *,
    task: str = "task",
    require_boundary: bool = True,
    prepend_bos: bool = True,
) -> TaskBatch:
    """Tokenise examples; contexts are left-truncated to ``n_ctx`` tokens.

    With ``require_boundary`` (built-in tasks), examples whose candidate does not start a new
    token after the context are dropped, in pairs, and counted in ``n_dropped``.

    Raises:
        ValueError: no example survives tokenisation (the number dropped is named).
    """
    rows, lasts, cors, incs, ctxs = [], [], [], [], []
    dropped = 0
    for i in range(0, len(examples), 2 if require_boundary else 1):
        group = examples[i : i + (2 if require_boundary else 1)]
        encoded = []
        for ex in group:
            ctx = tokenizer.encode(ex.context)
            if require_boundary:  # generated examples: drop what this tokenizer cannot express
                cand = [tokenizer.encode(ex.correct), tokenizer.encode(ex.incorrect)]
                if any(len(ids) != 1 for ids in cand):
                    break
                if tokenizer.encode(ex.context + ex.correct) != ctx + cand[0]:
                    break
            c = _single(tokenizer, ex.correct, task)
            w = _single(tokenizer, ex.incorrect, task)
            ids = ([tokenizer.eot_id] if prepend_bos else []) + ctx
            encoded.append((ids[-n_ctx:], c, w, ex.context))
        if len(encoded) != len(group):
            dropped += len(group)
            continue
        for ids, c, w, text in encoded:
            rows.append(ids)
            lasts.append(len(ids) - 1)
            cors.append(c)
            incs.append(w)
            ctxs.append(text)
    if not rows:
        raise ValueError(f"task {task!r}: no example survives tokenisation ({dropped} dropped)")
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), tokenizer.eot_id, dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = torch.tensor(r)
    return TaskBatch(
        tokens=tokens,
        last=torch.tensor(lasts),
        correct=torch.tensor(cors),
        incorrect=torch.tensor(incs),
        contexts=ctxs,
        n_dropped=dropped,
    )


def task_batch(
    task: Task,
    tokenizer: Tokenizer,
    n_ctx: int,
    split: TaskSplit,
    n: int,
    seed: int = 0,
    *,
    up_to: bool = False,
) -> TaskBatch:
    """``n`` tokenised examples of ``task`` (fewer if some are dropped at token boundaries;
    ``up_to``: or if the task has fewer distinct examples of ``split``)."""
    return tokenize_examples(
        task.examples(split, n, seed, up_to=up_to),
        tokenizer,
        n_ctx,
        task=task.name,
        require_boundary=task.generator is not None,
    )


def binary_logits(
    logits: Float[Tensor, "batch pos d_vocab"] | Float[Tensor, "batch d_vocab"], batch: TaskBatch
) -> Float[Tensor, "batch 2"]:
    """``[correct, incorrect]`` logits at each example's last context position: ``logits`` of
    every position ``[batch pos d_vocab]``, or already at that position ``[batch d_vocab]``
    (``answer_logits``)."""
    last = logits
    if logits.ndim == 3:
        last = logits[torch.arange(len(batch.last)), batch.last.to(logits.device)]
    idx = torch.stack([batch.correct, batch.incorrect], dim=1).to(logits.device)
    return last.gather(1, idx)


def answer_logits(
    model: Any, batch: TaskBatch, fwd_hooks: HookList | None = None
) -> Float[Tensor, "batch d_vocab"]:
    """Logits of ``model`` (under ``fwd_hooks``) at each example's answer position ``batch.last``,
    gradient kept. A ``HookedSparseTransformer`` unembeds that position only (``logits_at``);
    another model (a TL dense model) runs in full and is indexed."""
    device = model.W_E.device
    tokens = batch.tokens.to(device)
    if isinstance(model, HookedSparseTransformer):
        logits = model.run_with_hooks(tokens, fwd_hooks=fwd_hooks or [], logits_at=batch.last)
        return logits[:, 0]
    logits = model.run_with_hooks(tokens, fwd_hooks=fwd_hooks or [])
    return logits[torch.arange(len(batch)), batch.last.to(device)]


def binary_task_loss(two: Float[Tensor, "batch 2"]) -> Float[Tensor, " batch"]:
    """Per-sequence binary cross-entropy of the correct candidate."""
    return -two.float().log_softmax(dim=-1)[:, 0]


def mean_task_loss(
    logits: Float[Tensor, "batch pos d_vocab"] | Float[Tensor, "batch d_vocab"], batch: TaskBatch
) -> Float[Tensor, ""]:
    """Mean task loss of ``logits`` (every position, or at the answer: ``binary_logits``) on
    ``batch`` (a differentiable scalar): the loss every pruning, evaluation and analysis path
    computes."""
    return binary_task_loss(binary_logits(logits, batch)).mean()


def binary_accuracy(two: Float[Tensor, "batch 2"]) -> Float[Tensor, " batch"]:
    """Per sequence, 1 where the correct candidate's logit is larger, else 0."""
    return (two[:, 0] > two[:, 1]).float()


def task_metrics(logits: Float[Tensor, "batch pos d_vocab"], batch: TaskBatch) -> dict[str, float]:
    """Mean task loss, accuracy and the number of sequences of ``logits`` on ``batch``."""
    two = binary_logits(logits, batch)
    return {
        "loss": float(binary_task_loss(two).mean()),
        "accuracy": float(binary_accuracy(two).mean()),
        "n": len(batch),
    }


@torch.no_grad()
def task_loss(model: Any, batch: TaskBatch, fwd_hooks: HookList | None = None) -> float:
    """Mean task loss of ``model`` under ``fwd_hooks`` on the whole ``batch`` in one forward
    pass (hooks tied to the batch, e.g. frozen norm scales, need exactly that batch)."""
    return float(mean_task_loss(answer_logits(model, batch, fwd_hooks), batch))


def task_table(
    model: HookedSparseTransformer,
    tasks: Sequence[Task],
    split: TaskSplit = "test",
    n: int = 200,
    seed: int = 0,
    *,
    up_to: bool = False,
) -> dict[str, dict[str, float]]:
    """Loss, accuracy, n and dropped examples of ``model`` on each task's ``split``; ``up_to``
    scores a task with fewer than ``n`` distinct examples of ``split`` on all it has.

    Raises:
        ValueError: the model has no tokenizer, a task cannot be built with it, or (without
            ``up_to``) a task has fewer than ``n`` examples of ``split`` (named).
    """
    rows = {}
    for task in tasks:
        tok, n_ctx = model.require_tokenizer(), model.cfg.n_ctx
        batch = task_batch(task, tok, n_ctx, split, n, seed, up_to=up_to)
        rows[task.name] = evaluate_task(model, batch) | {"dropped": batch.n_dropped}
    return rows


@torch.no_grad()
def evaluate_task(
    model: Any, batch: TaskBatch, fwd_hooks: HookList | None = None, batch_size: int = 64
) -> dict[str, float]:
    """Task loss and accuracy of ``model`` (optionally under ``fwd_hooks``) on ``batch``."""
    losses, correct = [], []
    for i in range(0, len(batch), batch_size):
        sub = batch.subset(range(i, min(i + batch_size, len(batch))))
        two = binary_logits(answer_logits(model, sub, fwd_hooks), sub)
        losses.append(binary_task_loss(two).cpu())
        correct.append(binary_accuracy(two).cpu())
    return {
        "loss": float(torch.cat(losses).mean()),
        "accuracy": float(torch.cat(correct).mean()),
        "n": len(batch),
    }


def concat_batches(a: TaskBatch, b: TaskBatch, pad_id: int) -> TaskBatch:
    """``a`` then ``b`` as one batch, right-padded with ``pad_id`` to the wider one."""
    width = max(a.tokens.shape[1], b.tokens.shape[1])

    def pad(t: Tensor) -> Tensor:
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=pad_id)

    return TaskBatch(
        tokens=torch.cat([pad(a.tokens), pad(b.tokens)]),
        last=torch.cat([a.last, b.last]),
        correct=torch.cat([a.correct, b.correct]),
        incorrect=torch.cat([a.incorrect, b.incorrect]),
        contexts=a.contexts + b.contexts,
        n_dropped=a.n_dropped + b.n_dropped,
    )


def non_single_candidates(
    tokenizer: Tokenizer, tasks: Sequence[Task], draws: int = 400, seed: int = 0
) -> dict[str, list[str]]:
    """Task name -> the candidate tokens that are not single tokens of ``tokenizer``.

    The paper's tasks compare two single-token continuations (Table 1); a tokenizer
    other than the one they were written for (e.g. OpenAI's tinypython_2k) may split some.
    Candidates come from ``draws`` generated pairs per task (all splits) or a custom task's
    examples; tasks whose candidates are all single tokens are left out.
    """
    out: dict[str, list[str]] = {}
    for task in tasks:
        if task.generator is not None:
            rng = random.Random(f"{task.name}:candidates:{seed}")
            pairs = [task.generator(rng) for _ in range(draws)]
            cands = {c for p in pairs for c in (p.a_target, p.b_target)}
        else:
            cands = {c for e in task.fixed for c in (e.correct, e.incorrect)}
        bad = sorted(c for c in cands if len(tokenizer.encode(c)) != 1)
        if bad:
            out[task.name] = bad
    return out
