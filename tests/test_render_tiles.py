"""Tile culling (envs/render_tiles.py) renders exactly the pixels that testing every geom at
every pixel renders: colour, depth and segmentation, on the test scene and on a suite."""
import functools

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

import envs
from envs import render as R
from envs import render_tiles as tiles
from envs.core import BatchEnv
from tests.test_render import SCENE, look_at, posed_data

H = W = 64


def _directional(m):
  m.light_type[0] = mujoco.mjtLightType.mjLIGHT_DIRECTIONAL
  m.light_dir[0] = [0.3, -0.2, -0.93]   # oblique: long shadows across tiles
  return m


@pytest.fixture(scope="module")
def renderer():
  """``renderer(directional, tile, tile_k[, height, width])``: a jitted render of the test
  scene, made once per module for each set of arguments."""
  made = {}

  def get(directional: bool, tile: int, tile_k: int, height: int = H, width: int = W):
    key = (directional, tile, tile_k, height, width)
    if key not in made:
      m = mujoco.MjModel.from_xml_path(str(SCENE))
      if directional:
        _directional(m)
      rm = R.render_model(m, tile=tile, tile_k=tile_k)
      made[key] = jax.jit(functools.partial(R.render, rm, height=height, width=width,
                                            depth=True, segmentation=True))
    return made[key]
  return get


def _views(m, d):
  """Both MJCF cameras and two close-ups (many geoms in few tiles)."""
  views = [(d.cam_xpos[c], d.cam_xmat[c].reshape(3, 3), m.cam_fovy[c]) for c in range(m.ncam)]
  for target, eye in (((0.0, 0.0, 0.1), (0.8, 0.7, 0.9)), ((0.2, -0.1, 0.2), (0.5, -0.6, 0.4))):
    views.append((np.array(eye), look_at(np.array(eye), np.array(target)), 45.0))
  return views


def _same(a, b):
  """The same geom at every pixel; colour and depth to float rounding: the two paths
  evaluate the same intersection formulas in differently fused loops, and a last-bit
  difference in a near-tangent root grows (a packed depth moves in steps of
  2**(bits - 23), bits: of the geom index, see envs.render); colour by one level at most."""
  np.testing.assert_array_equal(np.asarray(a["segmentation"]), np.asarray(b["segmentation"]))
  diff = np.abs(np.asarray(a["rgb"], int) - np.asarray(b["rgb"], int))
  assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
  np.testing.assert_allclose(np.asarray(a["depth"]), np.asarray(b["depth"]), rtol=1e-4)


@pytest.mark.parametrize("directional", [True, False])
@pytest.mark.parametrize("tile,tile_k", [(8, 3), (16, 1), (32, 2)])
def test_tiled_equals_every_geom(renderer, directional, tile, tile_k):
  m = mujoco.MjModel.from_xml_path(str(SCENE))
  if directional:
    _directional(m)
  brute, tiled = renderer(directional, 0, 0), renderer(directional, tile, tile_k)
  for seed in (0, 1, 2, 5):
    d = posed_data(m, seed)
    for pos, mat, fovy in _views(m, d):
      args = (d.geom_xpos, d.geom_xmat, d.light_xpos[0], d.light_xdir[0], pos, mat, fovy)
      _same(brute(*args), tiled(*args))


def test_crowded_tiles_take_more_rounds(renderer):
  """One candidate per tile per round against a scene whose tiles hold several: the pair
  list overflows (checked) and the rounds still give every pixel."""
  m = mujoco.MjModel.from_xml_path(str(SCENE))
  rm = R.render_model(m)
  d = posed_data(m, 0)
  pos, mat, fovy = _views(m, d)[2]
  order = np.asarray(rm.order)
  dirs = tiles.to_tiles(R.camera_rays(jnp.asarray(mat, jnp.float32), fovy, H, W).reshape(-1, 3),
                        H, W, 32)
  pos32, mat32 = jnp.asarray(pos, jnp.float32), jnp.asarray(mat, jnp.float32)
  b = tiles.bounds(rm.geom_type[order], rm.geom_size[order],
                   jnp.asarray(d.geom_xpos[order], jnp.float32),
                   jnp.asarray(d.geom_xmat[order].reshape(-1, 3, 3), jnp.float32))
  cand = np.asarray(tiles.primary_candidates(pos32, mat32, tiles.tile_extents(fovy, H, W, 32), b))
  overflow = [(t, cand[:, a:b].sum(), cand.shape[0]) for t, a, b in rm.segments
              if b - a > 1 and cand[:, a:b].sum() > cand.shape[0]]
  assert overflow, "the view should list more pairs of some type than one per tile"
  args = (d.geom_xpos, d.geom_xmat, d.light_xpos[0], d.light_xdir[0], pos, mat, fovy)
  _same(renderer(False, 0, 0)(*args), renderer(False, 32, 1)(*args))


def test_tile_size_falls_back_when_it_does_not_divide(renderer):
  assert tiles.tile_size(64, 64, 16) == 16
  assert tiles.tile_size(48, 64, 16) == 16
  assert tiles.tile_size(60, 64, 16) == 0
  assert tiles.tile_size(64, 64, 0) == 0
  m = mujoco.MjModel.from_xml_path(str(SCENE))
  d = posed_data(m, 1)
  pos, mat, fovy = _views(m, d)[0]
  args = (d.geom_xpos, d.geom_xmat, d.light_xpos[0], d.light_xdir[0], pos, mat, fovy)
  _same(renderer(True, 0, 0, 60, 44)(*args), renderer(True, 16, 3, 60, 44)(*args))


def test_a_suite_renders_the_same_tiled():
  """libero_object's two cameras, batched, after the expert has moved the arm."""
  env = envs.make("libero_object", image_size=64)
  benv = BatchEnv(env)
  s = jax.jit(benv.reset)(jax.random.split(jax.random.PRNGKey(3), 4))
  step = jax.jit(lambda s: benv.step(s, jax.vmap(env.expert_action)(s)))
  for _ in range(25):
    s = step(s)
  assert env.render_model.tile > 0   # the suites render tiled by default
  out = {}
  for tile in (0, env.render_model.tile):
    rm = env.render_model.replace(tile=tile)
    fn = jax.jit(jax.vmap(lambda d, rm=rm: [
        R.render_camera(rm, d, c, height=64, width=64, depth=True, segmentation=True)
        for c in env._camera_ids.values()]))   # pylint: disable=protected-access
    out[tile] = fn(s.data)
  for a, b in zip(*out.values()):
    _same(a, b)
