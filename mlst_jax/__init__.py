"""mlst_jax: multilingual end-to-end speech translation in JAX/Flax."""

__version__ = "0.1.0"


def __getattr__(name):
    if name == "Translator":
        from mlst_jax.translator import Translator

        return Translator
    raise AttributeError(f"module 'mlst_jax' has no attribute {name!r}")
