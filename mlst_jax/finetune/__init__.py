"""Parameter-efficient finetuning: trainable-parameter masks (LNA, seed 001) and bottleneck adapters (seed 000)."""
from mlst_jax.finetune.adapters import (adapter_model_size, adapter_size,
                                        adapter_units, add_adapters, has_adapters, strip_adapters)
from mlst_jax.finetune.lna import VARIANTS, Variant, trainable_counts, trainable_mask

__all__ = ["adapter_model_size", "adapter_size", "adapter_units",
           "add_adapters", "has_adapters", "strip_adapters", "VARIANTS", "Variant", "trainable_counts",
           "trainable_mask"]
