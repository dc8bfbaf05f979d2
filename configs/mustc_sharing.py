"""Seed 000 Table 1 rows that start from the trained multilingual model: sharing strategies and baselines.

    # 1. the shared model (configs/mustc.py:multilingual), or a converted fairseq checkpoint run dir
    python -m mlst_jax.main --config configs/mustc.py:multilingual --workdir runs/multilingual \\
        --config.data.manual_dir=$MUSTC --config.data.data_dir=$TFDS
    # 2. one row, continued from it (SYSTEM below)
    python -m mlst_jax.main --config configs/mustc_sharing.py:SYSTEM --workdir runs/SYSTEM \\
        --config.init.run=runs/multilingual --config.data.manual_dir=$MUSTC --config.data.data_dir=$TFDS
    # grad@X can also be split first and inspected:  mlst differentiate --checkpoint runs/multilingual
    #     --out runs/grad_2.0_init --budget 2.0 --multiway tst-COMMON  (then --config.init.run=runs/grad_2.0_init)

SYSTEM (expected tst-COMMON BLEU, seed 000 Table 1, average over the 8 languages; beam 5, lenpen 0.6):
  joint          Jointly fine-tuning, 76.3M        26.47
  finetune       per-language Fine-tuning, 610.6M  26.50  (bilingual plan from the shared model)
  adapters       Adapter, 152.1M (paper: 153.1M)   26.61  (only the adapters train)
  lna-d / lna-e / lna-ed   LNA, 76.3M              26.18 / 26.18 / 26.21
  enc            324.6M                            26.97
  enc+self_attn, enc+cross_attn, enc+kv, enc+qk   208.8M   26.89 / 26.75 / 26.84 / 26.86
  enc+qkv 186.7M 26.75; enc+qkvo 164.6M 26.70; enc+ffn 164.7M 26.75
  random@1.5 .. random@3.5                        26.71, 26.77, 26.81, 26.91, 26.91
  grad@1.5 .. grad@3.5                            27.12, 27.16, 27.59, 27.61, 27.58
The paper does not give the length of the continued training; these configs train 30,000 more updates on the
shared model's inverse square root schedule, continued (`init.schedule = "continue"`: at 100,000 updates it is still
at 6.3e-4). Every other field is the one of `configs/mustc.py:multilingual`.
"""
import runpy
from pathlib import Path

LNA = ("lna-d", "lna-e", "lna-ed")
MUSTC = runpy.run_path(str(Path(__file__).with_name("mustc.py")))  # the MuST-C configs these rows continue


def get_config(system: str = "grad@2.0"):
    """The config of one Table 1 row (see the module docstring); `init.run` must name the shared run."""
    c = MUSTC["get_config"]("multilingual")
    c.train.max_updates += 30000
    c.init.schedule = "continue"  # inverse_sqrt is still at 6.3e-4 after 100,000 updates: the rows continue it
    c.eval.lenpen = 0.6
    if system == "joint":
        c.sharing.strategy = "multilingual"
    elif system == "finetune":
        c.sharing.strategy = "bilingual"
    elif system == "adapters":
        c.sharing.strategy = "adapters"
        c.model.s2t.overrides.adapter_dim = 512
        c.finetune.trainable = "adapters"
    elif system in LNA:
        c.sharing.strategy = "multilingual"
        c.finetune.trainable = system
    else:
        c.sharing.strategy = system
    c.sharing.multiway_split = "tst-COMMON"
    return c
