"""Shared by the benchmarks: timing and the HF reference model converted to ours."""
from __future__ import annotations

import statistics
import tempfile
import time

import torch
import transformers

from mlst_jax.models.s2t_transformer import S2TConfig
from mlst_jax.translator import Translator


def timed(fn, steps: int, warmup: int = 2) -> float:
    """Median wall time of `fn()` over `steps` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def reference_pair(cfg: S2TConfig, seed: int = 0):
    """A random HF `Speech2TextForConditionalGeneration` with `cfg`'s architecture and our `Translator` loaded
    from its saved weights (the same numbers on both sides)."""
    hf_cfg = transformers.Speech2TextConfig(**{k: v for k, v in cfg.to_dict().items() if k != "dtype"},
                                            num_conv_layers=cfg.num_conv_layers)
    torch.manual_seed(seed)
    ref = transformers.Speech2TextForConditionalGeneration(hf_cfg)
    with tempfile.TemporaryDirectory() as d:
        ref.save_pretrained(d)
        ours = Translator.from_pretrained(d)
    return ref, ours
