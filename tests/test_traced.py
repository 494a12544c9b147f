"""Traced programs kept on disk (opd_jax.traced): a loaded program computes what the traced
one did, in this process and in a fresh one; the key and the fingerprint see what changes."""
import dataclasses
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from opd_jax import traced

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@struct.dataclass
class Pair:
  a: jax.Array
  b: jax.Array


def _program():
  def f(p: Pair, x):
    m = p.a @ p.a.T + 3.0 * jnp.eye(p.a.shape[0])
    return Pair(a=p.a + 1.0, b=jnp.linalg.solve(m, x)), {"n": jnp.sum(x)}
  return jax.jit(f, donate_argnums=(0,))


def test_a_loaded_program_computes_what_the_traced_one_did(tmp_path):
  fn = _program()
  args = lambda: (Pair(a=jnp.arange(9.0).reshape(3, 3) / 9, b=jnp.zeros(3)), jnp.ones(3))
  want = jax.device_get(fn(*args()))
  first = traced.lower(str(tmp_path), "f", fn, args(), context="c")
  second = traced.lower(str(tmp_path), "f", fn, args(), context="c")
  assert isinstance(first, traced.Lowered) and not first.from_disk and second.from_disk
  assert len(os.listdir(tmp_path)) == 1
  for lo in (first, second):
    got = jax.device_get(lo.compile()(*args()))
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(g, w, rtol=1e-6)
    assert jax.tree.map(lambda s: s.shape, lo.out_info) == jax.tree.map(np.shape, want)
  # another shape, another context: traced afresh, kept beside
  traced.lower(str(tmp_path), "f", fn, (Pair(a=jnp.ones((2, 2)), b=jnp.zeros(2)), jnp.ones(2)), "c")
  traced.lower(str(tmp_path), "f", fn, args(), context="d")
  assert len(os.listdir(tmp_path)) == 3


def test_a_torn_file_is_traced_again(tmp_path):
  fn = _program()
  args = (Pair(a=jnp.eye(2), b=jnp.zeros(2)), jnp.ones(2))
  traced.lower(str(tmp_path), "f", fn, args, "c")
  path, = [tmp_path / n for n in os.listdir(tmp_path)]
  path.write_bytes(path.read_bytes()[:100])
  lo = traced.lower(str(tmp_path), "f", fn, args, "c")
  assert not lo.from_disk and lo.compile()(*args)[1]["n"] == 2.0


def test_a_fresh_process_runs_a_loaded_linear_algebra_program(tmp_path):
  """LAPACK's CPU kernels are registered by lowering; a loaded program lowers none (it
  crashed with a segmentation fault before traced.lower registered them)."""
  script = textwrap.dedent(f"""
      import sys, jax, jax.numpy as jnp
      from opd_jax import traced
      fn = jax.jit(lambda a, x: jnp.linalg.solve(a @ a.T + 3 * jnp.eye(3), x))
      lo = traced.lower({str(tmp_path)!r}, "f", fn, (jnp.eye(3), jnp.ones(3)), "c")
      assert lo.from_disk == (sys.argv[1] == "second"), lo.from_disk
      print(float(lo.compile()(jnp.eye(3), jnp.ones(3))[0]))
  """)
  outs = []
  for run in ("first", "second"):
    p = subprocess.run([sys.executable, "-c", script, run], cwd=REPO, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, (p.returncode, p.stderr[-2000:])
    outs.append(float(p.stdout.split()[-1]))
  assert outs[0] == outs[1] == 0.25


@dataclasses.dataclass
class _Node:
  x: np.ndarray
  name: str
  child: object = None


def test_fingerprint_sees_values_arrays_and_nesting():
  a = _Node(np.arange(3), "a", child={"k": (1, 2.0)})
  same = _Node(np.arange(3), "a", child={"k": (1, 2.0)})
  assert traced.fingerprint(a) == traced.fingerprint(same)
  for other in (_Node(np.arange(3) + 1, "a", child={"k": (1, 2.0)}),
                _Node(np.arange(3), "b", child={"k": (1, 2.0)}),
                _Node(np.arange(3), "a", child={"k": (1, 2.5)}),
                _Node(np.arange(3).astype(np.float32), "a", child={"k": (1, 2.0)})):
    assert traced.fingerprint(other) != traced.fingerprint(a)
  loop = _Node(np.zeros(1), "loop")
  loop.child = loop     # cycles end
  assert len(traced.fingerprint(loop)) == 64
