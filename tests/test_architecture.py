"""The tree's architecture: layers point one way (``analyses -> sparse_lens -> hooks``), the
subpackages of ``sparse_lens`` too (``SUBPACKAGES``), and no module imports itself back through
others, function-level imports included."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("hooks", "sparse_lens", "analyses")  # each may import only those before it
# The subpackages (and top-level modules) of ``sparse_lens``, lower first: each may import only
# itself and those before it; ``sparse_lens/__init__.py`` (the public API) sits above them all.
SUBPACKAGES = (
    "vocab",
    "validation",
    "files",
    "data",
    "model",
    "tasks",
    "training",
    "circuits",
    "bridges",
    "openai_models",
    "sweep",
)


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in LAYERS:
        for path in (ROOT / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = path
    return mods


def _imported(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """Repository modules ``name`` imports anywhere in its body (``from a import b`` counts ``a.b``
    when that is a module, else ``a``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            subs = [f"{base}.{alias.name}" for alias in node.names]
            targets = [t for t in subs if t in mods] or [base]
        else:
            continue
        found |= {t for t in targets if t in mods and t != name}
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imported(name, path, mods) for name, path in mods.items()}


def test_layers_point_one_way():
    bad = []
    for name, deps in _graph().items():
        layer = LAYERS.index(name.split(".")[0])
        for dep in deps:
            if LAYERS.index(dep.split(".")[0]) > layer:
                bad.append(f"{name} imports {dep}")
    assert not bad, bad


def _subpackage(module: str) -> str | None:
    """``sparse_lens.X...`` -> ``X``; None for ``sparse_lens`` itself and other packages."""
    parts = module.split(".")
    return parts[1] if parts[0] == "sparse_lens" and len(parts) > 1 else None


def _against_order(graph: dict[str, set[str]], order: tuple[str, ...]) -> list[str]:
    """Every import of a ``sparse_lens`` subpackage by a lower one (``order``: lower first),
    and every subpackage ``order`` does not place, as ``"a imports b"`` lines."""
    bad = []
    for name, deps in sorted(graph.items()):
        here = _subpackage(name)
        if here is None:
            continue
        if here not in order:
            bad.append(f"{name}: subpackage {here!r} is not placed in SUBPACKAGES")
            continue
        for dep in sorted(deps):
            there = _subpackage(dep)
            if there is not None and there in order and order.index(there) > order.index(here):
                bad.append(f"{name} imports {dep} ({here} is below {there})")
    return bad


def test_subpackages_point_one_way():
    """No module of a ``sparse_lens`` subpackage imports one above it in ``SUBPACKAGES``
    (e.g. ``tasks`` importing ``sweep``: the loop ``circuits -> tasks -> sweep -> circuits``)."""
    assert _against_order(_graph(), SUBPACKAGES) == []


def test_order_check_finds_an_import_against_the_order():
    graph = {
        "sparse_lens": {"sparse_lens.sweep.grid"},  # the public API may import anything
        "sparse_lens.tasks.selection": {"sparse_lens.sweep.grid", "sparse_lens.model.config"},
        "sparse_lens.sweep.grid": {"sparse_lens.tasks.task", "hooks.topk"},
        "sparse_lens.extra.thing": set(),
    }
    assert _against_order(graph, ("model", "tasks", "sweep")) == [
        "sparse_lens.extra.thing: subpackage 'extra' is not placed in SUBPACKAGES",
        "sparse_lens.tasks.selection imports sparse_lens.sweep.grid (tasks is below sweep)",
    ]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_flat_module_pile():
    """``sparse_lens/`` holds subpackages, not dozens of modules side by side."""
    flat = sorted(p.name for p in (ROOT / "sparse_lens").glob("*.py") if p.name != "__init__.py")
    assert len(flat) <= 3, flat


def test_tests_mirror_the_package_layout():
    """Every test folder is named after the package it tests: ``tests/X`` tests
    ``sparse_lens/X`` (or the top-level ``hooks`` / ``analyses``), ``tests/analyses/cli`` tests
    ``analyses/cli``; a ``snapshots`` folder holds a test module's expected pages, not tests."""
    tests = ROOT / "tests"
    skip = ("__pycache__", "snapshots")
    folders = [p for p in tests.rglob("*") if p.is_dir() and p.name not in skip]
    assert folders, "tests are flat"
    for folder in folders:
        rel = folder.relative_to(tests)
        top = rel.parts[0]
        package = ROOT / rel if top in ("hooks", "analyses") else ROOT / "sparse_lens" / rel
        assert (package / "__init__.py").exists(), f"tests/{rel} mirrors no package ({package})"
        assert any(folder.glob("test_*.py")), f"tests/{rel} holds no tests"


def test_library_cites_the_paper_not_notes_outside_the_repository():
    """Docstrings cite arXiv 2511.13653 by appendix, table or figure, never the team's notes."""
    notes = ("paper.md", "transformerlens.md", "peers.md", "style.md", "shared/reference")
    bad = [
        f"{path.relative_to(ROOT)}: {note}"
        for path in _modules().values()
        for note in notes
        if note in path.read_text(encoding="utf-8")
    ]
    assert not bad, bad


def _undocumented_raisers(source: str) -> list[str]:
    """Public module-level functions, and public methods (and ``__init__``) of public classes,
    whose body (nested functions included) holds a ``raise X`` but whose docstring has no
    ``Raises`` section; bare re-raises do not count."""
    bad = []
    for node in ast.parse(source).body:
        funcs = [node] if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) else []
        if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            funcs += [n for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        for f in funcs:
            if f.name.startswith("_") and f.name != "__init__":
                continue
            raises = any(isinstance(n, ast.Raise) and n.exc is not None for n in ast.walk(f))
            if raises and "Raises" not in (ast.get_docstring(f) or ""):
                bad.append(f"{f.name}:{f.lineno}")
    return bad


def test_public_functions_that_raise_say_so():
    """Public docstrings name the errors raised (a Google-style ``Raises:`` section)."""
    bad = [
        f"{path.relative_to(ROOT)}:{where}"
        for path in _modules().values()
        for where in _undocumented_raisers(path.read_text(encoding="utf-8"))
    ]
    assert not bad, bad


def test_raises_scan_flags_undocumented_raises():
    source = '''
def documented(x):
    """Doc.

    Raises:
        ValueError: bad ``x``.
    """
    raise ValueError(x)

def undocumented(x):
    """Says nothing about errors."""
    raise ValueError(x)

def reraises():
    try:
        pass
    except OSError:
        raise

def _private():
    raise ValueError

class Public:
    def __init__(self):
        raise TypeError

    def _helper(self):
        raise ValueError

class _Private:
    def method(self):
        raise ValueError
'''
    assert _undocumented_raisers(source) == ["undocumented:10", "__init__:24"]
