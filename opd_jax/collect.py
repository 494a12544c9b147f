"""Demonstrations from the scripted experts, in the LIBERO / robomimic HDF5 layout.

  python -m opd_jax.collect --config.suite=libero_spatial --config.demos_per_task=50 \\
      --config.out=data/libero_spatial.hdf5 [--config.image_size=64 --config.batch=20 ...]

A batch of worlds (one suite, mixed tasks) is rolled by the privileged
feedback expert of ``envs`` under ``jax.jit``: a ``lax.scan`` over a block of
control steps with the unbatched ``step`` vmapped, both cameras rendered at
every control step. Worlds whose episode ended (success, time limit or a
physics blow-up) are frozen and, at the end of the block, refilled with a new
attempt. Only successful episodes are written, until each task has
``demos_per_task`` of them; the kept/attempted count per task is printed.

Initial states are *training* states: ``env.reset(key, task)`` with keys
derived from ``seed`` and a collection tag, never the fixed evaluation
states of ``reset_eval``.

DART-style noise: with ``action_noise s > 0`` the executed action is the
expert's action plus Gaussian noise (std ``s`` in the [-1, 1] action units, on
the 6 arm dims only, clipped to [-1, 1]), which visits states the clean expert
would not and shows how it recovers; the RECORDED action is always the clean
expert action of the visited state.

Policy-driven collection: with ``policy=CKPT`` a policy checkpoint drives
the worlds for part of each episode. Every K control steps (its chunk) the
policy decodes an action chunk from the current observation (``temperature``,
0 = greedy) and runs it open-loop. Two modes:

- ``handover=N`` (recovery demos): in each episode the policy drives the first
  ``h`` control steps, ``h`` drawn uniformly from 0..N, then the expert takes
  over and finishes the episode. Only the expert's part is recorded, so every
  written episode is a genuine expert demonstration (its actions are the ones
  executed, and a chunk of them is the expert's own plan) that starts from a
  state the policy drove the scene into.
- ``beta=p`` (DAgger relabelling): the policy drives the whole episode except
  that, with probability ``p`` per world and chunk, the expert acts instead; the
  RECORDED action is the clean expert action of every visited state. Caution,
  measured: for a chunked policy this data is harmful. The chunk target built
  from consecutive relabelled steps repeats one correction K times (the policy,
  not the expert, moved the world between them), so a policy trained on it
  over-corrects (a 52% teacher fell to 4% after fine-tuning on it;
  benchmarks/RESULTS.md). It suits a policy that re-plans every step.

``keep=all`` also writes the episodes that failed; the default keeps
successes only.

Layout written (one file for all tasks of the suite)::

  data                      attrs: total, env_args (JSON), suite, image_size,
                            instructions (JSON list), action_noise, seed,
                            policy, beta, handover, temperature, keep
  data/demo_i               attrs: num_samples, instruction, task_id
  data/demo_i/obs/agentview_rgb    uint8 [N, H, W, 3]
  data/demo_i/obs/eye_in_hand_rgb  uint8 [N, H, W, 3]
  data/demo_i/obs/ee_states        float32 [N, 6]  TCP position + rotation vector
  data/demo_i/obs/gripper_states   float32 [N, 2]  finger joint positions
  data/demo_i/actions       float32 [N, 7]
  data/demo_i/rewards       float32 [N]  (1 at the last step)
  data/demo_i/dones         uint8 [N]    (1 at the last step)

Observation ``t`` is the one the action ``t`` was chosen in.
"""
from __future__ import annotations

import json
import os
import time

import envs  # sets the XLA flag MJX needs on CPU before JAX starts  # noqa: F401  isort: skip
import h5py
import jax
import jax.numpy as jnp
import numpy as np
from envs.control import CONTROL_MODES

from opd_jax.collect_programs import (Collector, _placed, collection_key, make_block,  # noqa: F401
                                      make_policy_block)


def write_demo(grp: h5py.Group, index: int, ep: dict, instruction: str, task_id: int,
               compression: str | None = "gzip") -> None:
  """Writes one episode (arrays with leading [N]) as ``demo_{index}``."""
  n = len(ep["action"])
  g = grp.create_group(f"demo_{index}")
  g.attrs["num_samples"] = n
  g.attrs["instruction"] = instruction
  g.attrs["task_id"] = int(task_id)
  o = g.create_group("obs")
  kw = dict(compression=compression) if compression else {}
  o.create_dataset("agentview_rgb", data=ep["agentview"].astype(np.uint8), **kw)
  o.create_dataset("eye_in_hand_rgb", data=ep["wrist"].astype(np.uint8), **kw)
  o.create_dataset("ee_states", data=ep["proprio"][:, :6].astype(np.float32))
  o.create_dataset("gripper_states", data=ep["proprio"][:, 6:8].astype(np.float32))
  g.create_dataset("actions", data=ep["action"].astype(np.float32))
  g.create_dataset("rewards", data=ep["reward"].astype(np.float32))
  g.create_dataset("dones", data=ep["done"].astype(np.uint8))


def collect(suite: str, demos_per_task: int, out: str, *, image_size: int = 64, batch: int = 20,
            seed: int = 0, action_noise: float = 0.0, block: int = 10,
            max_attempts_factor: int = 3, tasks: list[int] | None = None, progress: bool = True,
            env_kwargs: dict | None = None, policy: str = "", beta: float = 0.0,
            temperature: float = 0.0, keep: str = "success", handover: int = -1,
            collector: Collector | None = None) -> dict:
  """Collects and writes the file; returns per task id lists ``kept`` (written),
  ``succeeded`` (successful episodes, surplus ones included) and ``attempted``, and
  ``seconds``.

  The batch is a pool of ``batch`` worlds: after every block of ``block`` control steps,
  worlds whose episode ended are refilled with a fresh attempt (the task with the fewest
  demos kept or under way), so no world idles while a slow episode finishes. A task is
  given up after ``max_attempts_factor * demos_per_task`` attempts.

  ``policy`` (a checkpoint directory) lets a policy drive the worlds (module doc): with
  ``handover >= 0`` it drives the first 0..handover steps of each episode and the expert
  finishes (recorded), otherwise DAgger relabelling with ``beta``. The block is then the
  policy's chunk. ``keep``: "success" or "all" episodes. ``collector``: the suite's compiled
  programs from an earlier call (made here when None).
  """
  if keep not in ("success", "all"):
    raise ValueError(f"config.keep must be 'success' or 'all', got {keep!r}")
  if not 0.0 <= beta <= 1.0:
    raise ValueError(f"config.beta must be in [0, 1], got {beta}")
  if temperature < 0:
    raise ValueError(f"config.temperature must be >= 0, got {temperature}")
  if demos_per_task < 1:
    raise ValueError(f"config.demos_per_task must be >= 1, got {demos_per_task}")
  if batch < 1 or block < 1:
    raise ValueError(f"config.batch and config.block must be >= 1, got {batch}, {block}")
  env_kwargs = dict(env_kwargs or {}, image_size=image_size)
  collector = collector or Collector(suite, env_kwargs)
  if collector.key != (suite, json.dumps(env_kwargs, sort_keys=True)):
    raise ValueError(f"collector was made for {collector.key}, not {suite} with {env_kwargs}")
  env, reset, refill = collector.env, collector.reset, collector.refill
  tasks = list(range(env.num_tasks)) if tasks is None else list(tasks)
  bad = [t for t in tasks if not 0 <= t < env.num_tasks]
  if bad:
    raise ValueError(f"tasks {bad} out of range: {suite} has {env.num_tasks} tasks")
  if policy:
    from opd_jax import checkpoint  # pylint: disable=import-outside-toplevel
    from opd_jax.policy import Policy, check_obs_matches  # pylint: disable=import-outside-toplevel
    graphdef, params, pcfg, stats, meta = checkpoint.load_policy(policy)
    check_obs_matches(pcfg, env, "config.policy", meta)
    if pcfg.history != 1:
      raise ValueError(f"config.policy: only history-1 policies drive collection; {policy} has "
                       f"history {pcfg.history}")
    if action_noise > 0:
      raise ValueError("config.action_noise and config.policy are exclusive")
    if handover >= 0 and beta > 0:
      raise ValueError("config.handover and config.beta are exclusive (two ways to mix in the expert)")
    policy_run = collector.block(
        ("policy", json.dumps(pcfg.to_dict(), default=str), json.dumps(stats.to_dict()),
         float(temperature)),
        lambda: make_policy_block(env, Policy.build(graphdef, pcfg, stats, env.instructions),
                                  temperature))
    run = lambda state, alive, key, handover: policy_run(  # noqa: E731
        *_placed((state, alive, key, handover, jnp.float32(beta), params)))
  elif handover >= 0:
    raise ValueError("config.handover needs config.policy (the policy that drives before the expert)")
  else:
    expert_run = collector.block(("expert", int(block), float(action_noise)),
                                lambda: make_block(env, block, action_noise))
    run = lambda state, alive, key, handover: expert_run(*_placed((state, alive, key)))  # noqa: E731

  def handover_of(slot) -> int:
    """Control steps the policy drives before the expert takes over (-1: not that mode)."""
    if handover < 0 or slot is None:
      return -1
    return int(np.random.default_rng([seed, *slot]).integers(0, handover + 1))

  kept = [0] * env.num_tasks
  attempted = [0] * env.num_tasks
  inflight = [0] * env.num_tasks
  succeeded = [0] * env.num_tasks   # successful episodes, including surplus ones not written
  limit = max_attempts_factor * demos_per_task

  def assign():
    """(task, attempt) for a free world, or None when every task is done or given up."""
    cand = [t for t in tasks if kept[t] < demos_per_task and attempted[t] < limit]
    if not cand:
      return None
    t = min(cand, key=lambda t: (kept[t] + inflight[t], t))
    attempted[t] += 1
    inflight[t] += 1
    return t, attempted[t] - 1

  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  tmp = out + ".partial"
  t0 = time.time()
  bar = None
  if progress:
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel
    bar = tqdm(total=demos_per_task * len(tasks), desc=f"collect {suite}", dynamic_ncols=True)
  with h5py.File(tmp, "w") as f:
    grp = f.create_group("data")
    n_written = 0
    slots = [assign() for _ in range(batch)]
    live = [s for s in slots if s is not None]
    keys = jnp.stack([collection_key(seed, *s) if s else jax.random.PRNGKey(0) for s in slots])
    state = reset(keys, jnp.asarray([s[0] if s else live[0][0] for s in slots], jnp.int32))
    alive = jnp.asarray([s is not None for s in slots])
    hand = np.asarray([handover_of(s) for s in slots], np.int32)
    buffers = [[] for _ in range(batch)]
    n_block = 0
    while any(s is not None for s in slots):
      state, alive, rec = run(state, alive, jax.random.fold_in(jax.random.PRNGKey(seed), n_block),
                              jnp.asarray(hand))
      n_block += 1
      rec, alive_np = jax.device_get((rec, alive))
      refills = []
      for j, slot in enumerate(slots):
        if slot is None:
          continue
        valid = rec["valid"][:, j]
        buffers[j].append({k: v[valid, j] for k, v in rec.items()})
        if alive_np[j]:
          continue
        t = slot[0]
        inflight[t] -= 1
        ep = {k: np.concatenate([b[k] for b in buffers[j]], 0) for k in buffers[j][0]}
        buffers[j] = []
        ok = len(ep["action"]) > 0 and ep["reward"][-1] > 0
        succeeded[t] += int(ok)
        if (ok or (keep == "all" and len(ep["action"]) > 0)) and kept[t] < demos_per_task:
          write_demo(grp, n_written, ep, env.instructions[t], t)
          n_written += 1
          kept[t] += 1
          if bar is not None:
            bar.update(1)
        slots[j] = assign()
        hand[j] = handover_of(slots[j])
        if slots[j] is not None:
          refills.append(j)
      if refills:
        mask = np.zeros(batch, bool)
        mask[refills] = True
        keys = jnp.stack([collection_key(seed, *s) if s else jax.random.PRNGKey(0) for s in slots])
        tids = jnp.asarray([s[0] if s else 0 for s in slots], jnp.int32)
        state = refill(*_placed((state, keys, tids, jnp.asarray(mask))))
        alive = jnp.asarray(alive_np | mask)
      if bar is not None:
        bar.set_postfix(attempted=sum(attempted), worlds=sum(s is not None for s in slots))
    grp.attrs["total"] = int(sum(grp[d].attrs["num_samples"] for d in grp))
    grp.attrs["suite"] = suite
    grp.attrs["image_size"] = int(image_size)
    grp.attrs["instructions"] = json.dumps(list(env.instructions))
    grp.attrs["env_args"] = json.dumps(dict(env_name=suite, env_kwargs=dict(
        env_kwargs, solver_iterations=int(env.mj_model.opt.iterations))))
    grp.attrs["action_noise"] = float(action_noise)
    grp.attrs["seed"] = int(seed)
    grp.attrs["policy"] = os.path.basename(os.path.normpath(policy)) if policy else ""
    grp.attrs["beta"] = float(beta)
    grp.attrs["handover"] = int(handover)
    grp.attrs["temperature"] = float(temperature)
    grp.attrs["keep"] = keep
  if bar is not None:
    bar.close()
  os.replace(tmp, out)
  return dict(kept=kept, succeeded=succeeded, attempted=attempted, seconds=time.time() - t0)


def default_config():
  """``python -m opd_jax.collect --config.suite=libero_object --config.out=data/x.hdf5 ...``"""
  import ml_collections  # pylint: disable=import-outside-toplevel
  return ml_collections.ConfigDict(dict(
      suite="libero_object",
      demos_per_task=50,
      out="",               # the HDF5 file to write
      image_size=64,
      batch=20,             # worlds rolled together
      seed=0,
      action_noise=0.0,     # DART noise std on executed arm actions (recorded actions stay clean)
      block=10,             # control steps per compiled call
      tasks="",             # comma-separated task ids ("" = all)
      policy="",            # a checkpoint that drives the worlds (see the module doc)
      beta=0.0,             # with policy: probability that the expert runs a chunk instead
      handover=-1,          # with policy: it drives the first 0..N control steps, then the expert
      temperature=0.0,      # with policy: 0 = greedy
      control="torque",     # the arm's joint law (envs/control.py); SFT checks it
      keep="success"))      # "success" or "all" episodes


def validate(config, overrides=()) -> None:
  del overrides
  from opd_jax import cli  # pylint: disable=import-outside-toplevel
  if not config.out:
    raise cli.UsageError("config.out: give the HDF5 file to write, e.g. "
                         "--config.out=data/libero_object_64.hdf5")
  if config.suite not in envs.registered():
    raise cli.UsageError(f"config.suite: {config.suite!r} is not a registered suite "
                         f"{envs.registered()}")
  if config.control not in CONTROL_MODES:
    raise cli.UsageError(f"config.control: must be one of {CONTROL_MODES}, got {config.control!r}")
  try:
    [int(t) for t in config.tasks.split(",") if t]
  except ValueError:
    raise cli.UsageError(f"config.tasks: comma-separated task ids, got {config.tasks!r}") from None


def main(inv) -> dict:
  from opd_jax import cli  # pylint: disable=import-outside-toplevel
  c = inv.config
  print(cli.describe(inv, c.out))
  tasks = [int(t) for t in c.tasks.split(",") if t] or None
  with cli.usage_errors():
    r = collect(c.suite, c.demos_per_task, c.out, image_size=c.image_size, batch=c.batch,
                seed=c.seed, action_noise=c.action_noise, block=c.block, tasks=tasks,
                policy=c.policy, beta=c.beta, temperature=c.temperature, keep=c.keep,
                handover=c.handover, env_kwargs=dict(control=c.control))
  print(f"{'task':>4} {'kept':>5} {'succeeded':>9} {'attempted':>9}")
  for t, (k, s, a) in enumerate(zip(r["kept"], r["succeeded"], r["attempted"])):
    if a:
      print(f"{t:>4} {k:>5} {s:>9} {a:>9}")
  who = "policy/expert mixture" if c.policy else "expert"
  print(f"kept {sum(r['kept'])} episodes; {who} success {sum(r['succeeded'])}/{sum(r['attempted'])} "
        f"episodes; {r['seconds']:.0f}s -> {c.out}")
  short = [t for t, (k, a) in enumerate(zip(r["kept"], r["attempted"])) if a and k < c.demos_per_task]
  if short:
    print(f"warning: tasks {short} have fewer than {c.demos_per_task} successful demos")
  return r


if __name__ == "__main__":
  from opd_jax import cli  # pylint: disable=import-outside-toplevel
  cli.run("collect", main, default_config=default_config, validate=validate)
