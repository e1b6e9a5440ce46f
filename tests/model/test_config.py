import dataclasses

import pytest
from jaxtyping import TypeCheckError

from sparse_lens import PAPER_ACT_SITES, SparseTransformerConfig


def test_defaults_are_the_papers():
    cfg = SparseTransformerConfig.tiny()
    assert cfg.normalization_type == "RMS"
    assert cfg.act_fn == "gelu"
    assert cfg.afrac == 0.25
    assert cfg.act_sparse_sites == PAPER_ACT_SITES
    assert cfg.positional_embedding == "none"
    assert cfg.positional_embedding_type == "none"
    assert cfg.min_nonzero_per_neuron == 4


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("afrac", 0.0),
        ("afrac", 1.5),
        ("act_fn", "swish"),
        ("positional_embedding", "rotary"),
        ("act_sparse_sites", ("attn_in", "nope")),
        ("act_sparse_sites", ("attn_in", "attn_in")),
        ("weight_density", 0.0),
        ("embed_density", 2.0),
        ("d_model", 0),
        ("n_heads", -1),
        ("normalization_type", "LN"),
        ("min_nonzero_per_neuron", -1),
    ],
)
def test_invalid_values_raise_naming_the_field(field, value):
    # A value outside a Literal-typed field's values is refused by the test run's type checker
    # (jaxtyping + beartype, naming the parameter) before __post_init__'s ValueError.
    literal = ("act_fn", "positional_embedding", "act_sparse_sites", "normalization_type")
    refused = (ValueError, TypeCheckError) if field in literal else ValueError
    with pytest.raises(refused, match=field):
        SparseTransformerConfig.tiny(**{field: value})


def test_config_is_immutable_and_replace_validates():
    cfg = SparseTransformerConfig.tiny()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.afrac = 0.5
    assert cfg.replace(afrac=0.5).afrac == 0.5
    with pytest.raises(ValueError, match="afrac"):
        cfg.replace(afrac=0.0)


def test_dict_round_trip_and_version_checks():
    cfg = SparseTransformerConfig.tiny(
        attn_sinks=False, afrac=0.5, act_sparse_sites=("mlp_neuron",)
    )
    d = cfg.to_dict()
    assert d["config_version"] == 1
    assert SparseTransformerConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match="config_version"):
        SparseTransformerConfig.from_dict({k: v for k, v in d.items() if k != "config_version"})
    with pytest.raises(ValueError, match="config_version"):
        SparseTransformerConfig.from_dict(d | {"config_version": 99})
    with pytest.raises(ValueError, match="unknown keys"):
        SparseTransformerConfig.from_dict(d | {"bogus": 1})
