"""RPD's own student: a small CNN on one camera with a Gaussian action head and a value head.

RPD (RESEARCH.md section 2) distils a VLA into a PPO policy of this shape: convolutions
on one camera image, the proprioception alongside, an MLP, a diagonal Gaussian over the
normalised action chunk and a value. The instruction enters as the mean of its word
embeddings (one suite holds several tasks). Shapes: B batch, K chunk, D action dims.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from opd_jax.models.config import ModelConfig
from opd_jax.models.octo import proprio_feature_dim, proprio_features


class CNNGaussianPolicy(nnx.Module):
  """``cfg.kind == "cnn_gaussian"``: the first camera of ``cfg.cameras``, the last frame of
  the history; ``cfg.conv_channels`` stride-2 3x3 convs (ReLU), then a ``cfg.width`` MLP."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    chans = (3,) + tuple(cfg.conv_channels)
    self.convs = nnx.List([nnx.Conv(a, b, (3, 3), strides=(2, 2), padding="SAME", rngs=rngs)
                           for a, b in zip(chans[:-1], chans[1:])])
    side = cfg.image_size // 2 ** len(cfg.conv_channels)
    w = cfg.width
    self.image_fc = nnx.Linear(side * side * chans[-1], w, rngs=rngs)
    self.text_embed = nnx.Embed(cfg.vocab_size, w, rngs=rngs)
    self.proprio_fc = nnx.Linear(proprio_feature_dim(cfg), w, rngs=rngs)
    self.hidden = nnx.Linear(3 * w, w, rngs=rngs)
    self.mean_head = nnx.Linear(w, cfg.chunk * cfg.action_dim, rngs=rngs)
    self.log_std = nnx.Param(jnp.full((cfg.chunk, cfg.action_dim), -0.5, jnp.float32))
    self.value = nnx.Linear(w, 1, rngs=rngs)

  def __call__(self, obs, text_ids, text_mask, *, deterministic: bool = True,
               rngs: nnx.Rngs | None = None) -> dict:
    """obs as OctoPolicy takes it -> "mean" [B, K, D] in (-1, 1), "log_std" [B, K, D],
    "value" [B]."""
    del deterministic, rngs
    cfg = self.cfg
    x = obs[cfg.cameras[0]][:, -1].astype(jnp.float32) / 255.0 - 0.5   # [B, H, W, 3]
    for conv in self.convs:
      x = jax.nn.relu(conv(x))
    b = x.shape[0]
    img = jax.nn.relu(self.image_fc(x.reshape(b, -1)))
    words = self.text_embed(text_ids) * text_mask[..., None]
    text = words.sum(1) / jnp.maximum(text_mask.sum(1, keepdims=True), 1)
    prop = jax.nn.relu(self.proprio_fc(proprio_features(obs["proprio"][:, -1],
                                                        cfg.proprio_encoding)))
    h = jax.nn.relu(self.hidden(jnp.concatenate([img, text, prop], -1)))
    mean = jnp.tanh(self.mean_head(h)).reshape(b, cfg.chunk, cfg.action_dim)
    return {"mean": mean, "log_std": jnp.broadcast_to(self.log_std[...], mean.shape),
            "value": self.value(h)[:, 0]}
