"""`data.features`: the training data stored as audio (fbank computed per batch) or as fbank (computed once)."""
import numpy as np
import pytest

from mlst_jax.audio import fbank
from mlst_jax.train import config as cfglib
from mlst_jax.train import inputs
from mlst_jax.train.tasks import get_task
from mlst_jax.train.config import load_config
from train_runs import SYNTH_TINY, config_args


def _sources(c, split):
    return inputs.data_sources(c, get_task(c).streams(), split)


def test_fbank_sources_hold_the_fbank_of_the_audio_sources(tiny_data):
    args = config_args(tiny_data, {})[1:]
    audio, feats = (_sources(load_config(str(SYNTH_TINY), args + extra), "dev")
                    for extra in ([], ["--config.data.features=fbank"]))
    assert audio.keys() == feats.keys() == {"de", "es"}
    for lang in audio:
        a = {ex["id"]: ex for ex in (audio[lang][i] for i in range(len(audio[lang])))}
        f = {ex["id"]: ex for ex in (feats[lang][i] for i in range(len(feats[lang])))}
        assert a.keys() == f.keys() and len(a) == 4
        for uid, ex in f.items():
            assert "audio" not in ex and ex["fbank"].dtype == np.float16
            want = fbank(a[uid]["audio"].astype(np.float32) / 32768, 16000)
            assert ex["fbank"].shape == want.shape and ex["n_frames"] == len(want)
            np.testing.assert_allclose(ex["fbank"].astype(np.float32), want, atol=2e-2, rtol=1e-3)
            assert ex["tgt_text"] == a[uid]["tgt_text"]


def test_unknown_feature_kind_is_rejected():
    c = load_config(str(SYNTH_TINY), ["--config.data.features=mfcc"])
    with pytest.raises(ValueError, match="data.features='mfcc' must be 'audio' or 'fbank'"):
        cfglib.validate(c, check_paths=False)
