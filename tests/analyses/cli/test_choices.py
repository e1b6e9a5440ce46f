"""The CLI's choices equal the library's ``Literal`` settings. The parser stays torch-free, so
it cannot import the aliases and writes the values out; this test keeps the two lists equal."""

from typing import get_args

import pytest

from analyses.cli.parser import build_parser
from sparse_lens.circuits.ablation import AblationKind
from sparse_lens.circuits.find import SearchMethod
from sparse_lens.sweep.grid import Cluster
from sparse_lens.tasks.task import TaskSplit


def _choices(command: str, option: str) -> tuple[str, ...]:
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    for action in sub._actions:
        if option in action.option_strings:
            return tuple(action.choices or ())
    raise AssertionError(f"sparse-lens {command} has no {option}")


@pytest.mark.parametrize(
    ("command", "option", "alias"),
    [
        ("prune", "--ablation", AblationKind),
        ("prune", "--search", SearchMethod),
        ("sweep", "--prune-search", SearchMethod),
        ("sweep", "--executor", Cluster),
        ("tasks", "--split", TaskSplit),
    ],
)
def test_cli_choices_are_the_library_literal_values(command, option, alias):
    assert _choices(command, option) == get_args(alias)
