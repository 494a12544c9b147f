"""ModelConfig: the Octo-style policy's hyperparameters, validated, JSON round-trippable."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

# size -> (num_layers, width, num_heads, mlp_dim), as in Octo (nano is ours, for tests).
SIZES = {
    "nano": (2, 64, 2, 128),
    "tiny": (12, 192, 3, 768),
    "small": (12, 384, 6, 1536),
    "base": (12, 768, 12, 3072),
}
# Octo's SmallStem channels (four stride-2 3x3 convs); nano gets a narrower stem.
OCTO_STEM = (32, 96, 192, 384)
STEMS = {"nano": (8, 16, 32, 64)}
RESERVED_OBS_KEYS = ("proprio", "timestep_pad_mask")
PROPRIO_ENCODINGS = ("raw", "pose_rotvec")
MODEL_KINDS = ("octo", "cnn_gaussian")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Hyperparameters of `OctoPolicy`.

  `num_layers`, `width`, `num_heads`, `mlp_dim` and `conv_channels` left as None are filled
  from `size`; values given explicitly win. With `size="custom"` the four transformer
  fields must be given (conv_channels defaults to Octo's 32/96/192/384).
  """
  size: str = "small"
  num_layers: int | None = None
  width: int | None = None
  num_heads: int | None = None
  mlp_dim: int | None = None
  image_size: int = 64
  cameras: tuple[str, ...] = ("agentview", "wrist")
  proprio_dim: int = 8
  action_dim: int = 7           # D
  chunk: int = 8                # K
  num_bins: int = 256           # V
  history: int = 1              # T
  text_len: int = 32            # L
  vocab_size: int = 4096
  num_readouts: int = 1         # R
  value_head: bool = False
  gaussian_head: bool = False
  dropout: float = 0.0
  conv_channels: tuple[int, ...] | None = None
  # How the proprio vector is featurised before its projection: "raw" as given, or
  # "pose_rotvec" for [position(3), axis-angle(3), rest...] (the suites' ee_states ++
  # gripper_states): the axis-angle becomes the first two columns of its rotation matrix,
  # which is continuous where the axis-angle jumps between +pi and -pi (a gripper pointing
  # straight down sits right on that jump).
  proprio_encoding: str = "raw"
  # 0: Octo's discrete head, one linear map from the pooled readout to all K x D x V logits.
  # E > 0: a token decoder: the pooled readout -> an E-wide GELU feature per action token ->
  # one linear map E -> V shared by all tokens, plus a per-token bias. A linear head must
  # place K x D sharp peaks over the bins from one W-wide vector; the decoder's nonlinearity
  # lets each token's peak move with a few features.
  action_head_hidden: int = 0
  # "octo": the transformer above. "cnn_gaussian": RPD's student (models/cnn.py), a small CNN
  # on the first camera with a Gaussian action head and a value head (it has no token head);
  # it uses width, conv_channels, cameras[0], chunk and action_dim.
  kind: str = "octo"

  def __post_init__(self):
    if self.size not in (*SIZES, "custom"):
      raise ValueError(f"model size must be one of {[*SIZES, 'custom']}; got {self.size!r}")
    names = ("num_layers", "width", "num_heads", "mlp_dim")
    if self.size == "custom":
      missing = [n for n in names if getattr(self, n) is None]
      if missing:
        raise ValueError(f"size='custom' needs {missing} to be set")
    else:
      for n, v in zip(names, SIZES[self.size]):
        if getattr(self, n) is None:
          object.__setattr__(self, n, v)
    if self.conv_channels is None:
      object.__setattr__(self, "conv_channels", STEMS.get(self.size, OCTO_STEM))
    if self.kind == "cnn_gaussian":
      object.__setattr__(self, "gaussian_head", True)
      object.__setattr__(self, "value_head", True)
    object.__setattr__(self, "cameras", tuple(self.cameras))
    object.__setattr__(self, "conv_channels", tuple(int(c) for c in self.conv_channels))
    self.validate()

  def validate(self):
    """Raises ValueError naming the first bad field."""
    if self.kind not in MODEL_KINDS:
      raise ValueError(f"model.kind must be one of {MODEL_KINDS}; got {self.kind!r}")
    for n in ("num_layers", "width", "num_heads", "mlp_dim", "image_size", "proprio_dim",
              "action_dim", "chunk", "num_bins", "text_len", "num_readouts"):
      v = getattr(self, n)
      if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"model.{n} must be a positive integer; got {v!r}")
    if self.width % self.num_heads:
      raise ValueError(f"model.width ({self.width}) must be divisible by model.num_heads "
                       f"({self.num_heads})")
    if self.proprio_encoding not in PROPRIO_ENCODINGS:
      raise ValueError(f"model.proprio_encoding must be one of {PROPRIO_ENCODINGS}; "
                       f"got {self.proprio_encoding!r}")
    if self.proprio_encoding == "pose_rotvec" and self.proprio_dim < 6:
      raise ValueError(f"model.proprio_encoding='pose_rotvec' needs proprio_dim >= 6; "
                       f"got {self.proprio_dim}")
    e = self.action_head_hidden
    if not isinstance(e, int) or isinstance(e, bool) or e < 0:
      raise ValueError(f"model.action_head_hidden must be an integer >= 0 (0 = linear head); "
                       f"got {self.action_head_hidden!r}")
    if self.history not in (1, 2):
      raise ValueError(f"model.history must be 1 or 2; got {self.history!r}")
    if self.vocab_size < 2:
      raise ValueError(f"model.vocab_size must be >= 2 (id 0 is padding); got {self.vocab_size}")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"model.dropout must be in [0, 1); got {self.dropout}")
    if not self.conv_channels or any(c < 1 for c in self.conv_channels):
      raise ValueError(f"model.conv_channels must be non-empty positive ints; "
                       f"got {self.conv_channels}")
    stride = 2 ** len(self.conv_channels)
    if self.image_size % stride:
      raise ValueError(f"model.image_size ({self.image_size}) must be divisible by "
                       f"{stride} (2 ** len(conv_channels))")
    if len(set(self.cameras)) != len(self.cameras):
      raise ValueError(f"model.cameras has duplicates: {self.cameras}")
    bad = [c for c in self.cameras if not isinstance(c, str) or not c or c in RESERVED_OBS_KEYS]
    if bad:
      raise ValueError(f"model.cameras has invalid names {bad} (non-empty strings other than "
                       f"{RESERVED_OBS_KEYS})")

  # Derived sizes.
  @property
  def patches_per_camera(self) -> int:
    """Tokens per camera image: (image_size / 2**len(conv_channels))**2."""
    return (self.image_size // 2 ** len(self.conv_channels)) ** 2

  @property
  def obs_tokens(self) -> int:
    """Observation tokens per timestep: camera patches + one proprio token."""
    return len(self.cameras) * self.patches_per_camera + 1

  @property
  def seq_len(self) -> int:
    """S = L + T * (obs_tokens + R)."""
    return self.text_len + self.history * (self.obs_tokens + self.num_readouts)

  @property
  def head_dim(self) -> int:
    return self.width // self.num_heads

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["cameras"] = list(self.cameras)
    d["conv_channels"] = list(self.conv_channels)
    return d

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ValueError(f"unknown model config fields {unknown}; known: {sorted(known)}")
    d = dict(d)
    for k in ("cameras", "conv_channels"):
      if d.get(k) is not None:
        d[k] = tuple(d[k])
    return cls(**d)


def group_norm_groups(channels: int) -> int:
  """GroupNorm groups for a conv layer: Octo's 32 where it divides, else the gcd."""
  return math.gcd(channels, 32)
