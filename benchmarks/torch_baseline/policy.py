"""The Octo-style policy (opd_jax/models/octo.py, cfg.kind == "octo") in PyTorch, with its
weights converted from the JAX parameters, for a PyTorch baseline of the same computation.

    graphdef, params, cfg, stats, meta = opd_jax.checkpoint.load_policy(path)
    policy = TorchPolicy.from_jax(cfg, params)  # eval mode, float32, CPU
    ids, mask = tokenize(["pick up the ketchup"], cfg.text_len, cfg.vocab_size)
    out = policy(as_tensors(obs), torch.from_numpy(ids), torch.from_numpy(mask))
    out["logits"]  # [B, K, D, V], as opd_jax.models.apply returns

Deterministic only (the JAX model's dropout is off at evaluation). Numerics follow flax/jax, not
PyTorch's defaults, where they differ:
- LayerNorm and GroupNorm use flax's one-pass statistics, var = max(E[x^2] - E[x]^2, 0), and
  eps 1e-6 (torch's layers take the centred two-pass variance and default to eps 1e-5);
  `fused_norms=True` uses torch's fused kernels instead, for speed (differences ~1e-6).
- GELU is the tanh approximation (jax.nn.gelu and nnx.gelu default to approximate=True).
- The stem's StdConv pads (1, 1) on both sides explicitly (not 'SAME', which for a stride-2
  conv of an even size pads (0, 1)); its weight standardisation uses the population variance
  and eps 1e-5 inside the rsqrt.
- Attention scales q.k by 1 / sqrt(head_dim) and masks with a bool [B, 1, S, S] mask in
  which every token also sees itself (opd_jax.models.octo.full_mask), so no row is empty.
Layouts: flax Linear kernels are [in, out] (torch [out, in]), Conv kernels HWIO (torch OIHW);
images arrive NHWC as in JAX and are permuted to NCHW only around the convolutions.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from opd_jax.models.config import ModelConfig, group_norm_groups
from opd_jax.models.octo import attention_mask
from opd_jax.models.text import tokenize

__all__ = ["TorchPolicy", "from_jax", "as_tensors", "proprio_features", "tokenize"]


def _fast_stats(x: torch.Tensor, dims) -> tuple[torch.Tensor, torch.Tensor]:
  """flax's use_fast_variance=True statistics: one pass over x, negative variances clipped."""
  mean = x.mean(dims, keepdim=True)
  var = (x * x).mean(dims, keepdim=True) - mean * mean
  return mean, var.clamp_min(0.0)


class LayerNorm(nn.Module):
  """nnx.LayerNorm(epsilon=1e-6) over the last axis."""

  def __init__(self, width: int, eps: float = 1e-6, fused: bool = False):
    super().__init__()
    self.weight = nn.Parameter(torch.ones(width))
    self.bias = nn.Parameter(torch.zeros(width))
    self.eps, self.fused = eps, fused

  def forward(self, x):
    if self.fused:
      return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)
    mean, var = _fast_stats(x, (-1,))
    # flax folds the scale into the rsqrt factor before multiplying: same order here.
    return (x - mean) * (torch.rsqrt(var + self.eps) * self.weight) + self.bias


class GroupNorm(nn.Module):
  """nnx.GroupNorm(epsilon=1e-6) on NCHW: statistics per (sample, group of C/G channels)."""

  def __init__(self, channels: int, groups: int, eps: float = 1e-6, fused: bool = False):
    super().__init__()
    self.weight = nn.Parameter(torch.ones(channels))
    self.bias = nn.Parameter(torch.zeros(channels))
    self.groups, self.eps, self.fused = groups, eps, fused

  def forward(self, x):
    if self.fused:
      return F.group_norm(x, self.groups, self.weight, self.bias, self.eps)
    n, c, h, w = x.shape
    g = c // self.groups
    x = x.reshape(n, self.groups, g, h, w)  # flax groups consecutive channels, as torch does
    mean, var = _fast_stats(x, (2, 3, 4))
    mul = torch.rsqrt(var + self.eps) * self.weight.view(1, self.groups, g, 1, 1)
    y = (x - mean) * mul + self.bias.view(1, self.groups, g, 1, 1)
    return y.reshape(n, c, h, w)


class StdConv(nn.Module):
  """3x3 conv with weight standardisation (each output filter zero mean, unit variance)."""

  def __init__(self, in_ch: int, out_ch: int, stride: int = 2):
    super().__init__()
    self.weight = nn.Parameter(torch.zeros(out_ch, in_ch, 3, 3))  # OIHW
    self.bias = nn.Parameter(torch.zeros(out_ch))
    self.stride = stride

  def forward(self, x):
    w = self.weight
    mean = w.mean((1, 2, 3), keepdim=True)
    var = w.var((1, 2, 3), unbiased=False, keepdim=True)  # jnp.var: centred, ddof=0
    w = (w - mean) * torch.rsqrt(var + 1e-5)
    return F.conv2d(x, w, self.bias, stride=self.stride, padding=1)


class ImageStem(nn.Module):
  """Octo's SmallStem: (StdConv, GroupNorm, ReLU) per channel count, then a 1x1 projection."""

  def __init__(self, channels, out_dim: int, fused: bool = False):
    super().__init__()
    convs, norms, c_in = [], [], 3
    for c in channels:
      convs.append(StdConv(c_in, c))
      norms.append(GroupNorm(c, group_norm_groups(c), fused=fused))
      c_in = c
    self.convs, self.norms = nn.ModuleList(convs), nn.ModuleList(norms)
    self.out = nn.Linear(c_in, out_dim)

  def forward(self, images):
    """uint8 [N, H, W, 3] -> float32 [N, (H / 2^n) * (W / 2^n), out_dim]."""
    x = images.to(torch.float32) / 127.5 - 1.0
    x = x.permute(0, 3, 1, 2)  # conv2d wants NCHW
    for conv, norm in zip(self.convs, self.norms):
      x = F.relu(norm(conv(x)))
    # Back to NHWC so the patch tokens come out row-major (h, w), as JAX's reshape orders them.
    x = self.out(x.permute(0, 2, 3, 1))
    return x.reshape(x.shape[0], -1, x.shape[-1])


class Block(nn.Module):
  """Pre-LN transformer block: x + MHA(LN(x)), then x + MLP(LN(x)) with tanh-GELU."""

  def __init__(self, width: int, num_heads: int, mlp_dim: int, fused: bool = False):
    super().__init__()
    self.num_heads = num_heads
    self.ln1 = LayerNorm(width, fused=fused)
    self.qkv = nn.Linear(width, 3 * width)
    self.attn_out = nn.Linear(width, width)
    self.ln2 = LayerNorm(width, fused=fused)
    self.mlp_in = nn.Linear(width, mlp_dim)
    self.mlp_out = nn.Linear(mlp_dim, width)

  def forward(self, x, mask):
    """x: [B, S, W]; mask: bool [B, 1, S, S] (query, key)."""
    b, s, w = x.shape
    h = self.num_heads
    # The JAX qkv output splits as [3, H, W/H] along features: same reshape here.
    q, k, v = self.qkv(self.ln1(x)).reshape(b, s, 3, h, w // h).unbind(2)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, S, W/H]
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # scale 1/sqrt(W/H)
    x = x + self.attn_out(y.transpose(1, 2).reshape(b, s, w))
    return x + self.mlp_out(F.gelu(self.mlp_in(self.ln2(x)), approximate="tanh"))


def proprio_features(proprio: torch.Tensor, encoding: str) -> torch.Tensor:
  """opd_jax.models.octo.proprio_features: [..., P] -> [..., F]."""
  proprio = proprio.to(torch.float32)
  if encoding == "raw":
    return proprio
  if encoding != "pose_rotvec":
    raise ValueError(f"unknown proprio encoding {encoding!r}")
  # jax.scipy Rotation.from_rotvec(...).as_matrix(), written out: the (unnormalised) quaternion
  # [scale * rotvec, cos(angle / 2)] with scale's Taylor series at angle <= 1e-3.
  rv = proprio[..., 3:6]
  angle = torch.sqrt((rv * rv).sum(-1, keepdim=True))
  a2 = angle * angle
  small = 0.5 - a2 / 48 + a2 * a2 / 3840
  large = torch.sin(angle / 2) / angle.clamp_min(1e-3)  # clamp: no 0/0 in the unused branch
  xyz = torch.where(angle <= 1e-3, small, large) * rv
  x, y, z = xyz.unbind(-1)
  w = torch.cos(angle[..., 0] / 2)
  # First two columns of the rotation matrix, row-major: m00 m01 m10 m11 m20 m21.
  cols = [x * x - y * y - z * z + w * w, 2 * (x * y - z * w),
          2 * (x * y + z * w), -x * x + y * y - z * z + w * w,
          2 * (x * z - y * w), 2 * (y * z + x * w)]
  return torch.cat([proprio[..., :3], torch.stack(cols, -1), proprio[..., 6:]], -1)


def _proprio_dim(cfg: ModelConfig) -> int:
  return cfg.proprio_dim + (3 if cfg.proprio_encoding == "pose_rotvec" else 0)


class TorchPolicy(nn.Module):
  """OctoPolicy (kind "octo") in PyTorch. Parameter names mirror the JAX module's paths, so
  `from_jax` converts by name. Build it with `TorchPolicy.from_jax(cfg, params)`."""

  def __init__(self, cfg: ModelConfig, fused_norms: bool = False):
    super().__init__()
    if cfg.kind != "octo":
      raise ValueError(f"TorchPolicy implements model.kind 'octo' only; got {cfg.kind!r}")
    self.cfg = cfg
    w, t, n, fused = cfg.width, cfg.history, cfg.patches_per_camera, fused_norms
    self.text_embed = nn.Embedding(cfg.vocab_size, w)
    self.stems = nn.ModuleDict({c: ImageStem(cfg.conv_channels, w, fused) for c in cfg.cameras})
    self.task_proj = nn.Linear(w, w)
    self.task_pos = nn.Parameter(torch.zeros(cfg.text_len, w))
    self.camera_proj = nn.ModuleDict({c: nn.Linear(w, w) for c in cfg.cameras})
    self.camera_pos = nn.ParameterDict({c: nn.Parameter(torch.zeros(t, n, w))
                                        for c in cfg.cameras})
    self.proprio_proj = nn.Linear(_proprio_dim(cfg), w)
    self.proprio_pos = nn.Parameter(torch.zeros(t, 1, w))
    self.readout_pos = nn.Parameter(torch.zeros(t, cfg.num_readouts, w))
    self.blocks = nn.ModuleList([Block(w, cfg.num_heads, cfg.mlp_dim, fused)
                                 for _ in range(cfg.num_layers)])
    self.final_ln = LayerNorm(w, fused=fused)
    tokens, e = cfg.chunk * cfg.action_dim, cfg.action_head_hidden
    if e:
      self.token_features = nn.Linear(w, tokens * e)
      self.token_decoder = nn.Linear(e, cfg.num_bins, bias=False)
      self.token_bias = nn.Parameter(torch.zeros(cfg.chunk, cfg.action_dim, cfg.num_bins))
    else:
      self.action_head = nn.Linear(w, tokens * cfg.num_bins)
    if cfg.value_head:
      self.value = nn.Linear(w, 1)
    if cfg.gaussian_head:
      self.mean_head = nn.Linear(w, tokens)
      self.log_std = nn.Parameter(torch.zeros(cfg.chunk, cfg.action_dim))
    # The block-wise causal rules for the full text length; shorter texts drop task rows and
    # columns (the rules depend only on each token's kind and step). Not a parameter.
    rules = attention_mask(cfg.text_len, cfg.obs_tokens, cfg.num_readouts, cfg.history)
    self.register_buffer("rules", torch.from_numpy(rules), persistent=False)

  @classmethod
  def from_jax(cls, cfg: ModelConfig, params, **kwargs) -> TorchPolicy:
    return from_jax(cfg, params, **kwargs)

  def _check_inputs(self, obs, text_ids, text_mask):
    cfg = self.cfg
    missing = [k for k in (*cfg.cameras, "proprio") if k not in obs]
    if missing:
      raise ValueError(f"obs is missing keys {missing}")
    b = obs["proprio"].shape[0]
    if tuple(obs["proprio"].shape) != (b, cfg.history, cfg.proprio_dim):
      raise ValueError(f"obs['proprio'] must be [B, T={cfg.history}, P={cfg.proprio_dim}]; "
                       f"got {tuple(obs['proprio'].shape)}")
    want = (b, cfg.history, cfg.image_size, cfg.image_size, 3)
    for c in cfg.cameras:
      if tuple(obs[c].shape) != want or obs[c].dtype != torch.uint8:
        raise ValueError(f"obs[{c!r}] must be uint8 {list(want)}; got {obs[c].dtype} "
                         f"{tuple(obs[c].shape)}")
    if text_ids.ndim != 2 or text_ids.shape[0] != b or text_ids.shape[1] > cfg.text_len:
      raise ValueError(f"text_ids must be [B={b}, L<={cfg.text_len}]; got {tuple(text_ids.shape)}")
    if text_mask.shape != text_ids.shape:
      raise ValueError(f"text_mask must match text_ids {tuple(text_ids.shape)}")

  def _mask(self, l: int, text_mask, pad, b: int, t: int):
    """opd_jax.models.octo.full_mask for this batch: bool [B, 1, S, S]."""
    cfg, rules = self.cfg, self.rules
    if l < cfg.text_len:
      rules = torch.cat([rules[:l], rules[cfg.text_len:]], 0)
      rules = torch.cat([rules[:, :l], rules[:, cfg.text_len:]], 1)
    per_step = cfg.obs_tokens + cfg.num_readouts
    pad = torch.ones(b, t, dtype=torch.bool, device=rules.device) if pad is None else pad.bool()
    valid = torch.cat([text_mask.bool(), pad.repeat_interleave(per_step, dim=1)], 1)  # [B, S]
    eye = torch.eye(rules.shape[0], dtype=torch.bool, device=rules.device)
    return (rules[None] & (valid[:, None, :] | eye))[:, None]

  def forward(self, obs: Mapping[str, torch.Tensor], text_ids: torch.Tensor,
              text_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """obs: camera -> uint8 [B, T, H, W, 3]; "proprio": [B, T, P]; optional
    "timestep_pad_mask": bool [B, T]. text_ids: int [B, L]; text_mask: bool [B, L].
    Returns "logits" [B, K, D, V] (+ "value" [B], "mean"/"log_std" [B, K, D] if configured)."""
    cfg = self.cfg
    self._check_inputs(obs, text_ids, text_mask)
    b, t = obs["proprio"].shape[:2]
    l, w = text_ids.shape[1], cfg.width
    task = self.task_proj(self.text_embed(text_ids.long())) + self.task_pos[:l]
    groups = []
    for c in cfg.cameras:
      img = obs[c].reshape(b * t, *obs[c].shape[2:])
      tok = self.stems[c](img).reshape(b, t, cfg.patches_per_camera, w)
      groups.append(self.camera_proj[c](tok) + self.camera_pos[c])
    prop = proprio_features(obs["proprio"], cfg.proprio_encoding)[:, :, None, :]
    groups.append(self.proprio_proj(prop) + self.proprio_pos)
    groups.append(self.readout_pos.expand(b, t, cfg.num_readouts, w))
    x = torch.cat([task, torch.cat(groups, 2).reshape(b, -1, w)], 1)

    mask = self._mask(l, text_mask, obs.get("timestep_pad_mask"), b, t)
    for blk in self.blocks:
      x = blk(x, mask)
    # Only the last step's readouts feed the heads; LayerNorm is per token, so normalising just
    # those equals JAX's final LayerNorm of the whole sequence followed by the selection.
    readouts = x[:, -cfg.num_readouts:]
    pooled = self.final_ln(readouts).mean(1)  # [B, W]
    k, d = cfg.chunk, cfg.action_dim
    if cfg.action_head_hidden:
      feats = F.gelu(self.token_features(pooled), approximate="tanh")
      logits = self.token_decoder(feats.reshape(b, k, d, -1)) + self.token_bias
    else:
      logits = self.action_head(pooled).reshape(b, k, d, cfg.num_bins)
    out = {"logits": logits.float()}
    if cfg.value_head:
      out["value"] = self.value(pooled)[:, 0].float()
    if cfg.gaussian_head:
      mean = torch.tanh(self.mean_head(pooled)).reshape(b, k, d)
      out["mean"], out["log_std"] = mean.float(), self.log_std.expand(b, k, d)
    return out


# Last path element of a flax parameter -> torch's name for it (others keep their names).
_RENAME = {"kernel": "weight", "scale": "weight", "embedding": "weight"}


def _flatten(tree, prefix=()):
  for key, value in tree.items():
    path = (*prefix, str(key))
    if isinstance(value, Mapping):
      yield from _flatten(value, path)
    else:
      yield path, value


def _to_torch_layout(leaf: str, value: np.ndarray) -> np.ndarray:
  if leaf == "kernel" and value.ndim == 2:
    return value.T  # flax Linear [in, out] -> torch [out, in]
  if leaf == "kernel" and value.ndim == 4:
    return value.transpose(3, 2, 0, 1)  # flax Conv HWIO -> torch OIHW
  return value


def from_jax(cfg: ModelConfig, params, fused_norms: bool = False) -> TorchPolicy:
  """A TorchPolicy (eval mode, float32) holding `params`: the nnx.State of
  opd_jax.models.make_policy / checkpoint.load_policy, or its nested pure dict.

  Every JAX parameter must land on a torch parameter of the converted shape and every torch
  parameter must be set; otherwise this raises, naming the path.
  """
  if not isinstance(params, dict):
    from flax import nnx  # pylint: disable=import-outside-toplevel
    params = nnx.to_pure_dict(params)
  model = TorchPolicy(cfg, fused_norms=fused_norms)
  target = model.state_dict()  # parameters only: the mask buffer is not persistent
  loaded = {}
  for path, value in _flatten(params):
    where = "/".join(path)
    name = ".".join((*path[:-1], _RENAME.get(path[-1], path[-1])))
    if name not in target:
      raise KeyError(f"JAX parameter {where} has no torch counterpart (looked for {name!r})")
    value = _to_torch_layout(path[-1], np.asarray(value, np.float32))
    if tuple(value.shape) != tuple(target[name].shape):
      raise ValueError(f"JAX parameter {where}: converted shape {value.shape} != torch "
                       f"{name} {tuple(target[name].shape)}")
    loaded[name] = torch.from_numpy(np.array(value, np.float32, order="C"))  # a writable copy
  unset = sorted(set(target) - set(loaded))
  if unset:
    raise KeyError(f"torch parameters with no JAX parameter: {unset}")
  model.load_state_dict(loaded, strict=True)
  return model.eval()


def as_tensors(tree: Mapping) -> dict[str, torch.Tensor]:
  """A dict of numpy / JAX arrays (an observation) -> torch tensors, dtypes kept."""
  return {k: torch.from_numpy(np.array(v)) for k, v in tree.items()}
