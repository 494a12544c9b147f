"""Test setup: MJX on CPU needs XLA's fusion emitters off before JAX starts; the tests compile
with LLVM optimisation off (below)."""
import os
import subprocess
import sys

_FLAG = "--xla_cpu_use_fusion_emitters=false"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
# Compile time dominates most tests: LLVM's optimisation level 0 halves it (the spatial suite's
# batched step: 21.7 s -> 10.2 s) and runs that step 3.5x slower, which short rollouts can
# afford. Not for real runs. The expert sweeps run long episodes: they compile at XLA's default
# level 3 (the `run_bound` fixture). Set the flag yourself to override the default here.
if "xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=0"

import jax  # noqa: E402
import pytest  # noqa: E402

import envs  # noqa: E402


@pytest.fixture(scope="session")
def run_bound():
  """compiler_options for a compile whose run time dominates (XLA's default optimisation)."""
  return {"xla_backend_optimization_level": 3}


@pytest.fixture(scope="session")
def spatial():
  """LIBERO-Spatial with 64x64 images (compiled functions cached on the fixture)."""
  return envs.make("libero_spatial", image_size=64)


@pytest.fixture(scope="session")
def spatial_blind():
  """LIBERO-Spatial without rendering, for physics, predicates and experts."""
  return envs.make("libero_spatial", render=False)


@pytest.fixture(scope="session")
def batch_fns(spatial):
  env = envs.core.BatchEnv(spatial)
  return env, jax.jit(env.reset), jax.jit(env.step)


@pytest.fixture(scope="session")
def blind_fns(spatial_blind):
  """Jitted unbatched (reset, reset_eval, step) of the image-free suite."""
  env = spatial_blind
  return jax.jit(env.reset), jax.jit(env.reset_eval), jax.jit(env.step)


@pytest.fixture(scope="session")
def render_ok():
  """MuJoCo's renderer probed in a child process (EGL can fail, or hang, on a headless box)."""
  probe = ("from benchmarks.torch_baseline import vec_env; import mujoco\n"
           "m = mujoco.MjModel.from_xml_string('<mujoco><worldbody><geom size=\".1\"/>"
           "</worldbody></mujoco>')\nmujoco.Renderer(m, 8, 8).close()")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    r = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True,
                       timeout=60)
  except subprocess.TimeoutExpired:
    pytest.skip("MuJoCo's renderer hung while creating an EGL context")
  if r.returncode:
    pytest.skip(f"MuJoCo's renderer is unavailable (MUJOCO_GL={os.environ.get('MUJOCO_GL')}): "
                f"{r.stderr.strip().splitlines()[-1:]}")
