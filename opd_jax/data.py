"""Demonstrations in the LIBERO / robomimic HDF5 layout, and SFT training samples.

Reading (:func:`load`): any file with ``data/demo_*`` groups holding
``obs/{agentview_rgb, eye_in_hand_rgb, ee_states, gripper_states}`` and
``actions`` (``dones`` / ``rewards`` are read when present) loads; anything
else fails with :class:`FormatError` naming the missing key. A demo's task is
its ``task_id`` attribute, else its ``instruction`` attribute (or the file's
LIBERO ``problem_info`` language instruction) looked up in the suite's
instructions. Several files may be given, comma-separated or as a glob.

Samples (:func:`build_arrays`, :func:`gather`): every step ``t`` of every demo is
one sample:
- observation window of ``T`` (the model's history) ending at ``t``, its frames
  ``K`` (the chunk) steps apart: a rollout observes the world once per executed
  chunk (``opd_jax.rollout``), so a history-2 policy sees ``t - K`` and ``t``
  there and must be trained on the same spacing; slots before the episode start
  repeat the first frame and are marked padding (``timestep_pad_mask`` False),
  exactly as ``opd_jax.policy.init_history`` does at rollout time;
- action chunk ``t .. t+K-1``; steps past the end of the episode REPEAT THE LAST
  ACTION (as OpenVLA-OFT does), so every sample has K full, unmasked steps;
- tokenised with the action statistics (``opd_jax.actions.encode``).

Statistics: :func:`demo_stats` (q01/q99 of the demos' actions, the gripper dim 6
left as is) or :func:`read_stats` from ``data.stats_path`` — an ActionStats JSON
(``action_stats.json`` that opd_jax.sft writes into its workdir) or a checkpoint
directory. A one-demo student must reuse its teacher's statistics (the OPD
trainer refuses a teacher whose statistics differ), see scripts/make_checkpoints.sh.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
from typing import Any, Sequence

import h5py
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import struct

from opd_jax import actions as act
from opd_jax.policy import History

OBS_KEYS = ("agentview_rgb", "eye_in_hand_rgb", "ee_states", "gripper_states")
CAMERAS = {"agentview": "agentview_rgb", "wrist": "eye_in_hand_rgb"}
GRIPPER_DIM = 6


class FormatError(ValueError):
  """A demonstration file that is not in the LIBERO / robomimic layout."""


@dataclasses.dataclass
class Demos:
  """Demos concatenated along steps. N steps in all, E episodes.

  images: {camera: uint8 [N, H, W, 3]} (cameras named as in the suites);
  proprio: float32 [N, 8] (ee_states ++ gripper_states); actions: float32 [N, 7];
  task_id: int32 [N]; ep_start, ep_len: int64 [E]; ep_task: int32 [E].
  """
  images: dict[str, np.ndarray]
  proprio: np.ndarray
  actions: np.ndarray
  task_id: np.ndarray
  ep_start: np.ndarray
  ep_len: np.ndarray
  ep_task: np.ndarray
  instructions: list[str]
  attrs: dict[str, Any]

  @property
  def num_steps(self) -> int:
    return int(self.actions.shape[0])

  @property
  def num_episodes(self) -> int:
    return int(self.ep_len.shape[0])

  @property
  def image_size(self) -> int:
    return int(next(iter(self.images.values())).shape[1])

  def per_task(self, num_tasks: int) -> list[int]:
    return np.bincount(self.ep_task, minlength=num_tasks).tolist()


def _paths(path: str) -> list[str]:
  out = []
  for p in [p.strip() for p in path.split(",") if p.strip()]:
    hits = sorted(glob.glob(p)) if any(c in p for c in "*?[") else [p]
    if not hits or not all(os.path.isfile(h) for h in hits):
      raise FileNotFoundError(f"demonstration file {p!r} does not exist (data.path)")
    out += hits
  if not out:
    raise FileNotFoundError("data.path is empty: give an HDF5 file from python -m opd_jax.collect")
  return out


def _demo_names(f: h5py.File, path: str) -> list[str]:
  if "data" not in f:
    raise FormatError(f"{path}: missing key 'data' (the LIBERO/robomimic layout has "
                      f"data/demo_i/...; top-level keys: {sorted(f.keys())})")
  names = [k for k in f["data"].keys() if re.fullmatch(r"demo_\d+", k)]
  if not names:
    raise FormatError(f"{path}: missing key 'data/demo_0' (no demo_i groups under data; "
                      f"keys: {sorted(f['data'].keys())[:10]})")
  return sorted(names, key=lambda k: int(k.split("_")[1]))


def _str(v) -> str:
  return v.decode() if isinstance(v, bytes) else str(v)


def _file_instruction(f: h5py.File) -> str | None:
  info = f["data"].attrs.get("problem_info")
  if info is None:
    return None
  try:
    return json.loads(_str(info)).get("language_instruction")
  except (ValueError, AttributeError):
    return None


def _task_of(g: h5py.Group, file_instr: str | None, instructions: Sequence[str], where: str) -> int:
  if "task_id" in g.attrs:
    t = int(g.attrs["task_id"])
    if not 0 <= t < len(instructions):
      raise FormatError(f"{where}: task_id {t} out of range for {len(instructions)} tasks")
    return t
  text = _str(g.attrs["instruction"]) if "instruction" in g.attrs else file_instr
  if text is None:
    raise FormatError(f"{where}: missing key 'task_id' (attribute; nor an 'instruction' "
                      f"attribute or data.attrs['problem_info'] to look the task up)")
  norm = lambda s: " ".join(s.lower().replace("_", " ").split())
  match = [i for i, s in enumerate(instructions) if norm(s) == norm(text)]
  if not match:
    raise FormatError(f"{where}: instruction {text!r} is not one of the suite's instructions")
  return match[0]


def load(path: str, demos_per_task: int = -1, instructions: Sequence[str] | None = None,
         skip_per_task: int = 0) -> Demos:
  """Loads demos (all, or the first ``demos_per_task`` of each task in file order after
  skipping ``skip_per_task``). ``instructions``: the suite's, to map demos to task ids
  (default: the file's ``data.attrs['instructions']``)."""
  paths = _paths(path)
  cols = {k: [] for k in ("agentview", "wrist", "proprio", "actions")}
  ep_len, ep_task = [], []
  attrs: dict[str, Any] = {}
  seen: dict[int, int] = {}
  for p in paths:
    with h5py.File(p, "r") as f:
      names = _demo_names(f, p)
      a = {k: (_str(v) if isinstance(v, (bytes, str)) else np.asarray(v).tolist())
           for k, v in f["data"].attrs.items()}
      attrs = attrs or a
      instr = list(instructions) if instructions is not None else None
      if instr is None:
        if "instructions" not in f["data"].attrs:
          raise FormatError(f"{p}: missing key 'data.attrs[instructions]'; pass the suite's "
                            f"instructions to map demos to tasks")
        instr = json.loads(_str(f["data"].attrs["instructions"]))
      file_instr = _file_instruction(f)
      for name in names:
        g = f["data"][name]
        where = f"{p}: data/{name}"
        for k in ("obs", "actions"):
          if k not in g:
            raise FormatError(f"{where}: missing key '{k}'")
        for k in OBS_KEYS:
          if k not in g["obs"]:
            raise FormatError(f"{where}/obs: missing key '{k}'")
        t = _task_of(g, file_instr, instr, where)
        seen[t] = seen.get(t, 0) + 1
        if seen[t] <= skip_per_task:
          continue
        if demos_per_task > 0 and seen[t] > skip_per_task + demos_per_task:
          continue
        actions = np.asarray(g["actions"], np.float32)
        n = actions.shape[0]
        obs = {k: np.asarray(g["obs"][k]) for k in OBS_KEYS}
        for k, v in obs.items():
          if v.shape[0] != n:
            raise FormatError(f"{where}/obs/{k} has {v.shape[0]} steps but actions has {n}")
        if n == 0:
          continue
        cols["agentview"].append(obs["agentview_rgb"].astype(np.uint8))
        cols["wrist"].append(obs["eye_in_hand_rgb"].astype(np.uint8))
        cols["proprio"].append(np.concatenate(
            [obs["ee_states"], obs["gripper_states"]], -1).astype(np.float32))
        cols["actions"].append(actions)
        ep_len.append(n)
        ep_task.append(t)
  if not ep_len:
    raise FormatError(f"{path}: no demos selected (demos_per_task={demos_per_task})")
  shapes = {x.shape[1:] for c in ("agentview", "wrist") for x in cols[c]}
  if len(shapes) != 1:
    raise FormatError(f"{path}: demos have different image shapes {sorted(shapes)}")
  ep_len = np.asarray(ep_len, np.int64)
  ep_task = np.asarray(ep_task, np.int32)
  return Demos(
      images={"agentview": np.concatenate(cols["agentview"]), "wrist": np.concatenate(cols["wrist"])},
      proprio=np.concatenate(cols["proprio"]), actions=np.concatenate(cols["actions"]),
      task_id=np.repeat(ep_task, ep_len), ep_start=np.cumsum(ep_len) - ep_len, ep_len=ep_len,
      ep_task=ep_task, instructions=list(instr), attrs=attrs)


# ---------------------------------------------------------------------- statistics
def demo_stats(demos: Demos) -> act.ActionStats:
  """q01/q99 of the demos' actions; the gripper (dim 6) is left as is."""
  mask = np.ones(demos.actions.shape[1], bool)
  if mask.shape[0] > GRIPPER_DIM:
    mask[GRIPPER_DIM] = False
  return act.compute_stats(demos.actions, mask)


def write_stats(path: str, stats: act.ActionStats) -> None:
  p = epath.Path(path)   # local or object storage
  p.parent.mkdir(parents=True, exist_ok=True)
  p.write_text(json.dumps(stats.to_dict(), indent=1))


def read_stats(path: str) -> act.ActionStats:
  """ActionStats from a JSON file or from an opd_jax checkpoint directory's meta."""
  if os.path.isdir(path):
    from opd_jax import checkpoint  # pylint: disable=import-outside-toplevel
    meta, _, _ = checkpoint.read_meta(path)
    return act.ActionStats.from_dict(meta["action_stats"])
  if not os.path.isfile(path):
    raise FileNotFoundError(f"data.stats_path {path!r} does not exist (an ActionStats JSON, "
                            f"e.g. the teacher's workdir/action_stats.json, or a checkpoint dir)")
  with open(path) as f:
    return act.ActionStats.from_dict(json.load(f))


# ------------------------------------------------------------------------ samples
@struct.dataclass
class Arrays:
  """Device-resident training samples, one per demo step (N of them).

  images: {camera: uint8 [N, H, W, 3]}; proprio [N, P]; task_id int32 [N];
  obs_index int32 [N, T] (rows of the window); pad bool [N, T] (False = before the
  episode start); tokens int32 [N, K, D] (the action chunk, tokenised).
  """
  images: dict
  proprio: jax.Array
  task_id: jax.Array
  obs_index: jax.Array
  pad: jax.Array
  tokens: jax.Array

  @property
  def size(self) -> int:
    return int(self.task_id.shape[0])


def windows(ep_start: np.ndarray, ep_len: np.ndarray, history: int, chunk: int,
            stride: int | None = None):
  """Per step: (obs_index [N, T], pad [N, T], chunk_index [N, K]) — see the module doc.
  ``stride``: control steps between a window's frames (default: the chunk)."""
  stride = chunk if stride is None else stride
  start = np.repeat(ep_start, ep_len)
  end = start + np.repeat(ep_len, ep_len) - 1          # last step of the episode
  i = np.arange(int(ep_len.sum()))
  back = i[:, None] - stride * np.arange(history - 1, -1, -1)[None]   # oldest first
  pad = back >= start[:, None]
  obs_index = np.where(pad, back, start[:, None])       # before the start: the first frame
  chunk_index = np.minimum(i[:, None] + np.arange(chunk)[None], end[:, None])
  return obs_index.astype(np.int32), pad, chunk_index.astype(np.int32)


def build_arrays(demos: Demos, stats: act.ActionStats, history: int, chunk: int,
                 cameras: Sequence[str] = ("agentview", "wrist")) -> Arrays:
  obs_index, pad, chunk_index = windows(demos.ep_start, demos.ep_len, history, chunk)
  tokens = act.encode(stats, demos.actions[chunk_index])
  missing = [c for c in cameras if c not in demos.images]
  if missing:
    raise FormatError(f"the model needs cameras {missing}; demos have {sorted(demos.images)}")
  return Arrays(images={c: jnp.asarray(demos.images[c]) for c in cameras},
                proprio=jnp.asarray(demos.proprio), task_id=jnp.asarray(demos.task_id),
                obs_index=jnp.asarray(obs_index), pad=jnp.asarray(pad),
                tokens=jnp.asarray(tokens, jnp.int32))


def gather(arrays: Arrays, idx: jax.Array) -> tuple[History, jax.Array]:
  """Samples ``idx [B]`` -> (their observation histories, tokens int32 [B, K, D])."""
  rows = arrays.obs_index[idx]                       # [B, T]
  hist = History({c: im[rows] for c, im in arrays.images.items()}, arrays.proprio[rows],
                 arrays.pad[idx], arrays.task_id[idx])
  return hist, arrays.tokens[idx]


def env_kwargs(path: str) -> dict[str, dict]:
  """``{file: environment options}`` for each demo file of ``path`` (as ``load`` takes it), from
  ``data.attrs['env_args']`` as robomimic writes it; {} for a file that does not say."""
  out = {}
  for p in _paths(path):
    with h5py.File(p, "r") as f:
      raw = f["data"].attrs.get("env_args") if "data" in f else None
    try:
      out[p] = {} if raw is None else dict(json.loads(_str(raw)).get("env_kwargs") or {})
    except (ValueError, AttributeError) as e:
      raise FormatError(f"{p}: data.attrs['env_args'] is not robomimic's JSON: {e}") from e
  return out
