"""``sparse-lens tasks``: the table names its split, examples asked, seed and target, marks the
solved tasks and the examples dropped at token boundaries; a run or demo folder means its
model; ``--json`` is one ``table_record``. The scores are stubbed (``task_table``): what is
tested is what the command says about them."""

import json

import pytest

import sparse_lens.tasks.task as task_module
from analyses.cli import main
from analyses.cli.parser import build_parser
from analyses.cli.tasks import n_column
from sparse_lens import HookedSparseTransformer
from sparse_lens.tasks.selection import PAPER_TARGET
from sparse_lens.tasks.task import get_task
from tests.helpers import build_cfg, tiny_tokenizer

ROWS = {
    "else_elif": {"loss": 0.021, "accuracy": 1.0, "n": 200, "dropped": 0},
    "var_if": {"loss": 0.15, "accuracy": 0.94, "n": 200, "dropped": 0},  # at the target: solved
    "class_init": {"loss": 0.863, "accuracy": 0.51, "n": 146, "dropped": 54},
}


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory):
    """A demo folder's layout (``run/final`` the model folder) around a tiny model."""
    root = tmp_path_factory.mktemp("demo")
    tok = tiny_tokenizer()
    model = HookedSparseTransformer(build_cfg(d_vocab=tok.vocab_size), tokenizer=tok)
    model.save_pretrained(root / "run" / "final")
    return root


@pytest.fixture
def asked(monkeypatch):
    """``task_table`` stubbed with :data:`ROWS`; the calls it got (split, n, seed)."""
    calls = []

    def table(model, tasks, split, n, seed, up_to=False):  # noqa: ANN001, ANN202
        assert up_to  # the command scores a short task on all it has
        calls.append((split, n, seed))
        return {t.name: ROWS[t.name] for t in tasks}

    monkeypatch.setattr(task_module, "task_table", table)
    return calls


def _run(capsys, folder, *extra: str) -> tuple[str, str]:
    picks = [arg for name in ROWS for arg in ("--task", name)]
    assert main(["tasks", str(folder), *picks, *extra]) == 0, capsys.readouterr().err
    got = capsys.readouterr()
    return got.out, got.err


def test_the_table_names_split_n_seed_and_target_and_marks_solved_tasks(demo_folder, asked, capsys):
    out, _ = _run(capsys, demo_folder / "run" / "final", "--split", "val", "--n", "200")
    header, columns, *rows = out.splitlines()
    assert "val split, 200 examples asked per task, seed 0" in header
    assert f"solved = task loss <= {PAPER_TARGET:g} nats (the paper's target)" in header
    assert columns.split()[-1] == "solved"
    solved = {line.split()[0]: line.split()[-1] for line in rows[:3]}
    assert solved == {"else_elif": "yes", "var_if": "yes", "class_init": "no"}
    assert "solved: 2 of 3 tasks at task loss <= 0.15" in out
    assert any(line.startswith("val split: 10% of each task's pairs") for line in rows)
    assert asked == [("val", 200, 0)]


def test_the_target_is_an_option_validated_and_the_papers_by_default(demo_folder, asked, capsys):
    out, _ = _run(capsys, demo_folder / "run" / "final", "--target-loss", "0.02", "--seed", "3")
    assert "seed 3; solved = task loss <= 0.02 nats (the paper's is 0.15)" in out
    assert "solved: 0 of 3 tasks at task loss <= 0.02" in out
    for bad in ("0", "0.7", "nan", "x"):
        with pytest.raises(SystemExit):
            main(["tasks", str(demo_folder), "--target-loss", bad])
        assert repr(bad) in capsys.readouterr().err
    sub = build_parser()._subparsers._group_actions[0].choices["tasks"]
    action = next(a for a in sub._actions if "--target-loss" in a.option_strings)
    assert action.default == PAPER_TARGET  # one constant (sparse_lens.vocab), no copy
    assert f"the paper's target {PAPER_TARGET:g})" in " ".join(sub.format_help().split())


def test_dropped_examples_are_marked_and_explained(demo_folder, asked, capsys):
    """class_init kept 146 of 200: the n column said 146 and nothing else."""
    out, _ = _run(capsys, demo_folder / "run" / "final")
    row = next(line for line in out.splitlines() if line.startswith("class_init"))
    assert "146 (54 dropped)" in row
    assert out.splitlines()[-1].startswith("dropped: a built-in example is scored only where")
    assert n_column({"n": 200, "dropped": 0}, 200) == "200"
    assert n_column({"n": 3, "dropped": 0}, 20) == "3 (all there are)"  # a short custom task


def test_json_holds_split_n_seed_target_and_solved(demo_folder, asked, capsys):
    out, _ = _run(capsys, demo_folder / "run" / "final", "--n", "50", "--seed", "2", "--json")
    record = json.loads(out)
    assert {k: v for k, v in record.items() if k != "losses"} == {
        "split": "test",
        "n": 50,
        "seed": 2,
        "target_loss": PAPER_TARGET,
    }
    assert {name: r["solved"] for name, r in record["losses"].items()} == {
        "else_elif": True,
        "var_if": True,
        "class_init": False,
    }
    assert record["losses"]["class_init"]["dropped"] == 54


@pytest.mark.parametrize("layout", ["demo", "run"])
def test_a_demo_or_run_folder_means_its_model_folder(demo_folder, asked, capsys, layout):
    """``sparse-lens tasks runs/demo`` failed on a missing ``runs/demo/config.json``."""
    folder = demo_folder if layout == "demo" else demo_folder / "run"
    out, err = _run(capsys, folder)
    model = demo_folder / "run" / "final"
    kind = "a demo folder" if layout == "demo" else "a training run folder"
    assert f"note: MODEL_DIR {folder} is {kind}; scoring its model folder {model}" in err
    assert out.startswith(f"{model}: test split")


def test_a_folder_without_a_model_is_named_with_where_models_are(tmp_path, capsys):
    assert main(["tasks", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"MODEL_DIR {str(tmp_path)!r} is not a model folder" in err
    assert "run/final/config.json" in err and "runs/demo/run/final" in err


def test_a_task_with_fewer_pairs_than_asked_is_scored_on_all_it_has(demo_folder, capsys):
    """``tasks --split val`` at the default n = 200 stopped the whole table: lambda_func has
    only 74 distinct validation pairs (148 examples). Its row now holds all of them, marked."""
    out, _ = _run(capsys, demo_folder / "run" / "final", "--split", "val", "--task",
                  "lambda_func", "--task", "else_elif", "--n", "200")  # fmt: skip
    row = next(line for line in out.splitlines() if line.startswith("lambda_func"))
    assert "(all there are" in row
    assert int(row.split()[3]) < 200
    assert out.splitlines()[-1].startswith("all there are: the task has fewer distinct")
    assert n_column({"n": 140, "dropped": 8}, 200) == "140 (all there are, 8 dropped)"
    assert n_column({"n": 146, "dropped": 54}, 200) == "146 (54 dropped)"
    with pytest.raises(ValueError, match="ask for at most"):  # the library still refuses
        get_task("lambda_func").pairs("val", 100)
