"""`model.scan_layers` in the trainer's config: S2T accepts it with the multilingual and bilingual plans only, a run
continues another only in its layer layout, and `mlst compile` compiles the scanned train step (parameters stacked
per layer stack, the layer axis replicated)."""
import json
import re

import jax
import ml_collections
import pytest

from mlst_jax import cli
from mlst_jax.sharing.strategies import make_plan
from mlst_jax.train import config as cfglib
from mlst_jax.train.config import load_config
from mlst_jax.train.init_from import check_layer_layout
from mlst_jax.train.tasks import get_task
from train_runs import SYNTH_TINY


@pytest.mark.parametrize("strategy", ["enc+ffn", "random@1.5", "adapters"])
def test_s2t_refuses_plans_that_address_single_layers(strategy):
    c = load_config(SYNTH_TINY, ["--config.model.scan_layers=True", f"--config.sharing.strategy={strategy}"])
    message = f"model.scan_layers=True needs sharing.strategy multilingual or bilingual, got '{strategy}'"
    with pytest.raises(ValueError, match=re.escape(message)):
        cfglib.validate(c, check_paths=False)


def test_compile_scanned_bilingual_train_step(capsys):
    args = ["--config.model.scan_layers=True", "--config.sharing.strategy=bilingual"]
    rc = cli.main(["compile", "--config", SYNTH_TINY, "--mesh", "data=2,fsdp=2,tensor=2", "--frames", "256", *args])
    out, err = capsys.readouterr()
    assert rc == 0, err
    report = json.loads(out)
    task = get_task(load_config(SYNTH_TINY))  # the per-layer model: the same number of parameters
    base = task.abstract_params(task.model_config(None))
    assert report["params"] == make_plan("bilingual", base, task.stream_names).num_params(base)
    (shape,) = report["shapes"]
    assert shape["compile_seconds"] > 0 and shape["memory"]["peak_bytes"] > 0
    assert jax.device_count() == report["devices"] == 8


@pytest.mark.parametrize("theirs,mine,strategy,message", [
    (True, False, "bilingual", "that run was trained with model.scan_layers=True, this run has "
                               "model.scan_layers=False"),
    (False, True, "bilingual", "that run was trained with model.scan_layers=False, this run has "
                               "model.scan_layers=True"),
    (True, True, "grad@2.0", "sharing.strategy='grad@2.0' splits single layers"),
])
def test_continuing_a_run_keeps_its_layer_layout(theirs, mine, strategy, message):
    run = load_config(SYNTH_TINY, [f"--config.model.scan_layers={theirs}"])
    c = load_config(SYNTH_TINY, [f"--config.model.scan_layers={mine}", f"--config.sharing.strategy={strategy}",
                                 "--config.init.run=RUN"])
    with pytest.raises(ValueError, match=re.escape(f"init.run=RUN: {message}")):
        check_layer_layout(c, run)
    check_layer_layout(load_config(SYNTH_TINY, [f"--config.model.scan_layers={theirs}"]), run)  # the same layout


def test_runs_from_before_scan_layers_are_per_layer():
    old = ml_collections.ConfigDict({"model": {"family": "s2t"}})
    check_layer_layout(load_config(SYNTH_TINY), old)
    with pytest.raises(ValueError, match="that run was trained with model.scan_layers=False"):
        check_layer_layout(load_config(SYNTH_TINY, ["--config.model.scan_layers=True"]), old)
