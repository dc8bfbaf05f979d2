"""End-to-end training fixtures: a tiny en->de,es corpus prepared once per session, and subprocess runs of
`python -m mlst_jax.main` on it (1 CPU device each, sharing a persistent compilation cache so that only the
first run compiles)."""
import os

import pytest

from train_runs import RUN_FIELDS, SYNTH_TINY, TinyData, config_args, finish, params_at, start_main


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> TinyData:
    """16/4/4 utterances per direction, TFDS prepared, vocabulary trained."""
    from mlst_jax.data.synthetic.corpus import synthesize_corpus
    from mlst_jax.train import inputs
    from mlst_jax.train.config import load_config
    from mlst_jax.train.tasks import get_task

    root, data_dir, work = (tmp_path_factory.mktemp(n) for n in ("tiny_corpus", "tiny_tfds", "tiny_vocab"))
    synthesize_corpus(root, (16, 4, 4), workers=1, progress=False)
    data = TinyData(root, data_dir, work / "vocab" / "spm.model")
    c = load_config(str(SYNTH_TINY), config_args(data, {"data.vocab": ""})[1:])
    task = get_task(c)
    task.load_vocab(work, inputs.data_sources(c, task.streams(), "train"))  # builds every split
    return data


@pytest.fixture(scope="session")
def subprocess_env(tmp_path_factory) -> dict:
    cache = tmp_path_factory.mktemp("jax_cache")
    return {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1", "JAX_PLATFORMS": "cpu",
            "JAX_COMPILATION_CACHE_DIR": str(cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


@pytest.fixture(scope="session")
def reference_run(tiny_data, subprocess_env, tmp_path_factory):
    """An uninterrupted 16-step run (checkpoints every 4 steps): (workdir, result, final params)."""
    workdir = tmp_path_factory.mktemp("reference") / "run"
    result = finish(start_main(config_args(tiny_data, RUN_FIELDS), workdir, subprocess_env), workdir)
    return workdir, result, params_at(workdir, RUN_FIELDS["train.max_updates"])


@pytest.fixture(scope="session")
def xmef_data(tmp_path_factory):
    """The tiny synthetic CoVoST 2 corpus and tiny random HF wav2vec 2.0 / mBART directories (xmef_runs.py)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from xmef_runs import make_xmef_data

    return make_xmef_data(tmp_path_factory.mktemp("xmef"))
