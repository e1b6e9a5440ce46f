"""``load_model`` / ``load_dense_model``: every command opens a model folder the same way, and a
bad folder is one error naming the option and the path."""

import pytest

from analyses.cli import main
from analyses.cli.options import CLIError, load_dense_model, load_model
from sparse_lens import HookedSparseTransformer
from tests.helpers import build_cfg, tiny_tokenizer


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    tok = tiny_tokenizer()
    HookedSparseTransformer(build_cfg(d_vocab=tok.vocab_size), tokenizer=tok).save_pretrained(
        root / "with_tok"
    )
    HookedSparseTransformer(build_cfg()).save_pretrained(root / "no_tok")
    return root


def test_a_model_folder_loads_in_eval_mode(folders):
    model = load_model(folders / "with_tok", "MODEL_DIR")
    assert not model.training and model.tokenizer is not None
    bare = load_model(folders / "no_tok", "--sparse", need_tokenizer=False)
    assert bare.tokenizer is None


def test_bad_folders_name_the_option_and_the_path(folders, tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(CLIError, match=rf"^--model: model folder '{missing}' does not exist"):
        load_model(missing, "--model")
    (tmp_path / "file.json").write_text("{}")
    with pytest.raises(CLIError, match=r"^MODEL_DIR '.*file\.json' is a file; name a model folder"):
        load_model(tmp_path / "file.json", "MODEL_DIR")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CLIError, match=r"^--model: config file '.*empty/config\.json' is missing"):
        load_model(tmp_path / "empty", "--model")
    with pytest.raises(CLIError, match=r"^--sparse '.*no_tok' has no tokenizer\.json$"):
        load_model(folders / "no_tok", "--sparse")
    with pytest.raises(CLIError, match=r"^--dense: dense model folder '.*nope' has no config"):
        load_dense_model(missing)


def test_the_tasks_command_reports_a_bad_folder(folders, tmp_path, capsys):
    assert main(["tasks", str(tmp_path / "nope")]) == 2
    assert "error: MODEL_DIR: model folder" in capsys.readouterr().err
    assert main(["tasks", str(folders / "no_tok")]) == 2
    assert "has no tokenizer.json" in capsys.readouterr().err
