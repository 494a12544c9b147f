"""Device mesh, shardings and the few multi-process helpers.

On CPU, XLA runs one device's work on about one core, so a CPU host should
expose as many devices as cores (``--xla_force_host_platform_device_count``;
opd_jax.train sets it from ``--host_devices``).

Parameters are replicated unless ``config.mesh.fsdp`` > 1 splits them (and the optimiser
state and the teacher's parameters) over an ``fsdp`` axis, for models too large for one
device.

Several processes (a pod's hosts; ``launch/local.sh`` on one machine) run the same
programs on one global mesh after ``jax.distributed.initialize()`` (``--distributed``).
Each world's random key is split from the run's key inside the compiled rollout and the
worlds are sharded over the mesh, so every process steps only its own shard, and
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

WORLDS = ("data", "fsdp")   # a batch's world (or sample) axis is split over every device


def make_mesh(data: int = -1, fsdp: int = 1) -> Mesh:
  """A ``data`` x ``fsdp`` mesh over the first ``data * fsdp`` devices (data=-1: all of them,
  of every process). Batches are split over both axes; parameters, optimiser state and the
  teacher's parameters over ``fsdp`` (:func:`param_sharding`; fsdp=1: replicated)."""
  devices = jax.devices()
  if fsdp < 1 or len(devices) % fsdp:
    raise ValueError(f"config.mesh.fsdp={fsdp} must be >= 1 and divide the {len(devices)} "
                     f"device(s), e.g. {_divisors(len(devices))}")
  n = len(devices) if data in (-1, None) else data * fsdp
  if not 1 <= n <= len(devices):
    raise ValueError(f"config.mesh.data={data} x config.mesh.fsdp={fsdp} devices, but "
                     f"{len(devices)} are visible")
  if jax.process_count() > 1 and n != len(devices):
    raise ValueError(f"config.mesh.data={data}: with {jax.process_count()} processes the mesh "
                     f"spans every device ({len(devices)}); use -1")
  return Mesh(np.asarray(devices[:n]).reshape(n // fsdp, fsdp), ("data", "fsdp"))


def _divisors(n: int) -> list[int]:
  return [d for d in range(1, n + 1) if n % d == 0]


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, axis: int = 0) -> NamedSharding:
  """Shards dimension ``axis`` over every device of the mesh."""
  return NamedSharding(mesh, P(*([None] * axis), WORLDS))


def shard_batch(x, mesh: Mesh, axis: int = 0):
  """Constrains (inside jit) every leaf's ``axis`` dimension onto the whole mesh."""
  return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, batch_sharding(mesh, axis)), x)


def param_sharding(mesh: Mesh):
  """``leaf -> NamedSharding`` for parameters and optimiser state: a leaf's largest dimension
  that ``fsdp`` divides is split over that axis (ZeRO-3 / FSDP: XLA gathers it where it is
  used), anything else (scalars, small vectors) is replicated."""
  k = mesh.shape["fsdp"]

  def sharding(x) -> NamedSharding:
    dims = [i for i, n in enumerate(getattr(x, "shape", ())) if k > 1 and n % k == 0]
    if not dims:
      return replicated(mesh)
    axis = max(dims, key=lambda i: x.shape[i])
    return NamedSharding(mesh, P(*([None] * axis), "fsdp"))
  return sharding


def sharding_of(sharding, x):
  """``sharding`` itself, or what it gives for ``x`` when it is a ``leaf -> sharding``."""
  return sharding(x) if callable(sharding) else sharding


def put(tree, sharding):
  """``tree`` placed by ``sharding`` (one sharding, or ``leaf -> sharding``): host or
  single-device leaves are copied in shard by shard (no cross-process transfer), global
  arrays resharded."""
  def one(x):
    s = sharding_of(sharding, x)
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return jax.device_put(x, s)
    return place(x, s)
  return jax.tree.map(one, tree)


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
