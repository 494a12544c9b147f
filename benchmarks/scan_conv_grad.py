"""Why opd_jax.train runs each gradient step as its own program (called from Python) rather
than looping over them inside one: a convolution's weight gradient inside a ``lax.scan`` body
vs the same steps unrolled, on this backend.

  python benchmarks/scan_conv_grad.py

8 SGD steps of a 4x4/stride-4 conv stem (the policy's camera stem shape) on 56 images of 64x64;
the forward pass alone for comparison. Prints seconds per call and the scan/unrolled ratio.
"""
import time

import jax
import jax.numpy as jnp


def main():
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 56, 64, 64, 3))
  w = jax.random.normal(jax.random.PRNGKey(1), (4, 4, 3, 32)) * 0.1

  def loss(w, xb):
    y = jax.lax.conv_general_dilated(xb, w, (4, 4), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.mean(jnp.tanh(y) ** 2)

  grad = jax.grad(loss)
  fns = {
      "grad, scan": lambda w, x: jax.lax.scan(lambda w, xb: (w - 0.01 * grad(w, xb), None), w, x)[0],
      "grad, unrolled": lambda w, x: jax.lax.scan(
          lambda w, xb: (w - 0.01 * grad(w, xb), None), w, x, unroll=True)[0],
      "forward, scan": lambda w, x: jax.lax.scan(lambda c, xb: (c + loss(w, xb), None), 0.0, x)[0],
      "forward, unrolled": lambda w, x: jax.lax.scan(
          lambda c, xb: (c + loss(w, xb), None), 0.0, x, unroll=True)[0],
  }
  t = {}
  for name, fn in fns.items():
    j = jax.jit(fn)
    jax.block_until_ready(j(w, x))
    t0 = time.perf_counter()
    for _ in range(5):
      jax.block_until_ready(j(w, x))
    t[name] = (time.perf_counter() - t0) / 5
    print(f"{name:18s} {t[name]:.3f} s")
  print(f"scan / unrolled: gradient {t['grad, scan'] / t['grad, unrolled']:.1f}x, "
        f"forward {t['forward, scan'] / t['forward, unrolled']:.1f}x  ({jax.devices()[0].platform})")


if __name__ == "__main__":
  main()
