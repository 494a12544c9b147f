"""Device mesh, shardings and the few multi-process helpers.

On CPU, XLA runs one device's work on about one core, so a CPU host should
expose as many devices as cores (``--xla_force_host_platform_device_count``;
opd_jax.train sets it from ``--host_devices``).

Several processes (a pod's hosts; ``launch/local.sh`` on one machine) run the same
programs on one global mesh after ``jax.distributed.initialize()`` (``--distributed``).
Each world's random key is split from the run's key inside the compiled rollout and the
worlds are sharded over the ``data`` axis, so every process steps only its own shard, and
the numbers do not depend on how many processes share the mesh (a test compares two
processes with one). Host-side code sees global arrays only through :func:`to_host`;
files are written by the main process (:func:`is_main`); a stop is agreed by all
(:func:`any_process`).
"""
from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def make_mesh(num_devices: int = -1) -> Mesh:
  """A 1-D ``data`` mesh over the first ``num_devices`` devices (-1: all, of every process)."""
  devices = jax.devices()
  n = len(devices) if num_devices in (-1, None) else num_devices
  if not 1 <= n <= len(devices):
    raise ValueError(f"config.mesh.data={num_devices}, but {len(devices)} device(s) are visible")
  if jax.process_count() > 1 and n != len(devices):
    raise ValueError(f"config.mesh.data={num_devices}: with {jax.process_count()} processes the "
                     f"mesh spans every device ({len(devices)}); use -1")
  return Mesh(np.asarray(devices[:n]), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, axis: int = 0) -> NamedSharding:
  """Shards dimension ``axis`` over ``data``."""
  return NamedSharding(mesh, P(*([None] * axis), "data"))


def shard_batch(x, mesh: Mesh, axis: int = 0):
  """Constrains (inside jit) every leaf's ``axis`` dimension onto the data axis."""
  return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, batch_sharding(mesh, axis)), x)


def is_main() -> bool:
  """Whether this process writes files and logs (process 0; always true in one process)."""
  return jax.process_index() == 0


def to_host(x) -> np.ndarray:
  """The whole value of an array as numpy, on every process (gathered when other processes
  hold parts of it)."""
  if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def place(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A global array from host data that every process holds whole (each process copies in
  only its own shards)."""
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def any_process(flag: bool) -> bool:
  """Whether ``flag`` is set on any process (a collective: every process must call it)."""
  if jax.process_count() == 1:
    return bool(flag)
  return bool(np.any(multihost_utils.process_allgather(np.int32(bool(flag)))))


def barrier(name: str) -> None:
  """Waits until every process reaches the same ``name``."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
