"""Jobs built on the trainer: the main demo, the XMEF miniature, gradient-guided differentiation, the similarity
analysis of a run, its export, and seed 001's parameter tables."""
