"""The tutorial notebooks run top to bottom on the ``tiny`` preset (a failing cell fails).

Executed with ``nbclient`` in a fresh kernel; the kernel gets ``SPARSE_LENS_CACHE`` (a shared
tokenizer/token cache for this module) and this checkout on ``PYTHONPATH``. Outputs stay in the
temporary copy; the notebooks in git have none (checked).
"""

import os
from pathlib import Path

import nbclient
import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "tutorials").glob("*.ipynb"))


def test_three_tutorials_without_outputs():
    assert [p.name for p in NOTEBOOKS] == [
        "01_quickstart.ipynb",
        "02_find_and_read_a_circuit.ipynb",
        "03_sparse_beside_dense.ipynb",
    ]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, path.name


def test_tutorials_import_our_names_from_the_top_level_only():
    """A notebook reads ``from sparse_lens import ...`` (and ``analyses``, ``hooks``), never a
    module path inside them, and every name it imports is there."""
    import ast

    import analyses
    import hooks
    import sparse_lens

    ours = {"sparse_lens": sparse_lens, "analyses": analyses, "hooks": hooks}
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            for node in ast.walk(ast.parse(cell.source)):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    modules = (
                        [node.module or ""]
                        if isinstance(node, ast.ImportFrom)
                        else [a.name for a in node.names]
                    )
                    for module in modules:
                        root = module.split(".")[0]
                        assert root not in ours or module == root, (path.name, module)
                if isinstance(node, ast.ImportFrom) and node.module in ours:
                    for alias in node.names:
                        assert hasattr(ours[node.module], alias.name), (path.name, alias.name)


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    env = {"SPARSE_LENS_CACHE": str(tmp_path_factory.mktemp("tutorial_cache"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return env


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_tutorial_runs_on_tiny(path, kernel_env, monkeypatch, tmp_path):
    for key, value in kernel_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MPLBACKEND", "agg")
    nb = nbformat.read(path, as_version=4)
    assert any('MODEL = "tiny"' in c.source for c in nb.cells), "the notebook must default to tiny"
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()  # raises CellExecutionError naming the failing cell
    html = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "text/html" in o.get("data", {})
    ]
    assert html, "no inline HTML view was rendered"
    (tmp_path / path.name).write_text(nbformat.writes(nb))
