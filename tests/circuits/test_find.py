"""Optuna search, clean-up, removed edges, seeds and the attribution baseline."""

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch

from sparse_lens.circuits.ablation import make_ablation
from sparse_lens.circuits.circuit import Circuit, circuit_edges
from sparse_lens.circuits.cleanup import greedy_remove, parse_stages
from sparse_lens.circuits.find import attribution_baseline, attribution_scores, seed_summary
from sparse_lens.circuits.hparam_search import (
    SearchConfig,
    open_storage,
    open_study,
    run_search,
)
from sparse_lens.circuits.nodes import node_locations
from tests.helpers import build_model, random_tokens
from tests.search_worker import planted_pruner, search_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("sinks", [False, True])
def test_removed_edges_hooks_match_to_model_under_abstopk(sinks):
    model = build_model(attn_sinks=sinks)
    g = torch.Generator().manual_seed(0)
    kept = {
        loc.hook: sorted(torch.randperm(loc.size, generator=g)[: loc.size // 2].tolist())
        for loc in node_locations(model.cfg)
    }
    abl = make_ablation("mean", model, random_tokens(8, 12, seed=3))
    full = Circuit.from_nodes(model, kept, abl.values, task="t")
    kinds = {}
    for s, t, _ in full.edges:  # two edges of every kind (q/k/v, W_O, W_in, W_out)
        kinds.setdefault((s.split(".")[1:3], t.split(".")[1:3]).__repr__(), []).append((s, t))
    removed = [e for group in kinds.values() for e in group[:2]]
    assert len(kinds) >= 5
    circuit = Circuit.from_nodes(model, kept, abl.values, task="t", removed_edges=removed)
    assert circuit.n_edges == full.n_edges - len(removed)
    tokens = random_tokens(3, 9, seed=4)
    hooked = model.run_with_hooks(tokens, fwd_hooks=circuit.fwd_hooks(model))
    if sinks:  # a removed v -> attn_out edge's fill depends on the sink mass: no weight edit
        with pytest.raises(ValueError, match="attention sinks"):
            circuit.to_model(model)
    else:
        torch.testing.assert_close(circuit.to_model(model)(tokens), hooked, atol=1e-5, rtol=1e-5)
    before = model.run_with_hooks(tokens, fwd_hooks=full.fwd_hooks(model))
    assert not torch.allclose(before, hooked, atol=1e-4)  # the removal did something
    assert all(not hp.fwd_hooks for hp in model.hook_dict.values())


@pytest.mark.parametrize("ablation", ["mean", "zero"])
def test_cutting_every_out_edge_of_a_value_channel_equals_cutting_the_channel(ablation):
    """With attention sinks a value node's ablation reaches ``z`` as (1 - p_sink) * fill; the
    edges' fill must match it (it was ``fill``: a 25-33% error of the node's effect)."""
    model = build_model(attn_sinks=True)
    kept = {loc.hook: list(range(loc.size)) for loc in node_locations(model.cfg)}
    abl = make_ablation(ablation, model, random_tokens(8, 12, seed=3))
    full = Circuit.from_nodes(model, kept, abl.values, task="t")
    v_edges = [(s, t) for s, t, _ in full.edges if ".attn.v." in s]
    node = v_edges[0][0]
    out_edges = [(s, t) for s, t in v_edges if s == node]
    ref = {r.label: r for r in full.node_refs(model.cfg)}[node]
    without_node = {
        h: [c for c in ch if (h, c) != (ref.hook, ref.channel)] for h, ch in kept.items()
    }
    cut_edges = Circuit.from_nodes(model, kept, abl.values, task="t", removed_edges=out_edges)
    cut_node = Circuit.from_nodes(model, without_node, abl.values, task="t")
    tokens = random_tokens(3, 9, seed=4)
    by_edges = model.run_with_hooks(tokens, fwd_hooks=cut_edges.fwd_hooks(model))
    by_node = model.run_with_hooks(tokens, fwd_hooks=cut_node.fwd_hooks(model))
    torch.testing.assert_close(by_edges, by_node, atol=1e-5, rtol=1e-5)
    if ablation == "mean":  # the cut changed something, so the equality is not vacuous
        assert not torch.allclose(by_node, model(tokens), atol=1e-4)


def test_removed_edges_round_trip_and_bad_edge(tmp_path):
    model = build_model()
    kept = {loc.hook: list(range(loc.size)) for loc in node_locations(model.cfg)}
    abl = make_ablation("zero", model, random_tokens(4, 8))
    edge = circuit_edges(model, kept)[0][:2]
    circuit = Circuit.from_nodes(
        model, kept, abl.values, task="t", loss=0.1, full_loss=0.05, removed_edges=[edge]
    )
    loaded = Circuit.load(circuit.save(tmp_path / "c.json"))
    assert loaded.removed_edges == [edge] and loaded == circuit
    loaded.removed_edges = [("0.attn.attn_in.0", "nonsense")]
    with pytest.raises(ValueError, match="removed edge"):
        loaded.fwd_hooks(model)


def test_greedy_remove_keeps_every_accepted_state_passing():
    needed = {3, 7, 8}
    calls = []

    def passes(gone):
        calls.append(list(gone))
        return not needed & set(gone)

    removed, evals = greedy_remove(list(range(20)), passes, max_evals=1000)
    assert sorted(removed) == sorted(set(range(20)) - needed)
    assert evals == len(calls) < 20  # blocks: fewer evaluations than candidates
    _, capped = greedy_remove(list(range(20)), passes, max_evals=3)
    assert capped == 3


def test_parse_stages():
    assert parse_stages("nodes,edges") == ("nodes", "edges")
    assert parse_stages("none") == () and parse_stages("edges") == ("edges",)
    with pytest.raises(ValueError, match="unknown clean-up"):
        parse_stages("nodes,wires")
    with pytest.raises(ValueError, match="order"):
        parse_stages("edges,nodes")


def test_seed_summary():
    s = seed_summary({0: {"a", "b", "c"}, 1: {"a", "b"}, 2: {"a", "d"}})
    assert s["core"] == ["a"] and s["n_union"] == 4
    assert s["sizes"] == {"0": 3, "1": 2, "2": 2}
    assert s["jaccard"]["0-1"] == pytest.approx(2 / 3)
    assert s["jaccard"]["1-2"] == pytest.approx(1 / 3)


def test_attribution_scores_are_the_first_order_ablation_effect():
    import dataclasses

    planted = planted_pruner()
    # live norms: those of the first-order reference
    pruner = planted.with_config(dataclasses.replace(planted.pcfg, freeze_norms=False))
    scores = attribution_scores(pruner, pruner.val)
    top = max(((float(v.max()), h) for h, v in scores.items()))[1]
    assert top in {
        "blocks.0.attn.hook_in",
        "blocks.0.attn.hook_v",
        "blocks.0.hook_attn_out",
        "blocks.0.hook_resid_post",
    }
    # reference: |d loss / d m| of one node's mask at m = 1, by central finite differences
    model, batch, values = pruner.model, pruner.val, pruner.ablation.values

    @torch.no_grad()
    def loss_at(target: str, channel: int, m: float) -> float:
        def mix(a, hook):
            x = a.reshape(*a.shape[:2], -1)
            mask = torch.ones(x.shape[-1], dtype=torch.float64)
            if hook.name == target:
                mask[channel] = m
            out = x.double() * mask + values[hook.name].double() * (1 - mask)
            return out.to(a.dtype).reshape(a.shape)

        logits = model.run_with_hooks(batch.tokens, fwd_hooks=[(h, mix) for h in scores])
        last = logits[torch.arange(len(batch)), batch.last]
        two = torch.stack(
            [last.gather(1, batch.correct[:, None]), last.gather(1, batch.incorrect[:, None])], -1
        )
        return float(-two.squeeze(1).double().log_softmax(-1)[:, 0].mean())

    picks = [(h, int(v.argmax())) for h, v in scores.items() if float(v.max()) > 1e-3]
    assert len(picks) >= 3
    eps = 1e-2
    for h, c in picks:
        fd = abs(loss_at(h, c, 1 + eps) - loss_at(h, c, 1 - eps)) / (2 * eps)
        assert float(scores[h][c]) == pytest.approx(fd, rel=0.05, abs=1e-4), (h, c)
    base = attribution_baseline(pruner)
    assert base["loss"] <= pruner.pcfg.target_loss and base["nodes"] >= 5


def test_storage_strings(tmp_path):
    scfg = SearchConfig()
    assert open_storage(None, scfg) is None
    assert isinstance(
        open_storage(f"journal:{tmp_path}/j.log", scfg), optuna.storages.JournalStorage
    )
    assert isinstance(open_storage(f"sqlite:///{tmp_path}/s.db", scfg), optuna.storages.RDBStorage)
    with pytest.raises(ValueError, match="storage must be"):
        open_storage("my.db", scfg)
    with pytest.raises(ValueError, match="cannot open the Optuna storage"):
        open_storage("nosuchdialect://x/y", scfg)
    with pytest.raises(ValueError, match="epochs"):
        SearchConfig(epochs=(5, 2))


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("journal:", "names no journal file"),
        ("journal:{tmp}", "is a folder"),
        ("journal:{tmp}/missing/j.log", "does not exist"),
        ("sqlite:///", "names no database file"),
        ("sqlite:///:memory:", "names no database file"),
        ("sqlite://relative.db", "sqlite:///PATH"),
        ("sqlite:///{tmp}", "is a folder"),
        ("sqlite:///{tmp}/missing/s.db", "does not exist"),
        ("runs/optuna.db", "storage must be"),
        ("sqlite:///{tmp}/" + "s" * 300 + ".db", "longer than 255 bytes"),
        ("journal:{tmp}/" + "j" * 300, "longer than 255 bytes"),
        ("sqlite:///{tmp}/" + "d/" * 2100 + "s.db", "longer than 4096 bytes"),
    ],
)
def test_bad_storage_is_refused_before_any_work_and_creates_nothing(tmp_path, url, match):
    url = url.format(tmp=tmp_path)
    for attempt in (lambda: SearchConfig(storage=url), lambda: open_storage(url, SearchConfig())):
        with pytest.raises(ValueError, match=match) as info:
            attempt()
        assert url[:60] in str(info.value)  # the bad value is named (a long one cut short)
    assert not (tmp_path / "missing").exists()


def test_a_storage_file_of_another_kind_is_one_line_naming_it(tmp_path):
    """An SQLite database given as a journal (``journal:STUDY.db``), a text or binary file as
    either kind: a one-line ``ValueError`` naming the file, not a decoder's traceback."""
    import sqlite3

    con = sqlite3.connect(tmp_path / "STUDY.db")
    con.execute("create table x (a)")
    con.commit()
    con.close()
    (tmp_path / "notes.txt").write_text("my notes\n")
    (tmp_path / "bin.dat").write_bytes(b"\xff\xfe\x00\x01" * 40)
    for name in ("STUDY.db", "notes.txt", "bin.dat"):
        for url in (f"journal:{tmp_path / name}", f"sqlite:///{tmp_path / name}"):
            if url.startswith("sqlite") and name == "STUDY.db":
                continue  # a database of its own: Optuna adds its tables beside the user's
            with pytest.raises(ValueError) as info:
                open_study(SearchConfig(storage=url), study_name="s")
            message = str(info.value)
            assert name in message and "\n" not in message, message


def _worker(storage: str, trials: int) -> subprocess.Popen:
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.search_worker", storage, str(trials)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _finished(storage: str) -> int:
    try:
        study = optuna.load_study(study_name="planted", storage=storage)
    except KeyError:
        return 0
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return sum(t.state in states for t in study.trials)


@pytest.mark.slow
def test_killed_search_resumes_to_the_same_best_trial(tmp_path):
    trials = 6
    whole = f"sqlite:///{tmp_path}/whole.db"
    pruner = planted_pruner()
    ref = run_search(pruner, search_config(whole, trials), study_name="planted")
    killed = f"sqlite:///{tmp_path}/killed.db"
    proc = _worker(killed, trials)
    deadline = time.monotonic() + 300
    while _finished(killed) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.3)  # into the next trial
    proc.kill()
    proc.communicate()
    n_before = _finished(killed)
    assert 2 <= n_before < trials
    time.sleep(3)  # past the heartbeat grace period: the killed trial is stale
    resumed = run_search(pruner, search_config(killed, trials), study_name="planted")
    assert _finished(killed) == trials
    assert resumed.best_value == ref.best_value
    assert resumed.best_params == ref.best_params
    done = [t for t in resumed.trials if t.state.is_finished() and t.state.name != "FAIL"]
    assert [t.params for t in done] == [t.params for t in ref.trials]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_two_processes_share_one_study(tmp_path, kind):
    storage = f"sqlite:///{tmp_path}/s.db" if kind == "sqlite" else f"journal:{tmp_path}/j.log"
    open_storage(storage, SearchConfig())  # create the database before both workers race
    optuna.create_study(
        study_name="planted", storage=open_storage(storage, SearchConfig()), direction="minimize"
    )
    procs = [_worker(storage, 8) for _ in range(2)]
    outs = [json.loads(p.communicate(timeout=600)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    study = optuna.load_study(study_name="planted", storage=open_storage(storage, SearchConfig()))
    finished = [t for t in study.trials if t.state.is_finished()]
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in finished) >= 8
    assert len({t.number for t in study.trials}) == len(study.trials)
    assert outs[0]["value"] == outs[1]["value"] == study.best_value


@pytest.mark.parametrize(
    "change, named",
    [
        (dict(tie_qk=True), "prune_config.tie_qk"),
        (dict(freeze_norms=False), "prune_config.freeze_norms"),
        (dict(steps=123), "prune_config.steps"),
        ("epochs", "epochs"),
        ("ablation", "ablation_values"),
        ("val", "val_pairs"),
    ],
)
def test_a_study_run_with_other_settings_is_refused_not_reused(tmp_path, change, named):
    """Every setting that changes the objective is part of the study's identity: a rerun with
    one changed was silently given the old trials' nodes."""
    import dataclasses

    from sparse_lens.circuits.masks import Pruner
    from tests.circuits.test_masks import planted_batch

    storage = f"journal:{tmp_path / 'study.log'}"
    pruner = planted_pruner()
    run_search(pruner, search_config(storage, 1), study_name="planted")
    scfg = search_config(storage, 2)
    again = planted_pruner()
    if isinstance(change, dict):
        again = again.with_config(dataclasses.replace(again.pcfg, **change))
    elif change == "epochs":
        scfg = dataclasses.replace(scfg, epochs=(9, 24))
    elif change == "ablation":
        again.ablation.values = {h: v + 0.01 for h, v in again.ablation.values.items()}
    else:
        again = Pruner(again.model, again.train, planted_batch(32, 7), again.ablation, again.pcfg)
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        run_search(again, scfg, study_name="planted")
    run_search(planted_pruner(), search_config(storage, 2), study_name="planted")  # resumes


def test_a_final_circuit_above_its_target_is_an_error(monkeypatch):
    from sparse_lens.circuits import find

    planted = planted_pruner()
    pruner = planted.with_config(dataclasses.replace(planted.pcfg, steps=20))
    # a clean-up stage that broke the circuit (what a stale search's nodes did unnoticed)
    monkeypatch.setattr(find, "remove_nodes", lambda p, kept, score, n: ({}, 0))
    with pytest.raises(ValueError, match="above its target"):
        find.find_circuit(pruner, "none", cleanup=("nodes",))


def test_knockout_effects_with_removed_edges_equal_the_smaller_circuit():
    """A node knocked out on a circuit with removed edges: the edge hooks that share the
    node's hook point stay in place (regression: the edge's read hook was replaced)."""
    from sparse_lens.circuits.explain import circuit_knockouts as knockout_effects
    from sparse_lens.tasks.task import TaskBatch, task_loss

    model = build_model()
    g = torch.Generator().manual_seed(1)
    kept = {
        loc.hook: sorted(torch.randperm(loc.size, generator=g)[: loc.size // 2].tolist())
        for loc in node_locations(model.cfg)
    }
    abl = make_ablation("mean", model, random_tokens(8, 12, seed=3))
    full = Circuit.from_nodes(model, kept, abl.values, task="t")
    mlp_edges = [(s, t) for s, t, _ in full.edges if ".mlp.mlp_in." in s]  # read at mlp.hook_in
    removed = mlp_edges[:2]
    assert removed
    circuit = Circuit.from_nodes(model, kept, abl.values, task="t", removed_edges=removed)
    tokens = random_tokens(4, 9, seed=5)
    batch = TaskBatch(
        tokens=tokens,
        last=torch.full((4,), 8),
        correct=torch.tensor([1, 2, 3, 4]),
        incorrect=torch.tensor([5, 6, 7, 8]),
        contexts=["a", "b", "c", "d"],
    )
    node = removed[0][0]  # the source of a removed edge, on the shared read hook
    base, effects = knockout_effects(model, circuit, batch, labels=[node])
    ref = {r.label: r for r in circuit.node_refs(model.cfg)}[node]
    smaller_nodes = {
        h: [c for c in ch if (h, c) != (ref.hook, ref.channel)] for h, ch in kept.items()
    }
    still = [e for e in removed if node not in e]
    smaller = Circuit.from_nodes(model, smaller_nodes, abl.values, task="t", removed_edges=still)
    expected = task_loss(model, batch, smaller.fwd_hooks(model)) - base
    assert effects[node] == pytest.approx(expected, abs=1e-5)


def _shared_study_rounds(folder: Path, n_workers: int, rounds: int) -> list[str]:
    """``n_workers`` processes (``tests.study_worker``) open one new SQLite study together,
    ``rounds`` times; every failure, as the workers report it."""
    from tests.study_worker import PERIOD

    folder.mkdir()
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.study_worker", str(folder), str(r), str(rounds)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(n_workers)
    ]
    deadline = time.monotonic() + 180
    while len(list(folder.glob("ready.*"))) < n_workers and time.monotonic() < deadline:
        time.sleep(0.05)
    tmp = folder / "go.tmp"
    tmp.write_text(repr(time.time() + 0.5))
    tmp.rename(folder / "go")
    failures = []
    for proc in procs:
        out, err = proc.communicate(timeout=180 + rounds * PERIOD)
        assert proc.returncode == 0, err[-2000:]
        lines = [json.loads(line) for line in out.splitlines()]
        assert len(lines) == rounds, (out, err[-2000:])
        failures += [f"round {x['round']}: {x['outcome']}" for x in lines if x["outcome"] != "ok"]
    for i in range(rounds):
        study = optuna.load_study(study_name="shared", storage=f"sqlite:///{folder}/round{i}.db")
        assert len(study.trials) == n_workers  # one trial per worker, in one study
    return failures


@pytest.mark.parametrize("n_workers", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_workers_started_together_share_one_new_sqlite_study(tmp_path, n_workers):
    """Two (then, slow: four) processes open one new SQLite study at the same instant, 8 times:
    the schema and the study are created once (under a file lock), and every worker gets it
    (before the lock, 8 of 8 rounds of two workers failed: "table studies already exists")."""
    assert _shared_study_rounds(tmp_path / "w", n_workers, rounds=8) == []
