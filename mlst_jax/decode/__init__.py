"""Decoding: jitted, model-agnostic beam and greedy search."""
from mlst_jax.decode.beam_search import BeamOutput, beam_search, greedy_search, strip_and_decode_ids

__all__ = ["BeamOutput", "beam_search", "greedy_search", "strip_and_decode_ids"]
