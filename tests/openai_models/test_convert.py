"""Import of OpenAI circuit_sparsity checkpoints, checked against an independent forward pass."""

import math

import pytest
import torch
import torch.nn.functional as F

from sparse_lens import from_circuit_sparsity

CFG = dict(
    block_size=16,
    vocab_size=40,
    n_layer=2,
    n_head=3,
    d_head=4,
    d_model=12,
    d_mlp=24,
    bias=True,
    rms_norm=True,
    activation_type="gelu",
    afrac=0.25,
    afrac_loctypes="attn_in,attn_out,mlp_in,mlp_out,mlp_neuron,attn_v,attn_k,attn_q",
    tied_unembed=False,
    enable_bigram_table=True,
    learnable_bigram_table=True,
    sink=True,
    residual_activation_type="identity",
)


def random_state(cfg, seed=0, wpe=False):
    g = torch.Generator().manual_seed(seed)
    d, h, e, m, v = cfg["d_model"], cfg["n_head"], cfg["d_head"], cfg["d_mlp"], cfg["vocab_size"]

    def r(*shape, s=0.3):
        return torch.randn(*shape, generator=g) * s

    sd = {
        "transformer.wte.weight": r(v, d),
        "transformer.wpe.weight": r(cfg["block_size"], d)
        if wpe
        else torch.zeros(cfg["block_size"], d),
        "transformer.ln_f.weight": 1 + r(d, s=0.1),
        "lm_head.weight": r(v, d),
        "final_logits_bias": torch.zeros(v),
        "bigram_table": r(v, v, s=0.05),
    }
    for i in range(cfg["n_layer"]):
        p = f"transformer.h.{i}."
        sd |= {
            p + "ln_1.weight": 1 + r(d, s=0.1),
            p + "ln_2.weight": 1 + r(d, s=0.1),
            p + "attn.c_attn.weight": r(3 * h * e, d),
            p + "attn.c_attn.bias": r(3 * h * e, s=0.1),
            p + "attn.c_proj.weight": r(d, h * e),
            p + "attn.c_proj.bias": r(d, s=0.1),
            p + "attn.attn_imp.sink_logit": r(h),
            p + "mlp.c_fc.weight": r(m, d),
            p + "mlp.c_fc.bias": r(m, s=0.1),
            p + "mlp.c_proj.weight": r(d, m),
            p + "mlp.c_proj.bias": r(d, s=0.1),
        }
    return sd


def reference_forward(sd, cfg, idx):
    """OpenAI's forward pass written out independently, in their [out, in] layout."""
    h, e = cfg["n_head"], cfg["d_head"]
    sites = cfg["afrac_loctypes"].split(",")

    def topk(x, site):
        if site not in sites:
            return x
        k = int(cfg["afrac"] * x.shape[-1])
        _, ind = x.abs().topk(k, dim=-1)
        return torch.zeros_like(x).scatter(-1, ind, x.gather(-1, ind))

    def rms(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + torch.finfo(x.dtype).eps) * w

    B, T = idx.shape
    x = sd["transformer.wte.weight"][idx] + sd["transformer.wpe.weight"][:T]
    for i in range(cfg["n_layer"]):
        p = f"transformer.h.{i}."
        a = topk(rms(x, sd[p + "ln_1.weight"]), "attn_in")
        qkv = a @ sd[p + "attn.c_attn.weight"].T + sd[p + "attn.c_attn.bias"]
        q, k, v = qkv.split(h * e, dim=-1)
        q, k, v = topk(q, "attn_q"), topk(k, "attn_k"), topk(v, "attn_v")
        q, k, v = (t.view(B, T, h, e).transpose(1, 2) for t in (q, k, v))
        k = torch.cat([torch.zeros(B, h, 1, e), k], dim=2)
        v = torch.cat([torch.zeros(B, h, 1, e), v], dim=2)
        allow = torch.ones(T, T + 1, dtype=torch.bool)
        allow[:, 1:] = torch.ones(T, T, dtype=torch.bool).tril()
        mask = torch.zeros(T, T + 1).masked_fill(~allow, -math.inf)
        sink = torch.zeros(1, h, 1, T + 1)
        sink[..., 0] = sd[p + "attn.attn_imp.sink_logit"].view(1, h, 1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask + sink, scale=1 / math.sqrt(e))
        y = y.transpose(1, 2).reshape(B, T, h * e)
        x = x + topk(y @ sd[p + "attn.c_proj.weight"].T + sd[p + "attn.c_proj.bias"], "attn_out")
        m = topk(rms(x, sd[p + "ln_2.weight"]), "mlp_in")
        m = topk(F.gelu(m @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"]), "mlp_neuron")
        x = x + topk(m @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"], "mlp_out")
    x = rms(x, sd["transformer.ln_f.weight"])
    return x @ sd["lm_head.weight"].T + sd["final_logits_bias"] + sd["bigram_table"][idx]


@pytest.mark.parametrize("wpe", [False, True])
def test_import_matches_reference_logits(wpe):
    sd = random_state(CFG, wpe=wpe)
    model = from_circuit_sparsity(dict(sd), CFG).eval()
    assert model.cfg.positional_embedding == ("learned" if wpe else "none")
    idx = torch.randint(0, CFG["vocab_size"], (3, 11), generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(model(idx), reference_forward(sd, CFG, idx), atol=1e-5, rtol=1e-5)


def test_import_errors_are_specific():
    sd = random_state(CFG)
    bad = dict(sd)
    del bad["transformer.h.1.mlp.c_fc.weight"]
    with pytest.raises(ValueError, match="h.1.mlp.c_fc.weight"):
        from_circuit_sparsity(bad, CFG)
    with pytest.raises(ValueError, match="unconverted.*extra"):
        from_circuit_sparsity(dict(sd) | {"extra": torch.zeros(1)}, CFG)
    with pytest.raises(ValueError, match="rms_norm"):
        from_circuit_sparsity(dict(sd), CFG | {"rms_norm": False})
    wrong = dict(sd) | {"lm_head.weight": torch.zeros(41, 12)}
    with pytest.raises(ValueError, match=r"lm_head.weight has shape \(41, 12\)"):
        from_circuit_sparsity(wrong, CFG)
