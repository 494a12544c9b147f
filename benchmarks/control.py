"""How faithfully each arm law turns LIBERO actions into end-effector motion.

  python benchmarks/control.py [--suite libero_spatial]

From evaluation state 0 of task 2, the same command sequence runs under control="servo" and
control="torque" (envs/control.py): 4 steps of +x, 4 of -z, 4 of +y, 3 of yaw 0.5, 4 of nothing.
For each segment it prints the TCP's displacement (cm), the yaw turned (rad) and the motion off
the commanded axis, and the ratio of off-axis motion, servo / torque. Also the control steps per
second of both laws (batch 16, no rendering), since computed torque needs the mass matrix.
"""
from __future__ import annotations

import argparse
import time

import _repo_root  # noqa: F401  isort: skip
import envs  # noqa: E402  isort: skip
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

SEGMENTS = (("+x", (1, 0, 0, 0, 0, 0, -1), 4, 0), ("-z", (0, 0, -1, 0, 0, 0, -1), 4, 2),
            ("+y", (0, 1, 0, 0, 0, 0, -1), 4, 1), ("yaw", (0, 0, 0, 0, 0, 0.5, -1), 3, -1),
            ("hold", (0, 0, 0, 0, 0, 0, -1), 4, -1))


def segments(env):
  step = jax.jit(env.step)
  s = jax.jit(env.reset_eval)(2, 0)
  rows = []
  for name, act, n, axis in SEGMENTS:
    p0, r0 = np.asarray(s.info["priv"]["tcp_pos"]), np.asarray(s.info["priv"]["tcp_mat"])
    for _ in range(n):
      s = step(s, jnp.asarray(act, jnp.float32))
    p1, r1 = np.asarray(s.info["priv"]["tcp_pos"]), np.asarray(s.info["priv"]["tcp_mat"])
    d = p1 - p0
    rel = r1 @ r0.T
    off = np.linalg.norm(np.delete(d, axis)) if axis >= 0 else np.linalg.norm(d)
    rows.append((name, 100 * d, float(np.arctan2(rel[1, 0], rel[0, 0])), 100 * off))
  return rows


def rate(env, batch=16, steps=20):
  benv = envs.core.BatchEnv(env)
  s = jax.jit(benv.reset)(jax.random.split(jax.random.PRNGKey(0), batch))
  run = jax.jit(lambda s: jax.lax.fori_loop(0, steps, lambda i, s: benv.step(s, jnp.zeros((batch, 7))), s))
  s = jax.block_until_ready(run(s))
  t0 = time.perf_counter()
  jax.block_until_ready(run(s))
  return batch * steps / (time.perf_counter() - t0)


def main(argv=None):
  ap = argparse.ArgumentParser()
  ap.add_argument("--suite", default="libero_spatial")
  args = ap.parse_args(argv)
  res, rates = {}, {}
  for mode in ("servo", "torque"):
    env = envs.make(args.suite, render=False, control=mode)
    res[mode], rates[mode] = segments(env), rate(env)
  print(f"{args.suite}, task 2, evaluation state 0; commanded: 5 cm or 0.25 rad per step")
  print("| segment | law | displacement (cm) | yaw (rad) | off-axis (cm) |")
  print("|---|---|---|---|---|")
  for i, (name, _, n, _) in enumerate(SEGMENTS):
    for mode in res:
      _, d, yaw, off = res[mode][i]
      print(f"| {name} x{n} | {mode} | {' '.join(f'{v:+.1f}' for v in d)} | {yaw:.3f} | {off:.2f} |")
  for i, (name, *_) in enumerate(SEGMENTS[:4]):
    print(f"off-axis motion, {name}: servo / torque = {res['servo'][i][3] / max(res['torque'][i][3], 1e-3):.1f}x")
  print(f"control steps/s (batch 16, no images): servo {rates['servo']:.0f}, torque "
        f"{rates['torque']:.0f} (torque / servo = {rates['torque'] / rates['servo']:.2f})")


if __name__ == "__main__":
  main()
