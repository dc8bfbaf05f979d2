"""The main job shrunk to a smoke test: the tiny model of `synth_tiny.py` on the `tiny` synthetic corpus
(16-48 utterances per split), 8 target languages, 12 shared updates and 4 more per system. Every stage of the demo
runs; the BLEU scores mean nothing at this size.

    python -m mlst_jax.jobs.demo --workdir /tmp/demo_tiny --config configs/synth_demo_tiny.py --size tiny

Expected result: `/tmp/demo_tiny/report.md` with five rows (multilingual 0.38M, joint_ft 0.38M, enc 1.67M = 4.43x,
random@2.0 0.76M = 2.00x, grad@2.0 about 2.0x), BLEU near 0 and the similarity figures, in about two and a half
minutes on 2 CPU cores.
"""
import importlib.util
from pathlib import Path

from mlst_jax.train.config import MUSTC_LANGS


def _synth_tiny():
    spec = importlib.util.spec_from_file_location("synth_tiny", Path(__file__).with_name("synth_tiny.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def get_config():
    """The synth_demo_tiny experiment config."""
    c = _synth_tiny()
    c.data.tgt_langs = MUSTC_LANGS
    c.optim.ctc_weight = 0.3
    c.data.ctc_max_chars = 96
    c.train.max_updates = 12
    c.train.log_every = 4
    c.train.eval_every = 0
    c.train.checkpoint_every = 4
    c.demo.extra_steps = 4
    c.demo.lexicon = "demo"
    c.eval.beam = 2
    c.eval.max_len_b = 12
    c.eval.max_examples = 8
    return c
