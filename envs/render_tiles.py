"""Tile culling for :mod:`envs.render`: each T x T block of pixels tests only the geoms its
rays can reach, instead of every visible geom.

A geom is a candidate of a tile when a box about it (in its own frame) can meet one of the
tile's rays:
  * primary rays (one origin, the camera): the box's projected corners span a rectangle of
    the image plane that overlaps the tile's (a box across the camera's plane: its bounding
    sphere against the cone about the tile's mid-ray);
  * shadow rays towards a directional light (parallel rays from the tile's hit points): the
    box, projected along the light, overlaps the 2-D box of the projected hit points, and
    it is not wholly behind all of them.
The tests are conservative (a small margin covers float rounding), so culling never changes
which geom a pixel sees: the (tile, candidate) pairs of each geom type are listed and
visited a fixed number at a time, in rounds until the list is done (a crowded view costs
the batch another round, never a wrong pixel). Planes (unbounded) are candidates everywhere.

Shapes: N tiles of Q = T*T pixels; G visible geoms (in ``RenderModel.order``).
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# The projection tests run in float32 in metres: margins far above their rounding (~1e-6)
# and far below a pixel.
_DIST_MARGIN = 1e-4
_ANGLE_MARGIN = 2e-3  # rad
_UV_MARGIN = 1e-3    # on the image plane at unit depth: a pixel is ~1e-2 at 64 px
_PLANE, _SPHERE, _CAPSULE, _ELLIPSOID, _CYLINDER, _BOX = 0, 2, 3, 4, 5, 6


def tile_size(height: int, width: int, tile: int) -> int:
  """The tile edge to use: ``tile`` when it divides both sides (and is > 1), else 0 (none)."""
  return tile if tile > 1 and height % tile == 0 and width % tile == 0 else 0


def to_tiles(x, height: int, width: int, t: int):
  """[H*W, ...] in row-major pixel order -> [N, Q, ...] (tiles row-major, pixels within)."""
  rest = x.shape[1:]
  x = x.reshape(height // t, t, width // t, t, *rest)
  return jnp.swapaxes(x, 1, 2).reshape((height // t) * (width // t), t * t, *rest)


def from_tiles(x, height: int, width: int, t: int):
  """Inverse of :func:`to_tiles`: [N, Q, ...] -> [H*W, ...]."""
  rest = x.shape[2:]
  x = x.reshape(height // t, width // t, t, t, *rest)
  return jnp.swapaxes(x, 1, 2).reshape(height * width, *rest)


class Bounds(NamedTuple):
  """Where each visible geom can be: a sphere and an oriented box about it, both holding
  the whole geom (planes, unbounded: radius inf, corners at the centre)."""
  centre: jax.Array    # [G, 3]
  radius: jax.Array    # [G]
  corners: jax.Array   # [G, 8, 3] of the geom-frame box


def bounds(gtype, size, pos, mat) -> Bounds:
  """Bounds of geoms of types ``gtype`` [G], sizes [G, 3] at ``pos`` [G, 3], ``mat`` [G, 3, 3]."""
  r, h = size[:, 0], size[:, 1]
  radius = jnp.select([gtype == _SPHERE, gtype == _CAPSULE, gtype == _ELLIPSOID,
                       gtype == _CYLINDER, gtype == _BOX],
                      [r, r + h, jnp.max(size, -1), jnp.hypot(r, h),
                       jnp.linalg.norm(size, axis=-1)], jnp.inf)
  half = jnp.select([(gtype == t)[:, None] for t in (_SPHERE, _CAPSULE, _CYLINDER)],
                    [jnp.stack([r, r, r], -1), jnp.stack([r, r, h + r], -1),
                     jnp.stack([r, r, h], -1)], size)
  half = jnp.where(jnp.isinf(radius)[:, None], 0.0, half * (1 + 1e-4) + _DIST_MARGIN)
  signs = jnp.asarray(np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).reshape(3, 8).T,
                      jnp.float32)
  corners = pos[:, None] + jnp.einsum("gjk,cgk->gcj", mat, signs[:, None] * half[None])
  return Bounds(pos, radius * (1 + 1e-4) + _DIST_MARGIN, corners)


def tile_extents(fovy, height: int, width: int, t: int):
  """The rectangle (lo, hi: [N, 2]) of each tile's pixel centres on the camera's image plane
  at unit depth (x right, y up), as :func:`envs.render.camera_rays` places them."""
  th = jnp.tan(jnp.deg2rad(jnp.asarray(fovy, jnp.float32)) / 2)
  x = (2.0 * (jnp.arange(width, dtype=jnp.float32) + 0.5) / width - 1.0) * th * (width / height)
  y = (1.0 - 2.0 * (jnp.arange(height, dtype=jnp.float32) + 0.5) / height) * th
  x, y = x.reshape(-1, t), y.reshape(-1, t)                   # [tiles across, t], [down, t]
  lo = jnp.stack(jnp.meshgrid(x[:, 0], y[:, -1], indexing="xy"), -1).reshape(-1, 2)
  hi = jnp.stack(jnp.meshgrid(x[:, -1], y[:, 0], indexing="xy"), -1).reshape(-1, 2)
  return lo, hi


def primary_candidates(origin, cam_mat, extents, b: Bounds):
  """bool [N, G]: geoms a ray of the tile may meet (``origin`` [3] the camera, ``cam_mat``
  [3, 3] its axes as columns, ``extents``: :func:`tile_extents`).

  A geom wholly in front of the camera is seen inside the 2-D box of its projected box
  corners (a convex body projects into the hull of its corners' projections), compared
  with the tile's rectangle; one wholly behind it is no candidate; for one across its plane
  the bounding sphere must meet the cone about the tile's mid-ray."""
  t_lo, t_hi = extents
  corners = (b.corners - origin) @ cam_mat                    # [G, 8, 3]
  front = jnp.all(corners[..., 2] < -_DIST_MARGIN, 1)
  proj = corners[..., :2] / jnp.where(front[:, None, None], -corners[..., 2:], 1.0)
  g_lo, g_hi = jnp.min(proj, 1), jnp.max(proj, 1)             # [G, 2]
  seen = jnp.all((g_lo[None] <= t_hi[:, None] + _UV_MARGIN)
                 & (g_hi[None] >= t_lo[:, None] - _UV_MARGIN), -1)
  behind = jnp.all(corners[..., 2] > _DIST_MARGIN, 1)         # rays go to z < 0 only
  # across the plane: the bounding sphere against the cone about the tile's mid-ray that
  # holds its rectangle (rays through the corners are the farthest from the mid-ray)
  rect = jnp.stack([t_lo, jnp.stack([t_lo[:, 0], t_hi[:, 1]], -1), t_hi,
                    jnp.stack([t_hi[:, 0], t_lo[:, 1]], -1)], 1)        # [N, 4, 2]
  rays = jnp.concatenate([rect, -jnp.ones_like(rect[..., :1])], -1)
  rays = rays / jnp.linalg.norm(rays, axis=-1, keepdims=True)
  axis = jnp.concatenate([(t_lo + t_hi) / 2, -jnp.ones_like(t_lo[:, :1])], -1)
  axis = axis / jnp.linalg.norm(axis, axis=-1, keepdims=True)
  half = jnp.arccos(jnp.clip(jnp.min(jnp.einsum("nck,nk->nc", rays, axis), 1), -1.0, 1.0))
  centre = (b.centre - origin) @ cam_mat
  dist = jnp.linalg.norm(centre, axis=-1)
  angle = jnp.arccos(jnp.clip(axis @ (centre / jnp.maximum(dist, 1e-12)[:, None]).T, -1.0, 1.0))
  reach = jnp.arcsin(jnp.clip(b.radius / jnp.maximum(dist, 1e-12), 0.0, 1.0))
  cone = (dist <= b.radius)[None] | (angle <= half[:, None] + reach[None] + _ANGLE_MARGIN)
  across = ~front & ~behind
  return jnp.isinf(b.radius)[None] | seen | (across[None] & cone)


def shadow_candidates(origins, hit, direction, b: Bounds):
  """bool [N, G]: geoms a parallel shadow ray of the tile may meet: their box, projected
  along the light, overlaps the 2-D box of the projected ray starts and is not wholly
  behind all of them. origins [N, Q, 3]; hit bool [N, Q] (rays that exist); direction [3]
  unit."""
  helper = jnp.where(jnp.abs(direction[0]) < 0.9, jnp.array([1.0, 0, 0]), jnp.array([0, 1.0, 0]))
  e1 = jnp.cross(direction, helper)
  e1 = e1 / jnp.linalg.norm(e1)
  e2 = jnp.cross(direction, e1)
  basis = jnp.stack([e1, e2, direction], -1)                  # [3, 3]
  p = origins @ basis                                         # [N, Q, 3]
  lo = jnp.min(jnp.where(hit[..., None], p, jnp.inf), 1)      # [N, 3]
  hi = jnp.max(jnp.where(hit[..., None], p, -jnp.inf), 1)
  c = b.corners @ basis                                       # [G, 8, 3]
  g_lo, g_hi = jnp.min(c, 1), jnp.max(c, 1)                   # [G, 3]
  near = jnp.all((g_lo[None, :, :2] <= hi[:, None, :2] + _DIST_MARGIN)
                 & (g_hi[None, :, :2] >= lo[:, None, :2] - _DIST_MARGIN), -1)
  ahead = g_hi[None, :, 2] >= lo[:, None, 2] - _DIST_MARGIN
  return ((near & ahead) | jnp.isinf(b.radius)[None]) & jnp.any(hit, 1)[:, None]


def visit(segments, cand, per_tile: int, acc, step):
  """Folds ``step`` over the (tile, candidate geom) pairs of each geom type.

  segments: ``RenderModel.segments`` ((type, start, end) into the visible geoms);
  cand bool [N, G]. A type with one geom is visited once for every tile:
  ``step(acc, type, None, ids [N, 1], valid [N, 1])``. A larger type's (tile, geom) pairs
  are listed and visited ``C = N * min(per_tile, n / 2)`` at a time until the list is
  done: ``step(acc, type, tile [C], ids [C], valid [C])`` (ids index the visible geoms;
  ``valid`` marks real pairs), so the work follows the number of pairs, not the most
  crowded tile."""
  n_tiles = cand.shape[0]
  for t, a, b in segments:
    n = b - a
    c = cand[:, a:b]
    if n == 1:
      acc = step(acc, t, None, jnp.broadcast_to(jnp.arange(a, b, dtype=jnp.int32), c.shape), c)
      continue
    cap = n_tiles * min(per_tile, -(-n // 2))
    flat = c.reshape(-1)
    slot = jnp.cumsum(flat, dtype=jnp.int32) - 1     # a pair's place in the list
    total = slot[-1] + 1
    pair = jnp.arange(n_tiles * n, dtype=jnp.int32)

    def body(carry, t=t, a=a, n=n, cap=cap, flat=flat, slot=slot, total=total, pair=pair):
      r, acc = carry
      here = slot - r * cap
      # a scatter, not a sort: this round's pairs go to their places (~3x faster on CPU)
      p = jnp.zeros(cap, jnp.int32).at[jnp.where(flat & (here >= 0), here, cap)].set(
          pair, mode="drop")
      valid = jnp.arange(cap, dtype=jnp.int32) < total - r * cap
      return r + 1, step(acc, t, p // n, a + p % n, valid)

    _, acc = jax.lax.while_loop(lambda carry, cap=cap, total=total: carry[0] * cap < total,
                                body, (jnp.int32(0), acc))
  return acc


def local(x, pos, mat):
  """R^T (x - pos) as a tuple of 3 arrays, broadcasting x [..., 3] with pos [..., 3] and
  mat [..., 3, 3] (the geom frame's axes as columns)."""
  d = [x[..., k] - pos[..., k] for k in range(3)]
  return tuple(sum(d[k] * mat[..., k, j] for k in range(3)) for j in range(3))


def rotate_t(v, mat):
  """R^T v as a tuple of 3 arrays, broadcasting v [..., 3] with mat [..., 3, 3]."""
  return tuple(sum(v[..., k] * mat[..., k, j] for k in range(3)) for j in range(3))


def _distances(hit_fn, gpos, gmat, size, ids, origins, dirs):
  """Hit distances [M, Q, K] of rays (``origins`` and ``dirs`` [..., 3], broadcasting with
  [M, Q, 1, 3]) against the visible geoms ``ids`` [M, K] of one type (``hit_fn``): the
  shape of :func:`visit`'s steps, M tiles or listed pairs of Q pixels each."""
  mat = gmat[ids][:, None]                                    # [M, 1, K, 3, 3]
  return hit_fn(local(origins, gpos[ids][:, None], mat), rotate_t(dirs, mat),
                tuple(size[ids][:, None, :, j] for j in range(3)))


def nearest(hit_fns, segments, per_tile, gpos, gmat, size, b, origin, cam_mat, extents, dirs,
            low):
  """Packed nearest-hit keys int32 [N, Q] (as ``envs.render.render`` packs them: the
  distance's bits above ``low``, the visible-geom index in ``low``) of rays from ``origin``
  [3] (a camera with axes ``cam_mat`` and tiles' ``extents``) along ``dirs`` [N, Q, 3];
  ``b``: :func:`bounds`; ``hit_fns``: geom type -> intersection (envs.render)."""
  cand = primary_candidates(origin, cam_mat, extents, b)

  def step(key, t, tile, ids, valid):
    rays, ids, valid = (dirs, ids, valid) if tile is None else (dirs[tile], ids[:, None],
                                                                 valid[:, None])
    ts = _distances(hit_fns[t], gpos, gmat, size, ids, origin, rays[:, :, None])
    kt = jax.lax.bitcast_convert_type(jnp.where(valid[:, None], ts, jnp.inf), jnp.int32)
    packed = jnp.min(((kt & 0x7FFFFFFF) & ~low) | ids[:, None], -1)   # -0 -> +0
    return jnp.minimum(key, packed) if tile is None else key.at[tile].min(packed)

  return visit(segments, cand, per_tile, jnp.full(dirs.shape[:2], 0x7F800000, jnp.int32), step)


def shadowed(hit_fns, segments, per_tile, gpos, gmat, size, b, origins, hit, direction, own):
  """bool [N, Q]: whether the ray from ``origins`` [N, Q, 3] along the unit ``direction``
  [3] (a directional light) meets a visible geom other than ``own`` [N, Q] (the geom the
  ray starts on); only rays with ``hit`` [N, Q] are traced (the others give False)."""
  cand = shadow_candidates(origins, hit, direction, b)

  def step(blocked, t, tile, ids, valid):
    starts, mine = (origins, own) if tile is None else (origins[tile], own[tile])
    ids, valid = (ids, valid) if tile is None else (ids[:, None], valid[:, None])
    ts = _distances(hit_fns[t], gpos, gmat, size, ids, starts[:, :, None], direction)
    meets = jnp.any((ts < jnp.inf) & valid[:, None] & (ids[:, None] != mine[..., None]), -1)
    return blocked | meets if tile is None else blocked.at[tile].max(meets)

  return visit(segments, cand, per_tile, jnp.zeros(hit.shape, bool), step) & hit
