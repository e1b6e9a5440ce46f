import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch

from analyses.cli import main as cli_main
from hooks.weight_sparsity import normalize_grad_rms_
from sparse_lens import HookedSparseTransformer, SparseTransformerConfig
from sparse_lens.data.corpus import stdlib_root
from sparse_lens.model.sparsity import param_role
from sparse_lens.training.sparse import TrainConfig, densities_at, train, train_step


def make_model(tokenizer, **kw):
    cfg = SparseTransformerConfig(
        d_model=32,
        d_head=8,
        n_heads=4,
        n_layers=2,
        d_mlp=64,
        n_ctx=16,
        d_vocab=tokenizer.vocab_size,
        weight_density=0.25,
        embed_density=0.5,
        seed=0,
    ).replace(**kw)
    return HookedSparseTransformer(cfg, tokenizer=tokenizer)


TCFG = TrainConfig(
    steps=12, batch_size=4, lr=1e-2, eval_every=4, checkpoint_every=4, log_every=2, val_windows=4
)


def test_gradient_normalisation_gives_unit_rms():
    ps = [torch.nn.Parameter(torch.zeros(10)), torch.nn.Parameter(torch.zeros(3, 5))]
    ps[0].grad = torch.randn(10) * 7
    ps[1].grad = torch.randn(3, 5) * 0.1
    before = torch.cat([p.grad.flatten() for p in ps])
    rms = normalize_grad_rms_(ps)
    after = torch.cat([p.grad.flatten() for p in ps])
    assert rms == pytest.approx(float(before.pow(2).mean().sqrt()), rel=1e-5)
    assert float(after.pow(2).mean().sqrt()) == pytest.approx(1.0, rel=1e-4)
    torch.testing.assert_close(after, before / (rms + 1e-5))


def test_train_step_projects_and_leaves_dense_parameters_dense(data, tokenizer):
    model = make_model(tokenizer)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, eps=0.1)
    tcfg = TrainConfig(steps=10, batch_size=4, anneal_start=0.0, anneal_end=0.0)
    batch = data.sample(4, 16, torch.Generator().manual_seed(0))
    train_step(model, model, opt, batch, 5, tcfg)
    params = dict(model.named_parameters())
    w = params["blocks.0.mlp.W_in"]
    assert int((w != 0).sum()) == int(0.25 * w.numel())
    assert int((w != 0).sum(0).min()) >= 4
    assert int((params["embed.W_E"] != 0).sum()) == int(0.5 * params["embed.W_E"].numel())
    assert int((params["blocks.0.attn.b_Q"] != 0).sum()) <= int(0.5 * 32)
    for name, p in params.items():
        if param_role(name) == "dense" and name != "ln_final.w":
            assert p.count_nonzero() == p.numel() or name.endswith("sinks"), name


def test_densities_follow_the_anneal(tokenizer):
    cfg = make_model(tokenizer).cfg
    tcfg = TrainConfig(steps=100, batch_size=1)
    assert densities_at(0, tcfg, cfg) == (1.0, 1.0)
    assert densities_at(60, tcfg, cfg) == (0.25, 0.5)


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


# with sparse kernels for the 1/4-density matrices once the anneal gets there (sparse_matmul.py)
TCFG_CSR = dataclasses.replace(TCFG, sparse_matmul_max_density=0.3, sparse_matmul_min_numel=0)


@pytest.mark.parametrize("tcfg", [TCFG, TCFG_CSR], ids=["dense-kernels", "sparse-kernels"])
def test_seeded_runs_are_bit_reproducible_and_resume_is_exact(data, tokenizer, tmp_path, tcfg):
    ref = train(make_model(tokenizer), data, tcfg, tmp_path / "ref", progress=False)
    again = train(make_model(tokenizer), data, tcfg, tmp_path / "again", progress=False)
    for k, v in _weights(ref).items():
        assert torch.equal(v, again.state_dict()[k]), k
    used_csr = any(getattr(m, "csr_weights", None) for m in ref.modules())
    assert used_csr == (tcfg is TCFG_CSR)
    # Interrupted after 6 steps (last checkpoint at 4), then resumed.
    train(make_model(tokenizer), data, tcfg, tmp_path / "cut", halt_after=6, progress=False)
    assert not (tmp_path / "cut" / "final").exists()
    with pytest.raises(ValueError, match="already holds a run"):
        train(make_model(tokenizer), data, tcfg, tmp_path / "cut", progress=False)
    if tcfg is TCFG:  # a run.json from before the sparse-kernel settings reads them as defaults
        info = json.loads((tmp_path / "cut" / "run.json").read_text())
        for key in ("sparse_matmul_max_density", "sparse_matmul_min_numel"):
            del info["train_config"][key]
        (tmp_path / "cut" / "run.json").write_text(json.dumps(info))
    resumed = train(
        make_model(tokenizer), data, tcfg, tmp_path / "cut", resume=True, progress=False
    )
    for k, v in _weights(ref).items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    steps = [
        json.loads(x)["step"] for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == sorted(set(steps)) and steps[-1] == 12
    final = HookedSparseTransformer.from_pretrained(tmp_path / "cut" / "final")
    assert torch.equal(final.W_E, ref.W_E)
    with pytest.raises(ValueError, match="differs"):
        train(
            make_model(tokenizer, d_mlp=32),
            data,
            tcfg,
            tmp_path / "cut",
            resume=True,
            progress=False,
        )


def test_metrics_record_losses_l0_and_lr(data, tokenizer, tmp_path):
    train(make_model(tokenizer), data, TCFG, tmp_path / "r", progress=False)
    records = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert any("val_loss" in r for r in records)
    logged = [r for r in records if "train_loss" in r]
    assert {"lr", "tokens_per_s", "l0_total", "l0"} <= set(logged[0])
    assert logged[-1]["l0_total"] < logged[0]["l0_total"]
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    assert run["train_config"]["steps"] == 12 and "data" in run


def test_budget_too_small_for_min_per_neuron(data, tokenizer, tmp_path):
    with pytest.raises(ValueError, match="min_nonzero_per_neuron"):
        train(
            make_model(tokenizer, weight_density=0.01), data, TCFG, tmp_path / "x", progress=False
        )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preset", "nope"], "unknown preset"),
        (["--preset", "tiny", "--corpus", "/does/not/exist"], "does not exist"),
        (["--preset", "tiny", "--corpus", "EMPTY"], "no non-empty"),
        (
            ["--preset", "tiny", "--out", "/proc/forbidden/run"],
            "not writable|Permission|No such|Read-only",
        ),
    ],
)
def test_cli_rejects_bad_input_before_training(args, message, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    args = [a.replace("EMPTY", str(tmp_path / "empty")) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "run")]
    code = cli_main(["train", *args, "--cache-dir", str(tmp_path / "cache"), "--quiet"])
    assert code == 2
    import re

    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "run" / "run.json").exists()


def test_cli_unknown_option_exits():
    with pytest.raises(SystemExit):
        cli_main(["train", "--preset", "tiny", "--out", "x", "--bogus"])


def _run_cli(args, env_extra=None, nproc=None):
    env = dict(os.environ) | (env_extra or {})
    if nproc:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(nproc),
            "--master_port",
            "29533",
            "-m",
            "analyses.cli",
            "train",
            *args,
        ]
    else:
        cmd = [sys.executable, "-m", "analyses.cli", "train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("idiom_frac", ["0", "0.25"])
def test_ddp_two_processes_match_one_process(tmp_path, idiom_frac):
    corpus = stdlib_root() / "asyncio"  # big enough for a 2048-token BPE
    common = [
        "--preset",
        "tiny",
        "--corpus",
        str(corpus),
        "--steps",
        "6",
        "--quiet",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--idiom-frac",
        idiom_frac,
    ]
    single = _run_cli([*common, "--out", str(tmp_path / "one")])
    assert single.returncode == 0, single.stderr
    double = _run_cli(
        [*common, "--out", str(tmp_path / "two")], nproc=2, env_extra={"OMP_NUM_THREADS": "1"}
    )
    assert double.returncode == 0, double.stderr
    one = HookedSparseTransformer.from_pretrained(tmp_path / "one" / "final")
    two = HookedSparseTransformer.from_pretrained(tmp_path / "two" / "final")
    for (name, a), b in zip(one.state_dict().items(), two.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-3, msg=name)
        if param_role(name) == "matrix":
            # identical sparsity pattern up to a handful of near-ties at the top-k boundary
            assert ((a != 0) != (b != 0)).float().mean() < 0.01, name


def test_gradients_are_deterministic_with_repeated_tokens():
    """Embedding and bigram lookups of repeated tokens accumulate their gradients in a fixed
    order (indexing with ``W[tokens]`` accumulated them in a thread-dependent order on CPU, so
    two runs of the demo preset drifted apart from the first step)."""
    from tests.helpers import build_model

    model = build_model(
        d_model=128, n_heads=4, d_head=16, d_mlp=128, n_layers=1, d_vocab=512, n_ctx=128
    )
    tokens = torch.randint(0, 8, (32, 128), generator=torch.Generator().manual_seed(0))
    grads = []
    for _ in range(4):
        model.zero_grad(set_to_none=True)
        model(tokens, return_type="loss").backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in ("embed.W_E", "bigram.W_bigram"):
        for other in grads[1:]:
            assert torch.equal(grads[0][name], other[name]), name
