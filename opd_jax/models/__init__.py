"""Functional API of the Octo-style policy, for use inside jax.jit.

    graphdef, params = make_policy(cfg, seed=0)          # params: nnx.State of nnx.Param only
    out = apply(graphdef, params, obs, text_ids, text_mask)          # {"logits": [B, K, D, V]}
    tokens = jax.jit(functools.partial(sample, graphdef))(params, obs, ids, mask, key, 1.0)

`graphdef` is static (hashable): bind it with functools.partial or jit's static_argnums.
The model holds no state besides parameters (dropout keys are passed per call), so `apply`
is a pure function of its arguments.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from opd_jax.models.cnn import CNNGaussianPolicy
from opd_jax.models.config import SIZES, ModelConfig
from opd_jax.models.octo import OctoPolicy, attention_mask, full_mask, key_padding_mask
from opd_jax.models.text import tokenize

__all__ = ["SIZES", "ModelConfig", "OctoPolicy", "CNNGaussianPolicy", "attention_mask", "full_mask",
           "key_padding_mask", "tokenize", "make_policy", "init_params", "abstract_policy", "apply",
           "sample_tokens", "greedy_tokens", "token_log_probs", "sample", "greedy",
           "param_count"]


def _module(cfg: ModelConfig, rngs: nnx.Rngs):
  """The network ``cfg.kind`` names."""
  return (CNNGaussianPolicy if cfg.kind == "cnn_gaussian" else OctoPolicy)(cfg, rngs=rngs)


def _split(model: nnx.Module):
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  if jax.tree.leaves(rest):
    raise RuntimeError(f"OctoPolicy holds non-parameter state, which would make apply impure: "
                       f"{rest}")
  return graphdef, params


def make_policy(cfg: ModelConfig, seed: int = 0):
  """Initialises the policy eagerly. Returns (graphdef, params), params an nnx.State pytree.

  For sharded initialisation use `abstract_policy` for the graphdef and shapes, and
  `jax.jit(functools.partial(init_params, cfg), out_shardings=...)(key)` for the values.
  """
  return _split(_module(cfg, nnx.Rngs(seed)))


def init_params(cfg: ModelConfig, key: jax.Array):
  """Pure initialiser (jit-able): PRNG key -> params nnx.State matching `abstract_policy`."""
  return _split(_module(cfg, nnx.Rngs(key)))[1]


def abstract_policy(cfg: ModelConfig):
  """(graphdef, params) with params as jax.ShapeDtypeStruct leaves; allocates nothing."""
  return _split(nnx.eval_shape(lambda: _module(cfg, nnx.Rngs(0))))


def apply(graphdef, params, obs, text_ids, text_mask, deterministic: bool = True,
          dropout_key: jax.Array | None = None) -> dict:
  """Pure forward pass: see OctoPolicy.__call__ for shapes. `dropout_key` is needed only
  with deterministic=False and cfg.dropout > 0."""
  model = nnx.merge(graphdef, params)
  rngs = None if dropout_key is None else nnx.Rngs(dropout=dropout_key)
  return model(obs, text_ids, text_mask, deterministic=deterministic, rngs=rngs)


def _check_temperature(temperature):
  if isinstance(temperature, (int, float)) and temperature < 0:
    raise ValueError(f"temperature must be >= 0 (0 = greedy); got {temperature}")


def greedy_tokens(logits) -> jax.Array:
  """[B, K, D, V] logits -> int32 [B, K, D] argmax tokens."""
  return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def sample_tokens(logits, key: jax.Array, temperature=1.0) -> jax.Array:
  """[B, K, D, V] logits -> int32 [B, K, D] drawn from softmax(logits / temperature).

  temperature 0 (concrete or traced) gives the greedy tokens.
  """
  _check_temperature(temperature)
  temperature = jnp.asarray(temperature, jnp.float32)
  safe_t = jnp.where(temperature > 0, temperature, 1.0)
  drawn = jax.random.categorical(key, logits.astype(jnp.float32) / safe_t, axis=-1)
  return jnp.where(temperature > 0, drawn.astype(jnp.int32), greedy_tokens(logits))


def token_log_probs(logits, tokens, temperature=1.0) -> jax.Array:
  """log softmax(logits / temperature) at `tokens`: [B, K, D, V], int [B, K, D] -> [B, K, D]."""
  _check_temperature(temperature)
  logp = jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, axis=-1)
  return jnp.take_along_axis(logp, tokens[..., None].astype(jnp.int32), axis=-1)[..., 0]


def sample(graphdef, params, obs, text_ids, text_mask, key: jax.Array,
           temperature=1.0) -> jax.Array:
  """Samples an action-token chunk: int32 [B, K, D]."""
  logits = apply(graphdef, params, obs, text_ids, text_mask)["logits"]
  return sample_tokens(logits, key, temperature)


def greedy(graphdef, params, obs, text_ids, text_mask) -> jax.Array:
  """Greedy action-token chunk: int32 [B, K, D]."""
  return greedy_tokens(apply(graphdef, params, obs, text_ids, text_mask)["logits"])


def param_count(params) -> int:
  """Number of scalars in a params pytree (concrete or abstract)."""
  return sum(math.prod(x.shape) for x in jax.tree.leaves(params))
