"""mlst_jax: multilingual end-to-end speech translation in JAX/Flax."""

__version__ = "0.1.0"
