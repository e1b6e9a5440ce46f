"""Every command that writes takes its ``--out`` through the one output guard
(``sparse_lens.files.outputs.claim_output``) before any work: the commands are enumerated from
the parser (as ``test_parser`` does for options), so a new command with ``--out`` is checked
too. A user's file, a folder of theirs, a dangling symbolic link and a name over 255 bytes are
each refused in one line (exit 2), and nothing of the user's changes."""

import argparse
from pathlib import Path

import pytest

from analyses.cli import main
from analyses.cli.parser import build_parser

# A value each required option accepts, so that the command gets as far as its --out (the
# inputs themselves need not exist: the output is taken before any is read).
VALUES = {"--preset": "tiny", "--widths": "32", "--l0": "1000", "--task": "single_double_quote"}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    return dict(build_parser()._subparsers._group_actions[0].choices)


def _writers() -> list[str]:
    return [
        name
        for name, sub in _subparsers().items()
        if any("--out" in a.option_strings for a in sub._actions)
    ]


def _argv(command: str, out: str, inputs: Path) -> list[str]:
    """``command`` with every required argument given (positionals: a missing input)."""
    sub = _subparsers()[command]
    argv = [command]
    required_groups = [g for g in sub._mutually_exclusive_groups if g.required]
    for action in sub._actions:
        if not action.option_strings and action.dest != "help":
            argv.append(str(inputs / action.dest))
        elif action.required and "--out" not in action.option_strings:
            option = action.option_strings[-1]
            argv += [option, VALUES.get(option, str(inputs / action.dest))]
    for group in required_groups:
        first = group._group_actions[0]
        argv += [first.option_strings[-1]]
        if first.nargs != 0:
            argv.append(VALUES.get(first.option_strings[-1], "x"))
    return [*argv, "--out", out]


def test_every_writing_command_is_enumerated():
    assert {"train", "prune", "report", "sweep", "import-oai", "import-oai-circuit"} <= set(
        _writers()
    )


@pytest.mark.parametrize("command", _writers())
def test_every_out_refuses_to_overwrite_a_users_file(command, tmp_path, monkeypatch, capsys):
    """``--out notes.txt`` (a file of the user's), ``--out mine/`` (a folder holding their file),
    a dangling symbolic link and a name over 255 bytes: exit 2, one line naming the path."""
    monkeypatch.chdir(tmp_path)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    # report and explain read their circuit file first (cheap, no work, and a wrong one is
    # named before --out is taken): a circuit file naming a model folder
    for name in ("source", "circuit"):
        (inputs / name).write_text('{"circuit_version": 1, "extra": {"model_dir": "model"}}')
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine\n")
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    long_name = str(tmp_path / ("n" * 300))
    for out in (str(notes), str(mine), str(tmp_path / "link"), long_name):
        code = main(_argv(command, out, inputs))
        err = capsys.readouterr().err
        assert code == 2, (command, out, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert "--out" in err and out[:60] in err, (command, err)
    assert notes.read_text() == "my notes\n"
    assert sorted(p.name for p in mine.iterdir()) == ["keep.txt"]
    assert (tmp_path / "link").is_symlink() and not (tmp_path / "nowhere").exists()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["inputs", "link", "mine", "notes.txt"]  # no lock file beside the user's
