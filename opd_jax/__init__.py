"""opd_jax: on-policy distillation of vision-language-action policies, in JAX."""
import os as _os
import sys as _sys

# Run as a tool (python -m opd_jax.X): XLA's C++ log stays quiet unless asked for
# (TF_CPP_MIN_LOG_LEVEL=0). It prints a note per program loaded from the compilation cache
# and a slow-compile alarm; real failures surface as Python exceptions. It must be set
# before jaxlib loads. "1" is what a parent process that imported JAX leaves behind.
if _sys.argv and _sys.argv[0] == "-m" and _os.environ.get("TF_CPP_MIN_LOG_LEVEL", "1") == "1":
  _os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
