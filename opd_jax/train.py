"""On-policy distillation: ``python -m opd_jax.train --config configs/libero.py``.

An iteration is two compiled programs: the rollout (a batch of episodes acted by the
student, with the teacher scoring every sampled action token in the same compiled step)
and one guarded gradient step, called ``epochs x minibatches`` times from Python on the
rollout's batch. Both are compiled before the loop starts (and loaded from the
persistent compilation cache on later runs). Resumes from the workdir's latest
checkpoint. See configs/libero.py for the fields and example commands.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from typing import Any, Callable

import envs  # sets the XLA flag MJX needs on CPU before JAX starts  # noqa: F401  isort: skip
import jax
import jax.numpy as jnp
import numpy as np
from envs.control import CONTROL_MODES

from opd_jax import actions as act
from opd_jax import checkpoint, cli, compiling, models, objectives, parallel, teachers
from opd_jax.policy import Policy, check_obs_matches
from opd_jax.rollout import episode_metrics, rollout
from opd_jax.train_state import TrainState, guarded_update, make_optimizer, restore_or_init


# ----------------------------------------------------------------------------- config
def validate(config, overrides=()) -> None:
  """Fails with a message naming the field, before anything compiles."""
  def need(ok, field, msg):
    if not ok:
      raise cli.UsageError(f"config.{field}: {msg}")

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
  need(config.iterations >= 0, "iterations", f"must be >= 0, got {config.iterations}")
  need(config.teacher.kind in ("scripted", "checkpoint"), "teacher.kind",
       f"must be 'scripted' or 'checkpoint', got {config.teacher.kind!r}")
  need(config.teacher.kind != "checkpoint" or bool(config.teacher.checkpoint), "teacher.checkpoint",
       "teacher.kind='checkpoint' needs a path, e.g. --config.teacher.checkpoint=runs/sft_teacher")
  need(config.teacher.temperature > 0, "teacher.temperature",
       f"must be > 0, got {config.teacher.temperature}")
  need(config.checkpoint.every >= 1, "checkpoint.every", f"must be >= 1, got {config.checkpoint.every}")
  avg = config.checkpoint.get("average", 0)
  need(avg == 0 or 2 <= avg <= config.checkpoint.keep, "checkpoint.average",
       f"must be 0 (off) or between 2 and checkpoint.keep ({config.checkpoint.keep}), got {avg}")
  need(config.eval.every >= 0, "eval.every", f"must be >= 0 (0 = off), got {config.eval.every}")
  set_model = sorted(p for p in overrides if p.startswith("student.model."))
  need(not (config.student.init and set_model), set_model[0] if set_model else "student.model",
       f"is ignored: student.init={config.student.init} fixes the architecture; drop the "
       f"override, or start a fresh student with --config.student.init=")
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


# -------------------------------------------------------------- the two programs
def make_rollout(config, benv, student: Policy, teacher, mesh, num_steps: int):
  """``collect(iteration, params, teacher_params) -> (batch, metrics)``: a batch of episodes.

  Randomness depends on (seed, iteration) only, so a resumed run repeats exactly."""
  prompts = config.rollout.prompts * mesh.devices.size
  group = config.rollout.group

  def collect(iteration, params, teacher_params):
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), iteration)
    k_task, k_init, k_roll = jax.random.split(key, 3)
    tasks = jnp.repeat(jax.random.randint(k_task, (prompts,), 0, benv.num_tasks), group)
    keys = jnp.repeat(jax.random.split(k_init, prompts), group, axis=0)
    tasks, keys = parallel.shard_batch((tasks, keys), mesh)
    state = benv.reset(keys, tasks)
    r = rollout(benv, student, params, state, k_roll, num_steps,
                temperature=config.rollout.temperature, teacher=teacher,
                teacher_params=teacher_params, teacher_temperature=config.teacher.temperature)
    return parallel.shard_batch(r.batch(), mesh, axis=1), episode_metrics(r)

  return collect


def make_update(config, student: Policy, tx, num_steps: int):
  """``update(ts, batch, i) -> (ts, metrics)``: the guarded gradient step on minibatch
  ``i % minibatches`` (the policy steps split in contiguous parts)."""
  clip = config.clip_eps if config.clip_eps > 0 else None
  loss_obj = objectives.get(config.objective, temperature=config.rollout.temperature, clip_eps=clip)
  mbs = config.optim.minibatches
  if num_steps % mbs:
    raise cli.UsageError(f"config.optim.minibatches={mbs} must divide the {num_steps} policy "
                         f"steps of an iteration")
  t_mb = num_steps // mbs

  def loss_fn(params, mb):
    logits = jax.vmap(student.logits, in_axes=(None, 0))(params, mb["hist"])  # [T, B, K, D, V]
    return loss_obj(logits, mb)

  step = guarded_update(loss_fn, tx)

  def update(ts: TrainState, batch, i):
    mb = jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, (i % mbs) * t_mb, t_mb, 0), batch)
    return step(ts, mb)

  return update


@dataclasses.dataclass
class Setup:
  """What the compile-relevant config fields build (not workdir, iterations, logging,
  checkpoint or eval cadence): ``run(config, prepared=s)`` reuses its compiled programs."""
  key: str
  env: Any
  env_kw: dict
  benv: Any
  student: Policy
  params: Any
  origin: str
  teacher: Any
  num_steps: int
  mesh: Any
  tx: Any
  rollout: Callable           # jitted collect(iteration, params, teacher_params)
  update: Callable            # jitted update(ts, batch, i)
  num_updates: int            # gradient steps per iteration: epochs x minibatches
  programs: dict = dataclasses.field(default_factory=dict)    # compiled, by name
  evaluators: dict = dataclasses.field(default_factory=dict)  # by (episodes, batch)


_RUN_ONLY_FIELDS = ("workdir", "iterations", "log_every", "checkpoint", "eval")


def compiler_options(config) -> dict | None:
  """``config.llvm_opt_level`` >= 0: XLA:CPU's LLVM optimisation level for every program
  (0 compiles ~2x faster and runs ~3.5x slower: for smoke runs); -1 leaves XLA's default."""
  level = config.get("llvm_opt_level", -1)
  return {"xla_backend_optimization_level": int(level)} if level >= 0 else None


def setup_key(config) -> str:
  return json.dumps({k: v for k, v in config.to_dict().items() if k not in _RUN_ONLY_FIELDS},
                    sort_keys=True, default=str)


def setup(config) -> Setup:
  """Builds suite, student, teacher, mesh, optimiser and the two jitted programs (bad input
  is a ``cli.UsageError`` here, before anything compiles)."""
  with cli.usage_errors():
    env, env_kw = make_env(config)
    benv = envs.core.BatchEnv(env)
    student, params, origin = make_student(config, env)
    teacher = teachers.make(config.teacher, env, student)
    chunk = student.cfg.chunk
    if chunk > env.max_episode_steps:
      raise cli.UsageError(
          f"config.student.model.chunk: {chunk} is longer than the {env.max_episode_steps}-step "
          f"episodes (config.env.max_episode_steps): one policy step would run the whole "
          f"episode; use a chunk <= {env.max_episode_steps} or longer episodes")
    mbs = config.optim.minibatches
    # to the episode's end, rounded up to whole minibatches (steps after the end are masked)
    num_steps = (config.rollout.policy_steps if config.rollout.policy_steps > 0
                 else mbs * math.ceil(env.max_episode_steps / chunk / mbs))
    mesh = parallel.make_mesh(config.mesh.data)
    tx = make_optimizer(config.optim)
    update = make_update(config, student, tx, num_steps)
  rep = parallel.replicated(mesh)
  batch_sh = parallel.batch_sharding(mesh, axis=1)
  opts = compiler_options(config)
  collect = jax.jit(make_rollout(config, benv, student, teacher, mesh, num_steps),
                    out_shardings=(batch_sh, rep), compiler_options=opts)
  update = jax.jit(update, donate_argnums=(0,), in_shardings=(rep, batch_sh, rep),
                   out_shardings=(rep, rep), compiler_options=opts)
  return Setup(setup_key(config), env, env_kw, benv, student, params, origin, teacher, num_steps,
               mesh, tx, collect, update, config.optim.epochs * config.optim.minibatches)


def compile_iteration(su: Setup, ts: TrainState, teacher_params) -> None:
  """Compiles the rollout and the gradient step (concurrently) unless already compiled."""
  if "rollout" in su.programs:
    return
  it = jnp.int32(0)
  su.programs["rollout"], su.programs["update"] = compiling.compile_programs([
      ("the rollout", su.rollout, (it, ts.params, teacher_params)),
      ("the gradient step", su.update, lambda lowered: (ts, lowered[0].out_info[0], it))])


def iterate(su: Setup, ts: TrainState, teacher_params, iteration: int):
  """One iteration: rollout, then the gradient steps. Returns (ts, metrics); the metrics of
  the first gradient step are the on-policy ones (``train/*``)."""
  compile_iteration(su, ts, teacher_params)
  batch, metrics = su.programs["rollout"](jnp.int32(iteration), ts.params, teacher_params)
  first = last = None
  for i in range(su.num_updates):
    ts, m = su.programs["update"](ts, batch, jnp.int32(i))
    first = m if first is None else first
    last = m
  metrics = dict(metrics, **{f"train/{k}": v for k, v in first.items()})
  metrics["train/loss_last"] = last["loss"]
  metrics["train/nonfinite_updates"] = ts.nonfinite_updates.astype(jnp.float32)
  return ts.replace(step=ts.step + 1), metrics


# --------------------------------------------------------------------------- main
def run(config, *, progress: bool = True, prepared: Setup | None = None) -> TrainState:
  """The whole job; returns the final train state (tests call this directly, passing a
  ``prepared`` Setup of the same compile-relevant config to reuse its programs)."""
  from opd_jax import evaluate as eval_lib  # pylint: disable=import-outside-toplevel
  from opd_jax.logging import MetricWriter  # pylint: disable=import-outside-toplevel
  cli.quiet_startup()
  validate(config)
  su = prepared if prepared is not None else setup(config)
  if su.key != setup_key(config):
    raise ValueError("run(prepared=...) was built for another config (a field other than "
                     f"{_RUN_ONLY_FIELDS} differs)")
  env, student, teacher, mesh = su.env, su.student, su.teacher, su.mesh
  workdir = config.workdir
  os.makedirs(workdir, exist_ok=True)

  # ---- state, resumed if the workdir has a checkpoint
  rep = parallel.replicated(mesh)
  meta = dict(model=student.cfg.to_dict(), action_stats=student.stats.to_dict(),
              suite=config.env.suite, env_kwargs=su.env_kw, instructions=list(env.instructions),
              config=config.to_dict(), student_init=su.origin)
  with cli.usage_errors():
    ts, mgr, old = restore_or_init(workdir, config.checkpoint.keep, su.params, su.tx, meta, rep)
  start = int(ts.step)
  env_steps = float(old.get("env_steps_total", 0.0))
  if old:
    print(f"resuming from {workdir}/checkpoints/{start}")
  t_params = jax.device_put(teacher.params, rep) if teacher.params is not None else None

  ev_key = (config.eval.episodes_per_task, config.eval.batch)
  if config.eval.every > 0 and ev_key not in su.evaluators:
    su.evaluators[ev_key] = eval_lib.Evaluator(
        su.benv, student, episodes_per_task=config.eval.episodes_per_task,
        batch=config.eval.batch, num_steps=su.num_steps, compiler_options=compiler_options(config))
  evaluator = su.evaluators.get(ev_key)
  writer = MetricWriter(workdir)
  n_dev = mesh.devices.size
  per_dev = config.rollout.prompts * config.rollout.group
  print(f"suite {config.env.suite}: {env.num_tasks} tasks; {per_dev * n_dev} worlds "
        f"({per_dev} per device x {n_dev} device(s)) x {su.num_steps} policy steps (chunk "
        f"{student.cfg.chunk}) per iteration, then {su.num_updates} gradient steps; student "
        f"{student.cfg.size} ({models.param_count(ts.params) / 1e6:.2f}M params, from "
        f"{su.origin}); teacher {teacher_name(config)}; objective {config.objective}")

  # ---- compile (or load from the persistent cache)
  t0 = time.time()
  compile_iteration(su, ts, t_params)
  compile_s = time.time() - t0

  def save(step):
    meta_now = dict(meta, nonfinite_updates=int(ts.nonfinite_updates), env_steps_total=env_steps)
    checkpoint.save(mgr, step, ts.params, meta_now, ts.opt_state)

  # ---- train
  bar = None
  if progress:
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel
    bar = tqdm(total=config.iterations, initial=start, desc="opd", dynamic_ncols=True)
  last_bad = int(ts.nonfinite_updates)
  for step in range(start, config.iterations):
    t0 = time.time()
    ts, m = iterate(su, ts, t_params, step)
    m = jax.device_get(m)
    dt = time.time() - t0
    env_steps += float(m["rollout/control_steps"])
    m["rollout/env_steps_per_s"] = float(m["rollout/control_steps"]) / dt
    m["rollout/env_steps_total"] = env_steps   # counted, and carried across resumes
    m["time/iteration_s"] = dt
    if step == start:
      m["time/compile_s"] = compile_s
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
    if evaluator is not None and ((step + 1) % config.eval.every == 0
                                  or step + 1 == config.iterations):
      res = evaluator(ts.params, videos=config.eval.videos)
      eval_lib.write_report(res, os.path.join(workdir, "eval", f"step_{step + 1}"),
                            f"{config.env.suite} after {step + 1} iterations")
      writer.write(step + 1, eval_row(res, "eval"))
      say = bar.write if bar is not None else print
      say(f"eval @ {step + 1}: greedy success {100 * res['success']:.1f}% on "
          f"{res['episodes_per_task']} states per task, per task "
          f"{[round(100 * s) for s in res['per_task']]}")
  if bar is not None:
    bar.close()
  if config.checkpoint.get("average", 0) and start < config.iterations:
    average_tail(config, mgr, evaluator, writer, rep)
  writer.close()
  return ts


def teacher_name(config) -> str:
  t = config.teacher
  return f"checkpoint {t.checkpoint}" if t.kind == "checkpoint" else f"scripted (sigma {t.sigma})"


def eval_row(res: dict, prefix: str) -> dict:
  """Metrics row of one greedy evaluation: success, episode length, success per task."""
  row = {f"{prefix}/success": res["success"], f"{prefix}/episode_length": res["episode_length"]}
  row.update({f"{prefix}/task_{i}": s for i, s in enumerate(res["per_task"])})
  return row


def average_tail(config, mgr, evaluator, writer, sharding) -> None:
  """The mean parameters of the last ``config.checkpoint.average`` checkpoints, saved to
  WORKDIR/average/checkpoints/LAST and evaluated like the run's own evaluations (placed like
  the run's parameters, ``sharding``, so the evaluator's compiled episodes are reused)."""
  from opd_jax import average  # pylint: disable=import-outside-toplevel
  from opd_jax import evaluate as eval_lib  # pylint: disable=import-outside-toplevel
  steps = sorted(mgr.all_steps())[-config.checkpoint.average:]
  if len(steps) < 2:
    print(f"checkpoint.average: only {steps} kept, nothing averaged", file=sys.stderr)
    return
  out = os.path.join(config.workdir, "average")
  params = jax.device_put(average.write(str(mgr.directory), steps, out), sharding)
  msg = f"averaged checkpoints {steps} -> {out}"
  if evaluator is not None:
    res = evaluator(params, videos=0)
    eval_lib.write_report(res, os.path.join(out, "eval", f"step_{steps[-1]}"),
                          f"{config.env.suite}: mean of checkpoints {steps}")
    writer.write(steps[-1], eval_row(res, "eval_average"))
    msg += f"; greedy success {100 * res['success']:.1f}%"
  print(msg)


def main(inv: cli.Invocation) -> None:
  print(cli.describe(inv, f"{inv.config.workdir}/ (metrics.jsonl, tb/, checkpoints/, eval/)"))
  cli.save_config(inv, inv.config.workdir)
  run(inv.config, progress=jax.process_index() == 0)


if __name__ == "__main__":
  cli.run("train", main, config_file="configs/libero.py", validate=validate)
