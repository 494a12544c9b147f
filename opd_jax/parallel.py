"""Device mesh and shardings: envs and batches on a ``data`` axis, params replicated.

On CPU, XLA runs one device's work on about one core, so a CPU host should
expose as many devices as cores (``--xla_force_host_platform_device_count``;
opd_jax.train sets it from ``--host_devices``). Multi-host pods call
``jax.distributed.initialize()`` first (see launch/).
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def make_mesh(num_devices: int = -1) -> Mesh:
  """A 1-D ``data`` mesh over the first ``num_devices`` devices (-1: all)."""
  devices = jax.devices()
  n = len(devices) if num_devices in (-1, None) else num_devices
  if not 1 <= n <= len(devices):
    raise ValueError(f"config.mesh.data={num_devices}, but {len(devices)} device(s) are visible")
  return Mesh(np.asarray(devices[:n]), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, axis: int = 0) -> NamedSharding:
  """Shards dimension ``axis`` over ``data``."""
  return NamedSharding(mesh, P(*([None] * axis), "data"))


def shard_batch(x, mesh: Mesh, axis: int = 0):
  """Constrains (inside jit) every leaf's ``axis`` dimension onto the data axis."""
  return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, batch_sharding(mesh, axis)), x)
