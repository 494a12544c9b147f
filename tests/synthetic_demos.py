"""A synthetic demo file in the real layout (opd_jax.collect.write_demo), no simulation: the
SFT tests' data."""
import json

import h5py
import numpy as np

from opd_jax import collect

SIZE = 16
TASKS = (0, 1, 2)


def write_demo_file(path, demos_per_task=3, n=12, seed=0):
  """Demos whose actions depend on the task and the image (learnable, not constant), recorded as
  collected under the default (torque) arm law."""
  import envs  # pylint: disable=import-outside-toplevel
  instr = envs.make("libero_spatial", image_size=SIZE, render=False).instructions
  rng = np.random.default_rng(seed)
  with h5py.File(path, "w") as f:
    g = f.create_group("data")
    i = 0
    for t in TASKS:
      for k in range(demos_per_task):
        img = rng.integers(0, 255, (n, SIZE, SIZE, 3), dtype=np.uint8)
        act = np.zeros((n, 7), np.float32)
        act[:, t] = np.linspace(-0.8, 0.8, n) * (1.0 - 0.1 * k)   # ranges differ per demo
        act[:, 3] = img[:, 0, 0, 0] / 255.0 - 0.5
        act[:, 6] = np.where(np.arange(n) < n // 2, -1.0, 1.0)
        ep = dict(agentview=img, wrist=img[:, ::-1], action=act,
                  proprio=rng.normal(size=(n, 8)).astype(np.float32),
                  reward=np.eye(n)[-1].astype(np.float32), done=np.eye(n)[-1])
        collect.write_demo(g, i, ep, instr[t], t, compression=None)
        i += 1
    g.attrs["instructions"] = json.dumps(list(instr))
    g.attrs["suite"] = "libero_spatial"
    g.attrs["image_size"] = SIZE
    g.attrs["env_args"] = json.dumps(dict(env_name="libero_spatial",
                                          env_kwargs=dict(control="torque")))
