"""Dense GPT-2 as a TransformerBridge, bridges, their losses, hybrid passes, steering."""

import json
from dataclasses import replace

import pytest
import torch
from transformer_lens.model_bridge import TransformerBridge

from analyses.side_by_side import corresponding_heads, patching_pair, sink_profile
from analyses.steering import equal_length_pairs, pick_read_node, steering_curve
from sparse_lens import HookedSparseTransformer
from sparse_lens.bridges.maps import (
    BridgeConfig,
    Bridges,
    bridge_losses,
    bridge_sites,
    check_pair,
    hybrid_forward,
    kl_div,
    nmse,
)
from sparse_lens.data.tokenizer import Tokenizer, train_bpe
from sparse_lens.tasks.task import binary_logits, binary_task_loss, get_task, task_batch
from sparse_lens.training.dense_baseline import DenseConfig, load_dense, train_dense_hf
from tests.helpers import build_cfg, tiny_tokenizer

D = 16


class _Data:
    """A fake ``TokenData``: random windows from a fixed token stream."""

    def __init__(self, vocab: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.stream = torch.randint(0, vocab, (4000,), generator=g)

    def sample(self, batch_size: int, n_ctx: int, generator: torch.Generator) -> torch.Tensor:
        starts = torch.randint(0, len(self.stream) - n_ctx, (batch_size,), generator=generator)
        return torch.stack([self.stream[s : s + n_ctx] for s in starts.tolist()])

    def val_windows(self, n: int, n_ctx: int) -> torch.Tensor:
        return torch.stack([self.stream[i * n_ctx : (i + 1) * n_ctx] for i in range(n)])


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def dense(tok, tmp_path_factory):
    out = tmp_path_factory.mktemp("dense")
    cfg = DenseConfig(
        n_layers=2, d_model=D, n_heads=4, n_ctx=16, steps=3, batch_size=2, eval_every=3
    )
    train_dense_hf(cfg, _Data(tok.vocab_size), tok, out, progress=False)
    return out


def test_dense_training_resumes_to_the_same_weights(tok, tmp_path):
    from safetensors.torch import load_file

    cfg = DenseConfig(
        n_layers=1, d_model=D, n_heads=4, n_ctx=16, steps=6, batch_size=2, checkpoint_every=2
    )
    data = _Data(tok.vocab_size)
    rng = torch.get_rng_state()
    train_dense_hf(cfg, data, tok, tmp_path / "ref", progress=False)
    assert torch.equal(torch.get_rng_state(), rng)  # explicit generators: global RNG untouched
    train_dense_hf(cfg, data, tok, tmp_path / "cut", progress=False, halt_after=5)
    assert not (tmp_path / "cut" / "dense.json").exists()  # killed after step 5, saved at 4
    with pytest.raises(ValueError, match="already holds a run"):
        train_dense_hf(cfg, data, tok, tmp_path / "cut", progress=False)
    with pytest.raises(ValueError, match="other settings"):
        train_dense_hf(replace(cfg, lr=1e-3), data, tok, tmp_path / "cut", resume=True)
    train_dense_hf(cfg, data, tok, tmp_path / "cut", progress=False, resume=True)
    ref = load_file(tmp_path / "ref" / "model.safetensors")
    cut = load_file(tmp_path / "cut" / "model.safetensors")
    assert ref.keys() == cut.keys()
    for name, w in ref.items():
        assert torch.equal(w, cut[name]), name
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3, 4, 5, 6]
    assert not (tmp_path / "cut" / "checkpoint").exists()
    # finished: resume is a no-op, a plain call is refused
    train_dense_hf(cfg, data, tok, tmp_path / "cut", progress=False, resume=True)
    with pytest.raises(ValueError, match="already holds a run"):
        train_dense_hf(cfg, data, tok, tmp_path / "cut", progress=False)
    train_dense_hf(cfg, data, tok, tmp_path / "bad", progress=False, halt_after=3)
    (tmp_path / "bad" / "checkpoint" / "dense_trainer.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="is corrupt"):
        train_dense_hf(cfg, data, tok, tmp_path / "bad", progress=False, resume=True)


@pytest.fixture(scope="module")
def sparse(tok):
    return HookedSparseTransformer(build_cfg(d_vocab=tok.vocab_size), tokenizer=tok).eval()


def test_dense_is_a_real_transformer_bridge_built_offline(dense, tok, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = load_dense(dense)
    assert isinstance(model, TransformerBridge)
    assert (model.cfg.n_layers, model.cfg.d_model, model.cfg.d_vocab) == (2, D, tok.vocab_size)
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(dense).eval()
    x = torch.randint(0, tok.vocab_size, (2, 8))
    # compatibility mode centres the unembedding: logits move by a constant per position
    with torch.no_grad():
        ours, theirs = model(x).log_softmax(-1), hf(x).logits.log_softmax(-1)
    assert torch.allclose(ours, theirs, atol=1e-4)
    _, cache = model.run_with_cache(x)
    assert all(s in cache for s in bridge_sites(2))
    assert (dense / "dense.json").is_file() and (dense / "model.safetensors").is_file()


def test_load_dense_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_dense(tmp_path)


def test_bridge_shapes_and_abstopk():
    cfg = BridgeConfig(d_dense=12, d_sparse=D, n_layers=2, afrac=0.25)
    b = Bridges(cfg)
    h = torch.randn(3, 5, 12)
    z = b.encode("blocks.1.hook_resid_mid", h)
    enc = b.encoders[bridge_sites(2).index("blocks.1.hook_resid_mid")]
    pre = h @ enc.weight.T + enc.bias
    top = pre.abs().argsort(dim=-1, descending=True)[..., :4]  # the 4 largest magnitudes
    ref = torch.zeros_like(pre).scatter(-1, top, pre.gather(-1, top))
    assert cfg.k == 4
    torch.testing.assert_close(z, ref)
    dec = b.decoders[bridge_sites(2).index("blocks.0.hook_resid_pre")]
    torch.testing.assert_close(b.decode("blocks.0.hook_resid_pre", z), z @ dec.weight.T + dec.bias)
    with pytest.raises(KeyError, match="unknown bridge site"):
        b.encode("blocks.9.hook_resid_pre", h)
    with pytest.raises(ValueError, match="afrac"):
        BridgeConfig(d_dense=1, d_sparse=1, n_layers=1, afrac=0.0)


def test_nmse_and_kl_by_hand():
    t = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    p = torch.tensor([[1.0, 3.0], [3.0, 5.0]])
    # |p - t|^2 = 2; |t - mean|^2 = (1 + 4) * 2 = 10
    assert float(nmse(p, t)) == pytest.approx(0.2)
    a = torch.tensor([[0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0]])
    pa = torch.softmax(a, -1)
    expected = float((pa * (pa.log() - torch.log_softmax(b, -1))).sum())
    assert float(kl_div(a, b)) == pytest.approx(expected)
    assert float(kl_div(a, a)) == pytest.approx(0.0, abs=1e-7)


def test_identity_bridges_make_hybrids_equal_the_plain_models(dense, sparse, tok):
    dmodel = load_dense(dense)
    b = Bridges.identity(BridgeConfig(d_dense=D, d_sparse=D, n_layers=2, afrac=1.0))
    x = torch.randint(0, tok.vocab_size, (2, 8))
    with torch.no_grad():
        for site in b.sites:
            logits, cache = hybrid_forward(dmodel, dmodel, b, x, site, "d2s")
            assert torch.allclose(logits, dmodel(x), atol=1e-5)
            assert f"dense.{site}" in cache.cache_dict
            logits, _ = hybrid_forward(sparse, sparse, b, x, site, "s2d")
            assert torch.allclose(logits, sparse(x), atol=1e-5)


def test_loss_terms_against_hand_computation(dense, sparse, tok):
    dmodel = load_dense(dense)
    torch.manual_seed(0)
    b = Bridges(BridgeConfig(d_dense=D, d_sparse=D, n_layers=2))
    x = torch.randint(0, tok.vocab_size, (2, 8))
    out = bridge_losses(dmodel, sparse, b, x)
    with torch.no_grad():
        _, dc = dmodel.run_with_cache(x)
        s_logits, sc = sparse.run_with_cache(x)
        d_logits = dmodel(x)
        site = "blocks.1.hook_resid_pre"
        enc = b.encode(site, dc[site])
        assert out["per_site"][site]["nmse_d2s"] == pytest.approx(
            float(nmse(enc, sc[site])), rel=1e-5
        )
        dec = b.decode(site, sc[site])
        assert out["per_site"][site]["nmse_s2d"] == pytest.approx(
            float(nmse(dec, dc[site])), rel=1e-5
        )
        hyb = sparse.run_with_hooks(x, fwd_hooks=[(site, lambda a, hook: enc)])
        logits, cache = hybrid_forward(dmodel, sparse, b, x, site, "d2s")
        torch.testing.assert_close(logits, hyb)
        torch.testing.assert_close(cache[f"sparse.{site}"], enc)
        torch.testing.assert_close(cache[f"dense.{site}"], dc[site])
        assert torch.equal(sparse(x), s_logits)  # the replacement hook is gone again
        assert out["per_site"][site]["kl_d2s"] == pytest.approx(
            float(kl_div(d_logits, hyb)), rel=1e-4
        )
        ce = float(sparse(x, return_type="loss"))
    v = {k: float(out[k].detach()) for k in ("ce", "nmse", "kl_d2s", "kl_s2d", "total")}
    assert v["ce"] == pytest.approx(ce, rel=1e-5)
    per = out["per_site"]
    assert v["kl_s2d"] == pytest.approx(sum(p["kl_s2d"] for p in per.values()), rel=1e-5)
    assert v["total"] == pytest.approx(v["ce"] + v["nmse"] + v["kl_d2s"] + v["kl_s2d"], rel=1e-5)
    out["total"].backward()
    assert all(p.grad is not None for p in b.parameters())


def test_mismatched_pairs_are_refused(dense, tok):
    dmodel = load_dense(dense)
    other = HookedSparseTransformer(build_cfg(d_vocab=tok.vocab_size + 1))
    with pytest.raises(ValueError, match="vocabularies differ"):
        check_pair(dmodel, other)
    deeper = HookedSparseTransformer(build_cfg(d_vocab=tok.vocab_size, n_layers=3))
    with pytest.raises(ValueError, match="depths differ"):
        check_pair(dmodel, deeper)
    texts = [f"alpha_{i} = beta({i * 7}) or gamma[{i % 13}]\n" for i in range(600)]
    other_tok = train_bpe(texts, vocab_size=tok.vocab_size)
    stranger = HookedSparseTransformer(build_cfg(d_vocab=tok.vocab_size), tokenizer=other_tok)
    with pytest.raises(ValueError, match="different tokenizers"):
        check_pair(dmodel, stranger)
    b = Bridges(BridgeConfig(d_dense=8, d_sparse=D, n_layers=2))
    same = HookedSparseTransformer(build_cfg(d_vocab=tok.vocab_size), tokenizer=tok)
    with pytest.raises(ValueError, match="bridges are 8->16"):
        check_pair(dmodel, same, b)


def test_bridges_save_load(tmp_path):
    b = Bridges(BridgeConfig(d_dense=8, d_sparse=D, n_layers=1))
    b.save(tmp_path / "b")
    c = Bridges.load(tmp_path / "b")
    assert all(
        torch.equal(x, y)
        for x, y in zip(b.state_dict().values(), c.state_dict().values(), strict=True)
    )
    (tmp_path / "b" / "bridges.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError):
        Bridges.load(tmp_path / "b")


@pytest.fixture(scope="module")
def quote_batch(tok):
    return task_batch(get_task("single_double_quote"), tok, 16, "test", 16)


def test_steering_with_zero_strength_changes_nothing(dense, sparse, quote_batch, tok):
    dmodel = load_dense(dense)
    torch.manual_seed(1)
    b = Bridges(BridgeConfig(d_dense=D, d_sparse=D, n_layers=2))
    hook = "blocks.1.attn.hook_in"
    windows = torch.randint(0, tok.vocab_size, (4, 16))
    res = steering_curve(dmodel, sparse, b, quote_batch, hook, 3, windows, strengths=[0.0, 1.0])
    pairs = equal_length_pairs(quote_batch)
    a = torch.tensor([p[0] for p in pairs])
    bb = torch.tensor([p[1] for p in pairs])
    with torch.no_grad():
        logits = dmodel(quote_batch.tokens[a])
    probs = logits[torch.arange(len(a)), quote_batch.last[a]].softmax(-1)
    plain = float(probs[torch.arange(len(a)), quote_batch.correct[bb]].mean())
    assert res.p_target[0] == pytest.approx(plain, rel=1e-5)
    assert res.p_target_random[0] == pytest.approx(plain, rel=1e-5)
    assert res.n_pairs == len(pairs) > 0 and res.site == "blocks.1.hook_resid_pre"
    with pytest.raises(ValueError, match="residual-read"):
        steering_curve(dmodel, sparse, b, quote_batch, "blocks.1.mlp.hook_post", 0, windows)


def test_pick_read_node_finds_the_separating_channel(sparse, quote_batch):
    from analyses.steering import paired_batches

    # layer-0 attn_in reads the answer token's embedding alone (no positions): it cannot
    # separate the pairs, so the reads that see the context decide
    reads = ("blocks.0.attn.hook_in", "blocks.0.mlp.hook_in", "blocks.1.attn.hook_in")
    candidates = {h: list(range(D)) for h in reads} | {"blocks.0.hook_attn_out": [1]}
    hook, channel, score = pick_read_node(sparse, quote_batch, candidates)
    # reference: every candidate channel's |mean(b - a)| / std(b - a) at the answer position
    a, b = paired_batches(quote_batch)
    _, ca = sparse.run_with_cache(a.tokens)
    _, cb = sparse.run_with_cache(b.tokens)
    scores = {}
    for h in reads:
        for c in range(D):
            diff = torch.tensor(
                [
                    float(cb[h][i, b.last[i], c]) - float(ca[h][i, a.last[i], c])
                    for i in range(len(a))
                ]
            )
            scores[h, c] = float(diff.mean().abs() / (diff.std() + 1e-6))
    best = max(scores, key=scores.get)
    ranked = sorted(scores.values())
    assert ranked[-1] > ranked[-2] + 1e-3  # a clear winner
    assert (hook, channel) == best
    assert score == pytest.approx(scores[best], rel=1e-4)
    with pytest.raises(ValueError, match="no residual-read"):
        pick_read_node(sparse, quote_batch, {"blocks.0.hook_attn_out": [1]})


def test_side_by_side_patching_and_sinks(dense, sparse, quote_batch, tok):
    dmodel = load_dense(dense)
    windows = torch.randint(0, tok.vocab_size, (4, 16))
    for model, learned in ((sparse, True), (dmodel, False)):
        res = patching_pair(model, quote_batch)
        assert res["resid_pre"].shape[0] == 2 and res["head_out"].shape == (2, 4)
        # at layer 0 the residual is the embedding: where every pair's tokens agree, patching
        # it changes nothing (metric 0 = the corrupted run)
        pairs = equal_length_pairs(quote_batch)
        a = quote_batch.tokens[[p[0] for p in pairs]]
        b = quote_batch.tokens[[p[1] for p in pairs]]
        width = res["resid_pre"].shape[1]
        same = (a[:, :width] == b[:, :width]).all(dim=0)
        assert same.any() and not same.all()
        assert torch.allclose(res["resid_pre"][0, same], torch.zeros(int(same.sum())), atol=1e-4)
        # one head-out entry recomputed: head (1, 2)'s clean z patched into the corrupted run,
        # the logit difference normalised so 0 = corrupted and 1 = clean
        with torch.no_grad():
            _, clean_cache = model.run_with_cache(a)

            def ld(tokens, hooks=(), model=model, pairs=pairs):
                lg = model.run_with_hooks(tokens, fwd_hooks=list(hooks))
                rows = torch.tensor([p[0] for p in pairs])
                last = lg[torch.arange(len(pairs)), quote_batch.last[rows]]
                right, wrong = quote_batch.correct[rows], quote_batch.incorrect[rows]
                return float(
                    (last.gather(1, right[:, None]) - last.gather(1, wrong[:, None])).mean()
                )

            def put(z, hook, clean_cache=clean_cache):
                z = z.clone()
                z[:, :, 2] = clean_cache["blocks.1.attn.hook_z"][:, :, 2]
                return z

            clean_ld, corrupt_ld = ld(a), ld(b)
            patched = ld(b, [("blocks.1.attn.hook_z", put)])
        assert res["clean_logit_diff"] == pytest.approx(clean_ld, abs=1e-5)
        expected = (patched - corrupt_ld) / (clean_ld - corrupt_ld)
        assert float(res["head_out"][1, 2]) == pytest.approx(expected, abs=1e-4)
        prof = sink_profile(model, quote_batch, windows, learned=learned)
        # references: a learned sink's probability, or a dense head's attention to position 0
        name = "hook_sink_prob" if learned else "hook_pattern"

        def sink_probs(tokens, name=name, model=model, learned=learned):
            _, c = model.run_with_cache(tokens)
            return [
                c[f"blocks.{i}.attn.{name}"][..., 0]
                if not learned
                else c[f"blocks.{i}.attn.{name}"]
                for i in range(2)
            ]  # per layer [batch head pos]

        corpus = torch.stack([p.mean(dim=(0, 2)) for p in sink_probs(windows)])
        torch.testing.assert_close(prof["corpus_sink_mass"], corpus)
        task = sink_probs(quote_batch.tokens)
        for layer in range(2):
            for head in range(4):
                x = torch.stack([task[layer][i, head, quote_batch.last[i]] for i in range(16)])
                assert float(prof["task_sink_mass"][layer, head]) == pytest.approx(float(x.mean()))
                y = (quote_batch.correct == quote_batch.correct[0]).float()
                xc, yc = x - x.mean(), y - y.mean()
                r = float((xc * yc).sum() / (xc.norm() * yc.norm()))
                assert float(prof["threshold_score"][layer, head]) == pytest.approx(
                    abs(r), abs=1e-4
                )
    # removing a learned sink equals setting its logit to -inf
    block = sparse.blocks[1].attn
    saved = block.sinks.data.clone()
    base = sink_profile(sparse, quote_batch, windows, learned=True)
    try:
        block.sinks.data[2] = -torch.inf
        with torch.no_grad():
            logits = sparse(quote_batch.tokens)
        loss = float(binary_task_loss(binary_logits(logits, quote_batch)).mean())
    finally:
        block.sinks.data.copy_(saved)
    assert base["removal_effect"][1, 2] == pytest.approx(loss - base["task_loss"], abs=1e-5)


def test_fit_and_joint_training_update_the_right_parameters(dense, tok):
    from sparse_lens.bridges.train import fit_bridges, train_bridged
    from sparse_lens.training.sparse import TrainConfig

    dmodel = load_dense(dense)
    data = _Data(tok.vocab_size)
    sparse = HookedSparseTransformer(
        build_cfg(d_vocab=tok.vocab_size, weight_density=0.5), tokenizer=tok
    )
    b = Bridges(BridgeConfig(d_dense=D, d_sparse=D, n_layers=2))
    before_s = {k: v.clone() for k, v in sparse.state_dict().items()}
    before_b = [p.clone() for p in b.parameters()]
    recs = fit_bridges(dmodel, sparse, b, data, steps=2, batch_size=2, progress=False)
    assert len(recs) == 2 and all(r["nmse"] > 0 for r in recs)
    assert all(torch.equal(v, sparse.state_dict()[k]) for k, v in before_s.items())
    assert any(not torch.equal(p, q) for p, q in zip(before_b, b.parameters(), strict=True))
    assert all(p.requires_grad for p in sparse.parameters())  # unfrozen afterwards
    tcfg = TrainConfig(steps=3, batch_size=2, anneal_end=0.5, eval_every=3, log_every=1)
    recs = train_bridged(dmodel, sparse, b, data, tcfg, progress=False)
    assert len(recs) == 3
    assert not torch.equal(before_s["blocks.0.attn.W_Q"], sparse.blocks[0].attn.W_Q)
    density = float((sparse.blocks[0].mlp.W_in != 0).float().mean())
    assert density == pytest.approx(0.5, abs=0.02)  # the sparse recipe's projection still holds
    assert all(p.grad is None or p.requires_grad is False for p in dmodel.parameters())


def _fresh_pair(tok):
    sparse = HookedSparseTransformer(
        build_cfg(d_vocab=tok.vocab_size, weight_density=0.5), tokenizer=tok
    )
    torch.manual_seed(3)
    return sparse, Bridges(BridgeConfig(d_dense=D, d_sparse=D, n_layers=2))


@pytest.mark.parametrize("loop", ["fit", "joint"])
def test_bridge_loops_resume_to_the_same_result(dense, tok, tmp_path, loop):
    from sparse_lens.bridges.train import Checkpointing, fit_bridges, train_bridged
    from sparse_lens.training.sparse import TrainConfig

    dmodel = load_dense(dense)
    data = _Data(tok.vocab_size)
    tcfg = TrainConfig(steps=5, batch_size=2, anneal_end=0.5)

    def run(ckpt):
        sparse, bridges = _fresh_pair(tok)
        if loop == "fit":
            kw = dict(steps=5, batch_size=2, init_windows=4, progress=False, checkpoint=ckpt)
            recs = fit_bridges(dmodel, sparse, bridges, data, **kw)
        else:
            recs = train_bridged(
                dmodel, sparse, bridges, data, tcfg, progress=False, checkpoint=ckpt
            )
        return sparse, bridges, recs

    ref_sparse, ref_bridges, ref_recs = run(None)
    path = tmp_path / "checkpoint" / "trainer.pt"
    _, _, cut = run(Checkpointing(path=path, every=2, halt_after=3))  # killed after 3, saved at 2
    assert len(cut) == 3 and path.exists()
    with pytest.raises(ValueError, match="already holds a run"):
        run(Checkpointing(path=path, every=2))
    sparse, bridges, recs = run(Checkpointing(path=path, every=2, resume=True))
    assert recs == ref_recs and [r["step"] for r in recs] == [1, 2, 3, 4, 5]
    for a, b in ((ref_bridges, bridges), (ref_sparse, sparse)):
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(x, y), name
    if loop == "joint":  # other settings: refused
        tcfg = TrainConfig(steps=6, batch_size=2, anneal_end=0.5)
        with pytest.raises(ValueError, match="other settings"):
            run(Checkpointing(path=path, every=2, resume=True))


def test_least_squares_init_recovers_a_linear_map():
    torch.manual_seed(0)
    b = Bridges(BridgeConfig(d_dense=6, d_sparse=5, n_layers=1, afrac=1.0))
    x = torch.randn(400, 6)
    true = torch.randn(6, 5)
    y = x @ true + 0.5
    resid_d = {s: x for s in b.sites}
    resid_s = {s: y for s in b.sites}
    b.init_least_squares(resid_d, resid_s, ridge=1e-9)
    site = b.sites[0]
    with torch.no_grad():
        assert torch.allclose(b.encode(site, x), y, atol=1e-3)
        # 5 dims cannot carry 6: the decoder keeps the best 5-dim linear reconstruction
        assert 0.05 < float(nmse(b.decode(site, y), x)) < 0.4


def test_corresponding_heads_of_a_model_and_itself(sparse, quote_batch):
    pairs = corresponding_heads(sparse, sparse, quote_batch, top=4)
    assert len(pairs) == 4
    assert all(s == d and sim == pytest.approx(1.0, abs=1e-5) for s, d, sim in pairs)
