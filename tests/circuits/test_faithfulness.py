import pytest

from sparse_lens.circuits.circuit import Circuit
from sparse_lens.circuits.faithfulness import (
    interchange,
    learned_mask_size,
    necessity,
    node_agreement,
    nonsense_task,
)
from sparse_lens.circuits.masks import PruneConfig, make_ablation
from sparse_lens.tasks.task import get_task
from tests.circuits.test_masks import (
    PLANTED,
    PLANTED_LOCS,
    plain_circuit_loss,
    planted_batch,
    planted_model,
    pretrain_windows,
)


def planted_circuit(model):
    abl = make_ablation("mean", model, pretrain_windows())
    return Circuit.from_nodes(model, PLANTED, abl.values, task="planted"), abl


def test_necessity_sufficiency_and_interchange_on_the_planted_circuit():
    model = planted_model()
    circuit, _ = planted_circuit(model)
    batch = planted_batch(32, 5)
    means = make_ablation("mean", model, pretrain_windows()).values
    # necessity: only the circuit's nodes ablated (every other node kept), recomputed plainly
    others = {
        h: [c for c in range(n) if c not in PLANTED.get(h, [])] for h, n in PLANTED_LOCS.items()
    }
    nec = necessity(model, circuit, batch)
    assert nec == pytest.approx(plain_circuit_loss(model, batch, others, means), abs=1e-5)
    assert nec > 0.6  # removing the circuit breaks the task
    inter = interchange(model, circuit, batch)
    assert set(inter) == {"0.0", "0.25", "0.5", "0.75", "1.0"}
    # fraction 0 is the circuit alone; fraction 1 gives every circuit node its full-model value
    assert inter["0.0"] == pytest.approx(plain_circuit_loss(model, batch, PLANTED, means), abs=1e-5)
    # On the planted circuit the kept nodes already carry their full-model values, so patching
    # them is a no-op; without the key node they do not, and fraction 1 restores them.
    partial = {h: v for h, v in PLANTED.items() if h != "blocks.0.attn.hook_k"}
    part_inter = interchange(model, Circuit.from_nodes(model, partial, means, task="p"), batch)
    _, full = model.run_with_cache(batch.tokens)
    patched = {}
    for h in PLANTED_LOCS:
        value = means[h].expand_as(full[h].flatten(2)).clone()
        value[..., partial.get(h, [])] = full[h].flatten(2)[..., partial.get(h, [])]
        patched[h] = value
    ref = plain_circuit_loss(model, batch, {}, patched)
    assert part_inter["1.0"] == pytest.approx(ref, abs=1e-5)
    assert abs(part_inter["1.0"] - part_inter["0.0"]) > 0.05
    assert max(inter.values()) < 0.15  # full-model values in circuit nodes keep the task solved
    agree = node_agreement(model, circuit, batch)
    assert len(agree["per_node"]) == 6
    # q/k/v and reads agree exactly; the final residual channel is rescaled but correlated
    assert agree["min"] > 0.9, agree


def test_random_init_control_fails_and_real_model_succeeds():
    model = planted_model()
    train, val = planted_batch(32, 1), planted_batch(16, 2)
    pcfg = PruneConfig(steps=150, lr=0.01, k_coef=1e-3, batch_pairs=16)
    real = learned_mask_size(
        model, train, val, make_ablation("mean", model, pretrain_windows()), pcfg
    )
    assert (
        real["reached_target"] and real["nodes"] <= 10
    )  # 6 planted (+ stragglers before bisection)
    from sparse_lens import HookedSparseTransformer

    random_model = HookedSparseTransformer(model.cfg.replace(seed=99)).eval()
    rand = learned_mask_size(
        random_model, train, val, make_ablation("mean", random_model, pretrain_windows()), pcfg
    )
    assert not rand["reached_target"]


def test_nonsense_task_flips_answers_per_pair(tokenizer):
    task = get_task("single_double_quote")
    ns = nonsense_task(task, n=40, seed=0)
    exs = ns.examples("train", 200)
    assert exs and ns.name == "single_double_quote_nonsense"
    original = {
        e.context: e.correct for s in ("train", "val", "test") for e in task.examples(s, 40)
    }
    flipped = sum(original[e.context] != e.correct for e in exs)
    assert 0 < flipped < len(exs)


def test_checks_on_a_cleaned_circuit_honour_its_removed_edges():
    """A spurious edge removed by the clean-up: sufficiency through ``fwd_hooks`` equals the
    clean-up's own loss, and the checks run on the cleaned circuit."""
    import torch

    from sparse_lens.circuits.cleanup import circuit_loss
    from sparse_lens.circuits.masks import Pruner
    from sparse_lens.tasks.task import task_loss

    model = planted_model()
    with torch.no_grad():
        model.blocks[0].attn.W_V[0, 1, 0] = 0.5  # marker channel -> value: a removable edge
    circuit, abl = planted_circuit(model)
    batch = planted_batch(32, 5)
    edge = ("0.attn.attn_in.1", "0.attn.v.h0.c0")
    assert edge in {(s, t) for s, t, _ in circuit.edges}
    cleaned = Circuit.from_nodes(model, PLANTED, abl.values, task="planted", removed_edges=[edge])
    assert cleaned.n_edges == circuit.n_edges - 1
    pruner = Pruner(model, batch, batch, abl, PruneConfig())
    removed = [("blocks.0.attn.hook_in", 1, "blocks.0.attn.hook_v", 0)]
    suff = task_loss(model, batch, cleaned.fwd_hooks(model))
    assert abs(suff - circuit_loss(pruner, PLANTED, removed)) < 1e-6
    assert abs(suff - task_loss(model, batch, circuit.fwd_hooks(model))) > 1e-4
    assert necessity(model, cleaned, batch) > 0.6
    assert max(interchange(model, cleaned, batch).values()) < 0.15
    assert len(node_agreement(model, cleaned, batch)["per_node"]) == 6
