"""`mlst average` exports: one model per language for a run with language-specific parameters, each serving its
language only, and the messages for a directory that is no training run."""
import json

import jax
import numpy as np

from mlst_jax import cli


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_language_specific_exports_serve_their_language(reference_run, tmp_path, capsys, monkeypatch):
    """The reference run with one decoder unit made Spanish-specific (its es copy moved off the shared one)."""
    import soundfile as sf

    from mlst_jax.sharing.plan import SharingPlan
    from mlst_jax.train.run import Run
    from mlst_jax.translator import Translator

    workdir = reference_run[0]
    with Run(workdir) as run:
        base = run.averaged_params(2)
    shared = SharingPlan.shared(base, ("de", "es"))
    plan = shared.split(next(u for u in shared.units() if u[0] == "decoder"), ["es"])

    def moved(x, table):
        x = np.array(x)
        if table.num_copies == 2:
            x[1] += 1.0
        return x

    stored = jax.tree.map(moved, plan.expand(base), plan.tables)
    monkeypatch.setattr(Run, "averaged_params", lambda self, last: stored)
    monkeypatch.setattr(Run, "plan", lambda self, step=None, langs=None: plan)
    out = tmp_path / "grad"
    rc, printed, err = run_cli(capsys, "average", "--workdir", workdir, "--last", "2", "--out", out)
    assert rc == 0, err
    assert json.loads(printed) == {"steps": [12, 16], "out": [str(out / "de"), str(out / "es")]}
    for lang in ("de", "es"):
        assert json.loads((out / lang / "mlst_model.json").read_text())["langs"] == [lang]
        exported = Translator.from_pretrained(out / lang)
        assert exported.langs == (lang,)
        jax.tree.map(np.testing.assert_array_equal, exported.params, plan.view(stored, lang))

    sf.write(tmp_path / "a.wav", (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32), 16000)
    rc, printed, err = run_cli(capsys, "translate", "--checkpoint", out / "de", "--tgt-lang", "es",
                               tmp_path / "a.wav")
    assert (rc, printed) == (2, "")
    assert err == f"mlst translate: error: {out / 'de'} serves de only; translate into es with {out / 'es'}\n"
    fast = ["--beam", "1", "--max-len-b", "4", tmp_path / "a.wav"]
    rc, printed, err = run_cli(capsys, "translate", "--checkpoint", out / "es", "--tgt-lang", "es", *fast)
    assert rc == 0 and json.loads(printed)["tgt_lang"] == "es", err
    # the run itself translates as its export does: the average of its last checkpoints, the language's copies
    rc, from_run, err = run_cli(capsys, "translate", "--checkpoint", workdir, "--last", "2", "--tgt-lang", "es", *fast)
    assert rc == 0 and from_run == printed, err
    rc, _, err = run_cli(capsys, "translate", "--checkpoint", workdir, "--tgt-lang", "fr", *fast)
    assert (rc, err) == (2, f"mlst translate: error: {workdir} has language-specific parameters: name one of its "
                            f"streams (de, es), not 'fr'\n")

    monkeypatch.undo()  # the run as it is: fully shared, one export for every language
    rc, printed, err = run_cli(capsys, "average", "--workdir", workdir, "--last", "2", "--out", tmp_path / "shared")
    assert rc == 0, err
    assert json.loads((tmp_path / "shared" / "mlst_model.json").read_text())["langs"] is None
    assert Translator.from_pretrained(tmp_path / "shared").lang_id("es") == exported.lang_id("es")


def test_average_outside_a_run_says_so(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    no_config = tmp_path / "no_config"
    (no_config / "checkpoints").mkdir(parents=True)
    for workdir, message in ((empty, f"{empty} has no checkpoints/: not a training run directory"),
                             (tmp_path / "nowhere", f"{tmp_path / 'nowhere'} does not exist"),
                             (no_config, f"{no_config / 'checkpoints'}: no checkpoints")):
        rc, out, err = run_cli(capsys, "average", "--workdir", workdir, "--out", tmp_path / "model")
        assert (rc, out, err) == (2, "", f"mlst average: error: {message}\n")
