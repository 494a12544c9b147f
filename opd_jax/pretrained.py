"""Policies shipped in the repository (``pretrained/NAME/``): compact, checksummed, with
the command that made them.

A shipped policy is a directory of three files:

- ``params.msgpack`` the parameters: flax msgpack of ``{path in the parameter tree: array}``,
- ``meta.json``      the checkpoint's meta (model, action statistics, suite, the physics it
                     was trained under, instructions, the training config),
- ``card.json``      how it was made and what it scores: ``command``, ``source_commit``,
                     ``success`` (measured, with how), and the ``sha256`` of the other two.

``opd_jax.checkpoint.load_policy`` loads such a directory like an Orbax checkpoint, so
every tool takes it where it takes a run. Every load checks both checksums; a policy
used in a suite is also checked against that suite's physics (arm law, solver
iterations; ``opd_jax.policy.check_obs_matches``). A path under ``pretrained/`` that does
not exist relative to the working directory is looked up in the repository.

  python -m opd_jax.pretrained --config.checkpoint=runs/sft_object_teacher \\
      --config.out=pretrained/libero_object_teacher --config.command="..." \\
      --config.success="83.2% greedy, 50 evaluation states per task"
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from typing import Any

import jax
import numpy as np
from flax import nnx, serialization

from opd_jax import checkpoint

FILES = ("params.msgpack", "meta.json")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def resolve(path: str) -> str:
  """``path`` as given if it exists, else relative to the repository (for ``pretrained/...``
  when run from elsewhere)."""
  if os.path.exists(path) or os.path.isabs(path):
    return path
  alt = os.path.join(REPO_ROOT, path)
  return alt if os.path.exists(alt) else path


def is_shipped(path: str) -> bool:
  return os.path.isfile(os.path.join(path, "card.json"))


def sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def read_card(path: str) -> dict[str, Any]:
  with open(os.path.join(path, "card.json")) as f:
    return json.load(f)


def verify(path: str) -> dict[str, Any]:
  """The card, after checking every file against its recorded checksum."""
  card = read_card(path)
  for name in FILES:
    f = os.path.join(path, name)
    if not os.path.isfile(f):
      raise checkpoint.CheckpointError(f"shipped policy {path} lacks {name}")
    want, got = card.get("sha256", {}).get(name), sha256(f)
    if got != want:
      raise checkpoint.CheckpointError(
          f"shipped policy {path}: {name} has sha256 {got[:12]}... but its card records "
          f"{str(want)[:12]}...: the file is damaged or was replaced; restore it with "
          f"`git checkout -- {path}` (a Git LFS pointer needs `git lfs pull`)")
  return card


def load(path: str):
  """``(graphdef, params, cfg, stats, meta)`` of a shipped policy, checksums verified."""
  from opd_jax import actions as act  # pylint: disable=import-outside-toplevel
  from opd_jax import models  # pylint: disable=import-outside-toplevel
  card = verify(path)
  with open(os.path.join(path, "meta.json")) as f:
    meta = json.load(f)
  checkpoint.check_format(meta, path)
  try:
    cfg = models.ModelConfig.from_dict(meta["model"])
    stats = act.ActionStats.from_dict(meta["action_stats"])
  except (TypeError, ValueError, KeyError) as e:
    raise checkpoint.CheckpointError(f"shipped policy {path}: bad model/action_stats meta: {e}") from e
  graphdef, abstract = models.abstract_policy(cfg)
  with open(os.path.join(path, "params.msgpack"), "rb") as f:
    flat = serialization.msgpack_restore(f.read())
  want = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(abstract))
  leaves = []
  for p, spec in want[0]:
    where = jax.tree_util.keystr(p)
    if where not in flat or np.shape(flat[where]) != spec.shape:
      raise checkpoint.CheckpointError(f"shipped policy {path}: parameter {where} is missing or "
                                       f"has the wrong shape for its model")
    if not np.all(np.isfinite(flat[where])):
      raise checkpoint.CheckpointError(f"shipped policy {path}: non-finite parameters at {where}")
    leaves.append(flat[where])
  extra = set(flat) - {jax.tree_util.keystr(p) for p, _ in want[0]}
  if extra:
    raise checkpoint.CheckpointError(f"shipped policy {path}: parameters its model does not have: "
                                     f"{sorted(extra)[:3]}")
  params = jax.tree.map(lambda x: x, abstract)
  nnx.replace_by_pure_dict(params, jax.tree_util.tree_unflatten(want[1], leaves))
  params = jax.device_put(jax.tree.map(np.asarray, params), jax.local_devices()[0])
  meta = dict(meta, shipped=dict(path=path, **{k: card[k] for k in card if k != "sha256"}))
  return graphdef, params, cfg, stats, meta


def export(src: str, out: str, card: dict[str, Any]) -> dict[str, Any]:
  """Writes the policy of checkpoint ``src`` (any path load_policy takes) as a shipped
  policy under ``out`` (which must not exist); ``card`` gains the checksums."""
  if os.path.exists(out):
    raise checkpoint.CheckpointError(f"{out} exists; nothing is overwritten")
  _, params, _, _, meta = checkpoint.load_policy(src)
  flat = {jax.tree_util.keystr(p): np.asarray(x)
          for p, x in jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(params))[0]}
  os.makedirs(out)
  with open(os.path.join(out, "params.msgpack"), "wb") as f:
    f.write(serialization.msgpack_serialize(flat))
  meta = {k: v for k, v in meta.items() if k != "shipped"}
  with open(os.path.join(out, "meta.json"), "w") as f:
    json.dump(meta, f, indent=1, sort_keys=True, default=str)
  card = dict(card, sha256={name: sha256(os.path.join(out, name)) for name in FILES})
  with open(os.path.join(out, "card.json"), "w") as f:
    json.dump(card, f, indent=1, sort_keys=True)
  return card


def default_config():
  import ml_collections  # pylint: disable=import-outside-toplevel
  return ml_collections.ConfigDict(dict(
      checkpoint="",   # the checkpoint to ship (a run, a checkpoints dir or a step dir)
      out="",          # pretrained/NAME
      command="",      # the command(s) that made it
      success="",      # its measured success, with how it was measured
      source_commit="",  # the commit whose code trained it (default: the current one)
      notes=""))


def main(inv):
  from opd_jax import cli  # pylint: disable=import-outside-toplevel
  c = inv.config
  for field in ("checkpoint", "out", "command", "success"):
    if not c[field]:
      raise cli.UsageError(f"config.{field}: required (the card records it)")
  try:
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=REPO_ROOT, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    head = "unknown"
  with cli.usage_errors():
    card = export(c.checkpoint, c.out, dict(
        command=c.command, success=c.success, notes=c.notes,
        source_commit=c.source_commit or head, exported_at_commit=head,
        exported_from=c.checkpoint))
  print(json.dumps(card, indent=1))


if __name__ == "__main__":
  from opd_jax import cli  # pylint: disable=import-outside-toplevel
  cli.run("pretrained", main, default_config=default_config)
