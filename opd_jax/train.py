"""On-policy distillation: ``python -m opd_jax.train --config configs/libero.py``.

One jitted iteration = a batch of episodes rolled out by the student with the
teacher scoring every sampled action token in the same compiled step, then
the objective's gradient applied with Optax. Resumes from the workdir's latest
checkpoint. See configs/libero.py for the fields and example commands.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any

import envs  # sets the XLA flag MJX needs on CPU before JAX starts  # noqa: F401  isort: skip
import jax
import jax.numpy as jnp
import numpy as np
import optax
from envs.control import CONTROL_MODES
from flax import struct

from opd_jax import actions as act
from opd_jax import checkpoint, models, objectives, parallel, teachers
from opd_jax.policy import Policy, check_obs_matches
from opd_jax.rollout import episode_metrics, rollout


@struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  nonfinite_updates: jax.Array   # updates skipped because loss or gradients were not finite


# ----------------------------------------------------------------------------- config
def validate(config) -> None:
  """Fails with a message naming the field, before anything compiles."""
  def need(ok, field, msg):
    if not ok:
      raise ValueError(f"config.{field}: {msg}")

  need(config.env.suite in envs.registered(), "env.suite",
       f"{config.env.suite!r} is not a registered suite {envs.registered()}")
  need(config.env.image_size >= 8, "env.image_size", f"must be >= 8, got {config.env.image_size}")
  need(config.env.control in CONTROL_MODES, "env.control",
       f"must be one of {CONTROL_MODES}, got {config.env.control!r}")
  need(config.objective in objectives.OBJECTIVES, "objective",
       f"{config.objective!r} is not one of {sorted(objectives.OBJECTIVES)}")
  need(config.rollout.prompts >= 1, "rollout.prompts", f"must be >= 1, got {config.rollout.prompts}")
  need(config.rollout.group >= 1, "rollout.group", f"must be >= 1, got {config.rollout.group}")
  need(config.rollout.temperature > 0, "rollout.temperature",
       f"must be > 0 for on-policy sampling, got {config.rollout.temperature}")
  need(config.optim.lr > 0 and math.isfinite(config.optim.lr), "optim.lr",
       f"must be a positive number, got {config.optim.lr}")
  need(config.optim.epochs >= 1, "optim.epochs", f"must be >= 1, got {config.optim.epochs}")
  need(config.optim.minibatches >= 1, "optim.minibatches",
       f"must be >= 1, got {config.optim.minibatches}")
  need(isinstance(config.optim.get("unroll", True), bool), "optim.unroll",
       f"must be True or False, got {config.optim.get('unroll')!r}")
  need(config.iterations >= 0, "iterations", f"must be >= 0, got {config.iterations}")
  need(config.teacher.kind in ("scripted", "checkpoint"), "teacher.kind",
       f"must be 'scripted' or 'checkpoint', got {config.teacher.kind!r}")
  need(config.teacher.temperature > 0, "teacher.temperature",
       f"must be > 0, got {config.teacher.temperature}")
  need(config.checkpoint.every >= 1, "checkpoint.every", f"must be >= 1, got {config.checkpoint.every}")
  avg = config.checkpoint.get("average", 0)
  need(avg == 0 or 2 <= avg <= config.checkpoint.keep, "checkpoint.average",
       f"must be 0 (off) or between 2 and checkpoint.keep ({config.checkpoint.keep}), got {avg}")
  if config.optim.epochs > 1 and config.objective == "reverse_kl" and config.clip_eps <= 0:
    print("note: optim.epochs > 1 without clip_eps: later epochs are off-policy and unclipped",
          file=sys.stderr)


def model_config_from(config, env) -> models.ModelConfig:
  m = dict(config.student.model)
  m = {k: (None if v == -1 or v == () else v) for k, v in m.items()}
  return models.ModelConfig(**m, image_size=config.env.image_size, cameras=tuple(env.cameras),
                            proprio_dim=8, action_dim=env.action_size)


def identity_stats(dim: int) -> act.ActionStats:
  """The suites' actions already lie in [-1, 1]: normalisation is the identity
  (gripper, the last dim, left as is)."""
  mask = np.ones(dim, bool)
  mask[-1] = False
  return act.make_stats(-np.ones(dim), np.ones(dim), mask)


def make_env(config):
  kw = dict(image_size=config.env.image_size, substeps=config.env.substeps,
            control=config.env.control)
  if config.env.max_episode_steps > 0:
    kw["max_episode_steps"] = config.env.max_episode_steps
  env = envs.make(config.env.suite, **kw)
  # recorded in checkpoints beside the arm law: the physics the policy was trained under
  kw["solver_iterations"] = int(env.mj_model.opt.iterations)
  return env, kw


def make_student(config, env):
  """(Policy, params, where-from) from config.student.init or a fresh init."""
  if config.student.init:
    graphdef, params, cfg, stats, meta = checkpoint.load_policy(config.student.init)
    check_obs_matches(cfg, env, "student", meta)
    return Policy.build(graphdef, cfg, stats, env.instructions), params, config.student.init
  cfg = model_config_from(config, env)
  graphdef, params = models.make_policy(cfg, seed=config.seed)
  return Policy.build(graphdef, cfg, identity_stats(env.action_size), env.instructions), params, "init"


def make_optimizer(o, total_steps: int | None = None) -> optax.GradientTransformation:
  """``o.optimizer``: "adamw" (default) or "sgd"; linear warm-up, global-norm clipping.

  ``o.schedule``: "constant" after the warm-up (default), or "cosine": decays to
  ``o.final_lr_frac`` x lr at ``total_steps``.
  """
  warm = max(o.warmup, 1)
  kind = o.get("schedule", "constant")
  if kind == "constant":
    after = optax.constant_schedule(o.lr)
  elif kind == "cosine":
    if not total_steps or total_steps <= warm:
      raise ValueError(f"config.optim.schedule='cosine' needs more steps ({total_steps}) than "
                       f"optim.warmup ({o.warmup})")
    after = optax.cosine_decay_schedule(o.lr, total_steps - warm,
                                        alpha=o.get("final_lr_frac", 0.1))
  else:
    raise ValueError(f"config.optim.schedule must be 'constant' or 'cosine', got {kind!r}")
  sched = optax.join_schedules([optax.linear_schedule(0.0, o.lr, warm), after], [warm])
  name = o.get("optimizer", "adamw")
  if name == "adamw":
    opt = optax.adamw(sched, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay)
  elif name == "sgd":
    opt = optax.sgd(sched)
  else:
    raise ValueError(f"config.optim.optimizer must be 'adamw' or 'sgd', got {name!r}")
  return optax.chain(optax.clip_by_global_norm(o.grad_clip), opt)


# ------------------------------------------------------------------ one iteration
def make_iteration(config, benv, student: Policy, teacher, tx, mesh, num_steps: int):
  """``iteration(train_state, teacher_params) -> (train_state, metrics)``, to be jitted.

  Randomness depends on (seed, step) only, so a resumed run repeats exactly.
  """
  n_dev = mesh.devices.size
  prompts = config.rollout.prompts * n_dev
  group = config.rollout.group
  clip = config.clip_eps if config.clip_eps > 0 else None
  loss_obj = objectives.get(config.objective, temperature=config.rollout.temperature, clip_eps=clip)
  epochs, mbs = config.optim.epochs, config.optim.minibatches
  if num_steps % mbs:
    raise ValueError(f"config.optim.minibatches={mbs} must divide the {num_steps} policy steps "
                     f"of an iteration")
  t_mb = num_steps // mbs

  def loss_fn(params, batch):
    logits = jax.vmap(student.logits, in_axes=(None, 0))(params, batch["hist"])  # [T, B, K, D, V]
    return loss_obj(logits, batch)

  def iteration(ts: TrainState, teacher_params):
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), ts.step)
    k_task, k_init, k_roll = jax.random.split(key, 3)
    tasks = jnp.repeat(jax.random.randint(k_task, (prompts,), 0, benv.num_tasks), group)
    keys = jnp.repeat(jax.random.split(k_init, prompts), group, axis=0)
    tasks, keys = parallel.shard_batch((tasks, keys), mesh)
    state = benv.reset(keys, tasks)
    r = rollout(benv, student, ts.params, state, k_roll, num_steps,
                temperature=config.rollout.temperature, teacher=teacher,
                teacher_params=teacher_params, teacher_temperature=config.teacher.temperature)
    batch = parallel.shard_batch(r.batch(), mesh, axis=1)

    def sgd(carry, i):
      params, opt_state, bad = carry
      mb = jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, (i % mbs) * t_mb, t_mb, 0), batch)
      (loss, m), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, mb)
      grad_norm = optax.tree.norm(grads)   # inf/NaN when any gradient entry is
      finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
      updates, new_opt = tx.update(grads, opt_state, params)
      new_params = optax.apply_updates(params, updates)
      keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
      m = dict(m, loss=loss, grad_norm=grad_norm)
      return (keep(new_params, params), keep(new_opt, opt_state),
              bad + (1 - finite.astype(jnp.int32))), m

    # Unrolled by default: XLA:CPU runs a convolution's gradient inside a while loop ~14x slower
    # than the same ops unrolled (measured: 8 steps of the 5M policy, 47.5 s in a scan vs 3.3 s),
    # but compile time grows with the number of steps (~70 s each for the nano policy on this
    # 2-core CPU). optim.unroll=False compiles one step and loops over it.
    (params, opt_state, bad), ms = jax.lax.scan(
        sgd, (ts.params, ts.opt_state, ts.nonfinite_updates), jnp.arange(epochs * mbs),
        unroll=bool(config.optim.get("unroll", True)))
    metrics = {f"train/{k}": v[0] for k, v in ms.items()}  # first minibatch: on-policy values
    metrics["train/loss_last"] = ms["loss"][-1]
    metrics["train/nonfinite_updates"] = bad.astype(jnp.float32)
    metrics.update(episode_metrics(r))
    return TrainState(ts.step + 1, params, opt_state, bad), metrics

  return iteration


# --------------------------------------------------------------------------- main
_SETUP_CACHE: dict[str, Any] = {}
_RUN_ONLY_FIELDS = ("workdir", "iterations", "log_every", "checkpoint", "eval")


def setup(config):
  """Builds suite, student, teacher, mesh, optimiser and the jitted iteration.

  Cached per process on the config fields that change what is compiled (not
  workdir, iterations, logging, checkpoint or eval cadence), so a second run
  in the same process (a resumed run in a test, a sweep) does not recompile.
  """
  key = json.dumps({k: v for k, v in config.to_dict().items() if k not in _RUN_ONLY_FIELDS},
                   sort_keys=True, default=str)
  if key in _SETUP_CACHE:
    return _SETUP_CACHE[key]
  env, env_kw = make_env(config)
  benv = envs.core.BatchEnv(env)
  student, params, origin = make_student(config, env)
  teacher = teachers.make(config.teacher, env, student)
  num_steps = (config.rollout.policy_steps if config.rollout.policy_steps > 0
               else math.ceil(env.max_episode_steps / student.cfg.chunk))
  mesh = parallel.make_mesh(config.mesh.data)
  tx = make_optimizer(config.optim)
  rep = parallel.replicated(mesh)
  iteration = jax.jit(make_iteration(config, benv, student, teacher, tx, mesh, num_steps),
                      donate_argnums=(0,), in_shardings=(rep, rep), out_shardings=(rep, rep))
  out = dict(env=env, env_kw=env_kw, benv=benv, student=student, params=params, origin=origin,
             teacher=teacher, num_steps=num_steps, mesh=mesh, tx=tx, iteration=iteration,
             evaluators={})
  _SETUP_CACHE[key] = out
  return out


def run(config, *, progress: bool = True) -> TrainState:
  """The whole job; returns the final train state (tests call this directly)."""
  from opd_jax import evaluate as eval_lib  # pylint: disable=import-outside-toplevel
  from opd_jax.logging import MetricWriter  # pylint: disable=import-outside-toplevel

  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every file it writes at INFO
  validate(config)
  su = setup(config)
  env, env_kw, benv, student, teacher = su["env"], su["env_kw"], su["benv"], su["student"], su["teacher"]
  params, origin, num_steps, mesh, tx = su["params"], su["origin"], su["num_steps"], su["mesh"], su["tx"]
  iteration = su["iteration"]
  workdir = config.workdir
  os.makedirs(workdir, exist_ok=True)

  # ---- state, resumed if the workdir has a checkpoint
  rep = parallel.replicated(mesh)
  mgr = checkpoint.manager(os.path.join(workdir, "checkpoints"), max_to_keep=config.checkpoint.keep)
  meta = dict(model=student.cfg.to_dict(), action_stats=student.stats.to_dict(),
              suite=config.env.suite, env_kwargs=env_kw, instructions=list(env.instructions),
              config=config.to_dict(), student_init=origin)
  start = mgr.latest_step()
  if start is not None:
    abstract_opt = jax.eval_shape(tx.init, params)
    params, opt_state, old_meta = checkpoint.restore(mgr, start, params, abstract_opt, rep)
    if checkpoint.saved_model(old_meta) != meta["model"]:
      raise checkpoint.CheckpointError(
          f"{workdir}/checkpoints/{start} holds a different model ({old_meta.get('model')}) than "
          f"the config asks for; use another config.workdir")
    bad = int(old_meta.get("nonfinite_updates", 0))
    env_steps = float(old_meta.get("env_steps_total", 0.0))
    print(f"resuming from {workdir}/checkpoints/{start}")
  else:
    opt_state, bad, start, env_steps = tx.init(params), 0, 0, 0.0
  ts = TrainState(jnp.int32(start), params, opt_state, jnp.int32(bad))
  ts = jax.device_put(jax.tree.map(jnp.copy, ts), rep)  # a copy: the iteration donates it
  t_params = jax.device_put(teacher.params, rep) if teacher.params is not None else None

  ev_key = (config.eval.episodes_per_task, config.eval.batch)
  if ev_key not in su["evaluators"]:
    su["evaluators"][ev_key] = eval_lib.Evaluator(
        benv, student, episodes_per_task=config.eval.episodes_per_task, batch=config.eval.batch,
        num_steps=num_steps)
  evaluator = su["evaluators"][ev_key]
  writer = MetricWriter(workdir)
  world = config.rollout.prompts * config.rollout.group * mesh.devices.size
  print(f"suite {config.env.suite}: {env.num_tasks} tasks, {world} worlds x {num_steps} policy "
        f"steps (chunk {student.cfg.chunk}) per iteration; student {student.cfg.size} "
        f"({models.param_count(ts.params) / 1e6:.2f}M params, from {origin}); teacher "
        f"{config.teacher.kind}; objective {config.objective}; {mesh.devices.size} device(s)")

  def save(step):
    meta_now = dict(meta, nonfinite_updates=int(ts.nonfinite_updates), env_steps_total=env_steps)
    checkpoint.save(mgr, step, ts.params, meta_now, ts.opt_state)

  def do_eval(step):
    res = evaluator(ts.params, videos=config.eval.videos)
    eval_lib.write_report(res, os.path.join(workdir, "eval", f"step_{step}"),
                          f"{config.env.suite} after {step} iterations")
    writer.write(step, eval_row(res, "eval"))
    return res

  bar = None
  if progress:
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel
    bar = tqdm(total=config.iterations, initial=start, desc="opd", dynamic_ncols=True)
  last_bad = int(ts.nonfinite_updates)
  for step in range(start, config.iterations):
    t0 = time.time()
    ts, m = iteration(ts, t_params)
    m = jax.device_get(m)
    dt = time.time() - t0
    env_steps += float(m["rollout/control_steps"])
    m["rollout/env_steps_per_s"] = float(m["rollout/control_steps"]) / dt
    m["rollout/env_steps_total"] = env_steps   # counted, and carried across resumes
    m["time/iteration_s"] = dt
    if (step + 1) % config.log_every == 0 or step == start:
      writer.write(step + 1, m)
    if int(m["train/nonfinite_updates"]) > last_bad:
      print(f"iteration {step + 1}: non-finite loss/gradients, update skipped "
            f"({int(m['train/nonfinite_updates'])} so far)", file=sys.stderr)
      last_bad = int(m["train/nonfinite_updates"])
    if bar is not None:
      bar.set_postfix(success=f"{m['rollout/success']:.2f}", kl=f"{m['train/reverse_kl']:.3f}",
                      steps_s=f"{m['rollout/env_steps_per_s']:.0f}")
      bar.update(1)
    if (step + 1) % config.checkpoint.every == 0 or step + 1 == config.iterations:
      save(step + 1)
    if config.eval.every > 0 and ((step + 1) % config.eval.every == 0 or step + 1 == config.iterations):
      res = do_eval(step + 1)
      if bar is not None:
        bar.write(f"eval @ {step + 1}: success {100 * res['success']:.1f}% "
                  f"per task {[round(100 * s) for s in res['per_task']]}")
  if bar is not None:
    bar.close()
  if config.checkpoint.get("average", 0) and start < config.iterations:
    average_tail(config, mgr, evaluator, writer, rep)
  writer.close()
  return ts


def eval_row(res: dict, prefix: str) -> dict:
  """Metrics row of one greedy evaluation: success, episode length, success per task."""
  row = {f"{prefix}/success": res["success"], f"{prefix}/episode_length": res["episode_length"]}
  row.update({f"{prefix}/task_{i}": s for i, s in enumerate(res["per_task"])})
  return row


def average_tail(config, mgr, evaluator, writer, sharding) -> None:
  """The mean parameters of the last ``config.checkpoint.average`` checkpoints, saved to
  WORKDIR/average/checkpoints/LAST and evaluated like the run's own evaluations (placed like
  the run's parameters, ``sharding``: the evaluator's compiled episodes are reused; loaded as
  they came off disk, they were compiled a second time)."""
  from opd_jax import average  # pylint: disable=import-outside-toplevel
  from opd_jax import evaluate as eval_lib  # pylint: disable=import-outside-toplevel
  steps = sorted(mgr.all_steps())[-config.checkpoint.average:]
  if len(steps) < 2:
    print(f"checkpoint.average: only {steps} kept, nothing averaged", file=sys.stderr)
    return
  out = os.path.join(config.workdir, "average")
  params = jax.device_put(average.write(str(mgr.directory), steps, out), sharding)
  msg = f"averaged checkpoints {steps} -> {out}"
  if config.eval.every > 0:
    res = evaluator(params, videos=0)
    eval_lib.write_report(res, os.path.join(out, "eval", f"step_{steps[-1]}"),
                          f"{config.env.suite}: mean of checkpoints {steps}")
    writer.write(steps[-1], eval_row(res, "eval_average"))
    msg += f"; greedy success {100 * res['success']:.1f}%"
  print(msg)


def main(argv):
  del argv
  if _FLAGS.distributed:
    jax.distributed.initialize()
  run(_FLAGS.config, progress=jax.process_index() == 0)  # --host_devices was applied before JAX started (_preparse_host_devices)


def _preparse_host_devices(argv) -> None:
  """``--host_devices=N`` must become an XLA flag before JAX initialises its backend."""
  for a in argv:
    if a.startswith("--host_devices="):
      n = int(a.split("=", 1)[1])
      if n > 0:
        flag = f"--xla_force_host_platform_device_count={n}"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()


if __name__ == "__main__":
  _preparse_host_devices(sys.argv)
  from absl import app, flags  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  _CONFIG = config_flags.DEFINE_config_file("config", "configs/libero.py", "training config")
  flags.DEFINE_integer("host_devices", 0, "CPU only: expose N host devices (set to the core count)")
  flags.DEFINE_bool("distributed", False, "multi-host: call jax.distributed.initialize() first")
  _FLAGS = flags.FLAGS
  app.run(main)
