"""End to end on the synthetic corpus: train a shared model, differentiate it by gradient similarity up to a
budget (parameters and Adam moments split), continue training the differentiated model, evaluate per language;
optimizer-state carry-over from `--init` (and its opt-out); the LNA baselines through the trainer."""
import json
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from mlst_jax.sharing import CopyTable, SharingPlan, base_shapes, differentiable_units
from mlst_jax.train.checkpoint import Checkpointer
from mlst_jax.train.config import load_config
from mlst_jax.train.optim import make_schedule
from mlst_jax.train.run import Run

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SYNTH_TINY = f"{ROOT / 'configs' / 'synth.py'}:tiny"
LANGS = ("de", "es")


def synth_tiny():
    return load_config(SYNTH_TINY)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from mlst_jax.data.synthetic.corpus import synthesize_corpus

    root = tmp_path_factory.mktemp("corpus")
    synthesize_corpus(root, (16, 4, 4), workers=1, progress=False)
    return root, tmp_path_factory.mktemp("tfds")


class Latest(NamedTuple):
    step: int
    params: Any
    plan: SharingPlan


def latest(workdir, langs=LANGS) -> Latest:
    """The latest checkpoint of run `workdir`."""
    with Run(workdir) as run:
        return Latest(run.latest_step, run.params(), run.plan(langs=langs))


def config(corpus, max_updates, init: str = "", **sharing):
    c = synth_tiny()
    c.init.run = init
    c.data.manual_dir, c.data.data_dir = map(str, corpus)
    c.data.tgt_langs = LANGS
    c.data.max_frames, c.data.frame_buckets, c.data.token_buckets = 384, (384,), (64,)
    c.data.max_frames_per_batch = 16 * 384
    c.train.update(max_updates=max_updates, log_every=5, checkpoint_every=10, eval_every=0, progress=False)
    c.eval.update(beam=2, max_len_b=10, batch_size=8)
    c.sharing.update(multiway_split="dev", **sharing)
    return c


@pytest.fixture(scope="module")
def shared_run(corpus, tmp_path_factory):
    from mlst_jax.train.trainer import train_and_evaluate

    workdir = tmp_path_factory.mktemp("shared")
    train_and_evaluate(config(corpus, 10), workdir)
    return workdir


def overrides(corpus, max_updates, **fields) -> list[str]:
    """`--config.FIELD=VALUE` arguments of `config(corpus, max_updates)` for `mlst train --config configs/synth.py:tiny`."""
    values = {"data.manual_dir": corpus[0], "data.data_dir": corpus[1], "data.tgt_langs": LANGS,
              "data.max_frames": 384, "data.frame_buckets": (384,), "data.token_buckets": (64,),
              "data.max_frames_per_batch": 16 * 384, "train.max_updates": max_updates, "train.log_every": 5,
              "train.checkpoint_every": 10, "train.eval_every": 0, "train.progress": False, "eval.beam": 2,
              "eval.max_len_b": 10, "eval.batch_size": 8, "sharing.multiway_split": "dev", **fields}
    return [f"--config.{k}={v!r}" if isinstance(v, tuple) else f"--config.{k}={v}" for k, v in values.items()]


def raw_state(run: Path, step: int) -> dict:
    """The TrainState saved at `step` of run `run` as nested dicts of host arrays, read without a target (so
    the optimizer state is whatever was written, field names such as `mu` / `nu` / `count` included)."""
    item = Path(run) / "checkpoints" / str(step) / "state"
    with ocp.PyTreeCheckpointer() as ckptr:
        meta = ckptr.metadata(item)
        tree = getattr(meta, "item_metadata", meta)
        tree = getattr(tree, "tree", tree)
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), tree)
        return ckptr.restore(item, args=ocp.args.PyTreeRestore(
            item=target, restore_args=jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)))


def _names(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def flat(tree) -> dict[tuple[str, ...], np.ndarray]:
    return {_names(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def optimizer_leaves(raw: dict, field: str) -> dict[tuple[str, ...], np.ndarray]:
    """{parameter path: array} of the optimizer-state subtree(s) named `field` (Adam's `mu` or `nu`)."""
    out = {}
    for names, x in flat(raw["opt_state"]).items():
        if field in names:
            key = names[names.index(field) + 1:]
            assert key not in out, f"two {field} subtrees hold {key}"
            out[key] = x
    return out


def adam_count(raw: dict) -> int:
    """The update count stored next to Adam's moments."""
    names = [n for n in flat(raw["opt_state"]) if "mu" in n]
    prefix = names[0][:names[0].index("mu")]
    return int(flat(raw["opt_state"])[prefix + ("count",)])


@pytest.fixture(scope="module")
def shared_raw(shared_run):
    return raw_state(shared_run, 10)


def test_differentiate_then_continue_through_the_commands(corpus, shared_run, shared_raw, tmp_path, capsys, caplog):
    """`mlst differentiate --budget 2.0` of the trained shared run, then `mlst train --init` from its output."""
    from mlst_jax.cli import main

    out = tmp_path / "diff"
    assert main(["differentiate", "--checkpoint", str(shared_run), "--out", str(out), "--budget", "2.0",
                 "--quiet"]) == 0
    out_text, err = capsys.readouterr()
    printed = json.loads(out_text.strip().splitlines()[-1])
    assert "task gradients" not in err  # --quiet: no progress bar
    src, shared = latest(out, LANGS), latest(shared_run, LANGS)
    plan = src.plan
    base = base_shapes(shared.params, shared.plan)
    assert shared.plan.is_shared and src.step == shared.step == 10
    n_shared, n = shared.plan.num_params(base), plan.num_params(base)
    units = set(differentiable_units(base))
    cap = SharingPlan.from_units(base, LANGS, lambda u: CopyTable.separate(2) if u in units else None
                                 ).num_params(base)  # every splittable unit split: where random/grad stop
    split = [u for u, t in plan.units().items() if t.num_copies > 1]
    if cap < 2.0 * n_shared:  # the tiny model cannot reach 2.0x
        assert n == cap and set(split) == units
    else:
        assert 2.0 * n_shared <= n <= 1.03 * 2.0 * n_shared and set(split) <= units
    assert printed["budget"] == 2.0 and printed["language_specific_units"] == len(split) > 0
    assert printed["multiple"] == round(n / n_shared, 4) and printed["capped"] == (n < 2.0 * n_shared)
    assert printed["capped"] and "budget 2x not reached: every differentiable unit is language-specific at " \
        f"{n / n_shared:.2f}x" in caplog.text  # the tiny model's cap lies below 2.0x
    meta = json.loads((out / "checkpoints" / "10" / "sharing_plan" / "metadata").read_text())
    assert meta["plan"] == plan.to_json()
    quads = (out / "analysis" / "quadruplets.csv").read_text().splitlines()
    assert quads[0] == "unit,copy,lang_j,lang_k,cosine" and len(quads) == 1 + len(units)  # one pair per unit

    # Every copy of a split leaf starts as its parent copy -- with two languages, the shared leaf -- in the
    # parameters and in both Adam moments; unsplit leaves are unchanged.
    diff_raw = raw_state(out, 10)
    p0, mu0, nu0 = flat(shared_raw["params"]), optimizer_leaves(shared_raw, "mu"), optimizer_leaves(shared_raw, "nu")
    p1, mu1, nu1 = flat(diff_raw["params"]), optimizer_leaves(diff_raw, "mu"), optimizer_leaves(diff_raw, "nu")
    assert set(p0) == set(mu0) == set(nu0) == set(p1) == set(mu1) == set(nu1)
    assert adam_count(shared_raw) == adam_count(diff_raw) == 10
    split_leaves = [names for names, t in plan.leaves() if t.num_copies > 1]
    for names, t in plan.leaves():
        for new, old in ((p1, p0), (mu1, mu0), (nu1, nu0)):
            if t.num_copies == 1:
                np.testing.assert_array_equal(new[names], old[names])
                continue
            assert new[names].shape == (t.num_copies,) + old[names].shape
            for copy in range(t.num_copies):
                np.testing.assert_array_equal(new[names][copy], old[names], err_msg=f"{names} copy {copy}")
    # the moments compared are real ones: nonzero after 10 updates, and not each other (a key projection's bias
    # is left out: attention's softmax is invariant to it, so its gradient is zero up to rounding)
    trained = [names for names in split_leaves if names[-2:] != ("k_proj", "bias")]
    assert trained
    for names in trained:
        assert np.abs(mu0[names]).max() > 0 and not np.array_equal(mu0[names], nu0[names]), names

    # continue training the differentiated model for 3 steps; it reports dev BLEU per language
    cont = tmp_path / "continued"
    assert main(["train", "--config", str(SYNTH_TINY), "--workdir", str(cont), "--init", str(out),
                 *overrides(corpus, 13, **{"sharing.strategy": "grad@2.0", "train.eval_every": 13,
                                           "data.vocab": out / "vocab" / "spm.model"})]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["step"] == 13 and np.isfinite(result["train/loss"])
    bleu = {k: v for k, v in result.items() if k.startswith("eval/bleu_")}
    assert set(bleu) == {"eval/bleu_de", "eval/bleu_es", "eval/bleu_avg"}
    assert all(0.0 <= v <= 100.0 for v in bleu.values())
    assert bleu["eval/bleu_avg"] == pytest.approx((bleu["eval/bleu_de"] + bleu["eval/bleu_es"]) / 2)
    after = latest(cont, LANGS)
    assert after.plan == plan and after.step == 13  # at its budget (or the cap) the plan stays as it is
    cont_raw = raw_state(cont, 13)
    assert adam_count(cont_raw) == 13  # Adam continued from the differentiated moments
    # the learning-rate schedule restarted at the source's step 10 (init.schedule's default): update 13 runs at the
    # schedule's third learning rate, not its thirteenth
    c = synth_tiny()
    lr = make_schedule(c.optim.to_dict())
    logged = [json.loads(l) for l in (cont / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in logged if r["split"] == "train" and r["step"] == 13] == [pytest.approx(float(lr(2)))]
    assert float(lr(2)) < float(lr(12)) / 5
    assert Checkpointer(cont / "checkpoints", keep=None, async_save=False).restore_json(13, "schedule_start") == 10
    # the copies of every split unit now differ, moments included: each language's batches update its own copy
    p2, mu2, nu2 = flat(cont_raw["params"]), optimizer_leaves(cont_raw, "mu"), optimizer_leaves(cont_raw, "nu")
    for names in trained:
        for x in (p2, mu2, nu2):
            assert np.abs(x[names][0] - x[names][1]).max() > 0, names

    # Differentiating the continued run again: at the cap (or its budget) nothing splits and no task gradients
    # are computed; every copy -- now distinct -- keeps its own parameters and moments.
    again = tmp_path / "again"
    assert main(["differentiate", "--checkpoint", str(cont), "--out", str(again), "--budget", "2.0", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["language_specific_units"] == len(split)
    assert latest(again, LANGS).plan == plan and not (again / "analysis" / "quadruplets.csv").exists()
    again_raw = raw_state(again, 13)
    for new, old in ((flat(again_raw["params"]), p2), (optimizer_leaves(again_raw, "mu"), mu2),
                     (optimizer_leaves(again_raw, "nu"), nu2)):
        assert set(new) == set(old)
        for names in new:
            np.testing.assert_array_equal(new[names], old[names], err_msg=str(names))


def test_heuristic_from_init_and_fresh_random(corpus, shared_run, tmp_path):
    from mlst_jax.train.trainer import train_and_evaluate

    res = train_and_evaluate(config(corpus, 12, strategy="enc", init=str(shared_run)), tmp_path / "enc")
    assert res["step"] == 12
    run = latest(tmp_path / "enc", LANGS)
    tables = run.plan.units()
    assert all(t.num_copies == (2 if u[0] == "decoder" else 1) for u, t in tables.items())
    with pytest.raises(ValueError, match="starts from a trained model"):
        train_and_evaluate(config(corpus, 2, strategy="grad@1.5"), tmp_path / "grad_fresh")


def test_iterative_schedule_differentiates_during_training(corpus, tmp_path):
    from mlst_jax.train.trainer import train_and_evaluate

    c = config(corpus, 4, strategy="grad@1.2", iterative_every=3, iterative_rounds=1)
    res = train_and_evaluate(c, tmp_path / "iterative")
    assert res["step"] == 4
    run = latest(tmp_path / "iterative", LANGS)
    base = base_shapes(run.params, run.plan)
    shared = run.plan.shared(base, LANGS).num_params(base)
    assert run.plan.num_params(base) >= 1.2 * shared and not run.plan.is_shared
    assert (tmp_path / "iterative" / "analysis" / "step_3" / "quadruplets.csv").is_file()
    ckpt = Checkpointer(tmp_path / "iterative" / "checkpoints", keep=None, async_save=False)
    assert ckpt.restore_json(3, "sharing_plan") == run.plan.to_json()  # saved right after the split
    ckpt.close()


def test_adapter_baseline_from_shared(corpus, shared_run, tmp_path):
    """Per-language adapters added to the trained shared model; only adapters train (no Adam state for the rest)."""
    from mlst_jax.train.trainer import train_and_evaluate

    c = config(corpus, 12, strategy="adapters", init=str(shared_run))
    with c.unlocked():  # a field the config's overrides do not hold yet
        c.model.s2t.overrides.adapter_dim = 16
    c.finetune.trainable = "adapters"
    assert train_and_evaluate(c, tmp_path / "adapters")["step"] == 12
    run, shared = latest(tmp_path / "adapters", LANGS), latest(shared_run, LANGS)
    flat = dict(jax.tree_util.tree_flatten_with_path(run.params)[0])
    moved = 0
    for path, x in jax.tree_util.tree_flatten_with_path(shared.params)[0]:
        np.testing.assert_array_equal(flat.pop(path), x)  # frozen
    assert flat and all("adapter" in jax.tree_util.keystr(p) for p in flat)
    for (names, t) in run.plan.leaves():
        if any("adapter" in n for n in names):
            assert t.num_copies == 2
            moved += 1
        else:
            assert t.num_copies == 1
    assert moved > 0


def start(c, workdir: Path):
    """`start_plan_and_state` of config `c` as the trainer calls it: (plan, initial state, data state)."""
    import jax.numpy as jnp

    from mlst_jax.train.init_from import start_plan_and_state
    from mlst_jax.train import config as cfglib
    from mlst_jax.train import sharding as shd
    from mlst_jax.train.optim import optimizer_of
    from mlst_jax.train.state import abstract_params
    from mlst_jax.train.tasks import get_task

    task = get_task(c)
    vocab = task.load_vocab(workdir)
    model = task.model(task.model_config(vocab))
    example = {"features": jax.ShapeDtypeStruct((1, 16, 80), jnp.float32),
               "feature_lengths": jax.ShapeDtypeStruct((1,), jnp.int32),
               "decoder_input": jax.ShapeDtypeStruct((1, 4), jnp.int32)}
    mesh = shd.make_mesh(*cfglib.resolve_mesh(c, jax.device_count()))
    base = abstract_params(model, example)
    tx = optimizer_of(c, task.trainable_mask(base))
    return start_plan_and_state(c, task.stream_names, model, tx, jax.random.PRNGKey(c.seed), example, mesh, base, vocab, workdir)


def test_optimizer_carry_over_fails_loudly_unless_reset(corpus, shared_run, tmp_path):
    """--init with an optimizer whose state cannot take the source's moments is an error naming the checkpoint
    and the reason; init.reset_optimizer=True copies parameters and step and starts Adam fresh instead."""
    from mlst_jax.train.trainer import train_and_evaluate

    c = config(corpus, 12, strategy="multilingual", init=str(shared_run))
    c.data.vocab = str(shared_run / "vocab" / "spm.model")
    c.optim.grad_accum = 2  # optax.MultiSteps: another optimizer-state layout than the shared run's
    assert c.init.reset_optimizer is False  # the default
    with pytest.raises(ValueError) as e:
        train_and_evaluate(c, tmp_path / "strict")
    message = str(e.value)
    assert f"init.run={shared_run}: the optimizer state of checkpoint {shared_run / 'checkpoints' / '10'} " \
           f"cannot be carried over" in message
    assert "the optimizer settings differ: optim.grad_accum 1 -> 2" in message
    assert "set init.reset_optimizer=True" in message
    assert not list((tmp_path / "strict" / "checkpoints").glob("[0-9]*"))  # nothing trained

    c.init.reset_optimizer = True
    plan, state, data_state = start(c, tmp_path / "reset")
    shared = latest(shared_run, LANGS)
    assert plan.is_shared and data_state is None and int(state.step) == 10
    params = flat(jax.device_get(state.params))
    assert set(params) == set(flat(shared.params))
    for names, x in flat(shared.params).items():
        np.testing.assert_array_equal(params[names], x)
    opt = flat(jax.device_get(state.opt_state))
    moments = {n: x for n, x in opt.items() if x.ndim}
    # fresh: zero moments and accumulated gradients (3 per parameter under MultiSteps), counters at 0
    assert sum(x.size for x in moments.values()) == 3 * sum(x.size for x in params.values())
    assert all(not x.any() for x in moments.values())
    assert all(int(x) == 0 for n, x in opt.items() if n[-1] in ("count", "mini_step", "gradient_step"))


@pytest.mark.parametrize("variant,trained_leaf,frozen_leaf", [
    ("lna-d", ("encoder", "layers_0", "ffn", "fc1", "kernel"), ("decoder", "layers_0", "ffn", "fc1", "kernel")),
    ("lna-e", ("decoder", "layers_0", "ffn", "fc1", "kernel"), ("encoder", "layers_0", "ffn", "fc1", "kernel")),
])
def test_lna_trains_only_its_leaves(corpus, shared_run, shared_raw, tmp_path, variant, trained_leaf, frozen_leaf):
    """An LNA row of configs/mustc_sharing.py through the trainer: the shared run continued with
    finetune.trainable=VARIANT for 2 steps. Frozen leaves stay bitwise, trained ones move, and the optimizer state
    (fresh: the shared run trained every parameter) holds Adam moments for the trained leaves only."""
    from mlst_jax.finetune import lna
    from mlst_jax.train.trainer import train_and_evaluate

    row = load_config(f"{ROOT / 'configs' / 'mustc_sharing.py'}:{variant}")
    c = config(corpus, 12, strategy=row.sharing.strategy, init=str(shared_run))
    c.finetune.trainable = row.finetune.trainable
    c.data.vocab = str(shared_run / "vocab" / "spm.model")
    assert train_and_evaluate(c, tmp_path / variant)["step"] == 12
    raw = raw_state(tmp_path / variant, 12)
    before, after = flat(shared_raw["params"]), flat(raw["params"])
    mask = flat(lna.trainable_mask(shared_raw["params"], variant))
    trained = {n for n, f in mask.items() if f}
    frozen = set(mask) - trained
    assert trained_leaf in trained and frozen_leaf in frozen
    for names in frozen:
        np.testing.assert_array_equal(after[names], before[names], err_msg=str(names))
    for names in trained:
        if names[-2:] != ("k_proj", "bias"):  # its gradient is zero up to rounding (softmax shift invariance)
            assert np.abs(after[names] - before[names]).max() > 0, names
    mu, nu = optimizer_leaves(raw, "mu"), optimizer_leaves(raw, "nu")
    assert set(mu) == set(nu) == trained
    assert all(mu[n].shape == nu[n].shape == before[n].shape for n in trained)
    moments = sum(x.size for x in flat(raw["opt_state"]).values() if x.ndim)
    assert moments == 2 * sum(before[n].size for n in trained)  # nothing for the frozen leaves
    assert adam_count(raw) == 2
