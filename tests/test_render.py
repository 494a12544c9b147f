"""Tests for envs/render.py against MuJoCo's own ray caster and visualiser."""
import os

if "--xla_cpu_use_fusion_emitters=false" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_cpu_use_fusion_emitters=false").strip()

import functools  # noqa: E402
import pathlib  # noqa: E402
from typing import NamedTuple  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

try:
  from envs import render as R  # noqa: E402
except ImportError:  # the rest of `envs` (envs.core) is not importable yet
  import importlib.util
  _spec = importlib.util.spec_from_file_location(
      "envs_render", pathlib.Path(__file__).parents[1] / "envs" / "render.py")
  R = importlib.util.module_from_spec(_spec)
  _spec.loader.exec_module(R)

SCENE = pathlib.Path(__file__).parent / "assets" / "render_scene.xml"
GROUPS = np.array([1, 1, 1, 0, 0, 0], np.uint8)  # mj_ray mask for groups 0-2
H = W = 64
EYE_OFFSET = (0.0, 0.6, 0.45)  # shadow tests: camera position relative to target


@pytest.fixture(scope="module")
def model():
  return mujoco.MjModel.from_xml_path(str(SCENE))


@pytest.fixture(scope="module")
def rm(model):
  return R.render_model(model)


@pytest.fixture(scope="module")
def render64(rm):
  return jax.jit(functools.partial(R.render, rm, height=H, width=W, depth=True,
                                   segmentation=True))


def gid(m, name):
  return mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, name)


def posed_data(m, seed):
  """MjData at the default pose (seed 0) or a random pose of the free bodies."""
  d = mujoco.MjData(m)
  if seed:
    rng = np.random.default_rng(seed)
    for j in range(m.njnt):
      a = m.jnt_qposadr[j]
      if m.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE:
        d.qpos[a:a + 3] = rng.uniform([-0.45, -0.45, 0.05], [0.45, 0.45, 0.5])
        q = rng.normal(size=4)
        d.qpos[a + 3:a + 7] = q / np.linalg.norm(q)
      elif m.jnt_type[j] == mujoco.mjtJoint.mjJNT_HINGE:
        d.qpos[a] = rng.uniform(-np.pi, np.pi)
  mujoco.mj_forward(m, d)
  return d


def np_rays(cam_mat, fovy, h, w):
  """Independent reference: unit world rays through pixel centres, row 0 top."""
  th = np.tan(np.deg2rad(fovy) / 2)
  r, c = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  x = ((c + 0.5) / w * 2 - 1) * th * w / h
  y = (1 - (r + 0.5) / h * 2) * th
  d = np.stack([x, y, -np.ones_like(x)], -1)
  d /= np.linalg.norm(d, axis=-1, keepdims=True)
  return d @ np.asarray(cam_mat, np.float64).reshape(3, 3).T


def look_at(eye, target):
  """cam_xmat for a camera at eye looking at target (-z forward, +y up-ish)."""
  z = np.asarray(eye, float) - target
  z /= np.linalg.norm(z)
  x = np.cross([0.0, 0.0, 1.0], z)
  x /= np.linalg.norm(x)
  return np.stack([x, np.cross(z, x), z], axis=1)


def render_view(render_fn, d, cam_pos, cam_mat, fovy):
  return jax.device_get(render_fn(d.geom_xpos, d.geom_xmat, d.light_xpos[0],
                                  d.light_xdir[0], cam_pos, cam_mat, fovy))


def mj_ray_image(m, d, cam_pos, dirs):
  geom = np.zeros(1, np.int32)
  ids = np.empty(dirs.shape[:2], np.int32)
  dist = np.empty(dirs.shape[:2])
  for idx in np.ndindex(*dirs.shape[:2]):
    dist[idx] = mujoco.mj_ray(m, d, cam_pos, dirs[idx], GROUPS, 1, -1, geom)
    ids[idx] = geom[0]
  return ids, dist


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("cam", [0, 1])
def test_matches_mj_ray(model, render64, seed, cam):
  m = model
  d = posed_data(m, seed)
  out = render_view(render64, d, d.cam_xpos[cam], d.cam_xmat[cam],
                    m.cam_fovy[cam])
  ids, dist = mj_ray_image(m, d, d.cam_xpos[cam],
                           np_rays(d.cam_xmat[cam], m.cam_fovy[cam], H, W))
  seg, depth = out["segmentation"], out["depth"]
  assert seg.dtype == np.int32 and depth.dtype == np.float32
  same = seg == ids
  assert same.mean() >= 0.99, f"geom agreement {same.mean():.4f}"
  # stricter, per geom: float32 vs float64 may flip a few silhouette pixels
  for g in np.unique(ids):
    n_ref, n = (ids == g).sum(), (seg == g).sum()
    assert abs(n - n_ref) <= max(2, 0.02 * n_ref), (g, n, n_ref)
  hit = same & (ids >= 0)
  err = np.abs(depth[hit] - dist[hit]) / dist[hit]
  assert (err < 1e-3).mean() >= 0.99 and np.median(err) < 1e-5
  assert np.all(depth[seg < 0] == R.NO_HIT_DEPTH)
  # the view is non-trivial: many geoms, and nothing from hidden groups
  assert len(np.unique(seg[seg >= 0])) >= 6
  assert gid(m, "hidden_g3") not in seg and gid(m, "hidden_a0") not in seg
  if seed == 0 and cam == 0:  # fixed camera sees the horizon and the bounded table
    assert (seg < 0).any() and gid(m, "table") in seg


def test_plane_one_sided_and_bounded(model, render64):
  m, d = model, posed_data(model, 0)
  table = gid(m, "table")
  below = d.geom_xpos[table] - [0, 0, 0.1]
  up = np.diag([1.0, -1.0, -1.0])  # camera -z axis points to world +z
  out = render_view(render64, d, below, up, 20.0)
  assert table not in out["segmentation"]  # back side of a plane is not hit
  ids, _ = mj_ray_image(m, d, below, np_rays(up, 20.0, H, W))
  assert (ids == out["segmentation"]).mean() >= 0.99
  # a bounded plane ends at size[0], size[1]: just beyond its corner, the
  # floor (infinite plane) is seen from above
  corner = d.geom_xpos[table] + d.geom_xmat[table].reshape(3, 3) @ [0.32, 0.22, 0]
  out = render_view(render64, d, corner + [0, 0, 0.05], np.eye(3), 2.0)
  assert np.all(out["segmentation"][28:36, 28:36] == gid(m, "floor"))


def test_segmentation_and_depth_of_known_pixel(model, render64):
  m, d = model, posed_data(model, 0)
  sphere = gid(m, "sphere")
  eye = d.geom_xpos[sphere] + [0.0, 0.0, 1.0]
  out = render_view(render64, d, eye, np.eye(3), 30.0)   # looking straight down
  assert np.all(out["segmentation"][30:34, 30:34] == sphere)
  centre_depth = out["depth"][31:33, 31:33]
  np.testing.assert_allclose(centre_depth, 1.0 - m.geom_size[sphere, 0], atol=2e-3)


def test_camera_conventions(model, render64):
  """Row 0 is the top (+y of the camera), column 0 the left (-x)."""
  m, d = model, posed_data(model, 0)
  sphere = gid(m, "sphere")
  c = d.geom_xpos[sphere]
  for dx, dy in ((0.3, 0.0), (0.0, -0.3)):
    eye = c + [dx, dy, 1.0]          # sphere appears to the left / at the top
    seg = render_view(render64, d, eye, np.eye(3), 60.0)["segmentation"]
    rr, cc = np.nonzero(seg == sphere)
    assert rr.size > 20
    if dx:
      assert cc.max() < 28 and abs(rr.mean() - 31.5) < 1
    else:
      assert rr.max() < 28 and abs(cc.mean() - 31.5) < 1


def _shadow_pair(m, d, render_fn, light_dir_to):
  """Renders a floor point shadowed by `occluder` and an unshadowed one."""
  occ = d.geom_xpos[gid(m, "occluder")]
  to_light = light_dir_to(occ)
  s = occ - to_light * occ[2] / to_light[2]      # shadow centre on the floor
  s2 = s + [0.0, -0.45, 0.0]
  geom = np.zeros(1, np.int32)
  pix = []
  for p, blocked in ((s, True), (s2, False)):
    # the test set-up itself is checked with mj_ray
    hit = mujoco.mj_ray(m, d, p + [0, 0, 1e-6], to_light, GROUPS, 1, -1, geom)
    assert (hit >= 0 and geom[0] == gid(m, "occluder")) == blocked
    eye = p + np.array(EYE_OFFSET)
    out = render_view(render_fn, d, eye, look_at(eye, p), 3.0)
    assert np.all(out["segmentation"][28:36, 28:36] == gid(m, "floor"))
    pix.append(out["rgb"][28:36, 28:36].reshape(-1, 3).astype(float).mean(0))
  return pix


def test_shadow_point_light(model, rm, render64):
  m, d = model, posed_data(model, 0)
  assert not rm.light_directional   # a spot light is treated as a point light
  dark, lit = _shadow_pair(m, d, render64,
                           lambda p: (d.light_xpos[0] - p) / np.linalg.norm(
                               d.light_xpos[0] - p))
  assert dark.sum() < 0.6 * lit.sum()
  # in shadow: ambient + headlight only
  floor = np.asarray(rm.geom_rgb[gid(m, "floor")])
  eye_dir = np.array(EYE_OFFSET) / np.linalg.norm(EYE_OFFSET)
  expect = floor * (np.asarray(rm.ambient) +
                    np.asarray(rm.headlight_diffuse) * eye_dir[2]) * 255
  np.testing.assert_allclose(dark, expect, atol=1.5)


def test_shadow_directional_light(model):
  m = mujoco.MjModel.from_xml_path(str(SCENE))
  m.light_type[0] = mujoco.mjtLightType.mjLIGHT_DIRECTIONAL
  rm_dir = R.render_model(m)
  assert rm_dir.light_directional
  fn = jax.jit(functools.partial(R.render, rm_dir, height=H, width=W,
                                 segmentation=True))
  d = posed_data(m, 0)
  dark, lit = _shadow_pair(m, d, fn, lambda p: -d.light_xdir[0])
  assert dark.sum() < 0.6 * lit.sum()


class Frame(NamedTuple):
  geom_xpos: np.ndarray
  geom_xmat: np.ndarray
  cam_xpos: np.ndarray
  cam_xmat: np.ndarray
  light_xpos: np.ndarray
  light_xdir: np.ndarray


def frame(d):
  """The fields render_camera reads, from an MjData (flat [n, 9] matrices)."""
  return Frame(*(np.array(getattr(d, f)) for f in Frame._fields))


@pytest.mark.parametrize("size", [64, 128, 224])
def test_shapes_and_dtypes(model, rm, size):
  d = posed_data(model, 1)
  fn = jax.jit(functools.partial(R.render_camera, rm, cam_id=1, height=size,
                                 width=size, depth=True, segmentation=True))
  out = jax.device_get(fn(frame(d)))
  assert out["rgb"].shape == (size, size, 3) and out["rgb"].dtype == np.uint8
  assert out["depth"].shape == (size, size) and out["depth"].dtype == np.float32
  assert out["segmentation"].shape == (size, size)
  assert out["segmentation"].dtype == np.int32
  assert out["rgb"].std() > 10   # not a blank image


def test_rgb_only_and_non_square(model, rm):
  d = posed_data(model, 0)
  out = jax.jit(lambda f: R.render_camera(rm, f, 0, height=48, width=80))(frame(d))
  assert set(out) == {"rgb"} and out["rgb"].shape == (48, 80, 3)


def test_jit_vmap_mjx_batch(model, rm, render64):
  from mujoco import mjx  # pylint: disable=import-outside-toplevel
  m = model
  mc = mujoco.MjModel.from_xml_path(str(SCENE))   # MJX has no ellipsoid-box
  mc.opt.disableflags |= mujoco.mjtDisableBit.mjDSBL_CONTACT  # collider
  datas = [posed_data(mc, s) for s in (0, 3, 4)]
  batch = jax.tree.map(lambda *x: jnp.stack(x),
                       *[mjx.put_data(mc, d) for d in datas])
  fn = jax.jit(jax.vmap(lambda dd: R.render_camera(rm, dd, 0, height=H,
                                                   width=W)))
  rgb = np.asarray(fn(batch)["rgb"])
  assert rgb.shape == (3, H, W, 3) and rgb.dtype == np.uint8
  for i, d in enumerate(datas):  # mjx.Data has no light fields: body fallback
    ref = render_view(render64, d, d.cam_xpos[0], d.cam_xmat[0],
                      m.cam_fovy[0])["rgb"]
    close = np.abs(rgb[i].astype(int) - ref).max(-1) <= 1
    assert close.mean() > 0.99
  assert not np.array_equal(rgb[0], rgb[1])


def test_visibility_and_colours_match_mjv(model, rm):
  m = model
  d = posed_data(m, 0)
  scn = mujoco.MjvScene(m, maxgeom=1000)
  mujoco.mjv_updateScene(m, d, mujoco.MjvOption(), None, mujoco.MjvCamera(),
                         mujoco.mjtCatBit.mjCAT_ALL, scn)
  vis = {g.objid: np.array(g.rgba[:3]) for g in scn.geoms[:scn.ngeom]
         if g.objtype == mujoco.mjtObj.mjOBJ_GEOM}
  assert set(rm.order) == set(vis)
  assert np.asarray(rm.geom_visible).sum() == len(vis)
  for i, rgb in vis.items():
    np.testing.assert_allclose(np.asarray(rm.geom_rgb[i]), rgb, atol=1e-6)
  # material colour used when the geom keeps the default rgba; rgba wins else
  np.testing.assert_allclose(rm.geom_rgb[gid(m, "floor")], m.mat_rgba[0, :3])
  np.testing.assert_allclose(rm.geom_rgb[gid(m, "table")], [0.7, 0.5, 0.3])
  # the group set is a parameter
  rm3 = R.render_model(m, geom_groups=(0, 1, 2, 3))
  assert gid(m, "hidden_g3") in rm3.order and gid(m, "hidden_g3") not in rm.order
  assert gid(m, "hidden_a0") not in rm3.order
  assert gid(m, "s_cyl") not in R.render_model(m, geom_groups=(0, 2)).order


def test_rejects_mesh_geoms():
  xml = """<mujoco><asset><mesh name="tet" vertex="0 0 0 1 0 0 0 1 0 0 0 1"/>
  </asset><worldbody><geom type="mesh" mesh="tet" group="{g}"/>
  <geom type="sphere" size="0.1"/></worldbody></mujoco>"""
  with pytest.raises(ValueError, match="mesh"):
    R.render_model(mujoco.MjModel.from_xml_string(xml.format(g=0)))
  rm = R.render_model(mujoco.MjModel.from_xml_string(xml.format(g=3)))
  assert rm.order == (1,)


def test_no_light_and_shadows_off(model):
  m0 = mujoco.MjModel.from_xml_string(
      '<mujoco><worldbody><camera pos="0 0 1"/><geom type="sphere" size="0.2"'
      ' rgba="1 0 0 1"/></worldbody></mujoco>')
  rm0 = R.render_model(m0)
  assert not rm0.shadows
  d0 = mujoco.MjData(m0)
  mujoco.mj_forward(m0, d0)
  out = R.render_camera(rm0, frame(d0), 0, height=16, width=16)
  centre = out["rgb"][8, 8].astype(float)   # ambient + headlight only
  expect = 255 * (np.asarray(rm0.ambient) + np.asarray(rm0.headlight_diffuse))
  np.testing.assert_allclose(centre, expect * [1, 0, 0], atol=4)
  assert not R.render_model(model, shadows=False).shadows


def test_suite_observes_depth_and_segmentation_on_request():
  import envs  # pylint: disable=import-outside-toplevel
  from mujoco import mjx  # pylint: disable=import-outside-toplevel
  env = envs.make("libero_spatial", image_size=16, depth=True, segmentation=True)
  d = mujoco.MjData(env.mj_model)
  mujoco.mj_forward(env.mj_model, d)
  obs = jax.jit(env.observe)(mjx.put_data(env.mj_model, d), jnp.int32(0))
  table = [i for i in range(env.mj_model.ngeom)
           if env.mj_model.body(env.mj_model.geom_bodyid[i]).name == "table"]
  assert table
  for cam in ("agentview", "wrist"):
    rgb, depth, seg = obs[cam], obs[f"{cam}_depth"], obs[f"{cam}_segmentation"]
    assert rgb.shape == (16, 16, 3) and rgb.dtype == jnp.uint8
    assert depth.shape == (16, 16) and depth.dtype == jnp.float32
    assert seg.shape == (16, 16) and seg.dtype == jnp.int32
    seg, depth = np.asarray(seg), np.asarray(depth)
    hit = seg >= 0
    assert hit.mean() > 0.5   # the table fills most of both views
    assert np.all((depth[hit] > 0.0) & (depth[hit] < 5.0))
    assert np.all(seg < env.mj_model.ngeom)
    if cam == "agentview":
      assert np.isin(seg, table).mean() > 0.3
  plain = envs.make("libero_spatial", image_size=16)
  assert set(jax.eval_shape(plain.observe, mjx.put_data(plain.mj_model, d), jnp.int32(0))) == {
      "proprio", "task_id", "agentview", "wrist"}
  with pytest.raises(ValueError, match="render"):
    envs.make("libero_spatial", render=False, depth=True)
