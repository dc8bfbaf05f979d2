"""`mlst data`: one-line errors for folders that are not the corpus named, the skip summary last, defaults in --help
and README's account of what `synth` writes."""
import re
from pathlib import Path

import numpy as np
import pytest

from mlst_jax import cli
from mlst_jax.data.writers import Talk, write_mustc

ROOT = Path(__file__).resolve().parents[2]
LAYOUT_NAMES = {"mustc": "MuST-C", "covost2": "CoVoST 2", "europarl_st": "Europarl-ST"}


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_prepare_on_a_folder_that_is_not_a_covost2_release(tmp_path, capsys):
    manual = tmp_path / "downloads"
    (manual / "en" / "clips").mkdir(parents=True)
    (manual / "notes.txt").write_text("not a corpus\n")
    prepare = ["data", "prepare", "--dataset", "covost2", "--manual-dir", manual, "--data-dir", tmp_path / "tfds"]
    rc, _, err = run_cli(capsys, *prepare, "--config", "en_de")
    assert rc == 2
    assert err == (f"mlst data: error: {manual} is not a CoVoST 2 release for en->de: no covost_v2.en_de.tsv or "
                   f"covost_v2.en_de.train.tsv in {manual / 'en_de'}, {manual}, {manual / 'en'}\n")
    rc, _, err = run_cli(capsys, *prepare)
    assert (rc, err) == (2, f"mlst data: error: {manual}: no covost2 direction found; name the configs with "
                            f"--config\n")
    rc, _, err = run_cli(capsys, *prepare, "--config", "en_xx")
    assert rc == 2 and err.startswith("mlst data: error: --config: covost2 has no config en_xx (it has fr_en, de_en,")


def help_defaults(capsys, *argv) -> dict[str, str | None]:
    """`{option: its "(default: ...)" or None}` of a command's --help output."""
    with pytest.raises(SystemExit) as e:
        cli.main([*argv, "--help"])
    assert e.value.code == 0
    options = re.split(r"\n  (?=-)", capsys.readouterr().out.split("\noptions:\n", 1)[1])
    out = {}
    for option in options:
        text = " ".join(option.split())
        default = re.search(r"\(default: ([^()]*)\)$", text)
        out[re.match(r"-*([\w-]+)", text)[1]] = default and default[1]
    return out


def test_data_help_shows_the_defaults(capsys):
    assert help_defaults(capsys, "data", "synth") == {
        "h": None, "out": None, "size": "tiny", "seed": "0", "lexicon": "full", "layouts": "mustc",
        "langs": "en,de,es,fr,it,nl,pt,ro,ru", "max-words": "no limit", "noise-snr": "no noise",
        "workers": "CPU count", "overwrite": None, "quiet": None}
    assert help_defaults(capsys, "data", "prepare") == {
        "h": None, "dataset": None, "manual-dir": None, "data-dir": None,
        "config": "every direction in the manual dir, audio features: the configs training reads"}
    assert help_defaults(capsys, "data", "vocab") == {
        "h": None, "manual-dir": None, "size": "10000", "out": None, "splits": "train"}


def test_readme_says_which_layouts_synth_writes(capsys):
    """README's quick tour runs `mlst data synth` without --layouts: it says that writes the parser's default."""
    default = help_defaults(capsys, "data", "synth")["layouts"]
    tour = (ROOT / "README.md").read_text().split("## Quick tour", 1)[1]
    lines = tour.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("mlst data synth "))
    assert "--layouts" not in lines[i].split("#")[0]
    comment = " ".join(line.lstrip("# ") for line in lines[i - 2:i] if line.startswith("#"))
    written = " and ".join(LAYOUT_NAMES[layout] for layout in default.split(","))
    assert f"in the {written} layout " in comment, comment
    docs = " ".join((ROOT / "docs" / "data.md").read_text().split())
    assert f"without `--layouts` it writes the {written} layout only" in docs


def test_prepare_reports_the_skipped_utterances_last(tmp_path, capsys, caplog):
    speech = (0.1 * np.random.default_rng(0).standard_normal(6000)).astype(np.float32)
    write_mustc(tmp_path / "mustc", ["en-de"], "dev", [Talk("ted_1", "spk.1", [(speech, "one", "eins"),
                                                                                 (speech, "two", "")])])
    rc, out, _ = run_cli(capsys, "data", "prepare", "--dataset", "mustc", "--manual-dir", tmp_path / "mustc",
                         "--data-dir", tmp_path / "tfds")
    assert rc == 0
    assert out.splitlines()[-2:] == ["mustc/en-de examples: dev 1",
                                     "skipped 1 utterance(s) (empty_text 1); the warnings above list them"]
    assert [r.getMessage() for r in caplog.records] == [
        f"mustc/en-de dev: skipped 1 utterance(s):\n  empty_text: 1\n"
        f"    e.g. {tmp_path}/mustc/en-de/data/dev/txt/dev.yaml:2 (ted_1_1): empty target text"]
