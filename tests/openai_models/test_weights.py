"""``sparse-lens import-oai``: OpenAI's published folder layout in, an ordinary model folder out,
with logits checked against an independent forward pass (``tests/oai_files.py``)."""

import json

import pytest
import torch

from analyses.cli import main
from sparse_lens import HookedSparseTransformer
from tests.helpers import TEXTS
from tests.oai_files import (
    gpt_config,
    gpt_state_dict,
    reference_forward,
    write_gpt2_bpe,
    write_oai_folder,
)

N_MERGES = 80
VOCAB = 256 + N_MERGES + 1  # bytes, merges, <|endoftext|>

VARIANTS = {
    # the paper's default: sinks, bigram table, no positions, AbsTopK at the 8 locations
    "sinks_bigram": (gpt_config(vocab_size=VOCAB), False),
    # no sinks, no bigram table, learned absolute positions
    "positions": (gpt_config(vocab_size=VOCAB, sink=False, enable_bigram_table=False), True),
    # non-flash checkpoint (causal-mask buffers), no biases, dense activations, tied
    # embeddings, a frozen bigram buffer, an older config naming d_mlp n_mlp
    "older": (
        {
            k: v
            for k, v in gpt_config(
                vocab_size=VOCAB,
                sink=False,
                flash=False,
                bias=False,
                afrac=None,
                tied_unembed=True,
                learnable_bigram_table=False,
                n_layer=3,
            ).items()
            if k != "d_mlp"
        }
        | {"n_mlp": 24},
        False,
    ),
}


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tinypython")
    ranks = write_gpt2_bpe(root, TEXTS, n_merges=N_MERGES, eot_in_encoder=False)
    assert len(ranks) + 1 == VOCAB
    return root


def _sd_cfg(name):
    cfg, wpe = VARIANTS[name]
    full = dict(cfg)
    if "n_mlp" in full:
        full["d_mlp"] = full.pop("n_mlp")
    return cfg, gpt_state_dict(full, seed=len(name), wpe=wpe), full


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_import_through_cli_matches_reference(name, tok_dir, tmp_path, capsys):
    cfg, sd, full = _sd_cfg(name)
    src = write_oai_folder(tmp_path / "oai", cfg, sd)
    out = tmp_path / "model"
    assert main(["import-oai", str(src), "--out", str(out), "--tokenizer", str(tok_dir)]) == 0
    assert "candidates" in capsys.readouterr().out
    model = HookedSparseTransformer.from_pretrained(out).eval()
    assert model.cfg.attn_sinks == full["sink"]
    assert model.cfg.use_bigram_table == full["enable_bigram_table"]
    assert model.cfg.positional_embedding == ("learned" if VARIANTS[name][1] else "none")
    idx = torch.randint(0, VOCAB, (3, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = model(idx)
    torch.testing.assert_close(ours, reference_forward(sd, full, idx), atol=1e-5, rtol=1e-5)
    # the folder has the tokenizer: strings work and round-trip
    text = 'print("hi")\n'
    assert (
        model.tokenizer is not None
        and model.to_string(model.to_tokens(text, prepend_bos=False)[0]) == text
    )


def test_imported_folder_works_with_tasks_command(tok_dir, tmp_path, capsys):
    from sparse_lens.tasks.task import get_task, task_batch

    cfg, sd, full = _sd_cfg("sinks_bigram")
    src = write_oai_folder(tmp_path / "oai", cfg, sd)
    out = tmp_path / "model"
    assert main(["import-oai", str(src), "--out", str(out), "--tokenizer", str(tok_dir)]) == 0
    capsys.readouterr()
    assert main(["tasks", str(out), "--task", "var_swap", "--n", "10", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["losses"]["var_swap"]
    # reference: the independent forward pass on the test split's contexts (n=10, seed 0)
    model = HookedSparseTransformer.from_pretrained(out)
    batch = task_batch(get_task("var_swap"), model.tokenizer, model.cfg.n_ctx, "test", 10, 0)
    logits = reference_forward(sd, full, batch.tokens)
    last = logits[torch.arange(len(batch)), batch.last]
    right = last.gather(1, batch.correct[:, None])[:, 0]
    wrong = last.gather(1, batch.incorrect[:, None])[:, 0]
    loss = torch.nn.functional.softplus(wrong - right).mean()  # -log softmax of the right one
    assert row["n"] == len(batch) > 0
    assert row["loss"] == pytest.approx(float(loss), abs=1e-5)
    assert row["accuracy"] == pytest.approx(float((right > wrong).float().mean()))


class _Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_code_payload_is_refused(tok_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg, sd, _ = _sd_cfg("sinks_bigram")
    src = write_oai_folder(tmp_path / "oai", cfg, sd)
    torch.save(sd | {"evil": _Payload()}, src / "final_model.pt")
    out = tmp_path / "model"
    assert main(["import-oai", str(src), "--out", str(out), "--tokenizer", str(tok_dir)]) == 2
    err = capsys.readouterr().err
    assert "refusing to load" in err and "weights_only=True" in err
    assert not (tmp_path / "PWNED_BY_PICKLE").exists() and not out.exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda sd, c: sd.pop("transformer.h.1.mlp.c_fc.weight"),
            "transformer.h.1.mlp.c_fc.weight",
        ),
        (
            lambda sd, c: sd.pop("transformer.h.0.attn.attn_imp.sink_logit"),
            "h.0.attn.attn_imp.sink_logit",
        ),
        (
            lambda sd, c: sd.update({"transformer.h.0.attn.extra": torch.zeros(2)}),
            "transformer.h.0.attn.extra",
        ),
        (lambda sd, c: sd.update({"lm_head.weight": torch.zeros(VOCAB + 1, 12)}), "lm_head.weight"),
        (lambda sd, c: sd.update({"bigram_table": torch.zeros(VOCAB, 3)}), "bigram"),
        (lambda sd, c: c.update({"mystery": 1}), "mystery"),
        (lambda sd, c: c.update({"rms_norm": False}), "rms_norm"),
    ],
)
def test_mismatches_name_the_key(change, message, tok_dir, tmp_path, capsys):
    cfg, sd, _ = _sd_cfg("sinks_bigram")
    cfg = dict(cfg)
    change(sd, cfg)
    src = write_oai_folder(tmp_path / "oai", cfg, sd)
    assert (
        main(["import-oai", str(src), "--out", str(tmp_path / "m"), "--tokenizer", str(tok_dir)])
        == 2
    )
    assert message in capsys.readouterr().err


def test_out_folder_and_tokenizer_are_checked(tok_dir, tmp_path, capsys):
    cfg, sd, _ = _sd_cfg("sinks_bigram")
    src = write_oai_folder(tmp_path / "oai", cfg, sd)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    assert main(["import-oai", str(src), "--out", str(busy), "--tokenizer", str(tok_dir)]) == 2
    assert "did not write" in capsys.readouterr().err and (busy / "keep.txt").exists()
    assert main(["import-oai", str(src), "--out", str(tmp_path / "m")]) == 2
    assert "--tokenizer" in capsys.readouterr().err
    small = tmp_path / "small"
    write_gpt2_bpe(small, TEXTS, n_merges=10)
    assert (
        main(["import-oai", str(src), "--out", str(tmp_path / "m"), "--tokenizer", str(small)]) == 2
    )
    assert "vocab_size" in capsys.readouterr().err


def test_tokenizer_files_inside_src_are_found(tok_dir, tmp_path):
    cfg, sd, _ = _sd_cfg("sinks_bigram")
    src = write_oai_folder(tmp_path / "oai", cfg, sd)
    for name in ("vocab.bpe", "encoder.json"):
        (src / name).write_bytes((tok_dir / name).read_bytes())
    assert main(["import-oai", str(src), "--out", str(tmp_path / "m")]) == 0
    assert HookedSparseTransformer.from_pretrained(tmp_path / "m").tokenizer.vocab_size == VOCAB
