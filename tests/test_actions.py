"""Action statistics, normalisation and 256-bin tokenisation."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from opd_jax import actions

HALF_BIN = 1.0 / actions.NUM_BINS  # half of the bin width 2 / 256


def _demo_actions(n=2000, seed=0):
  rng = np.random.default_rng(seed)
  a = rng.normal(0.0, [0.5, 0.3, 0.2, 0.05, 0.05, 0.1, 1.0], size=(n, 7)).astype(np.float32)
  a[:, 6] = np.where(rng.random(n) < 0.5, -1.0, 1.0)  # gripper open/close
  return a


GRIPPER_MASK = np.array([True] * 6 + [False])


def test_stats_are_percentiles():
  a = _demo_actions()
  s = actions.compute_stats(a, GRIPPER_MASK)
  np.testing.assert_allclose(s.q01, np.quantile(a, 0.01, axis=0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(s.q99, np.quantile(a, 0.99, axis=0), rtol=1e-5, atol=1e-6)
  assert s.q01.dtype == np.float32 and s.mask.tolist() == GRIPPER_MASK.tolist()
  assert actions.compute_stats(a).mask.all()  # default: normalise every dim


def test_mask_leaves_gripper_untouched():
  a = _demo_actions()
  s = actions.compute_stats(a, GRIPPER_MASK)
  a = a * 3.0  # make some values fall outside [q01, q99] so clipping would show
  a[:5, 6] = [-1.0, 1.0, 0.3, -0.7, 5.0]
  n = actions.normalize(s, a)
  np.testing.assert_array_equal(n[:, 6], a[:, 6])
  np.testing.assert_array_equal(actions.unnormalize(s, n)[:, 6], a[:, 6])
  assert n[:, :6].min() >= -1.0 and n[:, :6].max() <= 1.0
  assert n[:, :6].min() == -1.0 and n[:, :6].max() == 1.0  # clipped, not just in range


def test_normalize_maps_percentiles_to_unit_interval():
  s = actions.make_stats([0.0, -2.0], [4.0, 2.0])
  np.testing.assert_allclose(actions.normalize(s, np.array([[0.0, -2.0], [4.0, 2.0],
                                                            [1.0, 0.0]])),
                             [[-1.0, -1.0], [1.0, 1.0], [-0.5, 0.0]], atol=1e-6)


def test_normalize_unnormalize_round_trip_numpy_and_jax():
  a = _demo_actions()
  s = actions.compute_stats(a, GRIPPER_MASK)
  inside = np.clip(a, s.q01, s.q99).reshape(40, 50, 7)  # any leading shape
  back = actions.unnormalize(s, actions.normalize(s, inside))
  assert isinstance(back, np.ndarray) and back.shape == inside.shape
  np.testing.assert_allclose(back, inside, atol=1e-5)
  f = jax.jit(lambda s, x: actions.unnormalize(s, actions.normalize(s, x)))
  back_j = f(s, jnp.asarray(inside))
  assert isinstance(back_j, jax.Array)
  np.testing.assert_allclose(np.asarray(back_j), inside, atol=1e-5)


@pytest.mark.parametrize("xp", [np, jnp])
def test_tokens_round_trip_within_half_a_bin(xp):
  rng = np.random.default_rng(1)
  edges = np.linspace(-1.0, 1.0, actions.NUM_BINS + 1)
  x = np.concatenate([[-1.0, 1.0, 0.0, -1.0 + 1e-7, 1.0 - 1e-7], edges,
                      rng.uniform(-1.0, 1.0, 5000)]).astype(np.float32)
  tok = actions.to_tokens(xp.asarray(x))
  tok = np.asarray(tok)
  assert tok.dtype == np.int32
  assert tok.min() == 0 and tok.max() == actions.NUM_BINS - 1
  err = np.abs(np.asarray(actions.from_tokens(xp.asarray(tok))) - x)
  assert err.max() <= HALF_BIN + 1e-6, err.max()


def test_tokens_are_monotone_and_cover_all_bins():
  centres = actions.from_tokens(np.arange(actions.NUM_BINS))
  assert np.all(np.diff(centres) > 0)
  np.testing.assert_allclose(centres[[0, -1]], [-1 + HALF_BIN, 1 - HALF_BIN], atol=1e-7)
  np.testing.assert_array_equal(actions.to_tokens(centres), np.arange(actions.NUM_BINS))
  # Out-of-range normalised values are clipped to the end bins.
  np.testing.assert_array_equal(actions.to_tokens(np.array([-7.0, 7.0])), [0, 255])


def test_encode_decode_raw_actions():
  a = _demo_actions()
  s = actions.compute_stats(a, GRIPPER_MASK)
  inside = np.clip(a, s.q01, s.q99)
  back = actions.decode(s, actions.encode(s, inside))
  # Half a bin in normalised units is (q99 - q01) / 256 in raw units.
  tol = (s.q99 - s.q01)[:6] / actions.NUM_BINS + 1e-5
  assert np.all(np.abs(back - inside)[:, :6] <= tol)
  np.testing.assert_allclose(back[:, 6], inside[:, 6], atol=HALF_BIN + 1e-6)


def test_constant_dim_gives_no_nan():
  a = _demo_actions()
  a[:, 2] = 0.25
  s = actions.compute_stats(a)
  n = actions.normalize(s, a)
  assert np.all(np.isfinite(n))
  back = actions.decode(s, actions.encode(s, a))
  assert np.all(np.isfinite(back))
  np.testing.assert_allclose(back[:, 2], 0.25, atol=1e-5)


def test_json_round_trip():
  s = actions.compute_stats(_demo_actions(), GRIPPER_MASK)
  d = json.loads(json.dumps(s.to_dict()))
  s2 = actions.ActionStats.from_dict(d)
  np.testing.assert_array_equal(s2.q01, s.q01)
  np.testing.assert_array_equal(s2.q99, s.q99)
  np.testing.assert_array_equal(s2.mask, s.mask)


def test_errors_name_the_problem():
  s = actions.compute_stats(_demo_actions())
  with pytest.raises(ValueError, match=r"\[N, D\]"):
    actions.compute_stats(np.zeros(7))
  with pytest.raises(ValueError, match="non-finite"):
    actions.compute_stats(np.full((3, 2), np.nan))
  with pytest.raises(ValueError, match=r"\[\.\.\., 7\]"):
    actions.normalize(s, np.zeros((4, 6)))
  with pytest.raises(ValueError, match=r"\[\.\.\., 7\]"):
    actions.unnormalize(s, np.zeros(3))
  with pytest.raises(ValueError, match="mask"):
    actions.compute_stats(np.zeros((4, 7)), mask=[True] * 6)
  with pytest.raises(ValueError, match="q99 non-finite|q99 has non-finite"):
    actions.make_stats([0.0, 0.0], [1.0, np.inf])
  with pytest.raises(ValueError, match="q99 >= q01"):
    actions.make_stats([1.0], [0.0])
  with pytest.raises(ValueError, match="q99"):
    actions.ActionStats.from_dict({"q01": [0.0]})
  with pytest.raises(ValueError, match=r"\[0, 255\]"):
    actions.from_tokens(np.array([0, 256]))
