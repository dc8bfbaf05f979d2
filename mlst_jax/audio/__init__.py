"""Audio front end: loading, Kaldi log-mel filterbanks and CMVN."""
from mlst_jax.audio.cmvn import GlobalCMVN, utterance_cmvn
from mlst_jax.audio.fbank import fbank, fbank_batch
from mlst_jax.audio.io import SAMPLE_RATE, load_audio

__all__ = ["fbank", "fbank_batch", "utterance_cmvn", "GlobalCMVN", "load_audio", "SAMPLE_RATE"]
