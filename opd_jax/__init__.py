"""opd_jax: on-policy distillation of robot VLA policies in JAX (models, objectives, training)."""
