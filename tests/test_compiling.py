"""opd_jax.compiling: per-program XLA options over the common ones; a physics-free program
compiled with XLA:CPU's fusion emitters on (NO_PHYSICS) computes what the default one does."""
import jax
import jax.numpy as jnp
import numpy as np

from opd_jax import compiling


class _Lowered:
  def __init__(self, name, seen):
    self.name, self.seen = name, seen

  def compile(self, options):
    self.seen[self.name] = options
    return self.name


class _Jitted:
  def __init__(self, name, seen):
    self.name, self.seen = name, seen

  def lower(self, *args):
    return _Lowered(self.name, self.seen)


def test_each_program_gets_its_options_over_the_common_ones():
  seen = {}
  out = compiling.compile_programs(
      [("a", _Jitted("a", seen), ()), ("b", _Jitted("b", seen), (), {"x": True, "y": 2})],
      log=lambda s: None, compiler_options={"y": 1, "z": 0})
  assert out == ["a", "b"]
  assert seen == {"a": {"y": 1, "z": 0}, "b": {"x": True, "y": 2, "z": 0}}
  seen.clear()
  compiling.compile_programs([("a", _Jitted("a", seen), ())], log=lambda s: None)
  assert seen == {"a": None}


def test_fusion_emitters_on_compute_the_same_gradient_step():
  def step(w, x):
    loss = lambda w: jnp.mean(jnp.tanh(x @ w) ** 2) + 1e-3 * jnp.sum(w * w)
    g = jax.grad(loss)(w)
    return w - 0.1 * g / (jnp.linalg.norm(g) + 1e-6)
  rng = np.random.default_rng(0)
  w, x = rng.normal(size=(16, 8)).astype(np.float32), rng.normal(size=(32, 16)).astype(np.float32)
  default, emitters = compiling.compile_programs(
      [("default", jax.jit(step), (w, x)),
       ("emitters", jax.jit(step), (w, x), compiling.NO_PHYSICS)], log=lambda s: None)
  np.testing.assert_allclose(emitters(w, x), default(w, x), rtol=1e-5, atol=1e-6)
