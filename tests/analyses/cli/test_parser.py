"""The ``sparse-lens`` argument tree: help without torch, settings that match the parser."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from analyses.cli.parser import build_parser
from analyses.cli.prune import PruneSettings
from analyses.cli.train import TrainSettings

ROOT = Path(__file__).resolve().parents[3]
HEAVY = ("torch", "transformer_lens", "transformers", "sparse_lens", "numpy")
LIGHT = ("sparse_lens", "sparse_lens.vocab")  # the torch-free vocabulary the parser imports

PROBE = """
import json, sys
from analyses.cli import main
commands = json.loads(sys.argv[1])
helps = []
for argv in commands:
    try:
        main(argv)
    except SystemExit as e:
        assert e.code == 0, (argv, e.code)
        helps.append(argv)
light = set(json.loads(sys.argv[3]))
heavy = sorted({m.split(".")[0] for m in set(sys.modules) - light} & set(json.loads(sys.argv[2])))
sys.stderr.write(json.dumps({"heavy": heavy, "helps": len(helps)}))
"""


def _commands() -> list[str]:
    return list(build_parser()._subparsers._group_actions[0].choices)


def test_help_of_every_command_imports_neither_torch_nor_the_library():
    """``sparse-lens --help`` and ``sparse-lens CMD --help`` in a fresh interpreter: of the
    library only ``sparse_lens.vocab`` (and its package's lazy ``__init__``) is imported."""
    commands = [["--help"], *([c, "--help"] for c in _commands())]
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(commands), json.dumps(HEAVY), json.dumps(LIGHT)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stderr.strip().splitlines()[-1])
    assert result == {"heavy": [], "helps": len(commands)}
    assert "demo" in proc.stdout and "import-oai-circuit" in proc.stdout


def test_console_script_and_module_run_the_same_main():
    proc = subprocess.run(
        [sys.executable, "-m", "analyses.cli", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("usage: sparse-lens")
    text = (ROOT / "pyproject.toml").read_text()
    assert 'sparse-lens = "analyses.cli:main"' in text


def test_every_command_in_the_help_runs_a_handler():
    sub = build_parser()._subparsers._group_actions[0]
    assert set(sub.choices) == {
        "train", "tasks", "prune", "fit-bridges", "train-bridged", "report", "explain", "demo",
        "bridge-report", "import-oai", "import-oai-circuit", "sweep",
    }  # fmt: skip
    for name, p in sub.choices.items():
        assert callable(p.get_default("handler")), name


@pytest.mark.parametrize(
    ("cls", "argv", "given"),
    [
        (TrainSettings, ["train", "--preset", "tiny", "--out", "x"], set()),
        (PruneSettings, ["prune", "m", "--task", "t", "--out", "x"], {"task"}),
    ],
)
def test_settings_defaults_are_the_parsers(cls, argv, given):
    """The demo fills the settings directly: their defaults must be the command's."""
    args = build_parser().parse_args(argv)
    required = {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    built = cls(**{name: getattr(args, name) for name in required | given})
    assert built == cls.from_args(args)


def test_demo_prunes_the_best_solved_tasks_first():
    from analyses.cli.demo import FULL, _first_circuits

    table = {"a": {"loss": 0.05}, "b": {"loss": 0.01}, "c": {"loss": 0.12}}
    chosen = {"a": 0.15, "b": 0.15, "c": 0.15}
    first, left = _first_circuits(chosen, table, 2)
    assert list(first) == ["b", "a"] and left == {"c": 0.15}
    assert _first_circuits(chosen, table, 5) == ({"b": 0.15, "a": 0.15, "c": 0.15}, {})
    assert FULL.max_circuits >= 1


def test_demo_skips_unsolved_tasks_and_says_why():
    """A task the model does not solve at 0.15 is not pruned at a relaxed target (issue #26:
    a newcomer first sees circuits of tasks the model solves); the skip names its loss."""
    from analyses.cli.demo import _not_chosen
    from sparse_lens.tasks.selection import choose_tasks

    val = {
        "solved": {"loss": 0.03, "accuracy": 0.99},
        "single_double_quote": {"loss": 0.42, "accuracy": 0.78},
    }
    chosen = choose_tasks(val, {n: r["loss"] for n, r in val.items()}, relaxed=())
    assert chosen == {"solved": 0.15}
    skipped = _not_chosen(chosen, val)
    assert list(skipped) == ["single_double_quote"]
    assert "loss 0.420" in skipped["single_double_quote"]["skipped"]


def test_ctrl_c_is_one_line_and_status_130(tmp_path):
    """SIGINT during training: one line, no traceback, status 130.

    The child gets SIGINT's default action back before it starts: a job started with ``&``
    by a non-interactive shell (a CI script, ``pytest ... &``) inherits SIGINT as ignored,
    POSIX's rule for background jobs, and Python then keeps ignoring it."""
    import signal
    import subprocess
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "analyses.cli", "train", "--preset", "tiny", "--out", str(out)]
    proc = subprocess.Popen(
        [*cmd, "--steps", "100000"],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while not (out / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "interrupted" in err


SWEEP = ["sweep", "--preset", "tiny", "--widths", "32", "--l0", "1", "--out", "o"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([*SWEEP, "--target-loss", "0.7"], "below ln 2"),
        (["train", "--preset", "tiny", "--out", "o", "--device", "tpu"], "cpu, cuda or cuda:N"),
        ([*SWEEP, "--cache-dir", ""], "is empty"),
        ([*SWEEP, "--timeout-min", "99999999"], "out of range"),
        ([*SWEEP, "--widths", "32,"], "comma-separated"),
        ([*SWEEP, "--l0", "1,,2"], "comma-separated"),
        (["explain", "c.json", "--examples", "3"], "3 is odd: task examples come in minimal pairs"),
        (["report", "c.json", "--out", "r", "--examples", "7"], "use 6 or 8"),
        (["prune", "m", "--task", "else_elif", "--out", "c.json", "--device", "gpu"], "cuda:N"),
        (["tasks", "m", "--device", "cuda:x"], "cpu, cuda or cuda:N"),
    ],
)
def test_options_are_checked_by_the_parser(tmp_path, monkeypatch, capsys, argv, message):
    from analyses.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["demo", "--bogus"], "sparse-lens demo: error: unrecognized arguments: --bogus"),
        (["demo", "--quick", "x"], "sparse-lens demo: error: unrecognized arguments: x"),
        (["prune", "m"], "sparse-lens prune: error: the following arguments are required: "),
        ([*SWEEP, "--widths", "32,"], "sparse-lens sweep: error: argument --widths: must be "),
        (["--bogus", "demo"], "sparse-lens: error: unrecognized arguments: --bogus"),
        (["bogus"], "sparse-lens: error: argument command: invalid choice: 'bogus'"),
        ([], "sparse-lens: error: the following arguments are required: command"),
    ],
)
def test_an_argument_error_is_one_line_and_where_to_find_the_help(capsys, argv, error):
    """argparse printed its whole usage block before the one-line error; an argument error is
    now the command's name and the error, then a pointer to that command's help, status 2."""
    from analyses.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    lines = capsys.readouterr().err.splitlines()
    command = error.split(": error: ")[0]
    assert exc.value.code == 2 and len(lines) == 2, lines
    assert lines[0].startswith(error) and lines[1] == f"(see {command} --help)"


def test_train_input_refused_before_any_work(tmp_path, capsys):
    """--resume of nothing, idiom kinds without idioms, CUDA where there is none: one line each,
    nothing left behind."""
    import torch

    from analyses.cli import main

    base = ["train", "--preset", "tiny", "--out", str(tmp_path / "run")]
    assert main([*base, "--resume"]) == 2
    assert "holds no run to resume" in capsys.readouterr().err
    assert main([*base, "--idiom-kinds", "statements"]) == 2
    err = capsys.readouterr().err
    assert "has no effect" in err and "add --idiom-frac" in err
    if not torch.cuda.is_available():
        assert main([*base, "--device", "cuda"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_optuna_warnings_of_an_interrupted_trial_are_dropped():
    import logging

    from sparse_lens.circuits.hparam_search import _InterruptFilter

    def record(msg, exc=None):
        info = (exc, exc(), None) if exc else None
        return logging.LogRecord("optuna", logging.WARNING, "", 0, msg, (), info)

    f = _InterruptFilter()
    assert f.filter(record("Trial 0 failed with value None.", None))  # a real failure: kept
    assert f.filter(record("Trial 1 failed because of ...", ValueError))
    assert not f.filter(record("Trial 2 failed because of ...", KeyboardInterrupt))
    assert not f.filter(record("Trial 2 failed with value None."))


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        ("sqlite:///{tmp}/" + "s" * 300 + ".db", "longer than 255 bytes"),
        ("journal:{tmp}/" + "j" * 300 + ".log", "longer than 255 bytes"),
        ("journal:{tmp}/" + "d/" * 2100 + "j.log", "longer than 4096 bytes"),
    ],
)
def test_prune_storage_of_a_name_too_long_is_one_line(tmp_path, capsys, storage, message):
    """``prune --storage`` with a file name the file system cannot hold: exit 2, one line
    naming the storage (it was an ``OSError`` traceback); checked before the model is read."""
    from analyses.cli import main

    storage = storage.format(tmp=tmp_path)
    argv = ["prune", str(tmp_path / "model"), "--task", "single_double_quote"]
    assert main([*argv, "--out", str(tmp_path / "c.json"), "--storage", storage]) == 2
    err = capsys.readouterr().err
    assert message in err and storage[:60] in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(
    "argv",
    [
        ["prune", "m", "--task", "else_elif", "--out", "c.json", "--device", "cuda"],
        ["tasks", "m", "--device", "cuda"],
        ["report", "c.json", "--out", "r", "--device", "cuda:0"],
    ],
)
def test_a_missing_cuda_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys, argv):
    import torch

    from analyses.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert "CUDA is not available on this machine" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tasks", "m", "--n", "100000000"], "<= 10000"),
        (["tasks", "m", "--seed", "-1"], "<= 9223372036854775807"),  # digits, not 9.2e+18
    ],
)
def test_numeric_limits_are_named_in_digits(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err
