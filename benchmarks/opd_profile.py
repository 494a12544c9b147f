"""Where an OPD iteration's time goes: one run, the same batch, each part jitted alone.

  python benchmarks/opd_profile.py [--student_init DIR] [--teacher_checkpoint DIR] [--reps 2]

Rows (seconds per iteration's worth of work, compile excluded):
  env      the chunked environment alone (fixed actions, images once per chunk)
  student  + the student sampling each chunk (rollout without a teacher)
  hold     + the scripted teacher, current action held for the chunk
  simulate + the scripted teacher's K-step look-ahead (the default)
  checkpoint  + a checkpoint teacher's forward pass (with --teacher_checkpoint)
  iteration   the whole training iteration (the rollout program + the gradient steps)
"""
from __future__ import annotations

import argparse
import time

import _repo_root  # noqa: F401  (before `envs`: see the module)  isort: skip
import envs  # noqa: E402,F401  (XLA flag before JAX starts)  isort: skip
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from configs import libero  # noqa: E402
from opd_jax import rollout as rollout_lib  # noqa: E402
from opd_jax import teachers, train  # noqa: E402
from opd_jax.train_state import TrainState  # noqa: E402


def timed(fn, reps):
  out = fn()
  jax.block_until_ready(out)
  t0 = time.perf_counter()
  for _ in range(reps):
    jax.block_until_ready(fn())
  return (time.perf_counter() - t0) / reps


def main(argv=None):
  ap = argparse.ArgumentParser()
  ap.add_argument("--student_init", default="")
  ap.add_argument("--teacher_checkpoint", default="")
  ap.add_argument("--suite", default="spatial")
  ap.add_argument("--reps", type=int, default=2)
  args = ap.parse_args(argv)
  c = libero.get_config(args.suite)
  c.student.init = args.student_init
  su = train.setup(c)
  benv, student, params, n = su.benv, su.student, su.params, su.num_steps
  b = c.rollout.prompts * c.rollout.group
  keys = jax.random.split(jax.random.PRNGKey(0), b)
  tasks = jnp.arange(b) % benv.num_tasks
  state = jax.jit(benv.reset)(keys, tasks)
  k = student.cfg.chunk
  print(f"{c.env.suite}: {b} worlds x {n} policy steps x chunk {k} = {b * n * k} control steps; "
        f"student {student.cfg.size}")

  @jax.jit
  def env_only(state):
    def body(s, _):
      s, _ = benv.step_chunk(s, jnp.zeros((b, k, benv.action_size)))
      return s, None
    return jax.lax.scan(body, state, None, length=n)[0].done

  def roll(teacher, tparams):
    @jax.jit
    def f(params, state):
      r = rollout_lib.rollout(benv, student, params, state, jax.random.PRNGKey(1), n,
                              teacher=teacher, teacher_params=tparams)
      return r.success
    return lambda: f(params, state)

  rows = [("env", timed(lambda: env_only(state), args.reps)),
          ("student", timed(roll(None, None), args.reps))]
  for look in ("hold", "simulate"):
    t = teachers.ScriptedTeacher(env=su.env, stats=student.stats, chunk=k, sigma=0.1,
                                 lookahead=look)
    rows.append((look, timed(roll(t, t.params), args.reps)))
  if args.teacher_checkpoint:
    tc = c.teacher.copy_and_resolve_references()
    tc.kind, tc.checkpoint = "checkpoint", args.teacher_checkpoint
    t = teachers.make(tc, su.env, student)
    rows.append(("checkpoint", timed(roll(t, t.params), args.reps)))
  ts = TrainState(jnp.int32(0), params, su.tx.init(params), jnp.int32(0))
  t_params = su.teacher.params
  train.compile_iteration(su, ts, t_params)
  rows.append(("iteration", timed(lambda: train.iterate(
      su, jax.tree.map(jnp.copy, ts), t_params, 0)[1]["train/loss"], args.reps)))
  steps = b * n * k
  print("| part | s / iteration | control steps/s | share of iteration |")
  print("|---|---|---|---|")
  total = rows[-1][1]
  for name, sec in rows:
    print(f"| {name} | {sec:.2f} | {steps / sec:.0f} | {100 * sec / total:.0f}% |")


if __name__ == "__main__":
  main()
