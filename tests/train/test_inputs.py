"""`inputs.data_sources`: training reads prepared data that matches its corpus, and names splits as the corpus does."""
import os

import numpy as np
import pytest
import soundfile as sf

from mlst_jax.data.tfds_builders import source_digest
from mlst_jax.data.writers import Talk, write_mustc
from mlst_jax.train import inputs
from mlst_jax.train.config import base_config

SR = 16000


def wave(n, seed):
    return (0.1 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


TALKS = [Talk("ted_1", "spk.1", [(wave(4000, 1), "hello", {"de": "hallo"}), (wave(3000, 2), "two", {"de": "zwei"})]),
         Talk("ted_2", "spk.2", [(wave(5000, 3), "three", {"de": "drei"})])]


@pytest.fixture
def config(tmp_path):
    """A MuST-C en-de corpus with dev and tst-COMMON, and a config training on it."""
    for split in ("dev", "tst-COMMON"):
        write_mustc(tmp_path / "mustc", ["en-de"], split, TALKS)
    c = base_config()
    c.data.dataset, c.data.manual_dir, c.data.data_dir = "mustc", str(tmp_path / "mustc"), str(tmp_path / "tfds")
    return c


def read(source):
    return {ex["id"].decode(): ex for ex in (source[i] for i in range(len(source)))}


def test_training_rebuilds_prepared_data_whose_corpus_changed(config, tmp_path, caplog):
    stream = inputs.Stream("de", "en", "de")
    first = read(inputs.data_sources(config, [stream], "dev")["de"])
    prepared = tmp_path / "tfds/mustc/en-de/1.1.0"
    digest = source_digest(prepared)
    assert first["ted_2_0"]["n_frames"] == 5000 and caplog.records == []

    wav = tmp_path / "mustc/en-de/data/dev/wav/ted_2.wav"  # a talk's recording replaced
    new = np.random.default_rng(9).integers(-3000, 3000, sf.info(wav).frames, dtype=np.int16)
    sf.write(wav, new, SR, subtype="PCM_16")
    st = wav.stat()
    os.utime(wav, ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))
    again = read(inputs.data_sources(config, [stream], "dev")["de"])
    assert [r.getMessage() for r in caplog.records] == [
        f"mustc/en-de: rebuilding {prepared}: its source changed since it was built "
        f"(dev: 1 of 5 files changed, e.g. {wav})"
    ]
    np.testing.assert_array_equal(again["ted_2_0"]["audio"], new[4000:9000])  # after 0.25 s of silence
    assert source_digest(prepared) != digest  # cached length metadata of the old data is not reused


def test_a_missing_split_is_named_as_the_corpus_names_its_splits(config):
    with pytest.raises(ValueError) as e:
        inputs.data_sources(config, [inputs.Stream("de", "en", "de")], "test")
    assert str(e.value) == (f"stream de: mustc en-de has no split 'test' (it has dev, tst-COMMON) under "
                            f"data.manual_dir={config.data.manual_dir!r}")
