"""Tile culling for :mod:`envs.render`: each T x T block of pixels tests only the geoms its
rays can reach, instead of every visible geom.

A geom is a candidate of a tile when its bounding sphere can meet one of the tile's rays:
  * primary rays (one origin, the camera): the sphere's angular radius seen from the camera
    overlaps the cone around the tile's mean ray that holds all of the tile's rays;
  * shadow rays towards a directional light (parallel rays from the tile's hit points): the
    sphere, projected along the light, overlaps the 2-D bounding box of the projected hit
    points, and it is not wholly behind all of them.
Both tests are conservative (a small margin covers float rounding), so culling never changes
a pixel: the tiles' candidates are visited per geom type, K at a time, in rounds until every
tile's list is exhausted (a crowded tile costs the whole batch another round, never a wrong
pixel). Planes (unbounded) are candidates everywhere.

Shapes: N tiles of Q = T*T pixels; G visible geoms (in ``RenderModel.order``); K <= G.
"""
import jax
import jax.numpy as jnp
import numpy as np

# The cone and projection tests run in float32 on unit vectors and metres: 2e-3 rad and
# 1e-4 m are far above their rounding (~1e-6) and far below a pixel (~1e-2 rad at 64 px).
_ANGLE_MARGIN = 2e-3
_DIST_MARGIN = 1e-4
_PLANE, _SPHERE, _CAPSULE, _ELLIPSOID, _CYLINDER, _BOX = 0, 2, 3, 4, 5, 6


def tile_size(height: int, width: int, tile: int) -> int:
  """The tile edge to use: ``tile`` when it divides both sides (and is > 1), else 0 (none)."""
  return tile if tile > 1 and height % tile == 0 and width % tile == 0 else 0


def bounding_radius(gtype, size):
  """Radius [G] of a sphere about the geom's centre holding the whole geom (inf: plane)."""
  r = jnp.select([gtype == _SPHERE, gtype == _CAPSULE, gtype == _ELLIPSOID,
                  gtype == _CYLINDER, gtype == _BOX],
                 [size[:, 0], size[:, 0] + size[:, 1], jnp.max(size, -1),
                  jnp.hypot(size[:, 0], size[:, 1]), jnp.linalg.norm(size, axis=-1)],
                 jnp.inf)
  return r * (1 + 1e-4) + _DIST_MARGIN


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


def primary_candidates(origin, dirs, centre, radius):
  """bool [N, G]: geoms whose bounding sphere a ray of the tile may meet.

  origin [3]; dirs [N, Q, 3] unit rays; centre [G, 3]; radius [G]."""
  axis = jnp.sum(dirs, 1)
  axis = axis / jnp.linalg.norm(axis, axis=-1, keepdims=True)
  half = jnp.arccos(jnp.clip(jnp.min(jnp.einsum("nqk,nk->nq", dirs, axis), 1), -1.0, 1.0))
  v = centre - origin[None]
  dist = jnp.linalg.norm(v, axis=-1)
  to_centre = v / jnp.maximum(dist, 1e-12)[:, None]
  angle = jnp.arccos(jnp.clip(axis @ to_centre.T, -1.0, 1.0))
  reach = jnp.arcsin(jnp.clip(radius / jnp.maximum(dist, 1e-12), 0.0, 1.0))
  inside = (dist <= radius) | jnp.isinf(radius)
  return inside[None] | (angle <= half[:, None] + reach[None] + _ANGLE_MARGIN)


def shadow_candidates(origins, hit, direction, centre, radius):
  """bool [N, G]: geoms whose bounding sphere a parallel shadow ray of the tile may meet.

  origins [N, Q, 3] ray starts; hit bool [N, Q] (rays that exist); direction [3] unit;
  centre [G, 3]; radius [G]."""
  helper = jnp.where(jnp.abs(direction[0]) < 0.9, jnp.array([1.0, 0, 0]), jnp.array([0, 1.0, 0]))
  e1 = jnp.cross(direction, helper)
  e1 = e1 / jnp.linalg.norm(e1)
  e2 = jnp.cross(direction, e1)
  basis = jnp.stack([e1, e2, direction], -1)                  # [3, 3]
  p = origins @ basis                                         # [N, Q, 3]
  lo = jnp.min(jnp.where(hit[..., None], p, jnp.inf), 1)      # [N, 3]
  hi = jnp.max(jnp.where(hit[..., None], p, -jnp.inf), 1)
  c = centre @ basis                                          # [G, 3]
  gap = jnp.maximum(jnp.maximum(lo[:, None, :2] - c[None, :, :2], c[None, :, :2] - hi[:, None, :2]),
                    0.0)
  near = jnp.sum(gap * gap, -1) <= (radius * radius)[None]
  ahead = c[None, :, 2] + radius[None] >= lo[:, None, 2]
  return ((near & ahead) | jnp.isinf(radius)[None]) & jnp.any(hit, 1)[:, None]


def visit(segments, cand, per_tile: int, acc, step):
  """Folds ``step`` over the (tile, candidate geom) pairs of each geom type.

  segments: ``RenderModel.segments`` ((type, start, end) into the visible geoms);
  cand bool [N, G]. A type with one geom is visited once for every tile:
  ``step(acc, type, None, ids [N, 1], valid [N, 1])``. A larger type's (tile, geom) pairs
  are listed and visited ``C = N * min(per_tile, n / 2)`` at a time until the list is done: ``step(acc, type, tile [C], ids [C], valid [C])`` (ids index the visible
  geoms; ``valid`` marks real pairs), so the work follows the number of pairs, not the
  most crowded tile."""
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


def nearest(hit_fns, segments, per_tile, gpos, gmat, size, radius, origin, dirs, low):
  """Packed nearest-hit keys int32 [N, Q] (as ``envs.render.render`` packs them: the
  distance's bits above ``low``, the visible-geom index in ``low``) of rays from ``origin``
  [3] along ``dirs`` [N, Q, 3]; ``hit_fns``: geom type -> intersection (envs.render)."""
  cand = primary_candidates(origin, dirs, gpos, radius)

  def step(key, t, tile, ids, valid):
    # all tiles x their n geoms: [N, Q, n]; listed pairs: [C, Q, 1]
    rays = dirs[:, :, None] if tile is None else dirs[tile][:, :, None]
    ids, valid = (ids, valid) if tile is None else (ids[:, None], valid[:, None])
    mat = gmat[ids][:, None]
    o = local(origin, gpos[ids][:, None], mat)
    v = rotate_t(rays, mat)
    ts = hit_fns[t](o, v, tuple(size[ids][:, None, :, j] for j in range(3)))
    kt = jax.lax.bitcast_convert_type(jnp.where(valid[:, None], ts, jnp.inf), jnp.int32)
    packed = jnp.min(((kt & 0x7FFFFFFF) & ~low) | ids[:, None], -1)   # -0 -> +0
    return jnp.minimum(key, packed) if tile is None else key.at[tile].min(packed)

  return visit(segments, cand, per_tile, jnp.full(dirs.shape[:2], 0x7F800000, jnp.int32), step)


def shadowed(hit_fns, segments, per_tile, gpos, gmat, size, radius, origins, hit, direction,
             own):
  """bool [N, Q]: whether the ray from ``origins`` [N, Q, 3] along the unit ``direction``
  [3] (a directional light) meets a visible geom other than ``own`` [N, Q] (the geom the
  ray starts on); only rays with ``hit`` [N, Q] are traced (the others give False)."""
  cand = shadow_candidates(origins, hit, direction, gpos, radius)

  def step(blocked, t, tile, ids, valid):
    starts, mine = (origins, own) if tile is None else (origins[tile], own[tile])
    ids, valid = (ids, valid) if tile is None else (ids[:, None], valid[:, None])
    mat = gmat[ids][:, None]
    o = local(starts[:, :, None], gpos[ids][:, None], mat)
    v = rotate_t(direction, mat)
    ts = hit_fns[t](o, v, tuple(size[ids][:, None, :, j] for j in range(3)))
    meets = jnp.any((ts < jnp.inf) & valid[:, None] & (ids[:, None] != mine[..., None]), -1)
    return blocked | meets if tile is None else blocked.at[tile].max(meets)

  return visit(segments, cand, per_tile, jnp.zeros(hit.shape, bool), step) & hit
