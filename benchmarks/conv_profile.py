"""Where the gradient step's convolution time goes: each stem layer's forward, input
gradient and kernel gradient, timed alone, with the achieved GFLOP/s.

  python benchmarks/conv_profile.py [--images 140] [--reps 5]

The default policy's image stem (opd_jax/models/layers.py: four stride-2 3x3 convolutions,
32/96/192/384 channels, 64x64 images) on one minibatch of the default job (8 worlds x 35
policy steps / 4 minibatches x 2 cameras = 140 images). Each layer's three products cost the
same FLOPs; the ratio column is the kernel gradient's time over the forward's. Also times the
kernel gradient as one matmul over explicit patches (im2col), the usual way around a slow
backward-filter convolution. Set XLA_FLAGS before the run to compare XLA:CPU's options
(e.g. --xla_cpu_use_onednn=true).
"""
from __future__ import annotations

import argparse
import time

import _repo_root  # noqa: F401  pylint: disable=unused-import  isort: skip
import jax
import jax.numpy as jnp

CHANNELS = (3, 32, 96, 192, 384)


def conv(x, w):
  return jax.lax.conv_general_dilated(x, w, (2, 2), ((1, 1), (1, 1)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def patches(x):
  """[N, H, W, C] -> [N, H/2, W/2, 9C]: the 3x3 stride-2 windows, in HWIO kernel order."""
  _, h, w, _ = x.shape
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return jnp.concatenate([xp[:, i:i + h:2, j:j + w:2, :] for i in range(3) for j in range(3)],
                         axis=-1)


def kernel_grad_im2col(x, gy):
  return jnp.einsum("nhwk,nhwo->ko", patches(x), gy).reshape(3, 3, x.shape[-1], gy.shape[-1])


def timed(fn, *args, reps):
  jax.block_until_ready(fn(*args))
  t0 = time.perf_counter()
  for _ in range(reps):
    jax.block_until_ready(fn(*args))
  return (time.perf_counter() - t0) / reps


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--images", type=int, default=140)
  ap.add_argument("--reps", type=int, default=5)
  args = ap.parse_args(argv)
  n, key = args.images, jax.random.PRNGKey(0)
  fwd = jax.jit(conv)
  gx = jax.jit(lambda x, w, gy: jax.vjp(lambda x: conv(x, w), x)[1](gy)[0])
  gw = jax.jit(lambda x, w, gy: jax.vjp(lambda w: conv(x, w), w)[1](gy)[0])
  gw2 = jax.jit(kernel_grad_im2col)
  print(f"{n} images, {jax.devices()[0].device_kind}")
  print("| layer | GFLOP | forward ms (GFLOP/s) | input grad ms | kernel grad ms (GFLOP/s) "
        "| kernel grad / forward | kernel grad by im2col ms |")
  print("|---|---|---|---|---|---|---|")
  side = 64
  for layer, (cin, cout) in enumerate(zip(CHANNELS[:-1], CHANNELS[1:])):
    x = jax.random.normal(key, (n, side, side, cin))
    w = jax.random.normal(key, (3, 3, cin, cout))
    gy = jax.random.normal(key, (n, side // 2, side // 2, cout))
    gflop = 2 * n * (side // 2) ** 2 * 9 * cin * cout / 1e9
    t_f, t_x = timed(fwd, x, w, reps=args.reps), timed(gx, x, w, gy, reps=args.reps)
    t_w, t_w2 = timed(gw, x, w, gy, reps=args.reps), timed(gw2, x, gy, reps=args.reps)
    err = float(jnp.max(jnp.abs(gw(x, w, gy) - gw2(x, gy))) / jnp.max(jnp.abs(gw(x, w, gy))))
    assert err < 1e-4, f"im2col kernel gradient differs by {err}"
    print(f"| {layer} ({cin}->{cout}, {side}x{side}) | {gflop:.2f} | {1e3 * t_f:.1f} "
          f"({gflop / t_f:.0f}) | {1e3 * t_x:.1f} | {1e3 * t_w:.1f} ({gflop / t_w:.0f}) "
          f"| {t_w / t_f:.1f} | {1e3 * t_w2:.1f} |")
    side //= 2


if __name__ == "__main__":
  main()
