"""S2T Transformer: parameter counts at the paper configs (no allocation) and config validation."""
import jax
import pytest

from mlst_jax.models.s2t_transformer import S2TConfig, abstract_params, named_config
from mlst_jax.models.params import count_params


def test_s2t_transformer_m_has_the_papers_76_3m_parameters():
    params = abstract_params(named_config("s2t_transformer_m", vocab_size=10000, tie_word_embeddings=False))
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(params))  # nothing allocated
    assert count_params(params) == 76_327_936
    tied = abstract_params(named_config("s2t_transformer_m", vocab_size=10000, tie_word_embeddings=True))
    assert count_params(tied) == 76_327_936 - 512 * 10000


def _expected(d, ffn, enc, dec, vocab, conv=1024, feat=80, k=5):
    attn, ln = 4 * (d * d + d), 2 * d
    subsampler = (feat * k * conv + conv) + (conv // 2 * k * 2 * d + 2 * d)
    enc_layer = attn + 2 * ln + (d * ffn + ffn) + (ffn * d + d)
    dec_layer = enc_layer + attn + ln
    return subsampler + enc * enc_layer + ln + vocab * d + dec * dec_layer + ln + d * vocab


@pytest.mark.parametrize("name,d,ffn", [("s2t_transformer_s", 256, 2048), ("s2t_transformer_l", 1024, 4096)])
def test_named_configs_match_the_closed_form_count(name, d, ffn):
    cfg = named_config(name, vocab_size=8000)
    assert (cfg.d_model, cfg.encoder_ffn_dim, cfg.encoder_layers, cfg.decoder_layers) == (d, ffn, 12, 6)
    assert count_params(abstract_params(cfg)) == _expected(d, ffn, 12, 6, 8000)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="d_model=30 is not divisible by encoder_attention_heads=4"):
        S2TConfig(d_model=30)
    with pytest.raises(ValueError, match="unknown architecture 's2t_transformer_xl'"):
        named_config("s2t_transformer_xl")
    with pytest.raises(ValueError, match="num_conv_layers=3 does not match"):
        S2TConfig.from_dict({"num_conv_layers": 3, "conv_kernel_sizes": [5, 5]})
