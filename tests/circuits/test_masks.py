"""Pruning: STE, clamping, bisection, ablations, circuits, and a planted ground-truth circuit."""

import json

import pytest
import torch
from jaxtyping import TypeCheckError

from sparse_lens import HookedSparseTransformer, SparseTransformerConfig
from sparse_lens.circuits.ablation import ablation_means, make_ablation
from sparse_lens.circuits.circuit import Circuit, circuit_edges
from sparse_lens.circuits.masks import PruneConfig, Pruner, heaviside_ste
from sparse_lens.circuits.nodes import node_locations
from sparse_lens.tasks.task import TaskBatch, concat_batches

A, B, ANS_A, ANS_B, BOS = 1, 2, 3, 4, 0
FILLERS = list(range(5, 16))


def planted_model(norm_channels: bool = False) -> HookedSparseTransformer:
    """One layer; head 0 copies the quote type of the marker token (A or B) to the last position.

    Residual channels: 0 = quote type (+1 A, -1 B, random sign on fillers), 1 = "is a marker",
    2 = the head's output read by the unembedding; 3-7 are distractors used by head 1 and the MLP.

    ``norm_channels`` adds two channels for the norm-cheating checks: 8 = an "anchor" of
    magnitude 8, + on even token ids and - on odd (mean near 0), which dominates the final RMS and which no task
    reads (a faithful circuit keeps it at the final residual: ablated to its mean, the final
    norm would amplify everything else); 9 = a weak copy of the head's output (0.35 x), read by
    the unembedding like channel 2. A circuit keeping only the weak copy and not the anchor
    reaches the target only through the final norm's amplification (``CHEATING``).
    """
    cfg = SparseTransformerConfig(
        d_model=10 if norm_channels else 8,
        d_head=4,
        n_heads=2,
        n_layers=1,
        d_mlp=8,
        d_vocab=16,
        n_ctx=12,
        afrac=1.0,
        attn_sinks=False,
        use_bigram_table=False,
        seed=0,
    )
    model = HookedSparseTransformer(cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.ln_final.w.fill_(1)
        model.blocks[0].ln1.w.fill_(1)
        model.blocks[0].ln2.w.fill_(1)
        W_E = model.embed.W_E
        W_E[A, :2] = torch.tensor([1.0, 1.0])
        W_E[B, :2] = torch.tensor([-1.0, 1.0])
        W_E[BOS, 3] = 1.0
        for t in FILLERS:
            W_E[t, 0] = 1.0 if torch.rand(1, generator=g) < 0.5 else -1.0
            W_E[t, 3:8] = torch.randn(5, generator=g)
        attn = model.blocks[0].attn
        attn.b_Q[0, 0] = 3.0  # constant query
        attn.W_K[0, 1, 0] = 1.0  # key: the marker channel (not saturated, so gradients flow)
        attn.W_V[0, 0, 0] = 1.0  # value: the quote-type channel
        attn.W_O[0, 0, 2] = 1.0  # write to channel 2
        # distractor head 1 and MLP on channels 3-7
        attn.W_Q[1, 3:8, :] = torch.randn(5, 4, generator=g)
        attn.W_K[1, 3:8, :] = torch.randn(5, 4, generator=g)
        attn.W_V[1, 3:8, :] = torch.randn(5, 4, generator=g)
        attn.W_O[1, :, 4:8] = torch.randn(4, 4, generator=g) * 0.5
        mlp = model.blocks[0].mlp
        mlp.W_in[3:8, :] = torch.randn(5, 8, generator=g)
        mlp.W_out[:, 5:8] = torch.randn(8, 3, generator=g) * 0.5
        model.unembed.W_U[2, ANS_A] = 3.0
        model.unembed.W_U[2, ANS_B] = -3.0
        model.unembed.W_U[3:8, 5:] = torch.randn(5, 11, generator=g)
        if norm_channels:
            W_E[:, 8] = 8.0 * (1 - 2 * (torch.arange(cfg.d_vocab) % 2))  # +8 even ids, -8 odd
            attn.b_Q[0, 0] = 24.0  # the anchor dilutes the normalised marker: a sharper query
            attn.W_O[0, 0, 9] = 0.35  # the weak copy
            model.unembed.W_U[2, ANS_A], model.unembed.W_U[2, ANS_B] = 16.0, -16.0
            model.unembed.W_U[9, ANS_A], model.unembed.W_U[9, ANS_B] = 16.0, -16.0
    return model.eval()


def planted_batch(n_pairs: int, seed: int) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    rows, correct, incorrect = [], [], []
    for _ in range(n_pairs):
        fill = torch.tensor(FILLERS)[torch.randint(0, len(FILLERS), (9,), generator=g)]
        for marker, right, wrong in ((A, ANS_A, ANS_B), (B, ANS_B, ANS_A)):
            rows.append(torch.cat([torch.tensor([BOS, marker]), fill]))
            correct.append(right)
            incorrect.append(wrong)
    tokens = torch.stack(rows)
    return TaskBatch(
        tokens=tokens,
        last=torch.full((len(rows),), tokens.shape[1] - 1),
        correct=torch.tensor(correct),
        incorrect=torch.tensor(incorrect),
        contexts=[str(r.tolist()) for r in rows],
    )


def pretrain_windows(n: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(9)
    vocab = torch.tensor([A, B, *FILLERS])
    return vocab[torch.randint(0, len(vocab), (n, 12), generator=g)]


PLANTED = {
    "blocks.0.attn.hook_in": [0, 1],
    "blocks.0.attn.hook_k": [0],
    "blocks.0.attn.hook_v": [0],
    "blocks.0.hook_attn_out": [2],
    "blocks.0.hook_resid_post": [2],
}


def test_planted_model_solves_its_task():
    model = planted_model()
    batch = planted_batch(16, 0)
    logits = model(batch.tokens)[:, -1]
    assert (logits[:, ANS_A] - logits[:, ANS_B]).sign().tolist() == [1.0, -1.0] * 16


@pytest.fixture(scope="module")
def planted_result():
    model = planted_model()
    train, val = planted_batch(64, 1), planted_batch(32, 2)
    ablation = make_ablation("mean", model, pretrain_windows())
    pcfg = PruneConfig(
        steps=150, lr=0.01, k_coef=1e-3, batch_pairs=16, calibrate=True, freeze_norms=False
    )  # live norms: the references below recompute them
    return model, Pruner(model, train, val, ablation, pcfg).run()


def test_pruning_recovers_the_planted_circuit(planted_result):
    model, result = planted_result
    kept = {h: idx for h, idx in result.kept.items() if idx}
    for hook, idx in PLANTED.items():
        assert set(idx) <= set(kept.get(hook, [])), (hook, kept)
    n_planted = sum(len(v) for v in PLANTED.values())
    assert n_planted <= result.k <= n_planted + 2, kept
    edges = {(s, d) for s, d, _ in circuit_edges(model, result.kept)}
    planted_edges = {
        ("0.attn.attn_in.1", "0.attn.k.h0.c0"),
        ("0.attn.attn_in.0", "0.attn.v.h0.c0"),
        ("0.attn.v.h0.c0", "0.attn.attn_out.2"),
    }
    assert planted_edges <= edges
    assert len(edges) <= len(planted_edges) + 2
    assert result.loss <= 0.15


# The planted model's node locations, in forward order, and their channel counts.
PLANTED_LOCS = {
    "blocks.0.attn.hook_in": 8,
    "blocks.0.attn.hook_q": 8,
    "blocks.0.attn.hook_k": 8,
    "blocks.0.attn.hook_v": 8,
    "blocks.0.hook_attn_out": 8,
    "blocks.0.mlp.hook_in": 8,
    "blocks.0.mlp.hook_post": 8,
    "blocks.0.hook_mlp_out": 8,
    "blocks.0.hook_resid_post": 8,
}

PLANTED_LOCS_ALL = {h: list(range(n)) for h, n in PLANTED_LOCS.items()}


def plain_circuit_loss(model, batch, kept, baselines, frozen_scales=False) -> float:
    """Reference task loss of a circuit, written with plain indexing hooks: channels not in
    ``kept[hook]`` take ``baselines[hook]`` (``[channels]`` or ``[batch pos channels]``); with
    ``frozen_scales`` every RMSNorm scale is the full model's on the same tokens."""
    hooks = []
    if frozen_scales:
        scales = {}
        names = [n for n in model.hook_dict if n.endswith("hook_scale")]
        record = [(n, lambda a, hook: scales.__setitem__(hook.name, a.clone())) for n in names]
        with torch.no_grad():
            model.run_with_hooks(batch.tokens, fwd_hooks=record)
        hooks += [(n, lambda a, hook: scales[hook.name]) for n in names]

    def replace(a, hook):
        x = a.reshape(*a.shape[:2], -1).clone()
        base = baselines[hook.name].expand_as(x)
        removed = [c for c in range(x.shape[-1]) if c not in kept.get(hook.name, [])]
        x[..., removed] = base[..., removed]
        return x.reshape(a.shape)

    hooks += [(h, replace) for h in PLANTED_LOCS]
    with torch.no_grad():
        logits = model.run_with_hooks(batch.tokens, fwd_hooks=hooks)
    last = logits[torch.arange(len(batch)), batch.last]
    pair = torch.stack(
        [last.gather(1, batch.correct[:, None]), last.gather(1, batch.incorrect[:, None])]
    )
    return float(-pair.squeeze(-1).T.log_softmax(-1)[:, 0].mean())


def top_k_kept(taus, k) -> dict[str, list[int]]:
    """The k nodes of largest tau (ties: forward order), by a plain sort."""
    ranked = sorted(
        ((-float(t), i, h, c) for i, h in enumerate(PLANTED_LOCS) for c, t in enumerate(taus[h])),
    )[:k]
    return {h: sorted(c for _, _, hh, c in ranked if hh == h) for h in PLANTED_LOCS}


def test_bisection_finds_the_smallest_passing_k(planted_result):
    model, result = planted_result
    target = 0.15
    curve = dict(result.curve)
    assert sum(len(v) for v in result.kept.values()) == result.k
    assert result.kept == top_k_kept(result.taus, result.k)
    means = ablation_means(model, pretrain_windows())
    val = planted_batch(32, 2)
    # the chosen k passes, k - 1 (bisection's last failing point) fails, both recomputed
    loss_k = plain_circuit_loss(model, val, result.kept, means)
    assert result.loss == pytest.approx(loss_k, abs=1e-5) and loss_k <= target
    assert curve[result.k] == pytest.approx(loss_k, abs=1e-5)
    assert result.k - 1 in curve
    loss_below = plain_circuit_loss(model, val, top_k_kept(result.taus, result.k - 1), means)
    assert curve[result.k - 1] == pytest.approx(loss_below, abs=1e-5) and loss_below > target
    # every evaluated point is on the right side of the answer (a monotone curve is found)
    assert all(loss > target for k, loss in curve.items() if k < result.k)
    assert result.full_loss == pytest.approx(
        plain_circuit_loss(model, val, PLANTED_LOCS_ALL, means)
    )


def test_bisection_on_a_monotone_curve():
    model = planted_model()
    pruner = Pruner(
        model,
        planted_batch(4, 1),
        planted_batch(4, 2),
        make_ablation("zero", model, pretrain_windows()),
        PruneConfig(),
    )
    losses = {k: 1.0 / (1 + k) for k in range(pruner.n_nodes + 1)}  # monotone decreasing
    taus = {loc.hook: torch.randn(loc.size) for loc in pruner.locs}
    for target in (0.5, 0.1, 0.02):
        at = pruner.with_config(PruneConfig(target_loss=target))
        at.loss_of = lambda masks, batch=None: losses[int(sum(m.sum() for m in masks.values()))]
        k, loss, _ = at.bisect(taus)
        assert losses[k] <= target < losses[k - 1]


def test_heaviside_ste_forward_and_surrogate_gradient():
    tau = torch.tensor([-0.5, 0.0, 0.3], requires_grad=True)
    out = heaviside_ste(tau, 2.0)
    assert out.tolist() == [0.0, 1.0, 1.0]
    out.sum().backward()
    s = torch.sigmoid(tau.detach() / 2.0)
    torch.testing.assert_close(tau.grad, s * (1 - s) / 2.0)


def test_taus_are_clamped(planted_result):
    _, result = planted_result
    for t in result.taus.values():
        assert t.min() >= -1.0 and t.max() <= 1.0


def test_ablation_kinds():
    model = planted_model()
    windows = pretrain_windows()
    means = ablation_means(model, windows)
    _, cache = model.run_with_cache(windows)
    torch.testing.assert_close(means["blocks.0.mlp.hook_post"], cache["post", 0].mean(dim=(0, 1)))
    torch.testing.assert_close(
        means["blocks.0.attn.hook_v"], cache["v", 0].flatten(-2).mean(dim=(0, 1))
    )
    zero = make_ablation("zero", model, windows)
    assert all(float(v.abs().sum()) == 0 for v in zero.values.values())
    batch = concat_batches(planted_batch(4, 1), planted_batch(4, 2), BOS)
    res = make_ablation("resample", model, windows, batch)
    assert res.values["blocks.0.hook_attn_out"].shape == (16, 11, 8)
    # Without the test run's type checker the library raises ValueError; with it (jaxtyping +
    # beartype) the Literal-typed argument is refused first, naming the parameter.
    with pytest.raises((ValueError, TypeCheckError), match="kind|ablation must be"):
        make_ablation("bogus", model, windows)
    with pytest.raises((ValueError, TypeCheckError), match="ablation"):
        PruneConfig(ablation="bogus")


def test_means_are_cached(tmp_path):
    model = planted_model()
    first = ablation_means(model, pretrain_windows(), tmp_path)
    assert len(list(tmp_path.glob("means-*.safetensors"))) == 1
    again = ablation_means(model, pretrain_windows(), tmp_path)
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_resample_and_frozen_norm_pruning_run():
    model = planted_model()
    train, val = planted_batch(16, 1), planted_batch(8, 2)
    abl = make_ablation("resample", model, pretrain_windows(), concat_batches(train, val, BOS))
    # resample values: each row holds the activations of one pretraining window (cut to 11)
    _, cache = model.run_with_cache(pretrain_windows()[:, :11])
    for row in range(len(train) + len(val)):
        out = abl.values["blocks.0.hook_resid_post"][row]
        (w,) = [w for w in range(64) if torch.allclose(cache["resid_post", 0][w], out, atol=1e-6)]
        for hook in PLANTED_LOCS:
            torch.testing.assert_close(abl.values[hook][row], cache[hook][w].flatten(1))
    target = 0.5
    result = Pruner(
        model,
        train,
        val,
        abl,
        PruneConfig(steps=20, lr=0.03, ablation="resample", target_loss=target, freeze_norms=False),
    ).run()
    # The validation rows are ablated with the val part of the resample values (after train's).
    val_values = {h: v[len(train) :] for h, v in abl.values.items()}
    loss = plain_circuit_loss(model, val, result.kept, val_values)
    assert result.loss == pytest.approx(loss, abs=1e-5) and loss <= target
    smaller = top_k_kept(result.taus, result.k - 1)
    assert plain_circuit_loss(model, val, smaller, val_values) > target
    assert 0 < result.k < sum(PLANTED_LOCS.values())

    mean = make_ablation("mean", model, pretrain_windows())
    frozen = Pruner(
        model,
        train,
        val,
        mean,
        PruneConfig(steps=20, lr=0.03, freeze_norms=True, target_loss=target),
    ).run()
    loss = plain_circuit_loss(model, val, frozen.kept, mean.values, frozen_scales=True)
    assert frozen.loss == pytest.approx(loss, abs=1e-5) and loss <= target
    smaller = top_k_kept(frozen.taus, frozen.k - 1)
    assert plain_circuit_loss(model, val, smaller, mean.values, frozen_scales=True) > target
    # freezing matters here: the same nodes with live norms give another loss
    assert abs(plain_circuit_loss(model, val, frozen.kept, mean.values) - loss) > 1e-3


def _circuit(model, result) -> Circuit:
    ablation = make_ablation("mean", model, pretrain_windows())
    return Circuit.from_nodes(
        model,
        result.kept,
        ablation.values,
        task="planted",
        loss=result.loss,
        full_loss=result.full_loss,
        curve=result.curve,
    )


def test_circuit_json_round_trip_hooks_and_to_model(planted_result, tmp_path):
    model, result = planted_result
    circuit = _circuit(model, result)
    path = circuit.save(tmp_path / "c.json")
    loaded = Circuit.load(path)
    assert loaded == circuit
    assert json.loads(path.read_text())["n_edges"] == circuit.n_edges
    batch = planted_batch(8, 3)
    hooked = model.run_with_hooks(batch.tokens, fwd_hooks=loaded.fwd_hooks(model))
    assert all(not hp.fwd_hooks for hp in model.hook_dict.values())
    standalone = loaded.to_model(model)
    torch.testing.assert_close(standalone(batch.tokens), hooked, atol=1e-5, rtol=1e-5)
    standalone.save_pretrained(tmp_path / "m")
    reloaded = HookedSparseTransformer.from_pretrained(tmp_path / "m")
    torch.testing.assert_close(reloaded(batch.tokens), hooked, atol=1e-5, rtol=1e-5)
    # a different model is refused
    other = planted_model()
    with torch.no_grad():
        other.unembed.W_U[2, ANS_A] = 4.0
    with pytest.raises(ValueError, match="extracted from model"):
        loaded.fwd_hooks(other)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="circuit_version"):
        Circuit.load(tmp_path / "bad.json")


def test_to_model_matches_hooks_under_abstopk():
    """With AbsTopK at every site, folding alone would not be exact; overrides make it so."""
    from tests.helpers import build_model, random_tokens

    model = build_model()
    g = torch.Generator().manual_seed(0)
    locs = node_locations(model.cfg)
    kept = {
        loc.hook: sorted(torch.randperm(loc.size, generator=g)[: loc.size // 2].tolist())
        for loc in locs
    }
    abl = make_ablation("mean", model, random_tokens(8, 12, seed=3))
    circuit = Circuit.from_nodes(model, kept, abl.values, task="t")
    tokens = random_tokens(3, 9, seed=4)
    hooked = model.run_with_hooks(tokens, fwd_hooks=circuit.fwd_hooks(model))
    torch.testing.assert_close(circuit.to_model(model)(tokens), hooked, atol=1e-5, rtol=1e-5)
    assert (hooked - model(tokens)).abs().max() > 1e-3  # the circuit differs from the model


def test_full_model_that_cannot_reach_target_is_an_error():
    model = planted_model()
    pruner = Pruner(
        model,
        planted_batch(4, 1),
        planted_batch(4, 2),
        make_ablation("mean", model, pretrain_windows()),
        PruneConfig(target_loss=1e-9, steps=2),
    )
    with pytest.raises(ValueError, match="even keeping every node"):
        pruner.run()


PLANTED_EDGES = {
    ("0.attn.attn_in.1", "0.attn.k.h0.c0"),
    ("0.attn.attn_in.0", "0.attn.v.h0.c0"),
    ("0.attn.v.h0.c0", "0.attn.attn_out.2"),
}


def test_optuna_search_and_cleanup_recover_exactly_the_planted_circuit():
    """Through the Optuna path, the node clean-up and the edge clean-up: a spurious small
    weight between two planted nodes (attn_in.0 -> k.h0.c0) is an edge the clean-up drops."""
    from sparse_lens.circuits.find import find_circuit
    from sparse_lens.circuits.hparam_search import SearchConfig

    model = planted_model()
    with torch.no_grad():
        model.blocks[0].attn.W_K[0, 0, 0] = 0.01
    ablation = make_ablation("mean", model, pretrain_windows())
    pcfg = PruneConfig(batch_pairs=16, calibrate=False)
    pruner = Pruner(model, planted_batch(64, 1), planted_batch(32, 2), ablation, pcfg)
    scfg = SearchConfig(trials=6, epochs=(8, 24), n_startup_trials=3)
    found = find_circuit(pruner, "optuna", scfg, ("nodes", "edges"))
    assert {h: v for h, v in found.kept.items() if v} == PLANTED
    spurious = ("blocks.0.attn.hook_in", 0, "blocks.0.attn.hook_k", 0)
    assert found.removed_edges == [spurious]
    circuit = Circuit.from_nodes(
        model,
        found.kept,
        ablation.values,
        task="planted",
        removed_edges=[("0.attn.attn_in.0", "0.attn.k.h0.c0")],
    )
    assert {(s, d) for s, d, _ in circuit.edges} == PLANTED_EDGES
    assert [s.stage for s in found.stages] == ["bisection", "nodes", "edges"]
    assert found.stages[-1].edges == 3 and found.stages[-1].nodes == 6
    assert all(s.val_loss <= 0.15 for s in found.stages)
    assert found.search["complete"] + found.search["pruned"] == 6


def test_training_hooks_equal_node_mask_hooks():
    """The once-installed training hooks compute what ``mask_hooks`` (``node_mask``) does."""
    from sparse_lens.circuits.masks import MaskHolder, mask_hooks

    model = planted_model()
    batch = planted_batch(4, 3)
    ablation = make_ablation("mean", model, pretrain_windows())
    pruner = Pruner(model, batch, batch, ablation, PruneConfig())
    g = torch.Generator().manual_seed(0)
    masks = {loc.hook: (torch.rand(loc.size, generator=g) > 0.5).float() for loc in pruner.locs}
    live = MaskHolder(pruner.locs, ablation)
    live.set(masks, None, batch.tokens.shape[1])
    with model.hooks(fwd_hooks=live.hooks()):
        ours = model(batch.tokens)
    ref = model.run_with_hooks(batch.tokens, fwd_hooks=mask_hooks(masks, ablation))
    torch.testing.assert_close(ours, ref)
    assert all(not hp.fwd_hooks for hp in model.hook_dict.values())


def test_epochs_and_tied_qk_masks():
    model = planted_model()
    train, val = planted_batch(10, 1), planted_batch(4, 2)
    ablation = make_ablation("mean", model, pretrain_windows())
    pcfg = PruneConfig(epochs=3, batch_pairs=4, tie_qk=True, steps=1000)
    pruner = Pruner(model, train, val, ablation, pcfg)
    assert pruner.n_steps() == 3 * 3  # ceil(10 / 4) steps per epoch; steps is ignored
    rows = list(pruner._pair_batches(torch.Generator().manual_seed(0)))
    first_epoch = torch.cat(rows[:3])
    assert sorted(first_epoch.tolist()) == list(range(20))  # every pair once per epoch
    taus, losses = pruner.learn_masks()
    assert len(losses) == 9
    assert torch.equal(taus["blocks.0.attn.hook_k"], taus["blocks.0.attn.hook_q"])
    for k in (1, 3, 7):
        masks = pruner.masks_from_ranking(taus, k)
        assert torch.equal(masks["blocks.0.attn.hook_k"], masks["blocks.0.attn.hook_q"])
    with pytest.raises(ValueError, match="warmup_frac"):
        PruneConfig(warmup_frac=1.5)


def test_pruning_and_circuits_follow_the_models_dtype():
    """float32 masks and ablation means on a float64 model: mask training, the circuit's hooks
    and its baked-in overrides all run in float64 (masks move to the activation's dtype)."""
    from hooks import flat
    from sparse_lens.circuits.masks import MaskHolder

    model32 = planted_model()
    model = HookedSparseTransformer(model32.cfg.replace(dtype=torch.float64))
    model.load_state_dict(model32.state_dict())
    model.eval()
    ablation = make_ablation("mean", model, pretrain_windows())
    assert ablation.values["blocks.0.attn.hook_in"].dtype == torch.float32
    pruner = Pruner(model, planted_batch(8, 1), planted_batch(8, 2), ablation, PruneConfig(steps=4))
    taus, losses = pruner.learn_masks()
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    assert all(t.dtype == torch.float32 for t in taus.values())
    circuit = Circuit.from_nodes(model, PLANTED, ablation.values, task="planted")
    tokens = planted_batch(4, 3).tokens
    hooked = model.run_with_hooks(tokens, fwd_hooks=circuit.fwd_hooks(model))
    assert hooked.dtype == torch.float64
    torch.testing.assert_close(circuit.to_model(model)(tokens), hooked)
    # the training hooks put masks and means on the activation's device and dtype
    live = MaskHolder(pruner.locs, ablation)
    live.set(pruner.masks_of(taus), None, tokens.shape[1])
    (name, hook), loc = live.hooks()[0], pruner.locs[0]
    meta = torch.empty(4, tokens.shape[1], loc.size, dtype=torch.bfloat16, device="meta")
    out = hook(meta, model.hook_dict[name])
    assert out.device.type == "meta" and out.dtype == torch.bfloat16
    assert flat(out, loc.size).shape == meta.shape
