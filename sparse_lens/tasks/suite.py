"""The paper's 20 Python next-token tasks (arXiv 2511.13653, Table 1) as seeded generators.

Each generator draws one *minimal pair*: two contexts that differ minimally, one per class, whose
correct next tokens are two different single tokens (``a_target`` for ``a``, ``b_target`` for
``b``; each is the other's distractor). Identifiers, values, indentation and surrounding lines
come from pools of realistic code so a task is many strings, not one.

Choices where the paper is silent or its tokens do not exist in our BPE (documented per task):
``final_kwarg`` predicts ``=`` vs ``):``; ``set_or_string`` predicts ``.`` (of ``.add``) vs
`` +=``; ``enumerate_range`` uses `` zip`` for two loop variables because `` enumerate`` is four
tokens in the stdlib BPE; ``fstring_brace`` contrasts an f-string's variable with ``.format``'s
positional ``0``; ``else_elif`` predicts ``:`` after ``else`` vs the tested variable after
``elif``; ``indent_for`` predicts the indentation token after a ``for`` line inside a function
(8 spaces) vs at module level (4 spaces).
"""

import random
from collections.abc import Callable
from dataclasses import dataclass

FUNCS = [
    "process",
    "load",
    "parse",
    "handle",
    "update",
    "build",
    "collect",
    "render",
    "check",
    "convert",
    "main",
    "run",
    "compute",
    "read_config",
    "save",
    "fetch",
    "merge",
    "clean",
]
VARS = [
    "data",
    "items",
    "values",
    "result",
    "names",
    "lines",
    "rows",
    "parts",
    "keys",
    "tokens",
    "records",
    "entries",
    "words",
    "paths",
    "nums",
    "buf",
    "out",
    "seen",
]
ITEM = ["item", "x", "line", "name", "row", "value", "entry", "key", "word", "path", "part"]
ATTRS = [
    "name",
    "value",
    "data",
    "size",
    "path",
    "key",
    "result",
    "line",
    "text",
    "first",
    "new",
    "x",
    "y",
    "a",
    "b",
    "i",
    "parent",
    "config",
    "mode",
    "source",
    "target",
    "label",
    "index",
]
CLASSES = [
    "Node",
    "Config",
    "Parser",
    "Record",
    "Item",
    "Point",
    "Buffer",
    "Entry",
    "Task",
    "Request",
    "Handler",
    "Job",
    "Token",
    "Cache",
    "Window",
    "Field",
]
WORDS = [
    "Loading",
    "the",
    "config",
    "file",
    "invalid",
    "value",
    "for",
    "Starting",
    "worker",
    "done",
    "could",
    "not",
    "open",
    "connection",
    "closed",
    "unexpected",
    "token",
    "in",
    "input",
    "Saving",
    "results",
    "to",
    "disk",
    "skipping",
    "entry",
    "Hello",
    "world",
    "Processing",
    "batch",
    "missing",
    "key",
    "expected",
    "a",
    "string",
    "got",
    "number",
]
CALLS = [
    "print",
    "raise ValueError",
    "logger.info",
    "log.debug",
    "warnings.warn",
    "sys.exit",
    "raise RuntimeError",
    "self.fail",
    "msg = str",
    "parser.error",
    "raise KeyError",
]
PREFIX = [
    "import os\n",
    "import sys\n",
    "import json\n",
    "from pathlib import Path\n",
    "import re\n",
    "import logging\n\nlogger = logging.getLogger(__name__)\n",
    "",
]
CONDS = ["x", "n", "count", "size", "value", "flag", "done", "ok", "found", "ready"]
PAIRS = [
    ("x", "y"),
    ("a", "b"),
    ("i", "j"),
    ("key", "value"),
    ("name", "value"),
    ("data", "result"),
    ("first", "new"),
    ("x", "i"),
]
NUMS = [str(n) for n in range(0, 20)]


@dataclass(frozen=True)
class TaskPair:
    """One minimal pair: ``a`` continues with ``a_target``, ``b`` with ``b_target``."""

    a: str
    a_target: str
    b: str
    b_target: str


Generator = Callable[[random.Random], TaskPair]


def _prefix(rng: random.Random) -> str:
    p = rng.choice(PREFIX)
    return p + "\n" if p else ""


def _words(rng: random.Random, lo: int = 2, hi: int = 5) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def _def(rng: random.Random, args: str) -> str:
    return f"def {rng.choice(FUNCS)}({args}):\n"


def single_double_quote(rng: random.Random) -> TaskPair:
    """Close a string with the matching quote: ``")`` vs ``')``."""
    head = _prefix(rng) + _def(rng, rng.choice(VARS)) + "    " + rng.choice(CALLS)
    text = _words(rng)
    return TaskPair(head + '("' + text, '")', head + "('" + text, "')")


def final_kwarg(rng: random.Random) -> TaskPair:
    """After a parameter with a default, the next parameter needs one too: ``=`` vs ``):``."""
    a, b, c = rng.sample(["path", "name", "data", "mode", "size", "key", "value", "x", "n"], 3)
    default = rng.choice(["None", "0", "True", "False", '""', "1", "[]"])
    fn = f"{_prefix(rng)}def {rng.choice(FUNCS)}(self, {a}, {b}"
    return TaskPair(f"{fn}={default}, {c}", "=", f"{fn}, {c}", "):")


def _set_or_string(rng: random.Random, var: str) -> TaskPair:
    coll, item = rng.choice(VARS), rng.choice(ITEM)
    head = _prefix(rng) + _def(rng, coll)
    tail = f"    for {item} in {coll}:\n"
    if rng.random() < 0.5:
        tail = f"    if not {coll}:\n        return None\n" + tail
    return TaskPair(
        f"{head}    {var} = set()\n{tail}        {var}",
        ".",
        f'{head}    {var} = ""\n{tail}        {var}',
        " +=",
    )


def set_or_string(rng: random.Random) -> TaskPair:
    """Track whether a variable is a set or a string: ``.`` (``.add``) vs `` +=``."""
    return _set_or_string(rng, rng.choice(["seen", "out", "acc", "buf", "res", "names", "found"]))


def set_or_string_fixedvarname(rng: random.Random) -> TaskPair:
    """``set_or_string`` with the variable always named ``current``."""
    return _set_or_string(rng, "current")


def class_init(rng: random.Random) -> TaskPair:
    """In ``__init__``, copy the parameter named on the left of ``=``: `` n1`` vs `` n2``."""
    names = rng.sample(ATTRS, rng.randint(3, 4))
    head = (
        f"{_prefix(rng)}class {rng.choice(CLASSES)}:\n    def __init__(self, {', '.join(names)}):\n"
    )
    body = "".join(f"        self.{n} = {n}\n" for n in names[:-2])
    x, y = names[-2], names[-1]
    return TaskPair(
        f"{head}{body}        self.{x} =", f" {x}", f"{head}{body}        self.{y} =", f" {y}"
    )


def with_as(rng: random.Random) -> TaskPair:
    """``with open(...)`` continues with `` as``; ``f = open(...)`` ends the line."""
    path = rng.choice(
        [
            "path",
            "filename",
            "fname",
            "config_path",
            "src",
            "args.input",
            "name",
            "os.path.join(root, name)",
            "self.path",
            "log_file",
            "p",
            "target",
        ]
    )
    mode = rng.choice(["", ", 'rb'", ", encoding='utf-8'", ", 'w'", ", 'a'"])
    head = _prefix(rng)
    if rng.random() < 0.5:
        head += _def(rng, "self" if path.startswith("self") else "path") + "    "
    handle = rng.choice(["f", "fh", "fp", "stream", "out"])
    return TaskPair(
        f"{head}with open({path}{mode})", " as", f"{head}{handle} = open({path}{mode})", "\n"
    )


def bracket_brace(rng: random.Random) -> TaskPair:
    """Inside a dict the first element is followed by ``:``, inside a list by ``,``."""
    var = rng.choice(VARS + ["mapping", "table", "lookup", "options"])
    key = rng.choice(NUMS + ["key", "name", "x", "i", "value", "None", "True"])
    head = _prefix(rng)
    if rng.random() < 0.5:
        head += _def(rng, "self") + "    "
    return TaskPair(f"{head}{var} = {{{key}", ":", f"{head}{var} = [{key}", ",")


def with_open(rng: random.Random) -> TaskPair:
    """Read or write mode from the file's name: ``w`` vs ``r``."""
    ext = rng.choice(["txt", "json", "csv", "log", "py", "cfg"])
    out = rng.choice(["output", "results", "report", "out", "dump", "save"])
    inp = rng.choice(["input", "data", "config", "source", "settings", "words"])
    head = _prefix(rng) + _def(rng, rng.choice(VARS)) + "    with open("
    return TaskPair(f'{head}"{out}.{ext}", \'', "w", f'{head}"{inp}.{ext}", \'', "r")


def bracket_counting(rng: random.Random) -> TaskPair:
    """Close a nested list with ``]]`` and a flat one with ``]`` (nesting depth)."""
    var = rng.choice(VARS + ["matrix", "grid", "pairs"])
    nums = ", ".join(rng.choice(NUMS) for _ in range(rng.randint(2, 6)))
    head = _prefix(rng)
    return TaskPair(f"{head}{var} = [[{nums}", "]]", f"{head}{var} = [{nums}", "]")


def for_while(rng: random.Random) -> TaskPair:
    """``for x`` continues with `` in``, ``while x`` with ``:``."""
    x = rng.choice(CONDS + ITEM)
    head = _prefix(rng) + _def(rng, rng.choice(VARS)) + "    "
    return TaskPair(f"{head}for {x}", " in", f"{head}while {x}", ":")


def else_elif(rng: random.Random) -> TaskPair:
    """``else`` is followed by ``:``; ``elif`` by the tested variable."""
    x = rng.choice(["x", "n", "value", "data", "result", "key", "name", "path", "size", "i"])
    head = _prefix(rng) + _def(rng, x)
    body = f"    if {x} > {rng.choice(NUMS)}:\n        return {rng.choice(['True', 'None', '1', x])}\n    "
    return TaskPair(f"{head}{body}else", ":", f"{head}{body}elif", f" {x}")


def fstring_brace(rng: random.Random) -> TaskPair:
    """An f-string names a variable inside ``{``; a ``.format`` string uses ``0``."""
    var = rng.choice(["count", "name", "value", "path", "result", "data", "size"])
    head = _prefix(rng) + _def(rng, var) + "    print("
    label = rng.choice(["Total", "Name", "Value", "Found", "Loaded", "Result", "Got"])
    return TaskPair(f'{head}f"{label}: {{', var, f'{head}"{label}: {{', "0")


def if_ternary(rng: random.Random) -> TaskPair:
    """A conditional expression continues with `` else``; an ``if`` statement with ``:``."""
    x, y, a = rng.choice(CONDS), rng.choice(VARS), rng.choice(NUMS + ["None", "True"])
    head = _prefix(rng) + _def(rng, x) + "    "
    return TaskPair(f"{head}{y} = {a} if {x}", " else", f"{head}if {x}", ":")


def var_swap(rng: random.Random) -> TaskPair:
    """``x, y = y,`` completes the swap with `` x``."""
    x, y = rng.choice(PAIRS)
    head = _prefix(rng) + _def(rng, f"{x}, {y}") + "    "
    return TaskPair(f"{head}{x}, {y} = {y},", f" {x}", f"{head}{y}, {x} = {x},", f" {y}")


def indent_for(rng: random.Random) -> TaskPair:
    """Indentation after a ``for`` line: 8 spaces inside a function, 4 at module level."""
    item, coll = rng.choice(ITEM), rng.choice(VARS)
    head = _prefix(rng)
    loop = f"for {item} in {coll}:"
    return TaskPair(
        f"{head}{_def(rng, coll)}    {loop}", "\n       ", f"{head}{coll} = []\n{loop}", "\n   "
    )


def lambda_func(rng: random.Random) -> TaskPair:
    """``lambda name`` continues with ``:``, ``def name`` with ``(``."""
    name = rng.choice(ITEM + ["func", "fn", "f", "callback", "key"])
    var = rng.choice(["key", "func", "f", "handler", "transform", "check"])
    head = _prefix(rng)
    return TaskPair(f"{head}{var} = lambda {name}", ":", f"{head}def {name}", "(")


def if_equals(rng: random.Random) -> TaskPair:
    """In an ``if`` condition a name is followed by `` ==``; as a statement by `` =``."""
    x = rng.choice(CONDS + VARS)
    head = _prefix(rng) + _def(rng, rng.choice(VARS)) + "    "
    return TaskPair(f"{head}if {x}", " ==", f"{head}{x}", " =")


def enumerate_range(rng: random.Random) -> TaskPair:
    """Two loop variables iterate over `` zip``, one over `` range``."""
    a, b = rng.choice(PAIRS)
    head = _prefix(rng) + _def(rng, rng.choice(VARS)) + "    "
    return TaskPair(f"{head}for {a}, {b} in", " zip", f"{head}for {a} in", " range")


def var_if(rng: random.Random) -> TaskPair:
    """``if flag == True`` ends with ``:``; the assignment ``flag = True`` with a newline."""
    flag = rng.choice(["done", "found", "ok", "ready", "valid", "debug", "verbose", "flag"])
    head = _prefix(rng) + _def(rng, rng.choice(VARS)) + "    "
    return TaskPair(f"{head}if {flag} == True", ":", f"{head}{flag} = True", "\n")


def while_return_true(rng: random.Random) -> TaskPair:
    """``while True`` continues with ``:``, ``return True`` ends the line."""
    head = _prefix(rng) + _def(rng, rng.choice(VARS))
    body = rng.choice(
        [
            "",
            f"    {rng.choice(VARS)} = []\n",
            f"    if not {rng.choice(VARS)}:\n        return False\n",
        ]
    )
    return TaskPair(f"{head}{body}    while True", ":", f"{head}{body}    return True", "\n")


GENERATORS: dict[str, Generator] = {
    g.__name__: g
    for g in (
        single_double_quote,
        final_kwarg,
        set_or_string,
        set_or_string_fixedvarname,
        class_init,
        with_as,
        bracket_brace,
        with_open,
        bracket_counting,
        for_while,
        else_elif,
        fstring_brace,
        if_ternary,
        var_swap,
        indent_for,
        lambda_func,
        if_equals,
        enumerate_range,
        var_if,
        while_return_true,
    )
}
