"""PyTorch baseline: a re-implementation of opd_jax's Octo-style policy (policy.py) with weights
converted from the JAX parameters, so that the two frameworks' outputs and speeds can be compared.
Needs torch: pip install -e '.[torch]'."""
