"""Where an OPD iteration's time goes: one run, the same batch, each part jitted alone.

  python benchmarks/opd_profile.py [--config object] [--physics mjx|c] [--reps 2]

The default job's config (libero_object: the shipped one-demo student and teacher). Rows
(seconds per iteration's worth of work, compile excluded):
  physics  the chunked environment without pixels (fixed actions)
  env      + both cameras rendered after each chunk (the renderer's cost is the difference)
  student  + the student sampling each chunk (a rollout without a teacher)
  teacher  + the config's teacher scoring every token (the rollout program of an iteration)
  iteration   the whole training iteration (the rollout program + the gradient steps)
and then one gradient step on one minibatch of that iteration's batch, taken apart:
  loss              the student's forward pass and the objective alone
  + gradient        and its gradient
  + gradient, stems frozen   the same with the image stems' parameters held (no stem backward)
  guarded update    the trainer's step (gradient, AdamW, the non-finite guard)
"""
from __future__ import annotations

import argparse
import time

import _repo_root  # noqa: F401  (before `envs`: see the module)  isort: skip
import envs  # noqa: E402,F401  (XLA flag before JAX starts)  isort: skip
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from configs import libero  # noqa: E402
from opd_jax import iteration  # noqa: E402
from opd_jax import rollout as rollout_lib  # noqa: E402
from opd_jax import train  # noqa: E402
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
  ap.add_argument("--config", default="object", help="configs/libero.py's argument")
  ap.add_argument("--physics", default="mjx", choices=("mjx", "c"))
  ap.add_argument("--reps", type=int, default=2)
  args = ap.parse_args(argv)
  c = libero.get_config(args.config)
  c.env.physics = args.physics
  su = train.setup(c)
  benv, student, params, n = su.benv, su.student, su.params, su.num_steps
  blind = envs.core.BatchEnv(envs.make(c.env.suite, **dict(su.env_kw, render=False),
                                       physics=args.physics))
  b = c.rollout.prompts * c.rollout.group
  keys = jax.random.split(jax.random.PRNGKey(0), b)
  tasks = jnp.arange(b) % benv.num_tasks
  k = student.cfg.chunk
  print(f"{c.env.suite}: {b} worlds x {n} policy steps x chunk {k} = {b * n * k} control steps; "
        f"student {student.cfg.size}, teacher {train.teacher_name(c)}, physics {args.physics}")

  def env_only(e):
    state = jax.jit(e.reset)(keys, tasks)

    @jax.jit
    def f(state):
      def body(s, _):
        s, _ = e.step_chunk(s, jnp.zeros((b, k, e.action_size)))
        return s, None
      return jax.lax.scan(body, state, None, length=n)[0].done
    return lambda: f(state)

  state = jax.jit(benv.reset)(keys, tasks)
  t_params = None if su.teacher is None else su.teacher.params

  def roll(teacher, tparams):
    @jax.jit
    def f(params, state):
      r = rollout_lib.rollout(benv, student, params, state, jax.random.PRNGKey(1), n,
                              temperature=c.rollout.temperature, teacher=teacher,
                              teacher_params=tparams)
      return r.success
    return lambda: f(params, state)

  rows = [("physics", timed(env_only(blind), args.reps)),
          ("env", timed(env_only(benv), args.reps)),
          ("student", timed(roll(None, None), args.reps)),
          ("teacher", timed(roll(su.teacher, t_params), args.reps))]
  ts = TrainState(jnp.int32(0), params, su.tx.init(params), jnp.int32(0))
  train.compile_iteration(su, ts, t_params)
  rows.append(("iteration", timed(lambda: train.iterate(
      su, jax.tree.map(jnp.copy, ts), t_params, 0)[1]["train/loss"], args.reps)))
  steps = b * n * k
  print("| part | s / iteration | control steps/s | share of iteration |")
  print("|---|---|---|---|")
  total = rows[-1][1]
  for name, sec in rows:
    print(f"| {name} | {sec:.2f} | {steps / sec:.0f} | {100 * sec / total:.0f}% |")

  batch, _ = iteration.collect_batch(su, params, t_params, 0)
  per = c.optim.epochs * c.optim.minibatches     # gradient steps per iteration
  mb = batch.steps(0, n // c.optim.minibatches)
  loss_fn = iteration.make_loss(c, student)   # the trainer's own loss

  def loss(p, frozen=False):
    if frozen:   # the stems' parameters as constants: XLA drops the stem's backward
      p = jax.tree_util.tree_map_with_path(
          lambda path, x: jax.lax.stop_gradient(x) if "stems" in jax.tree_util.keystr(path)
          else x, p)
    return loss_fn(p, mb)[0]

  parts = [("loss", jax.jit(loss)),
           ("+ gradient", jax.jit(jax.grad(loss))),
           ("+ gradient, stems frozen", jax.jit(jax.grad(lambda p: loss(p, frozen=True))))]
  print(f"\n| one gradient step ({mb.step_mask.size} samples) | s | x {per} per iteration "
        "| share of iteration |")
  print("|---|---|---|---|")
  for name, fn in parts:
    sec = timed(lambda fn=fn: fn(params), args.reps)
    print(f"| {name} | {sec:.3f} | {per * sec:.2f} | {100 * per * sec / total:.0f}% |")
  sec = timed(lambda: su.programs["update"](jax.tree.map(jnp.copy, ts), batch, jnp.int32(0))[1],
              args.reps)
  print(f"| guarded update | {sec:.3f} | {per * sec:.2f} | {100 * per * sec / total:.0f}% |")


if __name__ == "__main__":
  main()
