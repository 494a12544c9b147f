"""Self-describing Orbax checkpoints.

A checkpoint step directory holds three items:

- ``params``    the policy parameters (nnx.State pytree, StandardSave),
- ``opt_state`` the optimiser state (StandardSave; absent in exported policies),
- ``meta``      JSON: ``model`` (ModelConfig), ``action_stats`` (ActionStats),
                ``config`` (the run's full config), ``suite``, ``instructions``
                and whatever else the writer adds.

so :func:`load_policy` rebuilds a policy from the directory alone (the
evaluation CLI and checkpoint teachers use it). Paths given to it may be a
step directory, a manager directory (``.../checkpoints``, latest step taken)
or a run's workdir (its ``checkpoints`` subdirectory).
"""
from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from opd_jax import actions as act
from opd_jax import models, parallel


class CheckpointError(ValueError):
  """A checkpoint that is missing, corrupt, or does not match what loads it."""


# The layout of what save writes (items and meta keys). Checkpoints without the field are
# format 1 (everything written before it was recorded; still read); a newer one is refused.
FORMAT = 1


def absolute(path) -> str:
  """``path`` made absolute when it is local; object-store paths (``gs://...``) unchanged."""
  path = str(path)
  return path if "://" in path else os.path.abspath(path)


def manager(directory: str, max_to_keep: int | None = 3) -> ocp.CheckpointManager:
  directory = absolute(directory)
  return ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))


def save(mgr: ocp.CheckpointManager, step: int, params, meta: dict[str, Any],
         opt_state=None) -> None:
  """Saves (and waits for) one step: params, optional optimiser state, meta JSON."""
  meta = dict(meta, format=FORMAT)
  items = dict(params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta))
  if opt_state is not None:
    items["opt_state"] = ocp.args.StandardSave(opt_state)
  mgr.save(step, args=ocp.args.Composite(**items), force=True)
  mgr.wait_until_finished()


def _with_sharding(tree, sharding):
  """Abstract targets placed on ``sharding`` (one sharding or ``leaf -> sharding``; default:
  this process's first device), so a checkpoint written on another topology (8 devices, a
  pod, another fsdp split) restores here."""
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

  def leaf(x):
    if hasattr(x, "shape") and hasattr(x, "dtype"):
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=parallel.sharding_of(sharding, x))
    return x
  return jax.tree.map(leaf, tree)


def restore(mgr: ocp.CheckpointManager, step: int, abstract_params, abstract_opt_state=None,
            sharding=None):
  """Restores ``(params, opt_state or None, meta)`` of ``step`` against abstract targets,
  placed on ``sharding`` (default: one local device) whatever topology wrote them."""
  items = dict(params=ocp.args.StandardRestore(_with_sharding(abstract_params, sharding)),
               meta=ocp.args.JsonRestore())
  if abstract_opt_state is not None:
    items["opt_state"] = ocp.args.StandardRestore(_with_sharding(abstract_opt_state, sharding))
  where = os.path.join(str(mgr.directory), str(step))
  try:
    r = mgr.restore(step, args=ocp.args.Composite(**items))
  except Exception as e:  # orbax raises several types for shape / structure / file problems
    why = str(e).split(" See full TensorStore")[0].rstrip(".")   # the spec after it is pages long
    why = why if len(why) <= 300 else why[:300] + "..."
    raise CheckpointError(
        f"cannot restore checkpoint {where}: {type(e).__name__}: {why}. It is corrupt or was "
        f"written for a different model/optimiser configuration; move it away to start afresh "
        f"(nothing is deleted automatically)") from e
  return r.params, (r.opt_state if abstract_opt_state is not None else None), r.meta


def saved_steps(directory: str) -> list[int]:
  """The steps under a manager directory that hold a checkpoint (a ``meta`` item), sorted."""
  return sorted(int(d.name) for d in epath.Path(directory).iterdir()
                if d.name.isdigit() and (d / "meta").is_dir())


def _resolve(path: str) -> tuple[str, int]:
  """(manager directory, step) for a step dir, a manager dir or a workdir."""
  p = epath.Path(absolute(path))
  if not p.is_dir():
    raise CheckpointError(f"checkpoint path {p} does not exist")
  if p.name.isdigit() and (p / "meta").is_dir():
    return str(p.parent), int(p.name)
  if (p / "checkpoints").is_dir():
    p = p / "checkpoints"
  path = str(p)
  steps = saved_steps(path)
  if not steps:
    raise CheckpointError(f"no checkpoint steps (directories holding 'meta') under {path}")
  return path, steps[-1]


def read_meta(path: str) -> tuple[dict[str, Any], str, int]:
  """(meta, manager directory, step) of the checkpoint at ``path`` (a shipped policy: its
  meta.json, its directory and step 0)."""
  from opd_jax import pretrained  # pylint: disable=import-outside-toplevel
  path = pretrained.resolve(path)
  if pretrained.is_shipped(path):
    import json  # pylint: disable=import-outside-toplevel
    with open(os.path.join(path, "meta.json")) as f:
      meta = json.load(f)
    check_format(meta, path)
    return meta, path, 0
  directory, step = _resolve(path)
  mgr = manager(directory, max_to_keep=None)
  try:
    meta = mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
  except Exception as e:
    raise CheckpointError(f"checkpoint {directory}/{step} has no readable meta.json "
                          f"({type(e).__name__}: {e})") from e
  for key in ("model", "action_stats"):
    if key not in (meta or {}):
      raise CheckpointError(f"checkpoint {directory}/{step} meta lacks {key!r}: it was not "
                            f"written by opd_jax (keys: {sorted(meta or {})})")
  check_format(meta, f"{directory}/{step}")
  return meta, directory, step


def check_format(meta: dict, where: str) -> None:
  """Refuses a checkpoint written in a newer layout than this version reads."""
  fmt = meta.get("format", 1)
  if not isinstance(fmt, int) or fmt > FORMAT:
    raise CheckpointError(f"checkpoint {where} is in format {fmt!r}, newer than this opd_jax "
                          f"reads (format {FORMAT}): update opd_jax (git pull; pip install -e .) "
                          f"to load it")


def saved_model(meta: dict | None) -> dict | None:
  """The ``model`` entry of a checkpoint's meta as today's ModelConfig writes it.

  Fields added to ModelConfig after the checkpoint was written take their
  defaults (which reproduce the old architecture), so a run resumes from its
  own older checkpoints; an unreadable entry comes back unchanged and fails the
  caller's comparison.
  """
  model = (meta or {}).get("model")
  try:
    return models.ModelConfig.from_dict(model).to_dict()
  except (TypeError, ValueError, AttributeError):
    return model


LEGACY_SOLVER_ITERATIONS = 4  # what checkpoints without the field were trained under


def trained_env_kwargs(meta: dict | None) -> dict:
  """The suite options a checkpoint was trained under (``meta['env_kwargs']``). ``control``
  and ``solver_iterations`` are always there: checkpoints written before each was recorded were
  trained under the position-servo law, ``"servo"``, and the scene's 4 solver iterations (every
  suite has run 8 since 2026-12-01, session 13)."""
  kw = dict((meta or {}).get("env_kwargs") or {})
  kw.setdefault("control", "servo")
  kw.setdefault("solver_iterations", LEGACY_SOLVER_ITERATIONS)
  return kw


def load_policy(path: str):
  """Rebuilds a policy from a checkpoint directory alone, or from a policy shipped in the
  repository (opd_jax.pretrained: checksums verified).

  Returns ``(graphdef, params, cfg, stats, meta)``.
  """
  from opd_jax import pretrained  # pylint: disable=import-outside-toplevel
  path = pretrained.resolve(path)
  if pretrained.is_shipped(path):
    return pretrained.load(path)
  meta, directory, step = read_meta(path)
  try:
    cfg = models.ModelConfig.from_dict(meta["model"])
    stats = act.ActionStats.from_dict(meta["action_stats"])
  except (TypeError, ValueError, KeyError) as e:
    raise CheckpointError(f"checkpoint {directory}/{step}: bad model/action_stats meta: {e}") from e
  graphdef, abstract = models.abstract_policy(cfg)
  params, _, _ = restore(manager(directory, max_to_keep=None), step, abstract)
  bad = [k for k, v in jax.tree_util.tree_leaves_with_path(params)
         if not bool(jax.numpy.all(jax.numpy.isfinite(v)))]
  if bad:
    raise CheckpointError(f"checkpoint {directory}/{step} has non-finite parameters at "
                          f"{jax.tree_util.keystr(bad[0])}")
  return graphdef, params, cfg, stats, meta
