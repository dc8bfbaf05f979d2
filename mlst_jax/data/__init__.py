"""Data pipelines and synthetic data generators."""
