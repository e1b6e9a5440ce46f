"""Every docstring example in ``sparse_lens`` and ``hooks`` runs (``doctest``), the package
docstring's included."""

import doctest
import importlib
import pkgutil

import pytest

import hooks
import sparse_lens

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _module_names() -> list[str]:
    names = []
    for package in (sparse_lens, hooks):
        names.append(package.__name__)
        prefix = package.__name__ + "."
        names += [info.name for info in pkgutil.walk_packages(package.__path__, prefix)]
    return sorted(names)


@pytest.mark.parametrize("name", _module_names())
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in doctest.DocTestFinder().find(module):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed (above)"


def test_the_package_docstring_has_an_example():
    examples = [ex for t in doctest.DocTestFinder().find(sparse_lens) for ex in t.examples]
    assert any("HookedSparseTransformer(" in ex.source for ex in examples)
