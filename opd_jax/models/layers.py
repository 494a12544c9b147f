"""Building blocks of the Octo-style policy: the conv image stem and pre-LN transformer blocks."""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from opd_jax.models.config import group_norm_groups


class StdConv(nnx.Module):
  """3x3 convolution with weight standardisation (each output filter: zero mean, unit var)."""

  def __init__(self, in_ch: int, out_ch: int, *, stride: int = 2, rngs: nnx.Rngs):
    init = nnx.initializers.lecun_normal()
    self.kernel = nnx.Param(init(rngs.params(), (3, 3, in_ch, out_ch), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((out_ch,), jnp.float32))
    self.stride = stride

  def __call__(self, x):
    """x: [N, H, W, C_in] -> [N, H / stride, W / stride, C_out]."""
    w = self.kernel[...]
    mean = jnp.mean(w, axis=(0, 1, 2), keepdims=True)
    var = jnp.var(w, axis=(0, 1, 2), keepdims=True)
    w = (w - mean) * jax.lax.rsqrt(var + 1e-5)
    y = jax.lax.conv_general_dilated(
        x, w, window_strides=(self.stride, self.stride), padding=((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + self.bias[...]


class ImageStem(nnx.Module):
  """Octo's SmallStem: stride-2 StdConv + GroupNorm + ReLU per channel count, then a 1x1
  projection to `out_dim`. A 64x64 image with four convs gives 4x4 = 16 tokens."""

  def __init__(self, channels: Sequence[int], out_dim: int, *, rngs: nnx.Rngs):
    convs, norms = [], []
    c_in = 3
    for c in channels:
      convs.append(StdConv(c_in, c, stride=2, rngs=rngs))
      norms.append(nnx.GroupNorm(c, num_groups=group_norm_groups(c), epsilon=1e-6, rngs=rngs))
      c_in = c
    self.convs = nnx.List(convs)
    self.norms = nnx.List(norms)
    self.out = nnx.Linear(c_in, out_dim, rngs=rngs)  # the 1x1 conv

  def __call__(self, images):
    """images: uint8 [N, H, W, 3] -> float32 [N, (H/2^n) * (W/2^n), out_dim]."""
    x = images.astype(jnp.float32) / 127.5 - 1.0
    for conv, norm in zip(self.convs, self.norms):
      x = jax.nn.relu(norm(conv(x)))
    x = self.out(x)
    return x.reshape(x.shape[0], -1, x.shape[-1])


class Block(nnx.Module):
  """Pre-LayerNorm transformer block: x + MHA(LN(x)), then x + MLP(LN(x)) with GELU."""

  def __init__(self, width: int, num_heads: int, mlp_dim: int, dropout: float, *,
               rngs: nnx.Rngs):
    self.num_heads = num_heads
    self.ln1 = nnx.LayerNorm(width, epsilon=1e-6, rngs=rngs)
    self.qkv = nnx.Linear(width, 3 * width, rngs=rngs)
    self.attn_out = nnx.Linear(width, width, rngs=rngs)
    self.ln2 = nnx.LayerNorm(width, epsilon=1e-6, rngs=rngs)
    self.mlp_in = nnx.Linear(width, mlp_dim, rngs=rngs)
    self.mlp_out = nnx.Linear(mlp_dim, width, rngs=rngs)
    self.drop = nnx.Dropout(dropout)

  def __call__(self, x, mask, *, deterministic: bool = True, rngs: nnx.Rngs | None = None):
    """x: [B, S, W]; mask: bool [B, S, S] (query, key), every row with a True entry."""
    b, s, w = x.shape
    h = self.num_heads
    qkv = self.qkv(self.ln1(x)).reshape(b, s, 3, h, w // h)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    y = jax.nn.dot_product_attention(q, k, v, mask=mask[:, None])  # [B, S, H, W/H]
    y = self.attn_out(y.reshape(b, s, w))
    x = x + self.drop(y, deterministic=deterministic, rngs=rngs)
    y = self.mlp_out(self.drop(nnx.gelu(self.mlp_in(self.ln2(x))),
                               deterministic=deterministic, rngs=rngs))
    return x + self.drop(y, deterministic=deterministic, rngs=rngs)
