"""Where a policy's pick-and-place episodes fail, from the privileged state.

  python benchmarks/failures.py --checkpoint runs/sft_teacher_v2 --suite libero_spatial \\
      --episodes 10

Runs the checkpoint greedily on the fixed evaluation initial states (as
``opd_jax.evaluate`` does) and records, after every executed chunk, the
poses and contacts of the object that the task's first On/In goal moves. Each
episode gets one label:

- ``success``
- ``never lifted, touched`` / ``never lifted, not touched``: the object never
  rose 4 cm above its start; whether a finger pad ever touched it.
- ``released on target, then disturbed``: first let go within On's 3 cm of the
  target, yet the episode failed (knocked or picked up again).
- ``released 3-8 cm from target`` / ``released > 8 cm from target``: where the
  object came to rest one chunk after it was first let go.
- ``held until time-out``.

Pads are sampled at chunk ends, so a release is placed to within one chunk.
Tasks whose first goal is not On/In count only success.
"""
from __future__ import annotations

import argparse
import collections
import json
import math

import _repo_root  # noqa: F401  (puts the repository on sys.path)
import jax
import jax.numpy as jnp
import numpy as np

import envs
from envs import predicates as P
from envs.core import BatchEnv
from opd_jax import checkpoint, models
from opd_jax.policy import Policy, init_history, push_history

LABELS = ("success", "never lifted, touched", "never lifted, not touched",
          "released on target, then disturbed", "released 3-8 cm from target",
          "released > 8 cm from target", "held until time-out", "not a pick-and-place goal")


def label(rec: dict, a: int, b: int, lift: float = 0.04) -> str:
  """One episode's label from per-chunk records ``[T, ...]`` of one world."""
  if rec["success"].max() > 0:
    return LABELS[0]
  pos = rec["ent_pos"][:, a]
  target = rec["target_pos"][:, b]
  touch = rec["touch"][:, a]
  pads = touch[:, 1] | touch[:, 2]            # entities 1 and 2 are the finger pads
  up = np.nonzero(pos[:, 2] - pos[0, 2] > lift)[0]
  if not len(up):
    return LABELS[1] if pads.any() else LABELS[2]
  free = [t for t in range(up[0], len(pads)) if not pads[t]]
  if not free:
    return LABELS[6]
  r = min(free[0] + 1, len(pads) - 1)        # one chunk later: where it came to rest
  dist = float(np.linalg.norm(pos[r, :2] - target[r, :2]))
  if dist < P.ON_XY:
    return LABELS[3]
  return LABELS[4] if dist < 0.08 else LABELS[5]


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--checkpoint", required=True)
  ap.add_argument("--suite", default="")
  ap.add_argument("--episodes", type=int, default=10, help="initial states per task")
  ap.add_argument("--json", default="", help="also write the counts here")
  args = ap.parse_args(argv)
  graphdef, params, cfg, stats, meta = checkpoint.load_policy(args.checkpoint)
  suite = args.suite or meta.get("suite", "")
  env_kw = checkpoint.trained_env_kwargs(meta)
  env_kw["image_size"] = cfg.image_size
  env = BatchEnv(envs.make(suite, **env_kw))
  policy = Policy.build(graphdef, cfg, stats, env.instructions)
  steps = math.ceil(env.max_episode_steps / cfg.chunk)
  keys = ("ent_pos", "target_pos", "touch")

  @jax.jit
  def run(tasks, index):
    state = jax.vmap(env.env.reset_eval)(tasks, index)

    def body(carry, _):
      s, hist = carry
      tokens = models.sample_tokens(policy.logits(params, hist), jax.random.PRNGKey(0), 0.0)
      nxt, _ = env.step_chunk(s, policy.actions(tokens))
      rec = {k: nxt.info["priv"][k] for k in keys}
      rec["success"] = nxt.info["success"]
      return (nxt, push_history(hist, nxt.obs)), rec

    _, recs = jax.lax.scan(body, (state, init_history(state.obs, cfg.history)), None, length=steps)
    return recs

  goals = np.asarray(env.env.task_goals)          # [tasks, goals, 3] rows (kind, a, b)
  counts = collections.OrderedDict((k, [0] * env.num_tasks) for k in LABELS)
  for t in range(env.num_tasks):
    recs = jax.tree.map(np.asarray, run(jnp.full((args.episodes,), t, jnp.int32),
                                        jnp.arange(args.episodes, dtype=jnp.int32)))
    kind, a, b = goals[t, 0]
    for i in range(args.episodes):
      one = {k: v[:, i] for k, v in recs.items()}
      if kind in (P.ON, P.IN):
        counts[label(one, int(a), int(b))][t] += 1
      else:
        counts[LABELS[0] if one["success"].max() > 0 else LABELS[-1]][t] += 1
    print(f"task {t}: success {counts[LABELS[0]][t]}/{args.episodes}", flush=True)
  n = args.episodes * env.num_tasks
  print(f"\n{suite}: {args.checkpoint}, {args.episodes} evaluation states per task\n")
  print("| outcome | episodes | per task (0-%d) |" % (env.num_tasks - 1))
  print("|---|---|---|")
  for k, v in counts.items():
    if sum(v):
      print(f"| {k} | {sum(v)} ({100 * sum(v) / n:.0f}%) | {' '.join(map(str, v))} |")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(dict(checkpoint=args.checkpoint, suite=suite, episodes=args.episodes,
                     counts=counts), f, indent=1)


if __name__ == "__main__":
  main()
