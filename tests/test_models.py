"""Octo-style policy: attention rules, causality, shapes for every size, decoding, tokenizer."""
import functools
import os
import subprocess
import sys
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from opd_jax import models
from opd_jax.models import ModelConfig, octo
from opd_jax.models.layers import ImageStem
from opd_jax.models.text import tokenize

NANO2 = ModelConfig(size="nano", history=2, num_readouts=2)
NANO1 = ModelConfig(size="nano", dropout=0.5, value_head=True, gaussian_head=True)


# ---------------------------------------------------------------- attention mask rules
L, NO, R, T = 3, 4, 2, 2  # task tokens, obs tokens per step, readouts per step, history


def task(i):
  return i


def ob(t, j):
  return L + t * (NO + R) + j


def ro(t, r):
  return L + t * (NO + R) + NO + r


def test_attention_mask_follows_octo_rules():
  m = octo.attention_mask(L, NO, R, T)
  assert m.shape == (L + T * (NO + R),) * 2 and m.dtype == bool
  # Task tokens attend task tokens only.
  assert m[task(0), task(2)] and m[task(2), task(0)]
  assert not m[task(0), ob(0, 0)] and not m[task(1), ro(0, 0)] and not m[task(2), ob(1, 3)]
  # Observations: task and observations of the same or earlier steps, never readouts.
  assert m[ob(0, 1), task(0)] and m[ob(0, 1), ob(0, 3)] and m[ob(1, 0), ob(0, 2)]
  assert not m[ob(0, 0), ob(1, 0)]
  for t in range(T):
    for j in range(NO):
      for t2 in range(T):
        for r in range(R):
          assert not m[ob(t, j), ro(t2, r)]
  # Readouts of step t: task, observations of steps <= t, readouts of step t only.
  assert m[ro(0, 0), task(1)] and m[ro(0, 1), ob(0, 2)] and m[ro(1, 0), ob(0, 0)]
  assert m[ro(1, 1), ob(1, 3)]
  assert not m[ro(0, 0), ob(1, 0)] and not m[ro(0, 1), ob(1, 3)]
  assert m[ro(0, 0), ro(0, 1)] and m[ro(1, 1), ro(1, 0)] and m[ro(1, 1), ro(1, 1)]
  assert not m[ro(0, 0), ro(1, 0)] and not m[ro(1, 0), ro(0, 1)]
  # Nothing but same-step readouts attends a readout: its column holds only those rows.
  col = m[:, ro(1, 0)]
  assert set(np.flatnonzero(col)) == {ro(1, 0), ro(1, 1)}


def test_padding_is_never_attended():
  text_mask = jnp.array([[True, True, False]])
  step_mask = jnp.array([[False, True]])  # step 0 is padding (before the episode start)
  keys = octo.key_padding_mask(text_mask, step_mask, NO, R)
  m = np.asarray(octo.full_mask(octo.attention_mask(L, NO, R, T), keys))[0]
  rule = octo.attention_mask(L, NO, R, T)
  padded = [task(2)] + [ob(0, j) for j in range(NO)] + [ro(0, r) for r in range(R)]
  for k in padded:
    others = [q for q in range(m.shape[0]) if q != k]
    assert not m[others, k].any(), k
  # Valid pairs keep their rule; every row attends something (no empty softmax).
  assert m[ro(1, 0), ob(1, 2)] and m[ob(1, 0), task(1)] and m[task(0), task(1)]
  valid = [q for q in range(m.shape[0]) if q not in padded]
  np.testing.assert_array_equal(m[np.ix_(valid, valid)], rule[np.ix_(valid, valid)])
  assert m.any(axis=1).all()


# ---------------------------------------------------------------- end-to-end behaviour
def _obs(cfg, b, seed):
  rng = np.random.default_rng(seed)
  o = {c: jnp.asarray(rng.integers(0, 256, (b, cfg.history, cfg.image_size, cfg.image_size, 3),
                                   dtype=np.uint8)) for c in cfg.cameras}
  o["proprio"] = jnp.asarray(rng.normal(size=(b, cfg.history, cfg.proprio_dim)), jnp.float32)
  return o


def _text(b, cfg, text="put the black bowl on the plate"):
  ids, mask = tokenize([text] * b, cfg.text_len, cfg.vocab_size)
  return jnp.asarray(ids), jnp.asarray(mask)


@pytest.fixture(scope="module")
def nano1():
  graphdef, params = models.make_policy(NANO1, 0)
  fwd = jax.jit(functools.partial(models.apply, graphdef), static_argnames="deterministic")
  return graphdef, params, fwd


@pytest.fixture(scope="module")
def nano2():
  graphdef, params = models.make_policy(NANO2, 0)
  embed = jax.jit(lambda p, o, i, m: nnx.merge(graphdef, p).embed(o, i, m))
  fwd = jax.jit(functools.partial(models.apply, graphdef))
  return graphdef, params, embed, fwd


def _perturb_step(obs, t, seed=9):
  rng = np.random.default_rng(seed)
  out = dict(obs)
  for k, v in obs.items():
    if k == "timestep_pad_mask":
      continue
    noise = rng.integers(0, 256, v[:, t].shape, dtype=np.uint8) if v.dtype == jnp.uint8 \
        else rng.normal(size=v[:, t].shape).astype(np.float32)
    out[k] = v.at[:, t].set(jnp.asarray(noise))
  return out


def test_future_observation_cannot_change_the_past(nano2):
  _, params, embed, fwd = nano2
  obs, (ids, mask) = _obs(NANO2, 2, 0), _text(2, NANO2)
  base = embed(params, obs, ids, mask)
  later = embed(params, _perturb_step(obs, 1), ids, mask)
  np.testing.assert_allclose(later["task"], base["task"], atol=1e-6)
  np.testing.assert_allclose(later["obs"][:, 0], base["obs"][:, 0], atol=1e-6)
  np.testing.assert_allclose(later["readouts"][:, 0], base["readouts"][:, 0], atol=1e-6)
  # ... while the present does change: step 1 and the logits (which read step 1) move.
  assert np.abs(later["readouts"][:, 1] - base["readouts"][:, 1]).max() > 1e-3
  assert np.abs(fwd(params, _perturb_step(obs, 1), ids, mask)["logits"]
                - fwd(params, obs, ids, mask)["logits"]).max() > 1e-3
  # The past is visible to the last step's readouts, hence to the logits.
  earlier = fwd(params, _perturb_step(obs, 0), ids, mask)["logits"]
  assert np.abs(earlier - fwd(params, obs, ids, mask)["logits"]).max() > 1e-3


def test_readouts_of_one_step_do_not_see_other_readouts(nano2):
  graphdef, params, embed, _ = nano2
  obs, (ids, mask) = _obs(NANO2, 1, 1), _text(1, NANO2)
  base = embed(params, obs, ids, mask)
  # Changing one step's readout inputs (position embeddings) touches only that step's readouts.
  for t in (0, 1):
    model = nnx.merge(graphdef, params, copy=True)
    noise = jax.random.normal(jax.random.key(t), model.readout_pos.shape[1:])
    model.readout_pos[...] = model.readout_pos[...].at[t].add(noise)
    moved = embed(nnx.state(model, nnx.Param), obs, ids, mask)
    np.testing.assert_allclose(moved["readouts"][:, 1 - t], base["readouts"][:, 1 - t],
                               atol=1e-6)
    np.testing.assert_allclose(moved["obs"], base["obs"], atol=1e-6)
    assert np.abs(moved["readouts"][:, t] - base["readouts"][:, t]).max() > 1e-3


def test_text_changes_logits_but_padding_does_not(nano2):
  _, params, _, fwd = nano2
  obs = _obs(NANO2, 2, 2)
  ids, mask = _text(2, NANO2)
  a = fwd(params, obs, ids, mask)["logits"]
  b = fwd(params, obs, *_text(2, NANO2, "open the top drawer"))["logits"]
  assert np.abs(a - b).max() > 1e-3
  junk = jnp.where(mask, ids, 77)  # different ids, all at padded positions
  np.testing.assert_allclose(fwd(params, obs, junk, mask)["logits"], a, atol=1e-5)


def test_padded_timestep_is_ignored(nano2):
  _, params, _, fwd = nano2
  obs, (ids, mask) = _obs(NANO2, 2, 3), _text(2, NANO2)
  obs["timestep_pad_mask"] = jnp.array([[False, True]] * 2)
  a = fwd(params, obs, ids, mask)["logits"]
  b = fwd(params, _perturb_step(obs, 0), ids, mask)["logits"]
  np.testing.assert_allclose(a, b, atol=1e-5)
  obs["timestep_pad_mask"] = jnp.ones((2, 2), bool)  # and it matters when not padded
  assert np.abs(fwd(params, obs, ids, mask)["logits"] - a).max() > 1e-3


# ---------------------------------------------------------------- shapes and sizes
@pytest.mark.parametrize("size", ["nano", "tiny", "small", "base"])
def test_logits_shape_every_size(size, nano1):
  cfg = ModelConfig(size=size, value_head=True, gaussian_head=True)
  b = 2
  obs, (ids, mask) = _obs(cfg, b, 0), _text(b, cfg)
  if size == "nano":
    _, params, fwd = nano1
    out = fwd(params, obs, ids, mask)
    assert np.all(np.isfinite(out["logits"]))
    assert np.all(np.abs(out["mean"]) < 1)
  else:
    graphdef, params = models.abstract_policy(cfg)
    out = jax.eval_shape(functools.partial(models.apply, graphdef), params, obs, ids, mask)
  assert out["logits"].shape == (b, 8, 7, 256) and out["logits"].dtype == jnp.float32
  assert out["value"].shape == (b,)
  assert out["mean"].shape == out["log_std"].shape == (b, 8, 7)


def test_param_counts():
  counts = {s: models.param_count(models.abstract_policy(ModelConfig(size=s))[1])
            for s in ["nano", "tiny", "small", "base"]}
  assert counts["nano"] < counts["tiny"] < counts["small"] < counts["base"]
  assert 20e6 < counts["small"] < 32e6, counts  # Octo-small: 27M (+ our 5.5M token head)
  assert 85e6 < counts["base"] < 110e6, counts
  graphdef, params = models.make_policy(ModelConfig(size="nano"), 0)
  assert models.param_count(params) == counts["nano"]


@pytest.mark.parametrize("size,tokens", [(64, 16), (128, 64)])
def test_patch_tokens_per_camera(size, tokens):
  cfg = ModelConfig(size="tiny", image_size=size)
  assert cfg.patches_per_camera == tokens
  stem = nnx.eval_shape(lambda: ImageStem(cfg.conv_channels, cfg.width, rngs=nnx.Rngs(0)))
  out = nnx.eval_shape(lambda s, x: s(x), stem,
                       jax.ShapeDtypeStruct((2, size, size, 3), jnp.uint8))
  assert out.shape == (2, tokens, cfg.width)
  graphdef, params = models.abstract_policy(cfg)
  emb = jax.eval_shape(lambda p, o, i, m: nnx.merge(graphdef, p).embed(o, i, m),
                       params, _obs(cfg, 1, 0), *_text(1, cfg))
  assert emb["obs"].shape == (1, 1, 2 * tokens + 1, cfg.width)


# ---------------------------------------------------------------- decoding
def test_sample_and_greedy_jit(nano2):
  _, params, _, fwd = nano2
  graphdef = nnx.graphdef(octo.OctoPolicy(NANO2, rngs=nnx.Rngs(0)))
  obs, (ids, mask) = _obs(NANO2, 2, 5), _text(2, NANO2)
  sample = jax.jit(functools.partial(models.sample, graphdef))
  greedy = jax.jit(functools.partial(models.greedy, graphdef))
  logits = fwd(params, obs, ids, mask)["logits"]
  g = greedy(params, obs, ids, mask)
  assert g.shape == (2, 8, 7) and g.dtype == jnp.int32
  np.testing.assert_array_equal(g, np.argmax(logits, -1))
  s1 = sample(params, obs, ids, mask, jax.random.key(0), 1.0)
  s2 = sample(params, obs, ids, mask, jax.random.key(1), 1.0)
  assert s1.shape == (2, 8, 7) and s1.dtype == jnp.int32
  assert (s1 >= 0).all() and (s1 < 256).all() and (s1 != s2).any()
  np.testing.assert_array_equal(sample(params, obs, ids, mask, jax.random.key(0), 0.0), g)


def test_sample_tokens_follows_tempered_softmax():
  logits = jnp.log(jnp.array([0.6, 0.3, 0.1]))[None, None, None]  # [1, 1, 1, 3]
  logits = jnp.broadcast_to(logits, (1, 20000, 1, 3))
  for temp in (1.0, 0.5):
    tok = models.sample_tokens(logits, jax.random.key(3), temp)
    freq = np.bincount(np.asarray(tok).ravel(), minlength=3) / tok.size
    want = np.array([0.6, 0.3, 0.1]) ** (1 / temp)
    np.testing.assert_allclose(freq, want / want.sum(), atol=0.015)
  with pytest.raises(ValueError, match="temperature"):
    models.sample_tokens(logits, jax.random.key(0), -1.0)


def test_token_log_probs_matches_hand_computed():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
  tokens = rng.integers(0, 5, (2, 3, 4))
  for temp in (1.0, 0.7):
    z = logits / temp
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    want = np.take_along_axis(logp, tokens[..., None], -1)[..., 0]
    got = models.token_log_probs(jnp.asarray(logits), jnp.asarray(tokens), temp)
    assert got.shape == (2, 3, 4)
    np.testing.assert_allclose(got, want, atol=1e-5)


# ---------------------------------------------------------------- config and plumbing
def test_apply_is_pure_and_dropout_needs_a_key(nano1):
  graphdef, params, f = nano1
  cfg = NANO1
  variables = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nnx.Variable))
  assert variables and all(isinstance(v, nnx.Param) for v in variables)
  obs, (ids, mask) = _obs(cfg, 2, 0), _text(2, cfg)
  a, b = f(params, obs, ids, mask)["logits"], f(params, obs, ids, mask)["logits"]
  np.testing.assert_array_equal(a, b)
  d = f(params, obs, ids, mask, deterministic=False, dropout_key=jax.random.key(1))["logits"]
  assert np.abs(d - a).max() > 1e-4
  with pytest.raises(ValueError, match="dropout"):
    models.apply(graphdef, params, obs, ids, mask, deterministic=False)


def test_config_validation_and_round_trip():
  cfg = ModelConfig(size="small", history=2, cameras=["agentview"])
  assert (cfg.num_layers, cfg.width, cfg.num_heads, cfg.mlp_dim) == (12, 384, 6, 1536)
  assert cfg.conv_channels == (32, 96, 192, 384)
  assert ModelConfig.from_dict(cfg.to_dict()) == cfg
  assert ModelConfig(size="tiny", num_layers=4).num_layers == 4
  custom = ModelConfig(size="custom", num_layers=3, width=96, num_heads=4, mlp_dim=256)
  assert custom.head_dim == 24
  for kwargs, field in [(dict(size="huge"), "size"),
                        (dict(size="custom", width=64), "num_layers"),
                        (dict(size="tiny", num_heads=5), "num_heads"),
                        (dict(history=3), "history"),
                        (dict(image_size=72), "image_size"),
                        (dict(cameras=("proprio",)), "cameras"),
                        (dict(chunk=0), "chunk")]:
    with pytest.raises(ValueError, match=field):
      ModelConfig(**kwargs)
  with pytest.raises(ValueError, match="unknown"):
    ModelConfig.from_dict({"size": "nano", "depth": 3})


def test_bad_inputs_name_the_problem(nano2):
  graphdef, params, _, _ = nano2
  obs, (ids, mask) = _obs(NANO2, 1, 0), _text(1, NANO2)
  bad = dict(obs, wrist=obs["wrist"].astype(jnp.float32))
  with pytest.raises(ValueError, match="wrist"):
    jax.eval_shape(functools.partial(models.apply, graphdef), params, bad, ids, mask)
  with pytest.raises(ValueError, match="agentview"):
    jax.eval_shape(functools.partial(models.apply, graphdef), params,
                   {k: v for k, v in obs.items() if k != "agentview"}, ids, mask)
  with pytest.raises(ValueError, match="proprio"):
    jax.eval_shape(functools.partial(models.apply, graphdef), params,
                   dict(obs, proprio=obs["proprio"][:, :1]), ids, mask)


# ---------------------------------------------------------------- tokenizer
def test_tokenizer_is_stable_and_hash_based():
  ids, mask = tokenize(["Pick up the BOWL.", ""], max_len=6)
  assert ids.shape == mask.shape == (2, 6) and ids.dtype == np.int32
  expected = [zlib.crc32(w.encode()) % 4095 + 1 for w in ["pick", "up", "the", "bowl"]]
  assert ids[0, :4].tolist() == expected and ids[0, 3] == 2382  # crc32("bowl") % 4095 + 1
  assert mask[0].tolist() == [True] * 4 + [False] * 2 and not mask[1].any()
  assert (ids[~mask] == 0).all() and (ids[mask] >= 1).all()
  assert tokenize(["a b c d e"], max_len=3)[0].tolist() == \
      [[zlib.crc32(w) % 4095 + 1 for w in (b"a", b"b", b"c")]]
  with pytest.raises(TypeError, match="list"):
    tokenize("pick up the bowl")


def test_tokenizer_same_ids_in_another_process():
  code = ("from opd_jax.models.text import tokenize;"
          "print(tokenize(['put the bowl on the plate'])[0][0].tolist())")
  env = dict(os.environ, PYTHONHASHSEED="12345")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert out.stdout.strip() == str(tokenize(["put the bowl on the plate"])[0][0].tolist())


def test_pose_rotvec_features_are_continuous_across_the_pi_flip():
  from opd_jax.models.octo import proprio_feature_dim, proprio_features
  from scipy.spatial.transform import Rotation
  rng = np.random.default_rng(0)
  r = rng.normal(size=(2, 8, 3)) * 1.5
  r[0, 0] = 0.0
  r[0, 1] = [1e-6, 0, 0]
  p = np.concatenate([np.zeros((2, 8, 3)), r, np.zeros((2, 8, 2))], -1).astype(np.float32)
  got = np.asarray(proprio_features(jnp.asarray(p), "pose_rotvec"))[..., 3:9]
  want = Rotation.from_rotvec(r.reshape(-1, 3)).as_matrix()[:, :, :2].reshape(2, 8, 6)
  np.testing.assert_allclose(got, want, atol=1e-5)
  assert proprio_feature_dim(models.ModelConfig(size="nano", proprio_encoding="pose_rotvec")) == 11
  assert proprio_feature_dim(models.ModelConfig(size="nano")) == 8
  # The gripper pointing down: axis-angle (+pi - e, 0, 0) and (-(pi - e'), 0, 0) are nearly the
  # same rotation; the raw vectors are 2 pi apart, the features are not.
  e = 1e-3
  p = np.array([[0.5, 0.0, 0.2, np.pi - e, 0, 0, 0.04, 0.04],
                [0.5, 0.0, 0.2, -(np.pi - e), 0, 0, 0.04, 0.04]], np.float32)
  f = np.asarray(proprio_features(jnp.asarray(p), "pose_rotvec"))
  assert f.shape == (2, 11)
  assert np.abs(f[0] - f[1]).max() < 5e-3
  np.testing.assert_array_equal(f[:, :3], p[:, :3])
  np.testing.assert_array_equal(f[:, -2:], p[:, -2:])
  with pytest.raises(ValueError, match="proprio_encoding"):
    models.ModelConfig(size="nano", proprio_encoding="quaternion")


def test_token_decoder_head_fits_per_sample_targets():
  """action_head_hidden > 0: the shared token decoder gives [B, K, D, V] logits and can
  memorise different bins for every token of two different observations (a head that ignored
  the observation, or tied tokens together, could not)."""
  cfg = ModelConfig(size="nano", action_head_hidden=16)
  assert ModelConfig.from_dict(cfg.to_dict()) == cfg
  old = {k: v for k, v in ModelConfig(size="nano").to_dict().items() if k != "action_head_hidden"}
  assert ModelConfig.from_dict(old).action_head_hidden == 0  # checkpoints before the field
  for bad in (-1, True):
    with pytest.raises(ValueError, match="action_head_hidden"):
      ModelConfig(size="nano", action_head_hidden=bad)
  graphdef, params = models.make_policy(cfg, 0)
  linear = models.param_count(models.make_policy(ModelConfig(size="nano"), 0)[1])
  assert models.param_count(params) < linear  # 64 x 56 x 16 + 16 x 256 << 64 x 56 x 256
  obs, (ids, mask) = _obs(cfg, 2, 3), _text(2, cfg)
  targets = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 8, 7)))
  tx = optax.adam(3e-3)

  @jax.jit
  def step(p, s):
    def loss(p):
      logits = models.apply(graphdef, p, obs, ids, mask)["logits"]
      return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean(), logits
    (l, logits), g = jax.value_and_grad(loss, has_aux=True)(p)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s, l, logits

  s = tx.init(params)
  for _ in range(150):
    params, s, l, logits = step(params, s)
  assert logits.shape == (2, 8, 7, 256)
  acc = float((jnp.argmax(logits, -1) == targets).mean())
  assert acc > 0.95, (acc, float(l))
