"""Random sentences over a small multilingual word list and a SentencePiece vocabulary for them: the text sources
of the pipeline tests."""
import numpy as np

from mlst_jax.data.vocab import train_vocab

WORDS = "alpha beta gamma delta eins zwei drei uno dos tres un deux trois".split()
LONG = " ".join(WORDS * 3)


def words(rng, lo, hi):
    """`lo` to `hi - 1` random words."""
    return " ".join(rng.choice(WORDS, int(rng.integers(lo, hi))))


def word_vocab(directory):
    """A 60-piece vocabulary with tags for de, en and fr, trained on 200 four-word sentences."""
    rng = np.random.default_rng(0)
    return train_vocab([words(rng, 4, 5) for _ in range(200)], directory / "spm", 60, ("de", "en", "fr"))
