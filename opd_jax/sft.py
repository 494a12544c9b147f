"""Offline SFT on demonstrations: ``python -m opd_jax.sft --config configs/libero.py:SUITE,sft``.

  python -m opd_jax.collect --config.suite=libero_spatial --config.out=data/libero_spatial.hdf5
  python -m opd_jax.sft --config configs/libero.py:spatial,sft \\
      --config.data.path=data/libero_spatial.hdf5 --config.workdir=runs/sft_spatial_teacher
  # the one-demo student, sharing the teacher's action statistics:
  python -m opd_jax.sft --config configs/libero.py:spatial,sft \\
      --config.data.path=data/libero_spatial.hdf5 --config.data.demos_per_task=1 \\
      --config.data.stats_path=runs/sft_spatial_teacher/action_stats.json \\
      --config.workdir=runs/sft_spatial_1demo

Token-level cross-entropy between the policy's action-token logits and the
demos' tokenised action chunks (see opd_jax.data for how samples are built).
One jitted step samples a batch from the device-resident dataset, applies
random-shift image augmentation, and takes an Optax step (the OPD trainer's
AdamW + clipping + warmup); the batch is sharded on the mesh's ``data`` axis,
params replicated. Checkpoints carry the model config, action statistics,
suite and instructions (opd_jax.checkpoint), so ``opd_jax.evaluate`` or a
checkpoint teacher rebuilds the policy from the workdir alone; a run resumes
from its workdir. Greedy evaluation in the simulator every ``eval.every`` steps.
"""
from __future__ import annotations

import os
import sys
import time

import envs  # sets the XLA flag MJX needs on CPU before JAX starts  # noqa: F401  isort: skip
import jax
import jax.numpy as jnp
import numpy as np
import optax
from etils import epath
from envs.control import CONTROL_MODES

from opd_jax import checkpoint, cli, compiling, data, models, parallel
from opd_jax.policy import Policy, check_obs_matches
from opd_jax.build import make_env, model_config_from
from opd_jax.train_state import (TrainState, abstract_state, guarded_update, make_optimizer,
                               restore_or_init)


def validate(config, overrides=()) -> None:
  """Fails with a message naming the field, before anything compiles."""
  def need(ok, field, msg):
    if not ok:
      raise cli.UsageError(f"config.{field}: {msg}")

  need("data" in config and "sft" in config, "data",
       "missing: use the sft variant, --config configs/libero.py:sft")
  need(bool(config.data.path), "data.path",
       "give the demos, e.g. --config.data.path=data/libero_spatial.hdf5 "
       "(made by python -m opd_jax.collect)")
  need(config.env.suite in envs.registered(), "env.suite",
       f"{config.env.suite!r} is not a registered suite {envs.registered()}")
  need(config.env.control in CONTROL_MODES, "env.control",
       f"must be one of {CONTROL_MODES}, got {config.env.control!r}")
  need(config.data.demos_per_task == -1 or config.data.demos_per_task >= 1,
       "data.demos_per_task", f"must be -1 (all) or >= 1, got {config.data.demos_per_task}")
  need(0.0 <= config.data.val_fraction < 1.0, "data.val_fraction",
       f"must be in [0, 1), got {config.data.val_fraction}")
  need(config.sft.steps >= 0, "sft.steps", f"must be >= 0, got {config.sft.steps}")
  need(config.sft.batch >= 1, "sft.batch", f"must be >= 1, got {config.sft.batch}")
  need(config.sft.shift >= 0, "sft.shift", f"must be >= 0 pixels, got {config.sft.shift}")
  need(config.optim.lr > 0, "optim.lr", f"must be > 0, got {config.optim.lr}")
  need(config.checkpoint.every >= 1, "checkpoint.every",
       f"must be >= 1, got {config.checkpoint.every}")
  set_model = sorted(p for p in overrides if p.startswith("student.model."))
  need(not (config.sft.get("init", "") and set_model), set_model[0] if set_model else "",
       f"is ignored: sft.init={config.sft.get('init', '')} fixes the architecture; drop the "
       f"override")


def random_shift(images: jax.Array, key: jax.Array, pad: int) -> jax.Array:
  """DrQ-style augmentation: ``uint8 [B, T, H, W, C]`` padded by ``pad`` (edge) and cropped
  back at a random offset per sample (the same offset for a sample's history frames)."""
  if pad <= 0:
    return images
  b, _, h, w, _ = images.shape
  x = jnp.pad(images, ((0, 0), (0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
  off = jax.random.randint(key, (b, 2), 0, 2 * pad + 1)
  crop = lambda im, o: jax.lax.dynamic_slice(im, (0, o[0], o[1], 0), (im.shape[0], h, w, im.shape[3]))
  return jax.vmap(crop)(x, off)


def sft_loss(policy: Policy, params, hist, tokens, dropout_key=None):
  """Mean token cross-entropy; metrics: loss, accuracy (greedy token = label)."""
  logits = policy.outputs(params, hist, deterministic=dropout_key is None,
                          dropout_key=dropout_key)["logits"]           # [B, K, D, V]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, tokens)
  acc = (jnp.argmax(logits, -1) == tokens).astype(jnp.float32)
  loss = ce.mean()
  return loss, dict(loss=loss, accuracy=acc.mean(), accuracy_gripper=acc[..., -1].mean())


def make_train_step(config, policy: Policy, tx, mesh):
  """``step(ts, arrays) -> (ts, metrics)``: a random batch of samples, augmented, and the
  guarded update on it."""
  batch = config.sft.batch * mesh.devices.size
  use_dropout = policy.cfg.dropout > 0
  update = guarded_update(
      lambda p, hist, tokens, k: sft_loss(policy, p, hist, tokens, k if use_dropout else None), tx)

  def step_fn(ts: TrainState, arrays: data.Arrays):
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), ts.step)
    k_idx, k_aug, k_drop = jax.random.split(key, 3)
    idx = parallel.shard_batch(jax.random.randint(k_idx, (batch,), 0, arrays.size), mesh)
    hist, tokens = data.gather(arrays, idx)
    images = dict(hist.images)
    for i, c in enumerate(policy.cfg.cameras):
      images[c] = random_shift(images[c], jax.random.fold_in(k_aug, i), config.sft.shift)
    hist = hist.replace(images=images)
    hist, tokens = parallel.shard_batch((hist, tokens), mesh)
    ts, m = update(ts, hist, tokens, k_drop)
    m = {f"train/{k}": v for k, v in m.items()}
    m["train/nonfinite_updates"] = ts.nonfinite_updates.astype(jnp.float32)
    return ts.replace(step=ts.step + 1), m

  return step_fn


def make_eval_loss(policy: Policy, batch: int):
  """``eval_loss(params, arrays) -> metrics`` over every sample (no augmentation)."""
  @jax.jit
  def part(params, arrays, idx):
    hist, tokens = data.gather(arrays, idx)
    return sft_loss(policy, params, hist, tokens)[1]

  def run(params, arrays):
    n = arrays.size
    rows = []
    for s in range(0, n, batch):
      idx = np.minimum(np.arange(s, s + batch), n - 1)
      w = min(batch, n - s)
      rows.append((w, jax.device_get(part(params, arrays, jnp.asarray(idx)))))
    return {f"val/{k}": sum(w * r[k] for w, r in rows) / n for k in rows[0][1]}
  return run


def load_data(config, env, cfg):
  """(train Demos, val Demos or None, stats, where the stats came from)."""
  d = config.data
  full = data.load(d.path, d.demos_per_task, env.instructions)
  tasks = tuple(d.get("tasks", ()))
  if tasks:   # post-training on some tasks only (the others measure forgetting)
    missing = [t for t in tasks if not 0 <= t < env.num_tasks or t not in full.ep_task]
    if missing:
      raise ValueError(f"config.data.tasks: {missing} have no demos in {d.path} (it holds tasks "
                       f"{sorted(set(full.ep_task.tolist()))})")
    full = _subset(full, np.isin(full.ep_task, tasks))
  val = None
  if d.val_fraction > 0:
    per_task = np.bincount(full.ep_task, minlength=env.num_tasks)
    n_val = int(np.ceil(d.val_fraction * per_task[per_task > 0].min()))
    if n_val >= per_task[per_task > 0].min():
      raise ValueError(f"config.data.val_fraction={d.val_fraction} leaves no training demos")
    # the last n_val demos of each task (in the selection) are held out
    keep = np.ones(full.num_episodes, bool)
    for t in range(env.num_tasks):
      eps = np.flatnonzero(full.ep_task == t)
      keep[eps[-n_val:]] = False
    train = _subset(full, keep)
    val = _subset(full, ~keep)
  else:
    train = full
  control = config.env.control
  for path, kw in data.env_kwargs(d.path).items():
    demo_control = kw.get("control", "servo")  # files from before the option: servo
    if demo_control != control:
      raise ValueError(f"config.env.control={control!r} but the demos in {path} were collected "
                       f"with control={demo_control!r}; set config.env.control={demo_control!r} "
                       f"or collect with --control {control}")
  if train.image_size != cfg.image_size:
    raise ValueError(f"config.env.image_size={cfg.image_size} but the demos in {d.path} are "
                     f"{train.image_size}x{train.image_size}; set config.env.image_size="
                     f"{train.image_size} or collect at {cfg.image_size}")
  if d.stats_path:
    stats, origin = data.read_stats(d.stats_path), d.stats_path
  else:
    stats, origin = data.demo_stats(train), "demos"
  if stats.dim != env.action_size:
    raise ValueError(f"config.data.stats_path: statistics have {stats.dim} dims, the suite's "
                     f"actions {env.action_size}")
  return train, val, stats, origin


def _subset(demos: data.Demos, keep_ep: np.ndarray) -> data.Demos:
  steps = np.repeat(keep_ep, demos.ep_len)
  ep_len = demos.ep_len[keep_ep]
  return data.Demos(images={c: v[steps] for c, v in demos.images.items()},
                    proprio=demos.proprio[steps], actions=demos.actions[steps],
                    task_id=demos.task_id[steps], ep_start=np.cumsum(ep_len) - ep_len,
                    ep_len=ep_len, ep_task=demos.ep_task[keep_ep],
                    instructions=demos.instructions, attrs=demos.attrs)


# --------------------------------------------------------------------------- main
def run(config, *, progress: bool = True) -> TrainState:
  """The whole job; returns the final train state (tests call this directly)."""
  from opd_jax import evaluate as eval_lib  # pylint: disable=import-outside-toplevel
  from opd_jax.logging import MetricWriter  # pylint: disable=import-outside-toplevel
  cli.quiet_startup()
  validate(config)
  with cli.usage_errors():
    env, env_kw = make_env(config)
    benv = envs.core.BatchEnv(env)
    init = config.sft.get("init", "")
    if init:
      # warm start (fine-tuning): architecture, parameters and action statistics come from the
      # checkpoint; the optimiser and its schedule start afresh
      _, init_params, cfg, init_stats, init_meta = checkpoint.load_policy(init)
      check_obs_matches(cfg, env, "sft.init", init_meta)
      print(f"sft.init: the architecture is {init}'s ({cfg.size}, {cfg.num_layers} layers, "
            f"width {cfg.width}); config.student.model is not used")
    else:
      cfg = model_config_from(config, env)

    # ---- data: demos, statistics, device-resident samples
    t0 = time.time()
    train, val, stats, stats_origin = load_data(config, env, cfg)
    if init:
      if config.data.stats_path and stats.to_dict() != init_stats.to_dict():
        raise ValueError(f"config.data.stats_path={config.data.stats_path} differs from the "
                         f"action statistics of config.sft.init={init}; drop one of them")
      stats, stats_origin = init_stats, init
  arrays = data.build_arrays(train, stats, cfg.history, cfg.chunk, cfg.cameras)
  val_arrays = data.build_arrays(val, stats, cfg.history, cfg.chunk, cfg.cameras) if val else None
  print(f"demos {config.data.path}: {train.num_episodes} episodes ({train.num_steps} samples), "
        f"per task {train.per_task(env.num_tasks)}"
        + (f"; {val.num_episodes} held out" if val else "")
        + f"; action stats from {stats_origin}; loaded in {time.time() - t0:.0f}s")
  if config.data.demos_per_task > 0 and not config.data.stats_path:
    print("note: statistics computed from this subset; a student meant for distillation should "
          "share its teacher's (--config.data.stats_path=TEACHER/action_stats.json)",
          file=sys.stderr)

  # ---- model, optimiser, mesh
  graphdef, params = models.make_policy(cfg, seed=config.seed)
  policy = Policy.build(graphdef, cfg, stats, env.instructions)
  with cli.usage_errors():
    mesh = parallel.make_mesh(config.mesh.data, config.mesh.get("fsdp", 1))
    tx = make_optimizer(config.optim, total_steps=config.sft.steps)
  rep = parallel.replicated(mesh)
  place = parallel.param_sharding(mesh)   # parameters: replicated, or split over fsdp
  workdir = config.workdir
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)   # local or object storage
  writes = parallel.is_main()   # files and logs come from process 0
  if writes:
    data.write_stats(os.path.join(workdir, "action_stats.json"), stats)

  # ---- state, resumed if the workdir has a checkpoint
  meta = dict(model=cfg.to_dict(), action_stats=stats.to_dict(), suite=config.env.suite,
              env_kwargs=env_kw, instructions=list(env.instructions), config=config.to_dict(),
              student_init=f"sft from {init}" if init else "sft",
              data=dict(path=config.data.path, demos_per_task=config.data.demos_per_task,
                        tasks=list(config.data.get("tasks", ())),
                        episodes=train.num_episodes, samples=train.num_steps,
                        stats_from=stats_origin))
  with cli.usage_errors():
    ts, mgr, old = restore_or_init(workdir, config.checkpoint.keep, init_params if init else params,
                                   tx, meta, place, compare=("model", "action_stats"))
  start = int(ts.step)
  print(f"resuming from {workdir}/checkpoints/{start}" if old else
        f"warm start from {init}" if init else "fresh start")
  arrays = jax.device_put(arrays, rep)

  state = jax.tree.map(place, abstract_state(ts.params, tx))
  step_fn = jax.jit(make_train_step(config, policy, tx, mesh), donate_argnums=(0,),
                    out_shardings=(state, rep))
  evaluator = None
  if config.eval.every > 0:
    evaluator = eval_lib.Evaluator(benv, policy, episodes_per_task=config.eval.episodes_per_task,
                                   batch=config.eval.batch, mesh=mesh)
  val_loss = make_eval_loss(policy, config.sft.batch) if val_arrays is not None else None
  writer = MetricWriter(workdir, enabled=writes)
  print(f"sft on {config.env.suite}: {cfg.size} model ({models.param_count(ts.params) / 1e6:.2f}M "
        f"params), batch {config.sft.batch} x {mesh.devices.size} device(s), {config.sft.steps} "
        f"steps, shift {config.sft.shift}px; workdir {workdir}")
  if start < config.sft.steps:
    step_fn, = compiling.compile_programs([("the SFT step", step_fn, (ts, arrays),
                                            compiling.NO_PHYSICS)])

  def save(step):
    checkpoint.save(mgr, step, ts.params, dict(meta, nonfinite_updates=int(ts.nonfinite_updates)),
                    ts.opt_state)

  def do_eval(step):
    row = {}
    if val_loss is not None:
      row.update(val_loss(ts.params, val_arrays))
    if evaluator is not None:
      t_ev = time.time()
      res = evaluator(ts.params, videos=config.eval.videos)
      if writes:
        eval_lib.write_report(res, os.path.join(workdir, "eval", f"step_{step}"),
                              f"{config.env.suite} after {step} SFT steps")
      row.update({"eval/success": res["success"], "eval/episode_length": res["episode_length"],
                  "time/eval_s": time.time() - t_ev})
      row.update({f"eval/task_{i}": s for i, s in enumerate(res["per_task"])})
    writer.write(step, row)
    return row

  bar = None
  if progress:
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel
    bar = tqdm(total=config.sft.steps, initial=start, desc="sft", dynamic_ncols=True)
  last_bad = int(ts.nonfinite_updates)
  t_log = time.time()
  for step in range(start, config.sft.steps):
    ts, m = step_fn(ts, arrays)
    n = step + 1
    if n % config.log_every == 0 or step == start or n == config.sft.steps:
      m = jax.device_get(m)
      m["time/step_s"] = (time.time() - t_log) / (config.log_every if step > start else 1)
      t_log = time.time()
      writer.write(n, m)
      if int(m["train/nonfinite_updates"]) > last_bad:
        print(f"step {n}: non-finite loss/gradients, update skipped", file=sys.stderr)
        last_bad = int(m["train/nonfinite_updates"])
      if bar is not None:
        bar.set_postfix(loss=f"{m['train/loss']:.3f}", acc=f"{m['train/accuracy']:.3f}")
    if bar is not None:
      bar.update(1)
    if n % config.checkpoint.every == 0 or n == config.sft.steps:
      save(n)
    if (config.eval.every > 0 or val_loss is not None) and (
        n == config.sft.steps or (config.eval.every > 0 and n % config.eval.every == 0)):
      row = do_eval(n)
      if bar is not None and "eval/success" in row:
        per = [round(100 * row[f"eval/task_{i}"]) for i in range(env.num_tasks)]
        bar.write(f"eval @ {n}: success {100 * row['eval/success']:.1f}% per task {per}")
  if bar is not None:
    bar.close()
  writer.close()
  return ts


def main(inv: cli.Invocation) -> None:
  print(cli.describe(inv, f"{inv.config.workdir}/ (metrics.jsonl, tb/, checkpoints/, eval/)"))
  if parallel.is_main():
    cli.save_config(inv, inv.config.workdir)
  run(inv.config, progress=parallel.is_main())


if __name__ == "__main__":
  cli.run("sft", main, config_file="configs/libero.py:object,sft", validate=validate)
