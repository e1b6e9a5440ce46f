"""Simple Python statements: the control-flow half of the synthetic idiom stream.

:mod:`sparse_lens.data.idioms` generates data literals; this module generates short functions,
classes and module-level snippets built from the statement shapes that simple Python is made of
and that the paper's task suite (arXiv 2511.13653, Table 1) probes: ``for``/``while`` loops,
``if``/``elif``/``else``, conditional expressions, ``with open(...) as``, parameters with
defaults, ``__init__`` copying its parameters, set and string accumulators, f-strings and
``.format``, swaps, ``lambda`` and ``def``, ``zip`` and ``range``, ``while True`` and
``return True``. It stands in, like the literal idioms, for the paper's simple-idiom training
component (App. A: "especially simple, repetitive idioms").

What it shares with the task suite is Python's syntax and builtins only: every name, word and
string here comes from the pools below, which share no identifier with
:mod:`sparse_lens.tasks.suite` (``tests/data/test_idioms.py`` checks the generated text), so a
task prompt never occurs in training and the tasks measure whether a construct learned on these
names carries over to new names and contexts. The snippets are ordinary code, not minimal pairs:
each construct appears in several shapes and both members of a pair (``for`` and ``while``,
``else`` and ``elif``) appear in their own contexts.
"""

import random

# Bump when the generator's output changes: it keys the token cache.
STATEMENTS_VERSION = 2

COLLS = ["board", "tiles", "cells", "pixels", "atoms", "cards", "coins", "stars", "leaves", "rings"]
LOOP = ["cell", "tile", "pixel", "atom", "card", "coin", "star", "leaf", "ring", "q", "z", "t"]
FLAGS = ["stale", "busy", "armed", "locked", "dirty", "fresh", "idle", "muted", "early", "late"]
NUMERIC = ["tempo", "speed", "mass", "angle", "tally", "width", "height", "stage", "pos", "limit"]
ATTRS_ = ["mass", "radius", "angle", "owner", "title", "price", "weight", "color", "speed", "tag"]
CLASSES_ = ["Planet", "Engine", "Sprite", "Widget", "Cursor", "Vector", "Socket", "Lantern"]
FUNCS_ = ["tick", "advance", "draw_frame", "spin", "bounce", "glow", "sweep_up", "redraw", "sift"]
EMIT = ["emit", "show", "announce", "echo"]
WRITE_FILES = ["export", "summary", "backup", "digest", "snapshot", "journal"]
READ_FILES = ["notes", "draft", "manifest", "inbox", "catalog", "recipe"]
EXTS = ["md", "ini", "dat", "tsv", "rst"]
LABELS = ["Mass", "Speed", "Angle", "Owner", "Score", "Tempo", "Width"]
DEFAULTS = ["None", "0", "1", "True", "False", "''", "[]", "()"]


def _num(rng: random.Random) -> str:
    return str(rng.randint(0, 12))


def _accumulate(rng: random.Random, ind: str) -> str:
    """A set filled with ``.add`` or a string grown with ``+=`` inside a loop."""
    acc, coll, x = (
        rng.choice(["marks", "glyph", "trail", "bag"]),
        rng.choice(COLLS),
        rng.choice(LOOP),
    )
    if rng.random() < 0.5:
        init, grow = "set()", f"{acc}.add({x})"
    else:
        init, grow = "''", f"{acc} += {x}"
    guard = f"{ind}if not {coll}:\n{ind}    return {acc}\n" if rng.random() < 0.3 else ""
    return f"{ind}{acc} = {init}\n{guard}{ind}for {x} in {coll}:\n{ind}    {grow}\n"


def _loop(rng: random.Random, ind: str) -> str:
    x, coll, flag, num = rng.choice(LOOP), rng.choice(COLLS), rng.choice(FLAGS), rng.choice(NUMERIC)
    r = rng.random()
    if r < 0.3:
        return f"{ind}for {x} in {coll}:\n{ind}    {rng.choice(EMIT)}({x})\n"
    if r < 0.45:
        return f"{ind}for {x} in range({rng.choice([_num(rng), f'len({coll})', num])}):\n{ind}    {num} += {x}\n"
    if r < 0.6:
        a, b = rng.sample(LOOP, 2)
        return f"{ind}for {a}, {b} in zip({coll}, {rng.choice(COLLS)}):\n{ind}    {rng.choice(EMIT)}({a}, {b})\n"
    if r < 0.8:
        return f"{ind}while {flag}:\n{ind}    {flag} = {rng.choice(FUNCS_)}()\n"
    return f"{ind}while {num} > {_num(rng)}:\n{ind}    {num} -= 1\n"


def _branch(rng: random.Random, ind: str) -> str:
    """``if``/``elif``/``else``, ``==`` comparisons and ``flag == True``."""
    num, flag = rng.choice(NUMERIC), rng.choice(FLAGS)
    cond = rng.choice([f"{num} > {_num(rng)}", f"{num} == {_num(rng)}", flag, f"{flag} == True"])
    out = f"{ind}if {cond}:\n{ind}    return {rng.choice(['True', 'None', num, _num(rng)])}\n"
    if rng.random() < 0.5:
        out += f"{ind}elif {num} < {_num(rng)}:\n{ind}    {num} = {_num(rng)}\n"
    if rng.random() < 0.6:
        out += f"{ind}else:\n{ind}    {flag} = {rng.choice(['True', 'False'])}\n"
    return out


def _assign(rng: random.Random, ind: str) -> str:
    """Plain assignments, ternaries, swaps and lambdas."""
    num, flag = rng.choice(NUMERIC), rng.choice(FLAGS)
    r = rng.random()
    if r < 0.25:
        return f"{ind}{num} = {_num(rng)}\n{ind}{flag} = {rng.choice(['True', 'False'])}\n"
    if r < 0.5:
        return f"{ind}{num} = {_num(rng)} if {flag} else {rng.choice(['None', _num(rng)])}\n"
    if r < 0.7:
        a, b = rng.sample(LOOP[-3:] + ["pos", "stage"], 2)
        return f"{ind}{a}, {b} = {b}, {a}\n"
    x, attr = rng.choice(LOOP), rng.choice(ATTRS_)
    return f"{ind}{rng.choice(['sorter', 'picker', 'rule'])} = lambda {x}: {x}.{attr}\n"


def _files(rng: random.Random, ind: str) -> str:
    """``with open(...) as`` and ``fh = open(...)``; the mode follows the file's name."""
    write = rng.random() < 0.5
    name = rng.choice(WRITE_FILES if write else READ_FILES) + "." + rng.choice(EXTS)
    mode, use = ("w", "fobj.write(glyph)") if write else ("r", "glyph = fobj.read()")
    if rng.random() < 0.7:
        return f"{ind}with open('{name}', '{mode}') as fobj:\n{ind}    {use}\n"
    return f"{ind}fobj = open('{name}', '{mode}')\n{ind}{use}\n{ind}fobj.close()\n"


def _message(rng: random.Random, ind: str) -> str:
    label, num = rng.choice(LABELS), rng.choice(NUMERIC)
    if rng.random() < 0.5:
        return f'{ind}{rng.choice(EMIT)}(f"{label}: {{{num}}}")\n'
    return f'{ind}{rng.choice(EMIT)}("{label}: {{0}}".format({num}))\n'


def _loop_forever(rng: random.Random, ind: str) -> str:
    flag = rng.choice(FLAGS)
    return f"{ind}while True:\n{ind}    if {flag}:\n{ind}        return True\n{ind}    {flag} = {rng.choice(FUNCS_)}()\n"


STATEMENTS = (_accumulate, _loop, _branch, _assign, _files, _message, _loop_forever)


def _signature(rng: random.Random) -> str:
    """Parameters; after the first one with a default, every later one has a default too."""
    names = rng.sample(NUMERIC + FLAGS, rng.randint(1, 4))
    cut = rng.randint(0, len(names))
    parts = names[:cut] + [f"{n}={rng.choice(DEFAULTS)}" for n in names[cut:]]
    return ", ".join((["self"] if rng.random() < 0.3 else []) + parts)


def _class(rng: random.Random) -> str:
    attrs = rng.sample(ATTRS_, rng.randint(2, 4))
    body = "".join(f"        self.{a} = {a}\n" for a in attrs)
    return f"class {rng.choice(CLASSES_)}:\n    def __init__(self, {', '.join(attrs)}):\n{body}"


def statement_document(rng: random.Random) -> str:
    """One snippet: a class with ``__init__``, a function of 2-5 statements, or module-level
    statements (no ``return``)."""
    r = rng.random()
    if r < 0.15:
        return _class(rng)
    n = rng.randint(2, 5)
    if r < 0.75:
        head = f"def {rng.choice(FUNCS_)}({_signature(rng)}):\n"
        return head + "".join(rng.choice(STATEMENTS)(rng, "    ") for _ in range(n))
    plain = (_loop, _assign, _files, _message)
    return "".join(rng.choice(plain)(rng, "") for _ in range(n))
