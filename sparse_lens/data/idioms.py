"""Simple Python idioms: the synthetic component of the training mix.

The paper trains on two components (arXiv 2511.13653, App. A): ~25B tokens close to real Python and
~10B tokens of "especially simple, repetitive idioms (inspired by TinyStories)". Our default
corpus, the standard library, is the first kind only, and it is thin on exactly the idioms the
paper studies: this interpreter's stdlib (tests included, 31M characters) holds 47 assignments of
a nested list literal (``x = [[``), and `]]` is mostly double indexing (``a[b[i]]``). A model
trained on ~2M stdlib tokens sees about ten nested list literals, so bracket counting cannot be
learned from it at the demo's budget (measured: task loss 1.72, 50%).

This module is the offline stand-in for the simple component: short generated snippets of data
literals (flat, nested and multi-row lists, tuples, dicts, sets, quoted strings) in assignments,
calls, appends and returns, sometimes inside a ``def``. It is *not* the task suite:

* no code is shared with :mod:`sparse_lens.tasks.suite`, and the identifier pools here are
  disjoint from the suite's (``tests/data/test_idioms.py`` checks), so a task prompt never occurs
  verbatim in the training stream and the tasks measure generalisation to new names;
* the snippets are ordinary code of all shapes, not minimal pairs: lists have 1-8 elements,
  nesting depth 1-3, several rows, strings and names as elements; quotes appear in calls, in
  lists and in dicts.

The data's ``idiom_frac`` (``token_data.with_idioms``; a preset's ``idiom_frac``, or
``--idiom-frac``) sets the share of training windows drawn from this stream (0 by default:
``sparse-lens train`` on its own trains on the corpus alone). Validation loss is always
measured on the corpus' validation split only.
"""

import random
from typing import Literal, get_args

IdiomKind = Literal["literals", "statements"]
"""``literals``: this module's data literals; ``statements``: the loops, branches, classes and
calls of :mod:`sparse_lens.data.statement_idioms`."""

# Bump when the generator's output changes: it keys the token cache.
IDIOMS_VERSION = 4

NAMES = [
    "lattice",
    "board",
    "scores",
    "weights",
    "points",
    "levels",
    "cells",
    "colors",
    "labels",
    "tiles",
    "ledger",
    "layers",
    "batches",
    "samples",
    "coords",
    "sizes",
    "steps",
    "widths",
    "shape",
    "counts",
    "flags",
    "params",
    "extra",
    "queue",
    "stack",
    "tags",
    "fields",
    "picks",
    "heights",
    "offsets",
]
ELEMS = ["alpha", "beta", "gamma", "east", "west", "top", "low", "high", "k", "m", "u", "v"]
FUNCNAMES = ["setup", "make_grid", "init_board", "get_points", "pack", "draw", "solve", "step"]
CALLNAMES = ["show", "emit", "put", "announce", "warn_user", "echo", "notify", "status"]
TEXT = [
    "prepared",
    "cannot",
    "find",
    "this",
    "layer",
    "step",
    "fine",
    "now",
    "bad",
    "shape",
    "into",
    "mesh",
    "overall",
    "score",
    "was",
    "very",
    "large",
    "small",
    "empty",
    "slot",
    "column",
    "finished",
    "plus",
    "failure",
    "Welcome",
    "back",
    "Running",
    "test",
]


def _number(rng: random.Random) -> str:
    return str(rng.choice([rng.randint(0, 9), rng.randint(0, 99), rng.randint(0, 999)]))


def _string(rng: random.Random, quote: str | None = None) -> str:
    q = quote or rng.choice(['"', "'"])
    words = " ".join(rng.choice(TEXT) for _ in range(rng.randint(1, 4)))
    return f"{q}{words}{q}"


def _scalar(rng: random.Random, kind: str) -> str:
    """A number, a name, or a string quoted with ``kind`` (one quote style per literal)."""
    if kind == "num":
        return _number(rng)
    if kind in ('"', "'"):
        return _string(rng, kind)
    return rng.choice(ELEMS)


def _list(rng: random.Random, depth: int, kind: str) -> str:
    """A list literal nested ``depth`` deep; every row has the same element kind."""
    if depth == 1:
        return "[" + ", ".join(_scalar(rng, kind) for _ in range(rng.randint(1, 8))) + "]"
    rows = rng.choice([1, 1, 1, 2, 2, 3])
    return "[" + ", ".join(_list(rng, depth - 1, kind) for _ in range(rows)) + "]"


def _literal(rng: random.Random) -> str:
    kind = rng.choice(["num", "num", "num", '"', "'", "name"])
    r = rng.random()
    if r < 0.4:
        return _list(rng, 1, kind)
    if r < 0.8:
        return _list(rng, 2, kind)
    if r < 0.85:
        return _list(rng, 3, kind)
    if r < 0.9:
        return "(" + ", ".join(_scalar(rng, kind) for _ in range(rng.randint(2, 5))) + ")"
    if r < 0.92:
        return "{" + ", ".join(_scalar(rng, kind) for _ in range(rng.randint(1, 5))) + "}"
    key_kind = rng.choice(["num", '"', "'", "name"])
    items = (f"{_scalar(rng, key_kind)}: {_scalar(rng, kind)}" for _ in range(rng.randint(1, 4)))
    return "{" + ", ".join(items) + "}"


def _multiline_rows(rng: random.Random, indent: str) -> str:
    name = rng.choice(NAMES)
    rows = [_list(rng, 1, "num") for _ in range(rng.randint(2, 4))]
    body = "".join(f"{indent}    {row},\n" for row in rows)
    return f"{indent}{name} = [\n{body}{indent}]\n"


def _statement(rng: random.Random, indent: str) -> str:
    r = rng.random()
    if r < 0.45:
        return f"{indent}{rng.choice(NAMES)} = {_literal(rng)}\n"
    if r < 0.55:
        return f"{indent}{rng.choice(NAMES)}.append({_literal(rng)})\n"
    if r < 0.65:
        return f"{indent}{rng.choice(CALLNAMES)}({_literal(rng)})\n"
    if r < 0.85:
        return f"{indent}{rng.choice(CALLNAMES)}({_string(rng)})\n"
    if r < 0.93:
        return _multiline_rows(rng, indent)
    return f"{indent}return {_literal(rng)}\n"


def idiom_document(rng: random.Random) -> str:
    """One snippet: 2-7 statements at module level or in a function."""
    n = rng.randint(2, 7)
    if rng.random() < 0.4:
        head = f"def {rng.choice(FUNCNAMES)}({rng.choice(['', 'self', 'k', 'self, k'])}):\n"
        return head + "".join(_statement(rng, "    ") for _ in range(n))
    lines = [_statement(rng, "") for _ in range(n)]
    return "".join(line for line in lines if not line.startswith("return"))


def check_kinds(kinds: tuple[str, ...]) -> tuple[IdiomKind, ...]:
    """``kinds`` as idiom kinds.

    Raises:
        ValueError: ``kinds`` is empty, repeats a kind or names an unknown one (named).
    """
    known = get_args(IdiomKind)
    bad = [k for k in kinds if k not in known]
    if not kinds or bad or len(set(kinds)) != len(kinds):
        raise ValueError(f"idiom kinds must be distinct, from {known}; got {kinds!r}")
    return tuple(k for k in known if k in kinds)  # type: ignore[misc]


def idiom_documents(n_docs: int, seed: int, kinds: tuple[str, ...] = ("literals",)) -> list[str]:
    """``n_docs`` snippets from ``random.Random(seed)``, each of a kind drawn uniformly from
    ``kinds`` (with one kind no draw is made, so ``("literals",)`` is the stream it always was).

    Raises:
        ValueError: ``n_docs`` is below 1, or bad ``kinds`` (named).
    """
    from sparse_lens.data.statement_idioms import statement_document

    if n_docs < 1:
        raise ValueError(f"n_docs must be >= 1, got {n_docs!r}")
    checked = check_kinds(kinds)
    make = {"literals": idiom_document, "statements": statement_document}
    rng = random.Random(seed)
    if len(checked) == 1:
        return [make[checked[0]](rng) for _ in range(n_docs)]
    return [make[rng.choice(checked)](rng) for _ in range(n_docs)]
