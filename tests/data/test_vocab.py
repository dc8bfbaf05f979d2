"""Joint SentencePiece target vocabulary: special ids, language tags, encode/decode, HF and fairseq files."""
import json

import pytest

from mlst_jax.data.vocab import EOS_ID, PAD_ID, SPECIALS, UNK_ID, Vocab, train_vocab

TEXTS = {"de": "ich sehe den großen Hund im Garten", "fr": "je vois le grand chien dans le jardin",
         "ru": "я вижу большую собаку в саду"}


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    d = tmp_path_factory.mktemp("spm")
    return train_vocab([t for t in TEXTS.values()] * 20, d / "spm", 60, langs=sorted(TEXTS))


def test_specials_and_tags(vocab):
    assert vocab.pieces[:4] == list(SPECIALS)
    assert vocab.languages == ["de", "fr", "ru"]
    assert [vocab.pieces[vocab.lang_id(l)] for l in vocab.languages] == ["<lang:de>", "<lang:fr>", "<lang:ru>"]
    with pytest.raises(ValueError, match=r"unknown target language 'it'.*\['de', 'fr', 'ru'\]"):
        vocab.lang_id("it")


@pytest.mark.parametrize("lang", sorted(TEXTS))
def test_tag_prepended_and_round_trip(vocab, lang):
    ids = vocab.encode(TEXTS[lang], lang)
    assert ids[0] == vocab.lang_id(lang) and ids[-1] == EOS_ID
    assert UNK_ID not in ids and PAD_ID not in ids
    assert vocab.decode(ids) == TEXTS[lang]  # tag and </s> dropped, text detokenized
    assert vocab.decode(ids[1:] + [5, 6]) == TEXTS[lang]  # stops at </s>


def test_unknown_characters_map_to_unk(vocab):
    assert UNK_ID in vocab.encode("ωψ", add_eos=False)


def test_hf_and_fairseq_files_round_trip(vocab, tmp_path):
    vocab.save(tmp_path / "hf")
    again = Vocab.from_hf_dir(tmp_path / "hf")
    assert again.pieces == vocab.pieces
    assert json.loads((tmp_path / "hf" / "vocab.json").read_text())["<lang:fr>"] == vocab.lang_id("fr")
    # fairseq's dict.txt lists the pieces after the four implied specials
    (tmp_path / "dict.txt").write_text("".join(f"{p} 1\n" for p in vocab.pieces[4:]), encoding="utf-8")
    fs = Vocab.from_fairseq(tmp_path / "dict.txt", vocab.spm_path)
    assert fs.pieces == vocab.pieces and fs.encode(TEXTS["ru"], "ru") == vocab.encode(TEXTS["ru"], "ru")
    (tmp_path / "bad.txt").write_text("onlyonefield\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.txt:1: expected '<piece> <count>'"):
        Vocab.from_fairseq(tmp_path / "bad.txt", vocab.spm_path)
    with pytest.raises(ValueError, match="no vocab.json"):
        Vocab.from_hf_dir(tmp_path)
    with pytest.raises(ValueError, match="no text"):
        train_vocab(["", "  "], tmp_path / "x", 10)
