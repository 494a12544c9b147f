"""LIBERO-style suites: spatial, object, goal and long (LIBERO-10)."""
from __future__ import annotations

import functools

from envs.core import register
from envs.tabletop import TabletopSuite


def _factory(module_name: str):
  def make(**overrides):
    import importlib  # pylint: disable=import-outside-toplevel
    module = importlib.import_module(f"envs.libero.{module_name}")
    return TabletopSuite(_spec(module_name, module), **overrides)
  return make


@functools.lru_cache(maxsize=None)
def _spec(module_name, module):
  return module.spec()


# Expert figures per suite (50 evaluation states per task, and after random actions) are in
# benchmarks/RESULTS.md ("Session 14": every task >= 96% clean, >= 90% after random actions).
SUITES = {"libero_spatial": "spatial", "libero_object": "object",
          "libero_goal": "goal", "libero_10": "long"}
for _name, _module in SUITES.items():
  register(_name, _factory(_module))
