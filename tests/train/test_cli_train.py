"""`mlst compile|evaluate|average` and the experiment config files."""
import json

import jax
import numpy as np
import pytest

from mlst_jax import cli
from mlst_jax.train import config as cfglib
from mlst_jax.train.config import load_config
from mlst_jax.train.tasks import get_task
from train_runs import ROOT, RUN_FIELDS, SYNTH_TINY, config_args

CONFIGS = ROOT / "configs"


def run_cli(capsys, *argv) -> tuple[int, dict | None, str]:
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, json.loads(out) if rc == 0 else None, err


def test_compile_reports_memory_and_flops_without_allocating(capsys):
    before = jax.live_arrays()  # held, so their ids stay unique
    rc, report, err = run_cli(capsys, "compile", "--config", SYNTH_TINY, "--mesh", "data=2,fsdp=2,tensor=2",
                              "--frames", "256")
    assert rc == 0, err
    # abstract state: no parameters or batches were created (arrays of earlier tests may have been freed)
    assert [a.shape for a in jax.live_arrays() if all(a is not b for b in before)] == []
    assert report["mesh"] == {"data": 2, "fsdp": 2, "tensor": 2} and report["devices"] == 8
    assert report["params"] > 0 and report["state_bytes"] > 3 * 4 * report["params"]  # params + 2 Adam moments
    (shape,) = report["shapes"]
    assert shape["features"] == [3, 8, 256, 80] and shape["tokens"] == [3, 8, 64]  # [langs, rows, ...]
    mem = shape["memory"]
    assert min(mem["argument_bytes"], mem["output_bytes"], mem["temp_bytes"]) > 0
    assert mem["peak_bytes"] == mem["argument_bytes"] + mem["output_bytes"] - mem["alias_bytes"] + mem["temp_bytes"]
    # per device: fsdp x tensor shard the 12-byte-per-parameter state 4 ways, the rest is replicated
    assert mem["argument_bytes"] < report["state_bytes"] / 2
    # the state is donated: every byte of this device's shards is aliased to the updated state, except the
    # scheduled learning rate (one float32 the step recomputes from the count, so jit drops that input)
    assert report["state_bytes"] / 4 < report["state_bytes_per_device"] < report["state_bytes"] / 2
    assert mem["alias_bytes"] == report["state_bytes_per_device"] - 4
    assert shape["flops_per_device"] > 0 and shape["flops"] == 8 * shape["flops_per_device"]


@pytest.mark.parametrize("args,message", [
    (["--mesh", "data=3"], "mesh data=3 × fsdp=1 × tensor=1 = 3 devices, but 8 are available"),
    (["--mesh", "data=2,fsdp=2,tensor=2,pipe=2"], "'pipe=2' is not AXIS=SIZE"),
    (["--mesh", "data=8"], "max_frames_per_batch=6144 cannot hold one utterance of 512 frames"),
    (["--frames", "100"], "frames [100] are not frame buckets"),
    (["--tokens", "65"], "tokens=65 must be in [1, max_tokens=64]"),
    (["--config.sharing.strategy=grad@0.5"], "budget below 1"),
    (["--config.optim.learning_rate=1"], "no config field 'optim.learning_rate'"),
    (["--config.train.max_updates=many"], "--config.train.max_updates=many"),
    (["--bogus"], "unrecognized arguments ['--bogus']"),
])
def test_compile_errors_are_clear(capsys, args, message):
    rc, _, err = run_cli(capsys, "compile", "--config", SYNTH_TINY, *args)
    assert rc == 2 and message in err, err


@pytest.mark.parametrize("config,args,message,fix", [
    # the paper's 40,000 frames cannot hold 8 language groups x 4 batch devices at 3,072 frames
    ("mustc.py:multilingual", ["--mesh", "data=2,fsdp=2,tensor=2"],
     "8 language groups x 4 devices (32 rows, at least 98304 frames)",
     "Fix: --config.data.max_frames_per_batch=160000, i.e. the config's 40000 frames for each of the 4 batch "
     "devices"),
    ("synth.py:tiny", ["--mesh", "data=8", "--config.data.max_frames_per_batch=1000"],
     "3 language groups x 8 devices (24 rows, at least 6144 frames)",
     "Fix: --config.data.max_frames_per_batch=12288, i.e. 512 frames x 3 language groups x 8 batch devices"),
])
def test_compile_names_the_budget_override(capsys, config, args, message, fix):
    """A frame budget too small for the mesh fails before compiling, naming the override that fixes it; with
    that override every frame bucket has whole rows for every group and batch device."""
    from mlst_jax.data.batch_shapes import static_batch_shapes, train_frame_buckets
    from mlst_jax.train.tasks import get_task

    rc, _, err = run_cli(capsys, "compile", "--config", CONFIGS / config, *args)
    assert rc == 2 and message in err and fix in err, err
    override = fix.split()[1].rstrip(",")
    c = load_config(str(CONFIGS / config), [override])
    pcfg = get_task(c).pipeline_config(train=True)
    buckets = train_frame_buckets(pcfg)  # mlst compile's default: the smallest and the largest
    shapes = static_batch_shapes(pcfg, num_devices=4 if "mustc" in config else 8, frames=[buckets[0], buckets[-1]])
    rows = [s.features[:2] for s in shapes]
    assert rows == ([(8, 156), (8, 4)] if "mustc" in config else [(3, 16), (3, 8)])  # [groups, rows]


def test_readme_compile_budget_fits_32_devices():
    """README's `mlst compile ... --mesh data=8,fsdp=4 --config.data.max_frames_per_batch=1280000` (32 batch
    devices, 40,000 frames each) has whole rows for every language and device in the buckets it compiles."""
    from mlst_jax.data.batch_shapes import static_batch_shapes
    from mlst_jax.train.tasks import get_task

    readme = (ROOT / "README.md").read_text()
    line = next(l for l in readme.splitlines() if l.startswith("mlst compile "))
    assert "--mesh data=8,fsdp=4 --config.data.max_frames_per_batch=1280000" in line
    c = load_config(f"{CONFIGS / 'mustc.py'}:multilingual", ["--config.data.max_frames_per_batch=1280000"])
    pcfg = get_task(c).pipeline_config(train=True)
    shapes = static_batch_shapes(pcfg, num_devices=32, frames=[128, 3072])
    assert [s.features[:2] for s in shapes] == [(8, 1248), (8, 32)]
    with pytest.raises(ValueError, match="at least 786432 frames"):
        static_batch_shapes(get_task(load_config(f"{CONFIGS / 'mustc.py'}:multilingual")).pipeline_config(True),
                               num_devices=32, frames=[128, 3072])


def test_config_files_validate():
    specs = [f"synth.py:{v}" for v in ("tiny", "demo", "demo_tiny")] + ["mustc.py:multilingual"] + \
        [f"mustc.py:bilingual-{l}" for l in cfglib.MUSTC_LANGS]
    for spec in specs:
        cfglib.validate(load_config(str(CONFIGS / spec)), device_count=8, check_paths=False)

    m = load_config(f"{CONFIGS / 'mustc.py'}:multilingual")
    model = get_task(m).model_config(None)
    assert (m.model.s2t.arch, model.vocab_size, model.tie_word_embeddings, model.dropout) == \
        ("s2t_transformer_m", 10000, False, 0.15)
    assert (m.optim.lr, m.optim.schedule, m.optim.warmup_updates, m.optim.label_smoothing, m.optim.clip_norm) == \
        (2e-3, "inverse_sqrt", 10000, 0.1, 10.0)
    assert (m.data.max_frames_per_batch, m.optim.grad_accum, m.data.specaugment, m.data.cmvn) == \
        (40000, 8, "ld", "utterance")
    assert tuple(m.data.tgt_langs) == cfglib.MUSTC_LANGS and m.sharing.strategy == "multilingual"

    b = load_config(f"{CONFIGS / 'mustc.py'}:bilingual-ru")
    assert (b.model.s2t.arch, b.model.s2t.vocab_size, tuple(b.data.tgt_langs), b.data.specaugment) == \
        ("s2t_transformer_s", 8000, ("ru",), "lb")


@pytest.mark.parametrize("spec,message", [
    ("mustc.py:bilingual-xx", "unknown target language 'xx'; pass multilingual or bilingual-LANG with LANG one of de, "
                              "es, fr, it, nl, pt, ro, ru"),
    ("mustc.py:bilingual", "unknown variant 'bilingual'; pass multilingual or bilingual-LANG"),
    ("mustc.py", "no variant; pass multilingual or bilingual-LANG"),
    ("synth.py:small", "configs/synth.py: unknown variant 'small'; pass one of tiny, demo, demo_tiny"),
])
def test_config_variant_must_be_known(capsys, spec, message):
    rc, _, err = run_cli(capsys, "compile", "--config", CONFIGS / spec)
    assert rc == 2 and message in err, err


def test_evaluate_and_average(reference_run, tiny_data, tmp_path, capsys):
    from mlst_jax.train.run import Run
    from mlst_jax.translator import Translator

    workdir = reference_run[0]
    rc, scores, err = run_cli(capsys, "evaluate", *config_args(tiny_data, RUN_FIELDS), "--workdir", workdir,
                              "--split", "tst-COMMON")
    assert rc == 0, err
    assert set(scores) == {"de", "es", "avg"} and all(np.isfinite(v) for v in scores.values())

    rc, done, err = run_cli(capsys, "average", "--workdir", workdir, "--last", "2", "--out", tmp_path / "model")
    assert rc == 0, err
    assert done == {"steps": [12, 16], "out": [str(tmp_path / "model")]}
    exported = Translator.from_pretrained(tmp_path / "model")
    assert exported.vocab is not None and len(exported.vocab) == exported.config.vocab_size
    with Run(workdir) as run:
        expected = run.averaged_params(2)
    for x, y in zip(jax.tree.leaves(expected), jax.tree.leaves(exported.params), strict=True):
        np.testing.assert_array_equal(x, np.asarray(y))
