"""Where a task's information sits: answer classes, marked positions and position classes.

Derived from a ``TaskBatch`` alone, so they hold for every task:

* **answer classes** (``answer_classes``): a batch of minimal pairs (rows ``2i``, ``2i + 1``
  with swapped candidates, as ``Task.examples`` yields them) is split by pair side, class ``a``
  the first side; any other batch by its correct token: class ``a`` the examples whose correct
  token is the most common one, class ``b`` the rest.
* **marked position** (``marked_positions``): in a minimal pair, the first position where the
  two contexts differ (e.g. the opening quote of ``single_double_quote``); ``-1`` where a pair
  does not differ before one context ends, and for unpaired batches.
* **position classes** (``position_classes``): each valid position (up to the answer position)
  is one of ``POSITION_CLASSES``, the first that applies: the answer position (the last context
  token), the marked position, a token equal to one of the example's two candidate tokens, the
  first position (BOS), other.
"""

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from sparse_lens.tasks.task import TaskBatch

PositionClass = Literal["answer", "marked", "candidate", "first", "other"]
POSITION_CLASSES: tuple[PositionClass, ...] = get_args(PositionClass)
INVALID = -1  # padding past the answer position


def is_paired(batch: TaskBatch) -> bool:
    """Whether rows ``2i`` and ``2i + 1`` are minimal pairs (swapped, different candidates)."""
    n = len(batch)
    if n < 4 or n % 2:
        return False
    a_cor, b_cor = batch.correct[0::2], batch.correct[1::2]
    a_inc, b_inc = batch.incorrect[0::2], batch.incorrect[1::2]
    return bool(((a_cor == b_inc) & (b_cor == a_inc) & (a_cor != b_cor)).all())


def answer_classes(batch: TaskBatch) -> Bool[Tensor, " batch"]:
    """True for class ``a`` (see the module docstring).

    Raises:
        ValueError: a class would be empty or hold a single example (every example has the same
            correct token, or the batch is too small to contrast).
    """
    if is_paired(batch):
        return torch.arange(len(batch)) % 2 == 0
    values, counts = batch.correct.unique(return_counts=True)
    is_a = batch.correct == values[counts.argmax()]
    n_a = int(is_a.sum())
    if n_a < 2 or len(batch) - n_a < 2:
        raise ValueError(
            f"the batch's answers do not give two classes of 2+ examples ({n_a} and "
            f"{len(batch) - n_a}); explain needs examples of both answers"
        )
    return is_a


def marked_positions(batch: TaskBatch) -> Int[Tensor, " batch"]:
    """Each row's marked position (``-1`` where there is none; see the module docstring)."""
    out = torch.full((len(batch),), -1, dtype=torch.long)
    if not is_paired(batch):
        return out
    for i in range(0, len(batch), 2):
        width = int(min(batch.last[i], batch.last[i + 1])) + 1
        differ = (batch.tokens[i, :width] != batch.tokens[i + 1, :width]).nonzero()
        if len(differ):
            out[i] = out[i + 1] = int(differ[0])
    return out


def position_classes(batch: TaskBatch, marked: Int[Tensor, " batch"]) -> Int[Tensor, "batch pos"]:
    """Index into ``POSITION_CLASSES`` of every position (``INVALID`` past the answer)."""
    n, width = batch.tokens.shape
    pos = torch.arange(width)[None, :].expand(n, width)
    code = torch.full((n, width), POSITION_CLASSES.index("other"), dtype=torch.long)
    code[:, 0] = POSITION_CLASSES.index("first")
    cands = (batch.tokens == batch.correct[:, None]) | (batch.tokens == batch.incorrect[:, None])
    code[cands] = POSITION_CLASSES.index("candidate")
    code[(pos == marked[:, None]) & (marked[:, None] >= 0)] = POSITION_CLASSES.index("marked")
    code[pos == batch.last[:, None]] = POSITION_CLASSES.index("answer")
    code[pos > batch.last[:, None]] = INVALID
    return code


def class_shares(
    weights: Float[Tensor, "batch pos"], codes: Int[Tensor, "batch pos"]
) -> dict[str, float]:
    """Mean over rows of the summed ``weights`` (e.g. attention) on each position class."""
    return {
        name: float((weights * (codes == i)).sum(dim=1).mean())
        for i, name in enumerate(POSITION_CLASSES)
    }


def source_positions(
    attention: Float[Tensor, "batch pos"], codes: Int[Tensor, "batch pos"]
) -> Int[Tensor, " batch"]:
    """Per row, the position (not the first, not past the answer) given the most ``attention``
    from the answer position (e.g. summed over the circuit's heads)."""
    masked = attention.masked_fill(
        (codes == INVALID) | (codes == POSITION_CLASSES.index("first")), -1.0
    )
    return masked.argmax(dim=1)


@dataclass(frozen=True)
class TaskView:
    """A task batch as ``explain`` reads it: answer classes (``is_a``), marked positions,
    position classes (``codes``), the class names and the position kinds in words."""

    batch: TaskBatch
    is_a: Bool[Tensor, " batch"]
    marked: Int[Tensor, " batch"]
    codes: Int[Tensor, "batch pos"]
    decode: Callable[[int], str]
    classes: tuple[str, str]
    where_text: dict[str, str]
    class_text: tuple[str, str] = ("", "")  # each class's answer tokens in words (Markdown)


def task_view(batch: TaskBatch, decode: Callable[[int], str]) -> TaskView:
    """The batch's classes, marked positions, position classes and their names in words
    (``decode`` turns a token id into its text).

    Raises:
        ValueError: as ``answer_classes``.
    """
    is_a = answer_classes(batch)
    marked = marked_positions(batch)

    def common(ids: Tensor) -> str:
        return decode(Counter(ids.tolist()).most_common(1)[0][0]) if len(ids) else "?"

    def describe(ids: Tensor) -> str:
        """A class's answers: ```:```, or ```x`` or ``y```, or ``` data``, ``name`` or 9
        other tokens`` when they vary by example (e.g. a variable the answer copies)."""
        counts = [f"`{decode(t)}`" for t, _ in Counter(ids.tolist()).most_common()]
        if len(counts) <= 2:
            return " or ".join(counts) or "`?`"
        rest = len(counts) - 2
        return f"{counts[0]}, {counts[1]} or {rest} other token{'s' if rest > 1 else ''}"

    classes = (common(batch.correct[is_a]), common(batch.correct[~is_a]))
    class_text = (describe(batch.correct[is_a]), describe(batch.correct[~is_a]))
    has = marked >= 0
    at = batch.tokens[torch.arange(len(batch)), marked.clamp(min=0)]
    mark = (
        f"the marked token (`{common(at[has & is_a])}` / `{common(at[has & ~is_a])}`)"
        if bool(has.any())
        else "the marked token (none: not minimal pairs)"
    )
    where_text = {
        "answer": "the answer position",
        "marked": mark,
        "source": "its source position (where its head, or the circuit's heads, attend most)",
    }
    codes = position_classes(batch, marked)
    return TaskView(batch, is_a, marked, codes, decode, classes, where_text, class_text)
