"""Octo-style policy in Flax NNX: token groups, block-wise causal attention, readout tokens,
and a discrete action head that predicts every (chunk step, action dim) token in one pass.

Sequence layout (S = L + T * (No + R)):
  [task: L language tokens] then for t in 0..T-1: [obs_t: camera patches..., proprio | readouts_t: R]
Shapes: B batch, T history, L text length, No observation tokens per step, R readouts,
K action chunk, D action dims, V bins, W width.
"""
from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp
from flax import nnx
from jax.scipy.spatial.transform import Rotation

from opd_jax.models.config import ModelConfig
from opd_jax.models.layers import Block, ImageStem

__all__ = ["ModelConfig", "OctoPolicy", "TASK", "OBS", "READOUT", "token_layout",
           "attention_mask", "key_padding_mask", "full_mask"]

TASK, OBS, READOUT = 0, 1, 2


def token_layout(num_task: int, num_obs: int, num_readouts: int,
                 history: int) -> tuple[np.ndarray, np.ndarray]:
  """Group kind (TASK/OBS/READOUT) and timestep (-1 for task) of every token: int [S] each."""
  step_kind = np.array([OBS] * num_obs + [READOUT] * num_readouts)
  kinds = np.concatenate([np.full(num_task, TASK), np.tile(step_kind, history)])
  steps = np.concatenate([np.full(num_task, -1),
                          np.repeat(np.arange(history), num_obs + num_readouts)])
  return kinds.astype(np.int32), steps.astype(np.int32)


def attention_mask(num_task: int, num_obs: int, num_readouts: int, history: int) -> np.ndarray:
  """Octo's block-wise causal rules as bool [S, S] (row = query attends column = key).

  - task queries attend task keys only;
  - observation queries of step t attend task keys and observation keys of steps <= t;
  - readout queries of step t attend task keys, observation keys of steps <= t and the
    readout keys of step t (never other steps' readouts);
  - nothing attends readouts except readouts of the same step.
  """
  kinds, steps = token_layout(num_task, num_obs, num_readouts, history)
  qk, kk = kinds[:, None], kinds[None, :]
  qs, ks = steps[:, None], steps[None, :]
  see_task = kk == TASK
  see_obs = (qk != TASK) & (kk == OBS) & (ks <= qs)
  see_readout = (qk == READOUT) & (kk == READOUT) & (ks == qs)
  return see_task | see_obs | see_readout


def key_padding_mask(text_mask, timestep_pad_mask, num_obs: int, num_readouts: int):
  """Which tokens may be attended to: bool [B, S].

  text_mask: bool [B, L] (False on padding words); timestep_pad_mask: bool [B, T] (False on
  timesteps that are padding, e.g. before the episode start): all their tokens are hidden.
  """
  b, t = timestep_pad_mask.shape
  steps = jnp.repeat(timestep_pad_mask[:, :, None], num_obs + num_readouts, axis=2)
  return jnp.concatenate([text_mask, steps.reshape(b, -1)], axis=1).astype(bool)


def full_mask(rule_mask, key_valid):
  """Rules [S, S] and key validity [B, S] -> bool [B, S, S].

  Each token may additionally attend to itself, so a padded query (whose output nothing reads)
  never has an empty row; valid tokens never attend padded ones.
  """
  s = rule_mask.shape[0]
  keys = key_valid[:, None, :] | jnp.eye(s, dtype=bool)[None]
  return jnp.asarray(rule_mask)[None] & keys


def proprio_features(proprio, encoding: str):
  """Featurises proprio [..., P] as `ModelConfig.proprio_encoding` says -> [..., F]."""
  proprio = proprio.astype(jnp.float32)
  if encoding == "raw":
    return proprio
  if encoding == "pose_rotvec":
    lead = proprio.shape[:-1]
    rot = Rotation.from_rotvec(proprio[..., 3:6].reshape(-1, 3)).as_matrix()[:, :, :2]
    return jnp.concatenate([proprio[..., :3], rot.reshape(*lead, 6), proprio[..., 6:]], axis=-1)
  raise ValueError(f"unknown proprio encoding {encoding!r}")


def proprio_feature_dim(cfg: ModelConfig) -> int:
  return jax.eval_shape(lambda p: proprio_features(p, cfg.proprio_encoding),
                        jax.ShapeDtypeStruct((cfg.proprio_dim,), jnp.float32)).shape[-1]


def _pos(rngs: nnx.Rngs, *shape):
  return nnx.Param(0.02 * jax.random.normal(rngs.params(), shape, jnp.float32))


class OctoPolicy(nnx.Module):
  """Octo-style transformer policy with a discrete (and optional value / Gaussian) head."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    w, t, n = cfg.width, cfg.history, cfg.patches_per_camera
    self.text_embed = nnx.Embed(cfg.vocab_size, w, rngs=rngs)
    self.stems = nnx.Dict({c: ImageStem(cfg.conv_channels, w, rngs=rngs) for c in cfg.cameras})
    # Per-group projections to the width and learned position embeddings.
    self.task_proj = nnx.Linear(w, w, rngs=rngs)
    self.task_pos = _pos(rngs, cfg.text_len, w)
    self.camera_proj = nnx.Dict({c: nnx.Linear(w, w, rngs=rngs) for c in cfg.cameras})
    self.camera_pos = nnx.Dict({c: _pos(rngs, t, n, w) for c in cfg.cameras})
    self.proprio_proj = nnx.Linear(proprio_feature_dim(cfg), w, rngs=rngs)
    self.proprio_pos = _pos(rngs, t, 1, w)
    self.readout_pos = _pos(rngs, t, cfg.num_readouts, w)  # readouts are zeros + position
    self.blocks = nnx.List([Block(w, cfg.num_heads, cfg.mlp_dim, cfg.dropout, rngs=rngs)
                            for _ in range(cfg.num_layers)])
    self.final_ln = nnx.LayerNorm(w, epsilon=1e-6, rngs=rngs)
    tokens, e = cfg.chunk * cfg.action_dim, cfg.action_head_hidden
    if e:
      self.token_features = nnx.Linear(w, tokens * e, rngs=rngs)
      self.token_decoder = nnx.Linear(e, cfg.num_bins, use_bias=False, rngs=rngs)
      self.token_bias = nnx.Param(jnp.zeros((cfg.chunk, cfg.action_dim, cfg.num_bins),
                                            jnp.float32))
    else:
      self.action_head = nnx.Linear(w, tokens * cfg.num_bins, rngs=rngs)
    if cfg.value_head:
      self.value = nnx.Linear(w, 1, rngs=rngs)
    if cfg.gaussian_head:
      self.mean_head = nnx.Linear(w, cfg.chunk * cfg.action_dim, rngs=rngs)
      self.log_std = nnx.Param(jnp.zeros((cfg.chunk, cfg.action_dim), jnp.float32))

  def _check_inputs(self, obs, text_ids, text_mask):
    cfg = self.cfg
    missing = [k for k in (*cfg.cameras, "proprio") if k not in obs]
    if missing:
      raise ValueError(f"obs is missing keys {missing}; expected cameras {list(cfg.cameras)} "
                       f"and 'proprio'")
    b, t = obs["proprio"].shape[:2]
    if obs["proprio"].shape != (b, cfg.history, cfg.proprio_dim):
      raise ValueError(f"obs['proprio'] must be [B, T={cfg.history}, P={cfg.proprio_dim}]; "
                       f"got {obs['proprio'].shape}")
    want = (b, cfg.history, cfg.image_size, cfg.image_size, 3)
    for c in cfg.cameras:
      if obs[c].shape != want or obs[c].dtype != jnp.uint8:
        raise ValueError(f"obs[{c!r}] must be uint8 {list(want)} (B, T, H, W, 3); "
                         f"got {obs[c].dtype} {obs[c].shape}")
    if "timestep_pad_mask" in obs and obs["timestep_pad_mask"].shape != (b, cfg.history):
      raise ValueError(f"obs['timestep_pad_mask'] must be [B, T] = {[b, cfg.history]}; "
                       f"got {obs['timestep_pad_mask'].shape}")
    if text_ids.ndim != 2 or text_ids.shape[0] != b or text_ids.shape[1] > cfg.text_len:
      raise ValueError(f"text_ids must be [B={b}, L<={cfg.text_len}]; got {text_ids.shape}")
    if text_mask.shape != text_ids.shape:
      raise ValueError(f"text_mask must match text_ids {text_ids.shape}; got {text_mask.shape}")

  def embed(self, obs, text_ids, text_mask, *, deterministic: bool = True,
            rngs: nnx.Rngs | None = None) -> dict:
    """Runs the transformer. Returns the final-LayerNorm outputs by group:
    "task" [B, L, W], "obs" [B, T, No, W], "readouts" [B, T, R, W]."""
    cfg = self.cfg
    self._check_inputs(obs, text_ids, text_mask)
    if not deterministic and cfg.dropout > 0 and rngs is None:
      raise ValueError("deterministic=False with dropout > 0 needs rngs (a dropout key)")
    b, t = obs["proprio"].shape[:2]
    l = text_ids.shape[1]
    task = self.task_proj(self.text_embed(text_ids)) + self.task_pos[:l]
    groups = []
    for c in cfg.cameras:
      img = obs[c].reshape(b * t, *obs[c].shape[2:])
      tok = self.stems[c](img).reshape(b, t, cfg.patches_per_camera, cfg.width)
      groups.append(self.camera_proj[c](tok) + self.camera_pos[c][...])
    prop = proprio_features(obs["proprio"], cfg.proprio_encoding)[:, :, None, :]
    groups.append(self.proprio_proj(prop) + self.proprio_pos[...])
    groups.append(jnp.broadcast_to(self.readout_pos[...], (b, t, cfg.num_readouts, cfg.width)))
    steps = jnp.concatenate(groups, axis=2)  # [B, T, No + R, W]
    x = jnp.concatenate([task, steps.reshape(b, -1, cfg.width)], axis=1)

    no, r = cfg.obs_tokens, cfg.num_readouts
    pad = obs.get("timestep_pad_mask")
    pad = jnp.ones((b, t), bool) if pad is None else pad
    mask = full_mask(attention_mask(l, no, r, t), key_padding_mask(text_mask, pad, no, r))
    for blk in self.blocks:
      x = blk(x, mask, deterministic=deterministic, rngs=rngs)
    x = self.final_ln(x)
    steps = x[:, l:].reshape(b, t, no + r, cfg.width)
    return {"task": x[:, :l], "obs": steps[:, :, :no], "readouts": steps[:, :, no:]}

  def __call__(self, obs, text_ids, text_mask, *, deterministic: bool = True,
               rngs: nnx.Rngs | None = None) -> dict:
    """Policy outputs.

    Args:
      obs: camera name -> uint8 [B, T, H, W, 3]; "proprio": float32 [B, T, P];
        optional "timestep_pad_mask": bool [B, T] (default all True).
      text_ids: int32 [B, L] word ids (0 = padding); text_mask: bool [B, L].
    Returns:
      "logits": float32 [B, K, D, V]; with value_head "value": [B]; with gaussian_head
      "mean": [B, K, D] in (-1, 1) and "log_std": [B, K, D].
    """
    cfg = self.cfg
    emb = self.embed(obs, text_ids, text_mask, deterministic=deterministic, rngs=rngs)
    pooled = emb["readouts"][:, -1].mean(axis=1)  # last step's readouts: [B, W]
    b = pooled.shape[0]
    if cfg.action_head_hidden:
      feats = jax.nn.gelu(self.token_features(pooled))
      feats = feats.reshape(b, cfg.chunk, cfg.action_dim, cfg.action_head_hidden)
      logits = self.token_decoder(feats) + self.token_bias[...].astype(feats.dtype)
    else:
      logits = self.action_head(pooled).reshape(b, cfg.chunk, cfg.action_dim, cfg.num_bins)
    out = {"logits": logits.astype(jnp.float32)}
    if cfg.value_head:
      out["value"] = self.value(pooled)[:, 0].astype(jnp.float32)
    if cfg.gaussian_head:
      mean = jnp.tanh(self.mean_head(pooled)).reshape(b, cfg.chunk, cfg.action_dim)
      out["mean"] = mean.astype(jnp.float32)
      out["log_std"] = jnp.broadcast_to(self.log_std[...], mean.shape)
    return out
