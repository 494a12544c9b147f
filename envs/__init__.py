"""Vectorized MuJoCo-MJX tabletop environments with a pure-JAX renderer.

``envs.make(name)`` returns a suite with pure ``reset(key)`` / ``step(state, action)``
functions. This package never imports ``opd_jax``.

MJX on CPU needs XLA's fusion emitters off (otherwise forward kinematics of a
7-link arm takes ~0.5 s per call). Importing ``envs`` before JAX sets that flag.
"""
import os as _os
import sys as _sys
import warnings as _warnings

_FLAG = "--xla_cpu_use_fusion_emitters=false"


def _set_xla_flags():
  flags = _os.environ.get("XLA_FLAGS", "")
  if _FLAG in flags:
    return
  if "jax" in _sys.modules:
    try:
      import jax  # noqa: F401
      from jax._src import xla_bridge
      initialised = bool(xla_bridge._backends)  # pylint: disable=protected-access
    except Exception:  # pragma: no cover - private API moved
      initialised = True
    if initialised:
      _warnings.warn(
          "JAX started before `envs` was imported without XLA_FLAGS="
          f"{_FLAG}; MJX on CPU will be ~100x slower. Import envs first or "
          "export the flag.")
      return
  _os.environ["XLA_FLAGS"] = (flags + " " + _FLAG).strip()


_set_xla_flags()


def _import_mjx_quietly():
  """MJX prints "Failed to import warp" (an optional GPU backend these suites do not use) on
  import; that line is swallowed, errors still raise."""
  import contextlib
  import io
  with contextlib.redirect_stdout(io.StringIO()):
    from mujoco import mjx  # noqa: F401


_import_mjx_quietly()

from envs.core import State, make, register, registered  # noqa: E402,F401
