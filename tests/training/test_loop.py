"""The one training loop (``sparse_lens.training.loop``): cadence, trainer-state format,
metrics, checkpoint folders, and a toy trainer that resumes bit-identically."""

import json

import pytest
import torch
from torch import nn

from sparse_lens.training.loop import (
    CheckpointFolders,
    Loop,
    MetricsLog,
    TrainerState,
    load_trainer_state,
    refuse_other_settings,
    save_trainer_state,
    set_lr,
)


def test_loop_cadence_records_evaluates_checkpoints_and_halts():
    calls, saved = [], []

    def step(i, log):
        calls.append((i, log))
        return {"loss": float(i)} if log else {}

    loop = Loop(total=10, log_every=3, eval_every=4, checkpoint_every=5, progress=False)
    metrics = MetricsLog()
    end = loop.run(
        step, start=0, metrics=metrics, checkpoint=saved.append, evaluate=lambda done: {"val": 1.0}
    )
    assert end == 10 and [i for i, _ in calls] == list(range(10))
    assert [i + 1 for i, log in calls if log] == [3, 6, 9, 10]
    assert [r["step"] for r in metrics.records] == [3, 4, 6, 8, 9, 10]
    assert [r["step"] for r in metrics.records if "val" in r] == [4, 8, 10]
    assert saved == [5]  # not after the last step: the trainer writes its result there
    saved.clear()
    halted = Loop(
        total=10, checkpoint_every=5, checkpoint_at_end=True, halt_after=4, progress=False
    )
    assert halted.run(step, start=3, metrics=MetricsLog(), checkpoint=saved.append) == 7
    assert saved == [5]
    saved.clear()
    Loop(total=10, checkpoint_every=5, checkpoint_at_end=True, progress=False).run(
        step, start=7, metrics=MetricsLog(), checkpoint=saved.append
    )
    assert saved == [10]


def test_trainer_state_round_trip_and_settings_refused(tmp_path):
    model = nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    gen = torch.Generator().manual_seed(5)
    torch.rand(3, generator=gen)
    objects = {"model": model, "optimizer": opt}
    state = TrainerState.capture(7, gen, objects, records=[{"step": 7}], settings={"lr": 1})
    path = tmp_path / "state.pt"
    save_trainer_state(path, state)
    back = load_trainer_state(path, settings={"lr": 1})
    assert back.step == 7 and back.records == [{"step": 7}]
    model2, gen2 = nn.Linear(3, 2), torch.Generator()
    opt2 = torch.optim.Adam(model2.parameters())
    back.restore(gen2, {"model": model2, "optimizer": opt2})
    assert torch.equal(model2.weight, model.weight)
    assert torch.equal(torch.rand(4, generator=gen2), torch.rand(4, generator=gen))
    assert opt2.state_dict()["state"][0]["step"] == 1
    with pytest.raises(ValueError, match=r"other settings \(lr: run has 1, now 2\)"):
        load_trainer_state(path, settings={"lr": 2})
    with pytest.raises(ValueError, match="lacks"):
        back.restore(gen2, {"bridges": model2})
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt"):
        load_trainer_state(path)


def test_earlier_trainer_state_layouts_are_read(tmp_path):
    """The sparse trainer's ``{step, optimizer, generator}`` and the dense/bridge loops'
    ``{settings, step, generator, records|metrics, <state dicts>}``."""
    gen = torch.Generator().manual_seed(0)
    model = nn.Linear(2, 2)
    torch.save({"step": 4, "optimizer": {"x": 1}, "generator": gen.get_state()}, tmp_path / "a")
    sparse = load_trainer_state(tmp_path / "a")
    assert sparse.step == 4 and sparse.states == {"optimizer": {"x": 1}}
    old_loop = {
        "settings": {"s": 1},
        "step": 2,
        "generator": gen.get_state(),
        "metrics": [{"step": 1}, {"step": 2}],
        "model": model.state_dict(),
    }
    torch.save(old_loop, tmp_path / "b")
    dense = load_trainer_state(tmp_path / "b", settings={"s": 1})
    assert set(dense.states) == {"model"} and dense.records == [{"step": 1}, {"step": 2}]
    torch.save({"format": "sparse_lens.trainer_state", "version": 99, "step": 1,
                "generator": gen.get_state()}, tmp_path / "c")  # fmt: skip
    with pytest.raises(ValueError, match="version 99"):
        load_trainer_state(tmp_path / "c")


def test_metrics_log_keeps_lines_up_to_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path)
    log.start(0)
    for i in range(1, 6):
        log.append({"step": i, "loss": i / 3})
    path.write_text(path.read_text() + '{"step": 6, "lo')  # killed mid-line
    again = MetricsLog(path)
    again.start(3)
    assert [r["step"] for r in again.records] == [1, 2, 3]
    assert again.records[2]["loss"] == 1.0
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2, 3]
    path.write_text("{oops\n" + path.read_text())
    with pytest.raises(ValueError, match="metrics.jsonl:1 is corrupt"):
        MetricsLog(path).start(3)
    missing = MetricsLog(tmp_path / "new.jsonl")
    missing.start(2, saved=[{"step": 1}, {"step": 2}, {"step": 3}])  # records from a state
    assert (tmp_path / "new.jsonl").read_text().splitlines() == ['{"step": 1}', '{"step": 2}']


def test_checkpoint_folders_keep_n_and_point_at_the_latest(tmp_path):
    folders = CheckpointFolders(tmp_path, keep=2)
    gen = torch.Generator()
    for step in (2, 4, 6):
        folders.save(
            TrainerState.capture(step, gen, {}),
            lambda tmp, name: (tmp / "model.txt").write_text(name),
        )
    assert [p.name for p in folders.complete()] == ["step-0000004", "step-0000006"]
    latest = folders.latest()
    assert latest is not None and (latest / "model.txt").read_text() == "step-0000006"
    assert folders.load(latest).step == 6
    (latest / "trainer.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match="delete .*step-0000006 to resume from .*step-0000004"):
        folders.load(latest)


def _toy_run(path, *, halt_after=None, resume=False):
    """A toy trainer on the loop: linear regression with Adam and a decaying LR, state in one
    file, records kept in the state."""
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(1)
    objects = {"model": model, "optimizer": opt}
    metrics, start = MetricsLog(), 0
    if resume:
        state = load_trainer_state(path, settings={"toy": 1})
        state.restore(gen, objects)
        start = state.step
        metrics.start(start, state.records)

    def step(i, log):
        set_lr(opt, 0.1 * (1 - i / 10))
        x = torch.randn(8, 4, generator=gen)
        loss = (model(x).squeeze(-1) - x.sum(-1)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": float(loss.detach())}

    def checkpoint(done):
        save_trainer_state(
            path,
            TrainerState.capture(done, gen, objects, records=metrics.records, settings={"toy": 1}),
        )

    loop = Loop(total=10, checkpoint_every=3, halt_after=halt_after, progress=False)
    loop.run(step, start=start, metrics=metrics, checkpoint=checkpoint)
    return model, metrics.records


def test_a_toy_trainer_resumes_bit_identically(tmp_path):
    ref, ref_records = _toy_run(tmp_path / "ref.pt")
    _toy_run(tmp_path / "cut.pt", halt_after=7)  # checkpoint at 6, killed after 7
    assert load_trainer_state(tmp_path / "cut.pt").step == 6
    model, records = _toy_run(tmp_path / "cut.pt", resume=True)
    assert torch.equal(model.weight, ref.weight) and torch.equal(model.bias, ref.bias)
    assert records == ref_records and [r["step"] for r in records] == list(range(1, 11))


def test_refuse_other_settings_names_the_first_difference():
    refuse_other_settings({"a": 1}, {"a": 1}, "x")
    with pytest.raises(ValueError, match="cannot resume run: .*b: run has None, now 2"):
        refuse_other_settings({"a": 1}, {"a": 1, "b": 2}, "run")


# ---------------------------------------------------------------------------------------------
# One resume matrix for every trainer: halted part-way (as if killed), resumed from the one
# trainer-state format or from the trainer's earlier layout, bit-identical to an uninterrupted run.

D = 16


class _Windows:
    """A fake ``TokenData``: random windows of a fixed token stream."""

    def __init__(self, vocab: int) -> None:
        self.stream = torch.randint(0, vocab, (4000,), generator=torch.Generator().manual_seed(0))

    def sample(self, batch_size: int, n_ctx: int, generator: torch.Generator) -> torch.Tensor:
        starts = torch.randint(0, len(self.stream) - n_ctx, (batch_size,), generator=generator)
        return torch.stack([self.stream[s : s + n_ctx] for s in starts.tolist()])

    def val_windows(self, n: int, n_ctx: int) -> torch.Tensor:
        return torch.stack([self.stream[i * n_ctx : (i + 1) * n_ctx] for i in range(n)])


@pytest.fixture(scope="module")
def dense_dir(tmp_path_factory):
    from sparse_lens.training.dense_baseline import DenseConfig, train_dense_hf
    from tests.helpers import tiny_tokenizer

    tok = tiny_tokenizer()
    out = tmp_path_factory.mktemp("dense")
    cfg = DenseConfig(n_layers=2, d_model=D, n_heads=4, n_ctx=16, steps=2, batch_size=2)
    train_dense_hf(cfg, _Windows(tok.vocab_size), tok, out, progress=False)
    return out


def _sparse_trainer(tmp_path, data, tokenizer):
    from sparse_lens import HookedSparseTransformer
    from sparse_lens.training.sparse import TrainConfig, train
    from tests.helpers import build_cfg

    cfg = build_cfg(d_vocab=tokenizer.vocab_size, n_ctx=16, weight_density=0.5)
    tcfg = TrainConfig(
        steps=6, batch_size=2, eval_every=3, log_every=1, checkpoint_every=2, val_windows=2
    )

    def run(out, **kw):
        model = HookedSparseTransformer(cfg, tokenizer=tokenizer)
        model = train(model, data, tcfg, out, progress=False, **kw)
        records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        for r in records:
            r.pop("tokens_per_s", None)  # wall-clock
        return model.state_dict(), records

    def state_file(out):
        return CheckpointFolders(out).latest() / "trainer.pt"

    return run, state_file, None


def _dense_trainer(tmp_path, data, tokenizer):
    from safetensors.torch import load_file

    from sparse_lens.training.dense_baseline import TRAINER_STATE, DenseConfig, train_dense_hf

    cfg = DenseConfig(
        n_layers=1, d_model=D, n_heads=4, n_ctx=16, steps=6, batch_size=2, checkpoint_every=2
    )
    windows = _Windows(tokenizer.vocab_size)

    def run(out, **kw):
        train_dense_hf(cfg, windows, tokenizer, out, progress=False, **kw)
        if not (out / "dense.json").exists():
            return None, None
        records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        return load_file(out / "model.safetensors"), records

    return run, lambda out: out / TRAINER_STATE, "metrics"


def _bridge_trainer(joint: bool):
    def make(tmp_path, data, tokenizer, dense_dir):
        from sparse_lens import HookedSparseTransformer
        from sparse_lens.bridges.maps import BridgeConfig, Bridges
        from sparse_lens.bridges.train import Checkpointing, fit_bridges, train_bridged
        from sparse_lens.training.dense_baseline import load_dense
        from sparse_lens.training.sparse import TrainConfig
        from tests.helpers import build_cfg

        dmodel = load_dense(dense_dir)
        windows = _Windows(tokenizer.vocab_size)

        def run(out, halt_after=None, resume=False):
            ckpt = Checkpointing(
                path=out / "checkpoint" / "trainer.pt", every=2, resume=resume,
                halt_after=halt_after,
            )  # fmt: skip
            cfg = build_cfg(d_vocab=tokenizer.vocab_size, weight_density=0.5)
            sparse = HookedSparseTransformer(cfg, tokenizer=tokenizer)
            torch.manual_seed(3)
            bridges = Bridges(BridgeConfig(d_dense=D, d_sparse=D, n_layers=2))
            if joint:
                tcfg = TrainConfig(steps=5, batch_size=2, anneal_end=0.5)
                records = train_bridged(
                    dmodel, sparse, bridges, windows, tcfg, progress=False, checkpoint=ckpt
                )
            else:
                records = fit_bridges(
                    dmodel, sparse, bridges, windows, steps=5, batch_size=2, init_windows=4,
                    progress=False, checkpoint=ckpt,
                )  # fmt: skip
            if len(records) < 5:
                return None, None
            return sparse.state_dict() | bridges.state_dict(), records

        return run, lambda out: out / "checkpoint" / "trainer.pt", "records"

    return make


TRAINERS = {
    "sparse": _sparse_trainer,
    "dense": _dense_trainer,
    "fit_bridges": _bridge_trainer(joint=False),
    "train_bridged": _bridge_trainer(joint=True),
}


def _as_earlier_layout(path, records_key):
    """Rewrite a trainer state in its trainer's layout before the one format."""
    from sparse_lens.training.loop import STATE_FORMAT

    payload = torch.load(path, weights_only=True)
    assert payload["format"] == STATE_FORMAT and payload["version"] == 1
    old = {"step": payload["step"], "generator": payload["generator"]} | payload["states"]
    if records_key is not None:
        old |= {"settings": payload["settings"], records_key: payload["records"]}
    torch.save(old, path)


@pytest.mark.parametrize("layout", ["current", "earlier"])
@pytest.mark.parametrize("trainer", sorted(TRAINERS))
def test_every_trainer_resumes_bit_identically(trainer, layout, tmp_path, data, tokenizer, request):
    extra = (
        (request.getfixturevalue("dense_dir"),)
        if "bridged" in trainer or "bridges" in trainer
        else ()
    )
    run, state_file, records_key = TRAINERS[trainer](tmp_path, data, tokenizer, *extra)
    ref_weights, ref_records = run(tmp_path / "ref")
    run(tmp_path / "cut", halt_after=3)  # killed after step 3; its checkpoint is at step 2
    path = state_file(tmp_path / "cut")
    assert load_trainer_state(path).step == 2
    if layout == "earlier":
        _as_earlier_layout(path, records_key)
    with pytest.raises(ValueError, match="already holds a run"):
        run(tmp_path / "cut")
    weights, records = run(tmp_path / "cut", resume=True)
    assert weights.keys() == ref_weights.keys()
    for name, w in ref_weights.items():
        assert torch.equal(w, weights[name]), name
    assert records == ref_records
    assert [r["step"] for r in records][-1] in (5, 6)
