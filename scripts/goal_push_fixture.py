"""Write tests/assets/goal_push.npz: states of the goal suite's plate push at the pads' first
contact, and the arm's controls for the next steps (from MJX, open loop).

tests/test_suites.py::test_goal_push_solver_converges replays them in MuJoCo's C engine: with
4 Newton iterations the plate springs off the table and flips; with the suite's iterations it
slides flat. Regenerate after changing the goal scene (the test then fails on the shapes):

  python scripts/goal_push_fixture.py
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import envs  # noqa: E402  (XLA flag before JAX starts)  isort: skip
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from mujoco import mjx  # noqa: E402

from envs import control  # noqa: E402

TASK, WORLDS, CONTACT_STEP, STEPS = 5, 50, 9, 6  # push the plate; 50 evaluation states


def main():
  env = envs.make("libero_goal", render=False)

  @jax.jit
  def run(ix):
    s = jax.vmap(env.reset_eval)(jnp.full(WORLDS, TASK), ix)
    s, _ = jax.lax.scan(lambda s, _: (jax.vmap(env.step)(s, jax.vmap(env.expert_action)(s)), None),
                        s, None, length=CONTACT_STEP)
    return s

  s = run(jnp.arange(WORLDS))
  m = env.mjx_model
  tau = jax.jit(lambda d, tgt: control.computed_torque(m, d, tgt[:7], env._arm_force))
  phys = jax.jit(lambda d, c: mjx.step(m, d.replace(ctrl=c)))
  targets = jax.jit(lambda d, a: control.joint_targets(m, d, a, env.tcp_site))
  expert = jax.jit(env.expert_action)
  qpos, qvel, ctrls = [], [], []
  for w in range(WORLDS):
    st = jax.tree.map(lambda x: x[w], s)
    d, cs = st.data, []
    qpos.append(np.asarray(d.qpos))
    qvel.append(np.asarray(d.qvel))
    for _ in range(STEPS):
      tgt = targets(d, expert(st))
      for _ in range(env.substeps):
        c = jnp.concatenate([tau(d, tgt), tgt[7:]])
        cs.append(np.asarray(c))
        d = phys(d, c)
      st = st.replace(data=d, info={**st.info, "priv": env.privileged(d)})
    ctrls.append(np.stack(cs))
  out = os.path.join(os.path.dirname(__file__), "..", "tests", "assets", "goal_push.npz")
  np.savez_compressed(out, qpos=np.stack(qpos), qvel=np.stack(qvel), ctrl=np.stack(ctrls))
  print("wrote", os.path.normpath(out))


if __name__ == "__main__":
  main()
