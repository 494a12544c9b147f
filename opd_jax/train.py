"""On-policy training: ``python -m opd_jax.train --config configs/libero.py``.

On-policy distillation (the default objective) and the RL objectives (GRPO, PPO, RPD,
reverse-KL + GRPO; opd_jax/objectives) share this job. An iteration is two compiled
programs (opd_jax.iteration): the rollout (a batch of episodes acted by the student, with
the teacher scoring every sampled action token in the same compiled step) and one guarded
gradient step, called ``epochs x minibatches`` times from Python on the rollout's batch.
Both are compiled before the loop starts (and loaded from the persistent compilation
cache on later runs). Resumes from the workdir's latest checkpoint. See
configs/libero.py for the fields and example commands.
"""
from __future__ import annotations

import math
import os
import sys
import time

import envs  # sets the XLA flag MJX needs on CPU before JAX starts  # noqa: F401  isort: skip
import jax
from etils import epath
from envs.control import CONTROL_MODES
from envs.tabletop import PHYSICS_BACKENDS

from opd_jax import checkpoint, cli, models, objectives, parallel
from opd_jax.preemption import StopRequest
from opd_jax.iteration import (Setup, compile_iteration, compiler_options, iterate, setup,
                               setup_key, _RUN_ONLY_FIELDS)
from opd_jax.train_state import TrainState, restore_or_init


# ----------------------------------------------------------------------------- config
def validate(config, overrides=()) -> None:
  """Fails with a message naming the field, before anything compiles."""
  def need(ok, field, msg):
    if not ok:
      raise cli.UsageError(f"config.{field}: {msg}")

  need(config.env.suite in envs.registered(), "env.suite",
       f"{config.env.suite!r} is not a registered suite {envs.registered()}")
  need(config.env.image_size >= 8, "env.image_size", f"must be >= 8, got {config.env.image_size}")
  need(len(set(config.env.tasks)) == len(config.env.tasks), "env.tasks",
       f"task ids must be distinct, got {tuple(config.env.tasks)}")
  need(config.env.get("physics", "mjx") in PHYSICS_BACKENDS, "env.physics",
       f"must be one of {PHYSICS_BACKENDS}, got {config.env.get('physics')!r}")
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
  need(config.teacher.kind in ("scripted", "checkpoint", "none"), "teacher.kind",
       f"must be 'scripted', 'checkpoint' or 'none', got {config.teacher.kind!r}")
  need(config.teacher.kind != "checkpoint" or bool(config.teacher.checkpoint), "teacher.checkpoint",
       "teacher.kind='checkpoint' needs a path, e.g. --config.teacher.checkpoint=runs/sft_teacher")
  obj = objectives.OBJECTIVES[config.objective]
  need(not obj.needs_teacher or config.teacher.kind != "none", "teacher.kind",
       f"objective {config.objective!r} learns from a teacher; give one with "
       f"--config.teacher.kind=scripted or --config.teacher.kind=checkpoint "
       f"--config.teacher.checkpoint=PATH")
  need(obj.advantage != "group" or config.rollout.group >= 2, "rollout.group",
       f"objective {config.objective!r} compares the episodes of a group (GRPO): the group "
       f"must be >= 2 worlds, got {config.rollout.group}")
  has_value = (config.student.value_head
               or (not config.student.init and config.student.model.kind == "cnn_gaussian"))
  need(not obj.needs_value or has_value, "student.value_head",
       f"objective {config.objective!r} needs a value head on the student: add "
       f"--config.student.value_head=True (a checkpoint student gets a fresh one)")
  rl = config.rl
  need(0.0 < rl.clip_low < 1.0, "rl.clip_low", f"must be in (0, 1), got {rl.clip_low}")
  need(rl.clip_high > 0.0, "rl.clip_high", f"must be > 0, got {rl.clip_high}")
  need(0.0 <= rl.gamma <= 1.0, "rl.gamma", f"must be in [0, 1], got {rl.gamma}")
  need(0.0 <= rl.gae_lambda <= 1.0, "rl.gae_lambda", f"must be in [0, 1], got {rl.gae_lambda}")
  need(rl.refill_rounds >= 0, "rl.refill_rounds", f"must be >= 0, got {rl.refill_rounds}")
  need(rl.teacher_anneal >= 0, "rl.teacher_anneal",
       f"must be >= 0 iterations (0 = constant), got {rl.teacher_anneal}")
  need(not (rl.refill_rounds and not rl.dynamic_sampling), "rl.refill_rounds",
       "refills replace the groups dynamic sampling drops: set rl.dynamic_sampling=True too")
  need(config.teacher.temperature > 0, "teacher.temperature",
       f"must be > 0, got {config.teacher.temperature}")
  need(config.mesh.data == -1 or config.mesh.data >= 1, "mesh.data",
       f"must be -1 (every device) or >= 1, got {config.mesh.data}")
  need(config.mesh.get("fsdp", 1) >= 1, "mesh.fsdp",
       f"must be >= 1 (1 = parameters replicated), got {config.mesh.get('fsdp')}")
  agg = config.get("aggregate", {})
  worlds, replay = agg.get("worlds", 0), agg.get("replay", 0)
  per_dev = config.rollout.prompts * config.rollout.group
  need(worlds >= 0 and worlds % per_dev == 0, "aggregate.worlds",
       f"must be 0 (off) or a multiple of the {per_dev} worlds per device of an iteration "
       f"(rollout.prompts x rollout.group), got {worlds}")
  need(replay >= 0 and (replay > 0) == (worlds > 0), "aggregate.replay",
       f"must be >= 1 with aggregate.worlds > 0 and 0 without, got {replay} (worlds={worlds})")
  need(not worlds or obj.off_policy_ok, "aggregate.worlds",
       f"objective {config.objective!r} is not valid on replayed states (it scores the tokens "
       f"the student drew then); use reverse_kl_exact, forward_kl or hard_ce, or worlds=0")
  need(config.checkpoint.every >= 1, "checkpoint.every", f"must be >= 1, got {config.checkpoint.every}")
  avg = config.checkpoint.get("average", 0)
  need(avg == 0 or 2 <= avg <= config.checkpoint.keep, "checkpoint.average",
       f"must be 0 (off) or between 2 and checkpoint.keep ({config.checkpoint.keep}), got {avg}")
  need(config.eval.every >= 0, "eval.every", f"must be >= 0 (0 = off), got {config.eval.every}")
  need(config.get("stop_after_nonfinite", 0) >= 0, "stop_after_nonfinite",
       f"must be >= 0 iterations (0 = never stop), got {config.get('stop_after_nonfinite')}")
  set_model = sorted(p for p in overrides if p.startswith("student.model."))
  need(not (config.student.init and set_model), set_model[0] if set_model else "student.model",
       f"is ignored: student.init={config.student.init} fixes the architecture; drop the "
       f"override, or start a fresh student with --config.student.init=")
  if config.optim.epochs > 1 and config.objective == "reverse_kl" and config.clip_eps <= 0:
    print("note: optim.epochs > 1 without clip_eps: later epochs are off-policy and unclipped",
          file=sys.stderr)


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
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)   # local or object storage

  # ---- state, resumed if the workdir has a checkpoint
  place = su.placement   # parameters: replicated, or split over the fsdp axis
  meta = dict(model=student.cfg.to_dict(), action_stats=student.stats.to_dict(),
              suite=config.env.suite, env_kwargs=su.env_kw, instructions=list(env.instructions),
              config=config.to_dict(), student_init=su.origin)
  with cli.usage_errors():
    ts, mgr, old = restore_or_init(workdir, config.checkpoint.keep, su.params, su.tx, meta,
                                   place)
  start = int(ts.step)
  env_steps = float(old.get("env_steps_total", 0.0))
  if old:
    print(f"resuming from {workdir}/checkpoints/{start}"
          + (f" (config.resume_from={config.resume_from} is for a new workdir: not used)"
             if config.get("resume_from") else ""))
  elif config.get("resume_from"):
    with cli.usage_errors():
      ts = weights_from(config.resume_from, ts, student, su.tx, place)
    print(f"weights from {config.resume_from} (config.resume_from); a fresh optimiser, "
          f"iteration 0")
  t_params = None if teacher is None or teacher.params is None else parallel.put(
      teacher.params, place)

  # the tasks evaluated: config.eval.tasks, else the trained ones (held-out tasks measure
  # forgetting)
  ev_tasks = tuple(config.eval.get("tasks", ())) or tuple(config.env.tasks)
  bad = [t for t in ev_tasks if not 0 <= t < env.num_tasks]
  if bad:
    raise cli.UsageError(f"config.eval.tasks: {bad} out of range: {config.env.suite} has tasks "
                         f"0..{env.num_tasks - 1}")
  ev_key = (config.eval.episodes_per_task, config.eval.batch, ev_tasks)
  if config.eval.every > 0 and ev_key not in su.evaluators:
    su.evaluators[ev_key] = eval_lib.Evaluator(
        su.benv, student, episodes_per_task=config.eval.episodes_per_task,
        batch=config.eval.batch, num_steps=su.num_steps, compiler_options=compiler_options(config),
        tasks=ev_tasks, mesh=mesh)
  evaluator = su.evaluators.get(ev_key)
  writes = parallel.is_main()   # files and logs come from process 0
  writer = MetricWriter(workdir, enabled=writes)
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

  def save(ts, step, env_steps):
    meta_now = dict(meta, nonfinite_updates=int(ts.nonfinite_updates), env_steps_total=env_steps)
    checkpoint.save(mgr, step, ts.params, meta_now, ts.opt_state)

  def evaluate_now(step, params):
    res = evaluator(params, videos=config.eval.videos)
    if writes:
      eval_lib.write_report(res, os.path.join(workdir, "eval", f"step_{step}"),
                            f"{config.env.suite} after {step} iterations")
    writer.write(step, eval_row(res, "eval"))
    say = bar.write if bar is not None else print
    say(f"eval @ {step}: greedy success {100 * res['success']:.1f}% on "
        f"{res['episodes_per_task']} states per task, per task "
        f"{[round(100 * s) for s in res['per_task']]}")

  # ---- train
  bar = None
  if progress:
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel
    bar = tqdm(total=config.iterations, initial=start, desc="opd", dynamic_ncols=True)
  if evaluator is not None and start == 0 and config.eval.get("at_start", False):
    evaluate_now(0, ts.params)   # the curve's first point: the student as it starts
  elif (evaluator is not None and start and start < config.iterations
        and start % config.eval.every == 0
        and not (epath.Path(workdir) / "eval" / f"step_{start}").is_dir()):
    evaluate_now(start, ts.params)   # the evaluation a stop skipped
  stopping = False
  kept = None   # the DAgger-style aggregate (config.aggregate), started empty
  if su.capacity and start:
    print(f"aggregation: the kept episodes are not checkpointed; the buffer restarts empty at "
          f"iteration {start}")
  with StopRequest() as stop:
    last_bad, bad_streak, saved = int(ts.nonfinite_updates), 0, start
    limit = config.get("stop_after_nonfinite", 0)
    for step in range(start, config.iterations):
      t0 = time.time()
      ts, m, kept = iterate(su, ts, t_params, step, kept)
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
      bad_now = int(m["train/nonfinite_updates"]) - last_bad
      if bad_now:
        print(f"iteration {step + 1}: non-finite loss/gradients, {bad_now} of {su.num_updates} "
              f"updates skipped ({int(m['train/nonfinite_updates'])} so far)", file=sys.stderr)
        last_bad = int(m["train/nonfinite_updates"])
      bad_streak = bad_streak + 1 if bad_now >= su.num_updates else 0
      if limit and bad_streak >= limit:
        kept = sorted(mgr.all_steps())
        mgr.close()
        raise cli.RunError(
            f"iteration {step + 1}: every gradient step of the last {bad_streak} iterations was "
            f"non-finite (config.stop_after_nonfinite={limit}); the parameters have not changed "
            f"since iteration {step + 1 - bad_streak}. The last good checkpoint is "
            + (f"{config.workdir}/checkpoints/{kept[-1]}" if kept else "none (none was saved)")
            + "; resume from it with a lower config.optim.lr (or config.optim.grad_clip)")
      if bar is not None:
        shown = dict(success=f"{m['rollout/success']:.2f}")
        if "train/reverse_kl" in m:
          shown["kl"] = f"{m['train/reverse_kl']:.3f}"
        if "rollout/groups_mixed" in m:
          shown["mixed"] = f"{m['rollout/groups_mixed']:.2f}"
        if "train/explained_variance" in m:
          shown["ev"] = f"{m['train/explained_variance']:.2f}"
        bar.set_postfix(**shown, steps_s=f"{m['rollout/env_steps_per_s']:.0f}")
        bar.update(1)
      stopping = parallel.any_process(stop.requested)   # every process stops at the same step
      if ((step + 1) % config.checkpoint.every == 0 or step + 1 == config.iterations
          or stopping):
        save(ts, step + 1, env_steps)
        saved = step + 1
      if stopping:
        print(f"{stop.requested or 'another process'}: stopped after iteration {saved}, saved as "
              f"{config.workdir}/checkpoints/{saved}; the same command resumes it",
              file=sys.stderr, flush=True)
        break
      if evaluator is not None and ((step + 1) % config.eval.every == 0
                                    or step + 1 == config.iterations):
        evaluate_now(step + 1, ts.params)
  if bar is not None:
    bar.close()
  if stopping:
    writer.close()
    mgr.close()
    return ts
  if config.checkpoint.get("average", 0) and start < config.iterations:
    average_tail(config, mgr, evaluator, writer, place)
  writer.close()
  mgr.close()
  return ts


def weights_from(path: str, ts: TrainState, student, tx, place) -> TrainState:
  """``ts`` with the parameters of the checkpoint at ``path`` and a fresh optimiser state; the
  checkpoint must hold this run's model and action statistics."""
  _, params, cfg, stats, _ = checkpoint.load_policy(path)
  if cfg.to_dict() != student.cfg.to_dict():
    diff = sorted(k for k, v in cfg.to_dict().items() if student.cfg.to_dict().get(k) != v)
    raise cli.UsageError(
        f"config.resume_from: {path} holds another model than this run's student (differs in "
        f"{', '.join(diff)}); start from it with --config.student.init={path} instead, which "
        f"takes its architecture")
  if stats.to_dict() != student.stats.to_dict():
    raise cli.UsageError(f"config.resume_from: {path} was trained with other action statistics "
                         f"than this run's student (a token would mean another action)")
  params = parallel.put(params, place)
  return ts.replace(params=params, opt_state=parallel.put(tx.init(params), place))


def teacher_name(config) -> str:
  t = config.teacher
  if not objectives.OBJECTIVES[config.objective].needs_teacher:
    return f"none ({config.objective} uses none)"
  return f"checkpoint {t.checkpoint}" if t.kind == "checkpoint" else f"scripted (sigma {t.sigma})"


def eval_row(res: dict, prefix: str) -> dict:
  """Metrics row of one greedy evaluation: success, episode length, success per task."""
  row = {f"{prefix}/success": res["success"], f"{prefix}/episode_length": res["episode_length"]}
  row.update({f"{prefix}/task_{t}": s for t, s in zip(res["task_ids"], res["per_task"])})
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
  params = average.write(str(mgr.directory), steps, out, sharding)
  msg = f"averaged checkpoints {steps} -> {out}"
  if evaluator is not None:
    res = evaluator(params, videos=0)
    if parallel.is_main():
      eval_lib.write_report(res, os.path.join(out, "eval", f"step_{steps[-1]}"),
                            f"{config.env.suite}: mean of checkpoints {steps}")
    writer.write(steps[-1], eval_row(res, "eval_average"))
    msg += f"; greedy success {100 * res['success']:.1f}%"
  print(msg)


def main(inv: cli.Invocation) -> None:
  print(cli.describe(inv, f"{inv.config.workdir}/ (metrics.jsonl, tb/, checkpoints/, eval/)"))
  if parallel.is_main():
    cli.save_config(inv, inv.config.workdir)
  run(inv.config, progress=parallel.is_main())


if __name__ == "__main__":
  cli.run("train", main, config_file="configs/libero.py", validate=validate)
