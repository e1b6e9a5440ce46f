import ast
import builtins
import dataclasses
import json
import keyword
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from analyses.cli import main as cli_main
from sparse_lens.data import idioms, statement_idioms
from sparse_lens.data.corpus import stdlib_root
from sparse_lens.data.token_data import MixedData, TokenData, build_idiom_shard, with_idioms
from sparse_lens.tasks import suite as task_suite
from sparse_lens.training.sparse import TrainConfig, recorded_idiom_frac, train
from tests.training.test_sparse import TCFG, make_model

IDENT = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")


def _identifiers(strings):
    return {w for s in strings for w in IDENT.findall(s)}


def _suite_identifiers():
    src = Path(task_suite.__file__).read_text()
    return _identifiers(
        n.value
        for n in ast.walk(ast.parse(src))
        if isinstance(n, ast.Constant) and isinstance(n.value, str)
    )


# Python's own words: keywords, builtins and the builtin methods the statements call. The
# ``f`` of an f-string and the ``'w'``/``'r'`` of ``open`` are syntax too, removed before the check.
SYNTAX = (
    set(keyword.kwlist)
    | set(dir(builtins))
    | {"self", "__init__", "add", "format", "read", "write", "close"}
)


def _names_in(docs):
    text = (re.sub(r"\d+", " ", d) for d in docs)
    text = (re.sub(r"\bf(?=\")", " ", re.sub(r"'[wr]'\)", ")", d)) for d in text)
    return _identifiers(text) - SYNTAX


def test_idiom_pools_share_no_identifier_with_the_task_suite():
    """No name, word or call in the idiom stream occurs anywhere in the task generators, so the
    task prompts never appear verbatim in training and the tasks test new names."""
    suite = _suite_identifiers()
    pools = (idioms.NAMES, idioms.ELEMS, idioms.FUNCNAMES, idioms.CALLNAMES, idioms.TEXT)
    pools += tuple(
        getattr(statement_idioms, name)
        for name in ("COLLS", "LOOP", "FLAGS", "NUMERIC", "ATTRS_", "CLASSES_", "FUNCS_")
        + ("EMIT", "WRITE_FILES", "READ_FILES", "EXTS", "LABELS")
    )
    folded = {w.lower() for w in suite}
    pooled = {w.lower() for w in _identifiers(x for pool in pools for x in pool)}
    assert pooled.isdisjoint(folded), pooled & folded
    words = {w.lower() for w in suite - SYNTAX}
    for kinds in (("literals",), ("statements",), ("literals", "statements")):
        used = {w.lower() for w in _names_in(idioms.idiom_documents(600, seed=0, kinds=kinds))}
        assert used and used.isdisjoint(words), (kinds, used & words)


def test_statement_idioms_hold_each_construct_and_parse():
    docs = idioms.idiom_documents(600, seed=5, kinds=("statements",))
    for d in docs:
        ast.parse(d)
    text = "".join(docs)
    needles = ("for ", "while ", "elif ", "else:", " if ", "with open(", ") as ", "= open(")
    needles += ("lambda ", "zip(", "range(", "while True:", "return True", "= set()", " += ")
    needles += ('f"', ".format(", "def __init__(self, ", "=None", " == True")
    for needle in needles:
        assert needle in text, needle
    assert re.search(r"(\w+), (\w+) = \2, \1\n", text)  # swaps
    assert (
        re.search(r"open\('(export|summary|backup|digest|snapshot|journal)\.\w+', 'r'", text)
        is None
    )
    assert re.search(r"open\('(notes|draft|manifest|inbox|catalog|recipe)\.\w+', 'w'", text) is None
    for sig in re.findall(r"def \w+\((.*)\):", text):  # no parameter without a default after one
        has = ["=" in part for part in sig.split(", ")]
        assert has == sorted(has), sig
    mixed = idioms.idiom_documents(400, seed=5, kinds=("statements", "literals"))
    assert mixed == idioms.idiom_documents(400, seed=5, kinds=("literals", "statements"))
    assert idioms.idiom_documents(50, seed=1) == idioms.idiom_documents(50, 1, ("literals",))
    for bad in ((), ("literals", "literals"), ("poems",)):
        with pytest.raises(ValueError, match="idiom kinds"):
            idioms.idiom_documents(5, seed=0, kinds=bad)


def test_idiom_documents_are_valid_python_deterministic_and_varied():
    docs = idioms.idiom_documents(400, seed=3)
    for d in docs:
        ast.parse(d)
    assert docs == idioms.idiom_documents(400, seed=3)
    assert docs != idioms.idiom_documents(400, seed=4)
    text = "".join(docs)
    for needle in ("[[", "]]", "[[[", "]]]", '("', "('", '")', "')", "{", "def ", "\n    ["):
        assert needle in text, needle
    depth_two = sum(d.count(" = [[") for d in docs)
    flat = len(re.findall(r" = \[[^\[]", text))
    assert depth_two > 50 and flat > 50
    with pytest.raises(ValueError, match="n_docs"):
        idioms.idiom_documents(0, seed=0)


def _fake_base(n=5000):
    train_tokens = np.arange(n, dtype=np.uint16) % 100
    return TokenData(train=train_tokens, val=np.arange(600, dtype=np.uint16) % 100)


def test_mixed_data_puts_the_idiom_share_in_every_batch():
    base = _fake_base()
    mix = MixedData(
        base=base,
        idioms=(np.arange(3000) % 50 + 500).astype(np.uint16),
        idiom_frac=0.25,
        idiom_info={"seed": 0},
    )
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        batch = mix.sample(16, 8, gen)
        from_idioms = (batch >= 500).all(1)
        assert int(from_idioms.sum()) == 4
        assert bool(((batch < 100).all(1) | from_idioms).all())
    a = mix.sample(16, 8, torch.Generator().manual_seed(1))
    b = mix.sample(16, 8, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert torch.equal(mix.val_windows(4, 8), base.val_windows(4, 8))
    assert mix.metadata()["idiom_frac"] == 0.25 and mix.metadata()["idioms"]["tokens"] == 3000
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="idiom_frac"):
            MixedData(base=base, idioms=mix.idioms, idiom_frac=bad, idiom_info={})
    short = MixedData(base=base, idioms=mix.idioms[:5], idiom_frac=0.5, idiom_info={})
    with pytest.raises(ValueError, match="idiom stream"):
        short.check_fits(8)


def test_idiom_shard_is_cached_and_mix_off_returns_the_data(tokenizer, tmp_path):
    path = build_idiom_shard(tokenizer, 50, 7, tmp_path)
    ids = np.fromfile(path, dtype=np.uint16)
    assert int((ids == tokenizer.eot_id).sum()) == 50
    assert tokenizer.decode(ids.tolist()).replace("<|endoftext|>", "") == "".join(
        idioms.idiom_documents(50, 7)
    )
    mtime = path.stat().st_mtime_ns
    assert build_idiom_shard(tokenizer, 50, 7, tmp_path) == path
    assert path.stat().st_mtime_ns == mtime
    base = _fake_base()
    assert with_idioms(base, tokenizer, 0.0, tmp_path) is base
    mixed = with_idioms(base, tokenizer, 0.5, tmp_path, n_docs=50, seed=7)
    assert isinstance(mixed, MixedData) and len(mixed.idioms) == len(ids)


def test_idiom_share_is_the_datas_alone(data, tokenizer, tmp_path):
    """The share lives in the data (``MixedData.idiom_frac``), not twice in the train config."""
    assert "idiom_frac" not in {f.name for f in dataclasses.fields(TrainConfig)}
    with pytest.raises(ValueError, match="idiom_frac"):
        with_idioms(data, tokenizer, 1.0, tmp_path / "cache", n_docs=200)
    tiny_share = with_idioms(data, tokenizer, 0.1, tmp_path / "cache", n_docs=200)
    with pytest.raises(ValueError, match="rounds to no idiom window"):
        train(make_model(tokenizer), tiny_share, TCFG, tmp_path / "c", progress=False)


def test_mixed_training_resumes_exactly(data, tokenizer, tmp_path):
    mixed = with_idioms(data, tokenizer, 0.25, tmp_path / "cache", n_docs=200)
    ref = train(make_model(tokenizer), mixed, TCFG, tmp_path / "ref", progress=False)
    train(make_model(tokenizer), mixed, TCFG, tmp_path / "cut", halt_after=6, progress=False)
    resumed = train(
        make_model(tokenizer), mixed, TCFG, tmp_path / "cut", resume=True, progress=False
    )
    for k, v in ref.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    run = json.loads((tmp_path / "ref" / "run.json").read_text())
    assert "idiom_frac" not in run["train_config"] and run["data"]["idiom_frac"] == 0.25
    assert recorded_idiom_frac(run) == 0.25
    assert run["data"]["idioms"]["n_docs"] == 200


def test_run_folders_that_stored_the_share_in_train_config_still_resume(data, tokenizer, tmp_path):
    """A run.json written when ``TrainConfig`` held ``idiom_frac`` resumes on the same data
    and is refused on data with another share."""
    mixed = with_idioms(data, tokenizer, 0.25, tmp_path / "cache", n_docs=200)
    train(make_model(tokenizer), mixed, TCFG, tmp_path / "cut", halt_after=6, progress=False)
    path = tmp_path / "cut" / "run.json"
    old = json.loads(path.read_text())
    old["train_config"]["idiom_frac"] = 0.25  # as written before the share moved to the data
    path.write_text(json.dumps(old))
    assert recorded_idiom_frac(old) == 0.25
    assert recorded_idiom_frac({"train_config": {"idiom_frac": 0.35}}) == 0.35
    assert recorded_idiom_frac({"train_config": {}}) == 0.0
    other = with_idioms(data, tokenizer, 0.5, tmp_path / "cache", n_docs=200)
    for wrong in (other, data):  # another share, or none
        with pytest.raises(ValueError, match="mixes in idioms at idiom_frac=0.25"):
            train(make_model(tokenizer), wrong, TCFG, tmp_path / "cut", resume=True, progress=False)
    train(make_model(tokenizer), mixed, TCFG, tmp_path / "cut", resume=True, progress=False)
    assert (tmp_path / "cut" / "final" / "config.json").is_file()


def test_cli_idiom_frac_is_recorded_and_checked(tmp_path, capsys):
    corpus = stdlib_root() / "asyncio"  # big enough for a 2048-token BPE
    common = ["train", "--preset", "tiny", "--corpus", str(corpus), "--quiet", "--steps", "2"]
    common += ["--cache-dir", str(tmp_path / "cache")]
    with pytest.raises(SystemExit) as e:  # the parser range-checks numbers
        cli_main([*common, "--out", str(tmp_path / "bad"), "--idiom-frac", "1.5"])
    assert e.value.code == 2
    assert "--idiom-frac" in capsys.readouterr().err
    assert cli_main([*common, "--out", str(tmp_path / "run"), "--idiom-frac", "0.25"]) == 0
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert "idiom_frac" not in run["train_config"] and run["data"]["idiom_frac"] == 0.25


def test_sweep_points_that_stored_the_share_in_train_config_are_recognised(tmp_path):
    from sparse_lens.sweep.grid import SweepConfig, grid, point_configs
    from sparse_lens.sweep.point import _check_spec, spec_record

    scfg = SweepConfig(preset="tiny", widths=(32,), l0s=(2000,), idiom_frac=0.25)
    spec = grid(scfg, 300)[0][0]
    mcfg, tcfg = point_configs(spec, scfg, 300)
    record = spec_record(spec, mcfg, tcfg, scfg.idiom_share())
    assert record["idiom_frac"] == 0.25 and "idiom_frac" not in record["train_config"]
    old = {k: v for k, v in record.items() if k != "idiom_frac"}
    old["train_config"] = record["train_config"] | {"idiom_frac": 0.25}  # the earlier layout
    (tmp_path / "spec.json").write_text(json.dumps(old))
    _check_spec(tmp_path, record)  # the same point
    with pytest.raises(ValueError, match="other settings"):
        _check_spec(tmp_path, record | {"idiom_frac": 0.0})
    with pytest.raises(ValueError, match="idiom_frac"):
        SweepConfig(preset="tiny", widths=(32,), l0s=(2000,), idiom_frac=1.0)
