"""Synthetic data: text-to-speech and generated corpora."""
