"""Traced programs kept on disk, so that a re-run or a resume does not trace again.

JAX's persistent compilation cache keeps the compiled executables, but every process still
traces its programs (Python runs the whole MJX step, the renderer and both policies under
``vmap``): ~25 s of the default job's start-up on a 2-core CPU. Here a program's traced and
lowered form is kept with ``jax.export`` (serialised StableHLO), keyed on everything that
can change it — the caller's ``context`` (config and the objects the program closes over,
see :func:`fingerprint`), this package's and ``envs``' source, the library versions, the
devices and the arguments' shapes, types and shardings — and a later process loads it
instead of tracing. The executable then comes from the persistent compilation cache.

Programs are exported as functions of their flattened arguments, so no pytree type needs a
serialisation rule; the output's tree structure is pickled beside it.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import os
import pickle
import types
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import export

_PACKAGES = ("opd_jax", "envs")
_VERSIONED = ("jax", "jaxlib", "mujoco", "mujoco-mjx", "flax", "optax")
FORMAT = 1
# JAX settings that change what a trace produces
_TRACE_FLAGS = ("jax_enable_x64", "jax_default_matmul_precision", "jax_default_prng_impl",
                "jax_numpy_rank_promotion", "jax_threefry_partitionable")


def fingerprint(*objs, max_depth: int = 6) -> str:
  """A digest of objects a program closes over (configs, environments, policies): their
  plain values, arrays and dataclass or attribute trees, types by name."""
  h = hashlib.sha256()
  seen: set[int] = set()

  def feed(x, depth):
    if isinstance(x, (str, int, float, bool, complex, type(None))):
      h.update(f"{type(x).__name__}:{x!r};".encode())
    elif isinstance(x, (np.ndarray, np.generic, jax.Array)):
      if isinstance(x, jax.Array) and not x.is_fully_addressable:   # other processes' shards
        local = x.addressable_shards
        x = (local[0].data if x.is_fully_replicated and local
             else jax.ShapeDtypeStruct(x.shape, x.dtype))
      a = np.asarray(x) if not isinstance(x, jax.ShapeDtypeStruct) else np.zeros(0, x.dtype)
      h.update(f"arr{a.shape}{a.dtype};".encode())
      h.update(np.ascontiguousarray(a).tobytes())
    elif (id(x) in seen or depth > max_depth or isinstance(x, types.ModuleType)
          or callable(x) and not dataclasses.is_dataclass(x)):
      h.update(f"<{type(x).__qualname__}>;".encode())
    else:
      seen.add(id(x))
      h.update(f"{type(x).__qualname__}(".encode())
      if isinstance(x, dict):
        for k in sorted(x, key=repr):
          feed(k, depth + 1)
          feed(x[k], depth + 1)
      elif isinstance(x, (list, tuple, set, frozenset)):
        for v in (sorted(x, key=repr) if isinstance(x, (set, frozenset)) else x):
          feed(v, depth + 1)
      elif dataclasses.is_dataclass(x):
        for f in dataclasses.fields(x):
          feed(f.name, depth + 1)
          feed(getattr(x, f.name), depth + 1)
      elif hasattr(x, "to_dict"):
        feed(x.to_dict(), depth + 1)
      elif hasattr(x, "__dict__"):
        feed(vars(x), depth + 1)
      h.update(b")")
  for o in objs:
    feed(o, 0)
  return h.hexdigest()


@functools.lru_cache(maxsize=1)   # the source of this process's modules: fixed while it runs
def _environment() -> str:
  h = hashlib.sha256(f"format {FORMAT}".encode())
  for name in _VERSIONED:
    try:
      h.update(f"{name}={importlib.metadata.version(name)};".encode())
    except importlib.metadata.PackageNotFoundError:
      h.update(f"{name}=?;".encode())
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  for pkg in _PACKAGES:
    for d, _, files in sorted(os.walk(os.path.join(root, pkg))):
      for f in sorted(files):
        if f.endswith(".py"):
          h.update(f.encode())
          with open(os.path.join(d, f), "rb") as fh:
            h.update(fh.read())
  return h.hexdigest()


def _spec(x) -> jax.ShapeDtypeStruct:
  if isinstance(x, jax.ShapeDtypeStruct):
    return x
  if isinstance(x, jax.Array):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding, weak_type=x.weak_type)
  a = np.asarray(x)
  return jax.ShapeDtypeStruct(a.shape, a.dtype)


def _key(name: str, context: str, in_tree, specs) -> str:
  h = hashlib.sha256()
  for part in (_environment(), context, name, str(in_tree),
               str([(s.shape, str(s.dtype), s.weak_type, str(s.sharding)) for s in specs]),
               str([(d.platform, d.device_kind, d.id) for d in jax.devices()]),
               str([getattr(jax.config, f) for f in _TRACE_FLAGS])):
    h.update(part.encode())
    h.update(b"\0")
  return h.hexdigest()[:32]


def _initialise_linear_algebra() -> None:
  """Lowering a LAPACK-backed op registers jaxlib's CPU LAPACK kernels; a program loaded
  from disk calls them without any lowering in this process (a segmentation fault)."""
  jax.jit(jnp.linalg.cholesky).lower(jax.ShapeDtypeStruct((2, 2), jnp.float32))


@dataclasses.dataclass
class Lowered:
  """A program loaded (or just exported): ``compile()`` gives a callable taking the
  original (unflattened) arguments; ``out_info`` the output's shapes and types."""
  lowered: Any
  out_tree: Any
  out_info: Any
  from_disk: bool

  def compile(self, compiler_options: dict | None = None) -> Callable:
    compiled = self.lowered.compile(compiler_options)
    out_tree = self.out_tree

    def call(*args):
      return jax.tree.unflatten(out_tree, compiled(*jax.tree.leaves(args)))
    return call


def lower(directory: str, name: str, fn, args: tuple, context: str) -> Lowered | Any:
  """``fn.lower(*args)``, kept under ``directory``: loaded from it when present, else traced
  and written. Programs that cannot be exported are lowered as usual (nothing kept).
  ``fn`` must be jitted without ``compiler_options`` (a nested jit may carry none): give
  them to ``compile``."""
  leaves, in_tree = jax.tree.flatten(args)
  specs = [_spec(x) for x in leaves]
  path = os.path.join(directory, f"{_key(name, context, in_tree, specs)}.traced")
  entry = None
  if os.path.exists(path):
    try:
      with open(path, "rb") as f:
        entry = pickle.load(f)
      exp = export.deserialize(entry["exported"])
    except Exception:  # pylint: disable=broad-except  # a stale or torn file: trace again
      entry = None
  from_disk = entry is not None
  if entry is None:
    tr = fn.trace(*args)   # traces once; the export below reuses the traced jaxpr
    donated = tuple(i for i, a in enumerate(jax.tree.leaves(tr.args_info)) if a.donated)
    out_tree = jax.tree.structure(tr.out_info)
    out_info = [(s.shape, s.dtype) for s in jax.tree.leaves(tr.out_info)]

    def flat(*xs):
      return jax.tree.leaves(fn(*jax.tree.unflatten(in_tree, xs)))
    try:
      exp = export.export(jax.jit(flat))(*specs)
      serialized = exp.serialize()
    except Exception:  # pylint: disable=broad-except  # host callbacks; no flatbuffers module
      return tr.lower()
    entry = dict(exported=serialized, out_tree=out_tree, out_info=out_info, donated=donated)
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
      pickle.dump(entry, f)
    os.replace(tmp, path)   # atomic: a concurrent or killed writer leaves no torn file
  else:
    _initialise_linear_algebra()
  call = jax.jit(exp.call, donate_argnums=entry["donated"])
  out_info = jax.tree.unflatten(entry["out_tree"], [jax.ShapeDtypeStruct(s, d)
                                                    for s, d in entry["out_info"]])
  return Lowered(call.lower(*specs), entry["out_tree"], out_info, from_disk)
