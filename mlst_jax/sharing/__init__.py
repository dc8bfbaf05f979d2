"""Parameter sharing across target languages (seed 000): plans, strategies, per-task gradients, analyses."""
from mlst_jax.sharing.plan import CopyTable, SharingPlan, base_shapes, unit_of
from mlst_jax.sharing.strategies import differentiable_units, grad_plan, make_plan, parse_strategy, random_plan

__all__ = ["CopyTable", "SharingPlan", "base_shapes", "unit_of", "differentiable_units", "grad_plan",
           "make_plan", "parse_strategy", "random_plan"]
