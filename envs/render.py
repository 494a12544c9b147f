"""Pure-JAX ray caster for MuJoCo models (MJX has no renderer on CPU/TPU).

Every pixel casts one ray through its centre and intersects it analytically
with every visible geom (plane, sphere, capsule, ellipsoid, cylinder, box),
then shades the nearest hit: ambient + MuJoCo headlight + Lambert diffuse from
the model's first light, with a hard shadow ray towards that light.

Conventions
  * Camera frame as in MuJoCo: ``cam_xmat`` columns are the camera x, y, z axes
    in world coordinates; the camera looks along -z with +y up and +x right.
    ``fovy`` is the vertical field of view in degrees; the horizontal extent is
    scaled by the aspect ratio width/height. Pixel (row r, col c) uses the ray
    through the pixel centre; row 0 is the top of the image, col 0 the left.
    Camera intrinsics (``sensorsize``/``focal``) are not used, only fovy.
  * Depth is the distance along the unit-length ray from the camera origin to
    the hit (``mj_ray`` with a unit ``vec``), not the z-buffer distance. Pixels
    whose ray hits nothing get ``NO_HIT_DEPTH`` (1e4), segmentation -1 and
    ``RenderModel.background`` as colour. Depth is float32 and rounded down
    by at most a relative 2**(b - 23), b = bits of the visible-geom count.
  * Intersections follow ``mj_ray``: planes are one-sided (hit only from their
    +z side) and bounded by ``|x| <= size[0]``, ``|y| <= size[1]`` unless that
    size is <= 0 (then infinite in that direction); a quadric is hit at its
    first non-negative root.
  * Colour follows ``mjv_updateScene``: a geom with a material uses
    ``mat_rgba`` unless its own ``geom_rgba`` differs from the default
    (0.5, 0.5, 0.5, 1), which then wins. A geom whose resulting alpha is 0 is
    invisible; other alphas are drawn opaque. (mj_ray differs only for a geom
    with a material: it tests the material alpha alone.) Textures are ignored.
  * Light: light 0. Directional lights shine along ``light_xdir``; every other
    type is treated as a point light at ``light_xpos`` (no spot cone, no
    attenuation). colour = rgb * (ambient + headlight_diffuse * max(0, -n.d)
    + light_diffuse * max(0, n.l) * unshadowed), with ambient = headlight
    ambient + light ambient, all from the model; no specular, no alpha
    blending. Models without lights get ambient + headlight only.

Speed: by default each 16x16 tile of pixels tests only the geoms whose bounding box can
reach its primary or shadow rays (:mod:`envs.render_tiles`; the same geom at every pixel,
5-7x faster on the suites); ``render_model(..., tile=0)`` tests every geom at every pixel.

Shapes: ``rgb`` uint8 [H, W, 3]; ``depth`` float32 [H, W]; ``segmentation``
int32 [H, W] (geom id, -1 for background). Batch with ``jax.vmap``.
Mesh, hfield and sdf geoms in a rendered group raise ``ValueError`` in
``render_model`` (no analytic intersection); in hidden groups they are ignored.
"""
from typing import Sequence, Tuple

import flax.struct
import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from envs import render_tiles as tiles

NO_HIT_DEPTH = 1e4
_TINY = 1e-12
_PLANE, _SPHERE, _CAPSULE, _ELLIPSOID, _CYLINDER, _BOX = (
    int(mujoco.mjtGeom.mjGEOM_PLANE), int(mujoco.mjtGeom.mjGEOM_SPHERE),
    int(mujoco.mjtGeom.mjGEOM_CAPSULE), int(mujoco.mjtGeom.mjGEOM_ELLIPSOID),
    int(mujoco.mjtGeom.mjGEOM_CYLINDER), int(mujoco.mjtGeom.mjGEOM_BOX))
_SUPPORTED = (_PLANE, _SPHERE, _CAPSULE, _ELLIPSOID, _CYLINDER, _BOX)


@flax.struct.dataclass
class RenderModel:
  """Per-model render constants (a pytree; the static fields are hashable)."""
  geom_type: jnp.ndarray         # int32 [G]
  geom_size: jnp.ndarray         # float32 [G, 3]
  geom_rgb: jnp.ndarray          # float32 [G, 3] effective colour
  geom_visible: jnp.ndarray      # bool [G] (same information as `order`)
  cam_fovy: jnp.ndarray          # float32 [ncam], degrees
  light_diffuse: jnp.ndarray     # float32 [3] (zeros if the model has no light)
  ambient: jnp.ndarray           # float32 [3] headlight + light 0 ambient
  headlight_diffuse: jnp.ndarray  # float32 [3]
  background: jnp.ndarray        # float32 [3]
  light_local_pos: jnp.ndarray   # float32 [3] light 0 in its body frame
  light_local_dir: jnp.ndarray   # float32 [3]
  light_body: int = flax.struct.field(pytree_node=False, default=0)
  light_directional: bool = flax.struct.field(pytree_node=False, default=True)
  shadows: bool = flax.struct.field(pytree_node=False, default=True)
  # tile culling (envs.render_tiles): tile edge in pixels (0: every pixel tests every geom)
  # and candidates per geom type visited per round
  tile: int = flax.struct.field(pytree_node=False, default=16)
  tile_k: int = flax.struct.field(pytree_node=False, default=3)
  # visible geom ids sorted by type, and (type, start, end) runs into `order`
  order: Tuple[int, ...] = flax.struct.field(pytree_node=False, default=())
  segments: Tuple[Tuple[int, int, int], ...] = flax.struct.field(
      pytree_node=False, default=())


def render_model(m: mujoco.MjModel, geom_groups: Sequence[int] = (0, 1, 2),
                 background=(0.0, 0.0, 0.0), shadows: bool = True, tile: int = 16,
                 tile_k: int = 3) -> RenderModel:
  """Extracts the render constants of `m`; geoms outside `geom_groups` hide.

  `shadows=False` skips the shadow rays (about half the cost for a point
  light); they are also skipped when the model has no (active) light.
  `tile` / `tile_k`: tile culling (:mod:`envs.render_tiles`; the same geom at every
  pixel, fewer intersection tests); `tile=0` tests every geom at every pixel.
  """
  ngeom = m.ngeom
  groups = np.clip(m.geom_group, 0, mujoco.mjNGROUP - 1)
  rgba = m.geom_rgba.astype(np.float32).copy()
  matid = m.geom_matid
  default = np.array([0.5, 0.5, 0.5, 1.0], np.float32)
  for i in range(ngeom):
    if matid[i] >= 0 and np.all(rgba[i] == default):
      rgba[i] = m.mat_rgba[matid[i]]
  visible = np.isin(groups, np.asarray(geom_groups)) & (rgba[:, 3] > 0)
  bad = [i for i in range(ngeom)
         if visible[i] and int(m.geom_type[i]) not in _SUPPORTED]
  if bad:
    names = [f"{mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_GEOM, i) or i}"
             f" ({mujoco.mjtGeom(int(m.geom_type[i])).name[7:].lower()})"
             for i in bad]
    raise ValueError(
        "envs.render supports only plane/sphere/capsule/ellipsoid/cylinder/box"
        f" geoms; visible unsupported geoms: {', '.join(names)}. Move them to a"
        " group outside `geom_groups` or set their alpha to 0.")
  order, segments = [], []
  for t in _SUPPORTED:
    ids = [i for i in range(ngeom) if visible[i] and m.geom_type[i] == t]
    if ids:
      segments.append((t, len(order), len(order) + len(ids)))
      order.extend(ids)
  f32 = lambda x: jnp.asarray(np.asarray(x, np.float32))
  head = m.vis.headlight
  has_light = m.nlight > 0
  if has_light:
    if hasattr(m, "light_directional"):   # MuJoCo < 3.3
      directional = bool(m.light_directional[0])
    else:
      directional = m.light_type[0] == mujoco.mjtLightType.mjLIGHT_DIRECTIONAL
    diffuse = m.light_diffuse[0] * float(m.light_active[0])
    lamb = m.light_ambient[0] * float(m.light_active[0])
  else:
    directional, diffuse, lamb = True, np.zeros(3), np.zeros(3)
  head_on = float(head.active)
  return RenderModel(
      geom_type=jnp.asarray(m.geom_type, jnp.int32),
      geom_size=f32(m.geom_size),
      geom_rgb=f32(rgba[:, :3]),
      geom_visible=jnp.asarray(visible),
      cam_fovy=f32(m.cam_fovy),
      light_diffuse=f32(diffuse),
      ambient=f32(np.asarray(head.ambient) * head_on + lamb),
      headlight_diffuse=f32(np.asarray(head.diffuse) * head_on),
      background=f32(background),
      light_local_pos=f32(m.light_pos[0] if has_light else np.zeros(3)),
      light_local_dir=f32(m.light_dir[0] if has_light else [0, 0, -1]),
      light_body=int(m.light_bodyid[0]) if has_light else 0,
      light_directional=bool(directional),
      shadows=bool(shadows and np.any(diffuse > 0)),
      order=tuple(int(i) for i in order),
      segments=tuple(segments), tile=int(tile), tile_k=int(tile_k))


# ------------------------------------------------------------ intersections --
# Each takes the ray in geom-local coordinates as component tuples o, v (arrays
# broadcastable to [P, n]) and the sizes s (three [n] arrays); returns the hit
# distance [P, n], +inf where there is none. Keeping x/y/z as separate arrays
# lets XLA fuse the frame change and the whole test into one loop.

def _roots(a, b, c):
  """Roots of a t^2 + 2 b t + c = 0 (ascending) and whether they exist."""
  det = b * b - a * c
  ok = (det >= 0) & (a > _TINY)
  sq = jnp.sqrt(jnp.where(ok, det, 0.0))
  inv_a = 1.0 / jnp.where(ok, a, 1.0)
  return (-b - sq) * inv_a, (-b + sq) * inv_a, ok


def _first(t0, t1, ok):
  t = jnp.where(t0 >= 0, t0, t1)
  return jnp.where(ok & (t >= 0), t, jnp.inf)


def _keep(t, ok):
  return jnp.where(ok & (t >= 0), t, jnp.inf)


def _dot(x, y, w=(1.0, 1.0, 1.0)):
  return x[0] * y[0] * w[0] + x[1] * y[1] * w[1] + x[2] * y[2] * w[2]


def _hit_plane(o, v, s):
  ok = v[2] < -_TINY
  t = -o[2] / jnp.where(ok, v[2], -1.0)
  ok &= (s[0] <= 0) | (jnp.abs(o[0] + t * v[0]) <= s[0])
  ok &= (s[1] <= 0) | (jnp.abs(o[1] + t * v[1]) <= s[1])
  return _keep(t, ok)


def _hit_sphere(o, v, s):
  return _first(*_roots(_dot(v, v), _dot(o, v), _dot(o, o) - s[0] * s[0]))


def _hit_ellipsoid(o, v, s):
  w = tuple(1.0 / (si * si) for si in s)
  return _first(*_roots(_dot(v, v, w), _dot(v, o, w), _dot(o, o, w) - 1.0))


def _hit_side(o, v, r, h):
  """Round side of a cylinder of radius r, half-height h (mj_ray's rule)."""
  a = v[0] * v[0] + v[1] * v[1]
  b = v[0] * o[0] + v[1] * o[1]
  c = o[0] * o[0] + o[1] * o[1] - r * r
  t = _first(*_roots(a, b, c))
  return jnp.where(jnp.abs(o[2] + t * v[2]) <= h, t, jnp.inf)


def _hit_capsule(o, v, s):
  r, h = s[0], s[1]
  t = _hit_side(o, v, r, h)
  a, bxy = _dot(v, v), v[0] * o[0] + v[1] * o[1]
  cxy = o[0] * o[0] + o[1] * o[1] - r * r
  for sign in (1.0, -1.0):
    oz = o[2] - sign * h
    t0, t1, ok = _roots(a, bxy + v[2] * oz, cxy + oz * oz)
    for tc in (t0, t1):
      cap = ok & (sign * (o[2] + tc * v[2]) >= h)
      t = jnp.minimum(t, _keep(tc, cap))
  return t


def _hit_cylinder(o, v, s):
  r, h = s[0], s[1]
  t = _hit_side(o, v, r, h)
  okz = jnp.abs(v[2]) > _TINY
  inv = 1.0 / jnp.where(okz, v[2], 1.0)
  for sign in (1.0, -1.0):
    tc = (sign * h - o[2]) * inv
    px, py = o[0] + tc * v[0], o[1] + tc * v[1]
    t = jnp.minimum(t, _keep(tc, okz & (px * px + py * py <= r * r)))
  return t


def _hit_box(o, v, s):
  # Slab test; equal to mj_ray's nearest-face test (far face if inside).
  tn, tf = -jnp.inf, jnp.inf
  for oi, vi, si in zip(o, v, s):
    inv = 1.0 / jnp.where(jnp.abs(vi) < _TINY, _TINY, vi)
    t1, t2 = (-si - oi) * inv, (si - oi) * inv
    tn, tf = jnp.maximum(tn, jnp.minimum(t1, t2)), jnp.minimum(tf, jnp.maximum(t1, t2))
  return _keep(jnp.where(tn >= 0, tn, tf), tn <= tf)


_HIT = {_PLANE: _hit_plane, _SPHERE: _hit_sphere, _CAPSULE: _hit_capsule,
        _ELLIPSOID: _hit_ellipsoid, _CYLINDER: _hit_cylinder, _BOX: _hit_box}


def _cast(rm, pos, mat, size, origin, dirs):
  """Per-segment hit distances [P, n] of rays (origin [P or 1, 3], dirs [P, 3])."""
  out = []
  for t, a, b in rm.segments:
    o = tiles.local(origin[:, None], pos[None, a:b], mat[None, a:b])
    v = tiles.rotate_t(dirs[:, None], mat[None, a:b])
    out.append(_HIT[t](o, v, tuple(size[a:b, j] for j in range(3))))
  return out


def _normal(gtype, q, s):
  """Outward local normal at local point q [P, 3] of geoms of type gtype."""
  z = jnp.zeros_like(q[:, 0])
  cap = q - jnp.stack([z, z, jnp.clip(q[:, 2], -s[:, 1], s[:, 1])], -1)
  rho = jnp.sqrt(q[:, 0] ** 2 + q[:, 1] ** 2)
  cyl_cap = jnp.abs(q[:, 2]) - s[:, 1] > rho - s[:, 0]
  cyl = jnp.where(cyl_cap[:, None], jnp.stack([z, z, q[:, 2]], -1),
                  jnp.stack([q[:, 0], q[:, 1], z], -1))
  face = jnp.argmax(jnp.abs(q) - s, axis=-1)
  box = jnp.where(jnp.arange(3) == face[:, None], jnp.sign(q), 0.0)
  plane = jnp.stack([z, z, jnp.ones_like(z)], -1)
  n = jnp.select([gtype[:, None] == t for t in
                  (_PLANE, _CAPSULE, _ELLIPSOID, _CYLINDER, _BOX)],
                 [plane, cap, q / (s * s), cyl, box], q)
  return n / jnp.maximum(jnp.linalg.norm(n, axis=-1, keepdims=True), _TINY)


def camera_rays(cam_mat, fovy, height: int, width: int):
  """Unit world-frame ray directions [H, W, 3] through the pixel centres."""
  th = jnp.tan(jnp.deg2rad(jnp.asarray(fovy, jnp.float32)) / 2)
  y = (1.0 - 2.0 * (jnp.arange(height, dtype=jnp.float32) + 0.5) / height) * th
  x = (2.0 * (jnp.arange(width, dtype=jnp.float32) + 0.5) / width - 1.0) * th
  x = x * (width / height)
  d = jnp.stack(jnp.broadcast_arrays(x[None, :], y[:, None],
                                     -jnp.ones((height, width))), -1)
  d = d / jnp.linalg.norm(d, axis=-1, keepdims=True)
  return d @ jnp.reshape(cam_mat, (3, 3)).astype(jnp.float32).T


def render(rm: RenderModel, geom_xpos, geom_xmat, light_pos, light_dir,
           cam_pos, cam_mat, fovy, *, height: int, width: int,
           depth: bool = False, segmentation: bool = False):
  """Renders one view. Returns {'rgb': uint8 [H, W, 3], 'depth', 'segmentation'}."""
  f32 = jnp.float32
  order = np.asarray(rm.order, np.int32)
  gpos = jnp.reshape(geom_xpos, (-1, 3)).astype(f32)[order]
  gmat = jnp.reshape(geom_xmat, (-1, 3, 3)).astype(f32)[order]
  size, gtype = rm.geom_size[order], rm.geom_type[order]
  origin = jnp.reshape(cam_pos, (1, 3)).astype(f32)
  dirs = camera_rays(cam_mat, fovy, height, width).reshape(-1, 3)
  npix = height * width
  # Tiled, every per-pixel array below is in tile order ([N, Q] flattened), and the
  # outputs go back to row-major at the end.
  edge = tiles.tile_size(height, width, rm.tile) if order.size else 0
  if edge:
    dirs = tiles.to_tiles(dirs, height, width, edge)
    grid = dirs.shape[:2]
    bounds = tiles.bounds(gtype, size, gpos, gmat)
    dirs = dirs.reshape(-1, 3)

  # Nearest hit: one min-reduction over int32 keys packing the distance's bits
  # (non-negative floats order like ints) with the column index in the low
  # `bits` mantissa bits; this is several times faster than argmin on CPU and
  # truncates depth by a relative 2**(bits - 23) at most (< 1e-5 for 64 geoms).
  bits = max(1, (order.size - 1).bit_length())
  low = (1 << bits) - 1
  if edge:
    cam_axes = jnp.reshape(cam_mat, (3, 3)).astype(f32)
    key = tiles.nearest(_HIT, rm.segments, rm.tile_k, gpos, gmat, size, bounds, origin[0],
                        cam_axes, tiles.tile_extents(fovy, height, width, edge),
                        dirs.reshape(*grid, 3), low).reshape(-1)
  else:
    key = jnp.full(npix, jnp.int32(0x7F800000))           # +inf, column 0
    for (_, a, b), ts in zip(rm.segments,
                             _cast(rm, gpos, gmat, size, origin, dirs)):
      kt = jax.lax.bitcast_convert_type(ts, jnp.int32) & 0x7FFFFFFF  # -0 -> +0
      col = jnp.arange(a, b, dtype=jnp.int32)
      key = jnp.minimum(key, jnp.min((kt & ~low) | col, axis=-1))
  k = key & low
  t = jax.lax.bitcast_convert_type(key & ~low, jnp.float32)
  hit = t < jnp.inf
  t = jnp.where(hit, t, 0.0)

  def image(a):   # per-pixel [npix, ...] (tile order when tiled) -> [H, W, ...]
    if edge:
      a = tiles.from_tiles(a.reshape(*grid, *a.shape[1:]), height, width, edge)
    return a.reshape(height, width, *a.shape[1:])
  out = {}
  if segmentation:
    ids = jnp.asarray(order)[k] if order.size else k
    out["segmentation"] = image(jnp.where(hit, ids, -1))
  if depth:
    out["depth"] = image(jnp.where(hit, t, NO_HIT_DEPTH))
  if not order.size:
    out["rgb"] = jnp.broadcast_to(
        jnp.round(rm.background * 255).astype(jnp.uint8), (height, width, 3))
    return out

  # Shading of the nearest hit.
  x = origin + t[:, None] * dirs                       # world hit point
  pk, rk, sk = gpos[k], gmat[k], size[k]
  q = jnp.einsum("pk,pkj->pj", x - pk, rk)             # local hit point
  n = jnp.einsum("pjk,pk->pj", rk, _normal(gtype[k], q, sk))
  light_pos = jnp.reshape(light_pos, (3,)).astype(f32)
  light_dir = jnp.reshape(light_dir, (3,)).astype(f32)
  if rm.light_directional:
    lvec = jnp.broadcast_to(-light_dir / jnp.linalg.norm(light_dir), x.shape)
    dist = jnp.full(npix, jnp.inf, f32)
  else:
    dist = jnp.linalg.norm(light_pos - x, axis=-1)
    lvec = (light_pos - x) / jnp.maximum(dist, _TINY)[:, None]
  lambert = jnp.maximum(jnp.sum(n * lvec, -1), 0.0)

  # Shadow ray; a convex geom cannot shadow its own lit side, so it is skipped.
  # Directional light: rays from the hit point all share one direction [1, 3].
  # Point light: rays from the light to the hit point share one origin, which
  # is as cheap as primary rays (planes then shadow from their front side).
  # Tiled, a directional light's shadow rays are culled per tile too.
  sh = []
  blocked = jnp.zeros(npix, jnp.int32)
  if rm.shadows and rm.light_directional and edge:
    blocked = tiles.shadowed(_HIT, rm.segments, rm.tile_k, gpos, gmat, size, bounds,
                             (x + 1e-4 * n).reshape(*grid, 3), hit.reshape(grid), lvec[0],
                             k.reshape(grid)).reshape(-1).astype(jnp.int32)
  elif rm.shadows and rm.light_directional:
    sh = _cast(rm, gpos, gmat, size, x + 1e-4 * n, lvec[:1])
  elif rm.shadows:
    sh = _cast(rm, gpos, gmat, size, light_pos[None], -lvec)
    dist = dist - 1e-4
  for (_, a, b), ts in zip(rm.segments, sh):
    own = jnp.arange(a, b)[None, :] == k[:, None]
    hit_t = ((ts < dist[:, None]) & ~own).astype(jnp.int32)
    blocked = jnp.maximum(blocked, jnp.max(hit_t, axis=-1))
  lit = jnp.where(blocked > 0, 0.0, lambert)

  head = jnp.maximum(-jnp.sum(n * dirs, -1), 0.0)
  shade = (rm.ambient + head[:, None] * rm.headlight_diffuse
           + lit[:, None] * rm.light_diffuse)
  color = jnp.where(hit[:, None], rm.geom_rgb[order][k] * shade, rm.background)
  rgb = jnp.round(jnp.clip(color, 0.0, 1.0) * 255.0).astype(jnp.uint8)
  out["rgb"] = image(rgb)
  return out


def _light_from_data(rm: RenderModel, data):
  """World position/direction of light 0 from data (or its body pose)."""
  if getattr(data, "light_xpos", None) is not None and data.light_xpos.shape[0]:
    return data.light_xpos[0], data.light_xdir[0]
  if getattr(data, "xpos", None) is not None and rm.light_body > 0:
    rot = jnp.reshape(data.xmat[rm.light_body], (3, 3)).astype(jnp.float32)
    return (data.xpos[rm.light_body] + rot @ rm.light_local_pos,
            rot @ rm.light_local_dir)
  return rm.light_local_pos, rm.light_local_dir


def render_camera(rm: RenderModel, data, cam_id: int, *, height: int,
                  width: int, depth: bool = False, segmentation: bool = False):
  """Renders MJCF camera `cam_id` from an mjx.Data / mujoco.MjData-like object.

  Needs geom_xpos, geom_xmat, cam_xpos, cam_xmat; the light comes from
  light_xpos/light_xdir when present (MjData), else from the light's body pose
  xpos/xmat (mjx.Data has no light fields; exact for lights with mode="fixed").
  """
  light_pos, light_dir = _light_from_data(rm, data)
  return render(rm, data.geom_xpos, data.geom_xmat, light_pos, light_dir,
                data.cam_xpos[cam_id], data.cam_xmat[cam_id],
                rm.cam_fovy[cam_id], height=height, width=width, depth=depth,
                segmentation=segmentation)
