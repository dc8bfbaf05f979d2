"""Target vocabulary: a SentencePiece model for segmentation and a piece → id table in fairseq/HF order.

Ids 0..3 are `<s>`, `<pad>`, `</s>`, `<unk>` (fairseq's Dictionary and HF's Speech2Text both use them), and
target-language tags are pieces spelled `<lang:xx>`. The table is kept separately from SentencePiece's own ids
because fairseq and HF renumber the pieces.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import sentencepiece as spm

SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
BOS_ID, PAD_ID, EOS_ID, UNK_ID = range(4)
LANG_TAG = re.compile(r"^<lang:([A-Za-z_-]+)>$")
HF_VOCAB, HF_SPM = "vocab.json", "sentencepiece.bpe.model"


def lang_tag(lang: str) -> str:
    return f"<lang:{lang}>"


class Vocab:
    """SentencePiece segmentation plus the id table; encodes text and decodes ids back to detokenized text."""

    def __init__(self, spm_path: str | os.PathLike, pieces: list[str]):
        if list(pieces[:4]) != list(SPECIALS):
            raise ValueError(f"vocabulary must start with {SPECIALS}, got {pieces[:4]}")
        self.spm_path = str(spm_path)
        self.sp = spm.SentencePieceProcessor(model_file=self.spm_path)
        self.pieces = list(pieces)
        self.index = {p: i for i, p in enumerate(self.pieces)}
        if len(self.index) != len(self.pieces):
            raise ValueError(f"vocabulary for {self.spm_path} has duplicate pieces")
        self.lang_ids = {m.group(1): i for i, p in enumerate(self.pieces) if (m := LANG_TAG.match(p))}
        self._skip = {BOS_ID, PAD_ID, EOS_ID, *self.lang_ids.values()}

    def __len__(self) -> int:
        return len(self.pieces)

    @property
    def languages(self) -> list[str]:
        return sorted(self.lang_ids)

    def lang_id(self, lang: str) -> int:
        """Id of the `<lang:xx>` tag; ValueError naming the known languages when there is none."""
        if lang not in self.lang_ids:
            raise ValueError(f"unknown target language {lang!r}; this vocabulary has tags for {self.languages}")
        return self.lang_ids[lang]

    def encode(self, text: str, lang: str | None = None, add_eos: bool = True) -> list[int]:
        """Text → ids, with the language tag prepended when `lang` is given and `</s>` appended."""
        ids = [self.index.get(p, UNK_ID) for p in self.sp.encode(text, out_type=str)]
        return ([self.lang_id(lang)] if lang else []) + ids + ([EOS_ID] if add_eos else [])

    def decode(self, ids) -> str:
        """Ids → detokenized text, dropping specials and language tags and stopping at `</s>`."""
        out = []
        for i in map(int, ids):
            if i == EOS_ID:
                break
            if i not in self._skip:
                if not 0 <= i < len(self.pieces):
                    raise ValueError(f"token id {i} out of range for a vocabulary of {len(self.pieces)}")
                out.append(self.pieces[i])
        return self.sp.decode_pieces(out)

    # -- formats -------------------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike) -> None:
        """Writes the HF Speech2Text layout: `vocab.json` + `sentencepiece.bpe.model`."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / HF_VOCAB).write_text(json.dumps(self.index, ensure_ascii=False, indent=0), encoding="utf-8")
        if Path(self.spm_path).resolve() != (d / HF_SPM).resolve():
            (d / HF_SPM).write_bytes(Path(self.spm_path).read_bytes())

    @classmethod
    def from_hf_dir(cls, directory: str | os.PathLike) -> "Vocab":
        d = Path(directory)
        for name in (HF_VOCAB, HF_SPM):
            if not (d / name).is_file():
                raise ValueError(f"{d} has no {name}: not a Speech2Text tokenizer directory")
        table = json.loads((d / HF_VOCAB).read_text(encoding="utf-8"))
        pieces = [None] * len(table)
        for piece, i in table.items():
            if not 0 <= i < len(table) or pieces[i] is not None:
                raise ValueError(f"{d / HF_VOCAB}: ids are not a permutation of 0..{len(table) - 1} (at {piece!r})")
            pieces[i] = piece
        return cls(d / HF_SPM, pieces)

    @classmethod
    def from_fairseq(cls, dict_txt: str | os.PathLike, spm_model: str | os.PathLike) -> "Vocab":
        """fairseq Dictionary file (`piece count` per line, specials implied) + its SentencePiece model."""
        pieces = list(SPECIALS)
        with open(dict_txt, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                fields = line.rstrip("\n").split(" ")
                if len(fields) < 2:
                    raise ValueError(f"{dict_txt}:{n}: expected '<piece> <count>', got {line.rstrip()!r}")
                pieces.append(fields[0])
        return cls(spm_model, pieces)

    @classmethod
    def from_spm(cls, spm_model: str | os.PathLike) -> "Vocab":
        """Uses SentencePiece's own ids; its first four pieces must be the specials (our trainer ensures it)."""
        sp = spm.SentencePieceProcessor(model_file=str(spm_model))
        return cls(spm_model, [sp.id_to_piece(i) for i in range(sp.get_piece_size())])


def train_vocab(texts, model_prefix: str | os.PathLike, vocab_size: int, langs=(), model_type: str = "unigram",
                character_coverage: float = 1.0) -> Vocab:
    """Trains a joint SentencePiece target vocabulary with `<lang:xx>` user symbols and fairseq's special ids.

    `vocab_size` counts everything (specials and tags included). Writes `<model_prefix>.model` / `.vocab`.
    """
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError("cannot train a vocabulary on no text")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_prefix=str(model_prefix), vocab_size=vocab_size,
        model_type=model_type, character_coverage=character_coverage,
        bos_id=BOS_ID, pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID,
        bos_piece=SPECIALS[0], pad_piece=SPECIALS[1], eos_piece=SPECIALS[2], unk_piece=SPECIALS[3],
        user_defined_symbols=[lang_tag(l) for l in langs], hard_vocab_limit=False,
        num_threads=1, minloglevel=2)
    return Vocab.from_spm(f"{model_prefix}.model")
