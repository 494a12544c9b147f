"""One iteration of the on-policy trainer as compiled programs.

The rollout (a batch of episodes acted by the student, the teacher scoring every sampled
action token in the same compiled step, the objective's advantages estimated over the
batch) and one guarded gradient step, called ``epochs x minibatches`` times from Python on
the rollout's batch (XLA:CPU runs a convolution's gradient inside a compiled loop ~8x
slower than alone). :func:`setup` builds them from a config, :func:`iterate` runs one
iteration; opd_jax.train is the job around them.
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Callable

import envs  # sets the XLA flag MJX needs on CPU before JAX starts  # noqa: F401  isort: skip
import jax
import jax.numpy as jnp
import numpy as np

from opd_jax import aggregate as agg_lib
from opd_jax import cli, compiling, objectives, parallel, teachers, traced
from opd_jax.build import checkpoint_stats, make_env, make_student
from opd_jax.policy import Policy
from opd_jax.rollout import Batch, episode_metrics, rollout, world_axis
from opd_jax.train_state import TrainState, abstract_state, guarded_update, make_optimizer


def make_rollout(config, benv, student: Policy, teacher, mesh, num_steps: int):
  """``collect(iteration, round, params, teacher_params) -> (batch, metrics)``: a batch of
  episodes, with the objective's advantages (objectives.rl) estimated over it.

  Randomness depends on (seed, iteration, round) only, so a resumed run repeats exactly;
  ``round`` > 0 are dynamic sampling's refills."""
  prompts = config.rollout.prompts * mesh.devices.size
  group = config.rollout.group
  obj = objectives.OBJECTIVES[config.objective]
  rl = config.rl
  train_tasks = tuple(config.env.tasks) or tuple(range(benv.num_tasks))

  def collect(iteration, round_, params, teacher_params):
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(config.seed), iteration),
                             round_)
    k_task, k_init, k_roll = jax.random.split(key, 3)
    pool = jnp.asarray(train_tasks, jnp.int32)
    tasks = jnp.repeat(pool[jax.random.randint(k_task, (prompts,), 0, len(train_tasks))], group)
    keys = jnp.repeat(jax.random.split(k_init, prompts), group, axis=0)
    tasks, keys = parallel.shard_batch((tasks, keys), mesh)
    state = benv.reset(keys, tasks)
    r = rollout(benv, student, params, state, k_roll, num_steps,
                temperature=config.rollout.temperature, teacher=teacher,
                teacher_params=teacher_params, teacher_temperature=config.teacher.temperature,
                dense_coef=rl.dense_coef if obj.advantage == "gae" else 0.0,
                teacher_logp=not obj.teacher_mean, teacher_mean=obj.teacher_mean)
    batch, metrics = r.batch, episode_metrics(r)
    if obj.advantage == "group":
      adv, mixed = objectives.group_advantages(batch.success, group)
      keep = mixed if rl.dynamic_sampling else jnp.ones_like(mixed)
      batch = batch.replace(advantage=batch.step_mask * adv, step_weight=jnp.broadcast_to(
          keep, batch.step_mask.shape))
      metrics["rollout/groups_mixed"] = jnp.mean(mixed)
    elif obj.advantage == "gae":
      adv, ret = objectives.gae(batch.reward, batch.value, batch.done, batch.step_mask,
                                gamma=rl.gamma, lam=rl.gae_lambda)
      batch = batch.replace(advantage=objectives.normalize(adv, batch.step_mask), returns=ret)
    if obj.teacher_mean:
      batch = batch.replace(teacher_weight=objectives.cosine_weight(
          iteration, rl.teacher_weight, rl.teacher_anneal))
    return shard_worlds(batch, mesh), metrics

  return collect


def world_sharding(x, mesh):
  """A batch field's sharding: its world axis on the mesh, scalars replicated."""
  axis = world_axis(x)
  return parallel.replicated(mesh) if axis is None else parallel.batch_sharding(mesh, axis)


def shard_worlds(batch: Batch, mesh):
  """Constrains every field of the batch to :func:`world_sharding`."""
  return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, world_sharding(x, mesh)),
                      batch)


def placed_like_worlds(shapes, mesh):
  """Abstract batch fields carrying :func:`world_sharding` (a program compiled from them
  takes the rollout's batch as it comes)."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                     sharding=world_sharding(x, mesh)), shapes)


def merge_worlds(a: Batch, b: Batch, src):
  """The batch whose world j is world ``src[j]`` of concat(a, b) (dynamic sampling's refill)."""
  def one(x, y):
    axis = world_axis(x)
    if axis is None:
      return x
    return jnp.take(jnp.concatenate([x, y], axis=axis), src, axis=axis)
  return jax.tree.map(one, a, b)


def make_loss(config, student: Policy):
  """``loss_fn(params, mb) -> (loss, metrics)``: the student's outputs on a minibatch of
  policy steps and the config's objective with its hyper-parameters bound."""
  rl = config.rl
  loss_obj = objectives.get(
      config.objective, temperature=config.rollout.temperature,
      clip_eps=config.clip_eps if config.clip_eps > 0 else None, clip_low=rl.clip_low,
      clip_high=rl.clip_high, value_coef=rl.value_coef, entropy_coef=rl.entropy_coef,
      grpo_weight=rl.grpo_weight)

  def loss_fn(params, mb: Batch):
    out = jax.vmap(student.outputs, in_axes=(None, 0))(params, mb.hist)  # [T, B, ...]
    return loss_obj(objectives.Outputs.of(out), mb)
  return loss_fn


def make_update(config, student: Policy, tx, num_steps: int):
  """``update(ts, batch, i) -> (ts, metrics)``: the guarded gradient step on minibatch
  ``i % minibatches`` (the policy steps split in contiguous parts)."""
  mbs = config.optim.minibatches
  if num_steps % mbs:
    raise cli.UsageError(f"config.optim.minibatches={mbs} must divide the {num_steps} policy "
                         f"steps of an iteration")
  t_mb = num_steps // mbs
  step = guarded_update(make_loss(config, student), tx)

  def update(ts: TrainState, batch: Batch, i):
    return step(ts, batch.steps((i % mbs) * t_mb, t_mb))

  return update


@dataclasses.dataclass
class Setup:
  """What the compile-relevant config fields build (not workdir, iterations, logging,
  checkpoint or eval cadence): ``run(config, prepared=s)`` reuses its compiled programs."""
  key: str
  env: Any
  env_kw: dict
  benv: Any
  student: Policy
  params: Any
  origin: str
  teacher: Any
  num_steps: int
  mesh: Any
  tx: Any
  rollout: Callable           # jitted collect(iteration, round, params, teacher_params)
  update: Callable            # jitted update(ts, batch, i)
  num_updates: int            # gradient steps per iteration: epochs x minibatches
  merge: Callable = None      # jitted merge_worlds for dynamic sampling's refill
  group: int = 1
  refill_rounds: int = 0
  compiler_options: dict | None = None
  placement: Callable = None  # leaf -> sharding of parameters and optimiser state (fsdp)
  capacity: int = 0           # worlds kept for DAgger-style replay (0: off; opd_jax.aggregate)
  replay: int = 0             # kept worlds added to each iteration's batch
  aggregate: Callable = None  # jitted (agg, batch, iteration) -> (agg, batch + replay)
  programs: dict = dataclasses.field(default_factory=dict)    # compiled, by name
  evaluators: dict = dataclasses.field(default_factory=dict)  # by (episodes, batch)


_RUN_ONLY_FIELDS = ("workdir", "iterations", "log_every", "checkpoint", "eval",
                    "stop_after_nonfinite", "resume_from")


def compiler_options(config) -> dict | None:
  """``config.llvm_opt_level`` >= 0: XLA:CPU's LLVM optimisation level for every program
  (0 compiles ~2x faster and runs ~3.5x slower: for smoke runs); -1 leaves XLA's default."""
  level = config.get("llvm_opt_level", -1)
  return {"xla_backend_optimization_level": int(level)} if level >= 0 else None


def setup_key(config) -> str:
  return json.dumps({k: v for k, v in config.to_dict().items() if k not in _RUN_ONLY_FIELDS},
                    sort_keys=True, default=str)


def setup(config) -> Setup:
  """Builds suite, student, teacher, mesh, optimiser and the jitted programs (bad input is a
  ``cli.UsageError`` here, before anything compiles)."""
  obj = objectives.OBJECTIVES[config.objective]
  with cli.usage_errors():
    env, env_kw = make_env(config)
    benv = envs.core.BatchEnv(env)
    bad = [t for t in config.env.tasks if not 0 <= t < env.num_tasks]
    if bad:
      raise cli.UsageError(f"config.env.tasks: {bad} out of range: {config.env.suite} has tasks "
                           f"0..{env.num_tasks - 1}")
    stats = None
    if obj.needs_teacher and config.teacher.kind == "checkpoint" and not config.student.init:
      stats = checkpoint_stats(config.teacher.checkpoint)   # the teacher's token meanings
    student, params, origin = make_student(config, env, value_head=config.student.value_head,
                                           stats=stats)
    # an objective that reads no teacher does not pay for one
    teacher = teachers.make(config.teacher, env, student) if obj.needs_teacher else None
    if student.continuous and not obj.continuous_ok:
      raise cli.UsageError(
          f"config.objective: {config.objective!r} compares action tokens, but the student is "
          f"a Gaussian policy ({student.cfg.kind}); use grpo, ppo or rpd, or a token student")
    chunk = student.cfg.chunk
    if chunk > env.max_episode_steps:
      raise cli.UsageError(
          f"config.student.model.chunk: {chunk} is longer than the {env.max_episode_steps}-step "
          f"episodes (config.env.max_episode_steps): one policy step would run the whole "
          f"episode; use a chunk <= {env.max_episode_steps} or longer episodes")
    mbs = config.optim.minibatches
    # to the episode's end, rounded up to whole minibatches (steps after the end are masked)
    num_steps = (config.rollout.policy_steps if config.rollout.policy_steps > 0
                 else mbs * math.ceil(env.max_episode_steps / chunk / mbs))
    mesh = parallel.make_mesh(config.mesh.data, config.mesh.get("fsdp", 1))
    tx = make_optimizer(config.optim)
    update = make_update(config, student, tx, num_steps)
  rep = parallel.replicated(mesh)
  placement = parallel.param_sharding(mesh)
  state = jax.tree.map(placement, abstract_state(params, tx))
  opts = compiler_options(config)
  collect = jax.jit(make_rollout(config, benv, student, teacher, mesh, num_steps))
  update = jax.jit(update, donate_argnums=(0,), in_shardings=(state, None, rep),
                   out_shardings=(state, rep))
  merge = jax.jit(lambda a, b, src: shard_worlds(merge_worlds(a, b, src), mesh))
  agg = config.get("aggregate", {})   # worlds per device, like the rollout's
  capacity = agg.get("worlds", 0) * mesh.devices.size
  replay = agg.get("replay", 0) * mesh.devices.size

  def aggregate(kept, batch, iteration):
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(config.seed), iteration),
                             _REPLAY_STREAM)
    kept, batch = agg_lib.add_and_sample(kept, batch, key, replay)
    return kept.replace(kept=shard_worlds(kept.kept, mesh)), shard_worlds(batch, mesh)
  return Setup(setup_key(config), env, env_kw, benv, student, params, origin, teacher, num_steps,
               mesh, tx, collect, update, config.optim.epochs * config.optim.minibatches,
               merge=merge, group=config.rollout.group,
               refill_rounds=config.rl.refill_rounds if obj.advantage == "group" else 0,
               compiler_options=opts, placement=placement, capacity=capacity, replay=replay,
               aggregate=jax.jit(aggregate, donate_argnums=(0,)) if capacity else None)


_REPLAY_STREAM = 1 << 20   # the replay draw's key, apart from the rollout's rounds


def compile_iteration(su: Setup, ts: TrainState, teacher_params) -> None:
  """Compiles the rollout and the gradient step (concurrently) unless already compiled."""
  if "rollout" in su.programs:
    return
  it = jnp.int32(0)

  def trained_batch(lowered):   # the rollout's batch, with the replayed worlds appended
    shapes = lowered[0].out_info[0]
    if su.replay:
      shapes = agg_lib.widen(shapes, shapes.step_mask.shape[1] + su.replay)
    return placed_like_worlds(shapes, su.mesh)
  progs = [("the rollout", su.rollout, (it, it, ts.params, teacher_params)),
           ("the gradient step", su.update, lambda lowered: (ts, trained_batch(lowered), it),
            compiling.NO_PHYSICS)]
  if su.refill_rounds:   # the batch's shapes come from the rollout's lowering
    progs.append(("the refill", su.merge, lambda lowered: (
        placed_like_worlds(lowered[0].out_info[0], su.mesh),
        placed_like_worlds(lowered[0].out_info[0], su.mesh),
        jax.ShapeDtypeStruct(lowered[0].out_info[0].success.shape, jnp.int32)),
        compiling.NO_PHYSICS))
  compiled = compiling.compile_programs(
      progs, context=traced.fingerprint(su.key, su.env, su.student, su.teacher),
      compiler_options=su.compiler_options)
  for name, prog in zip(("rollout", "update", "merge"), compiled):
    su.programs[name] = prog


def collect_batch(su: Setup, params, teacher_params, iteration: int):
  """The iteration's batch of episodes; with dynamic sampling's refill, groups without signal
  are replaced by mixed groups of up to ``refill_rounds`` further batches."""
  batch, metrics = su.programs["rollout"](jnp.int32(iteration), jnp.int32(0), params,
                                          teacher_params)
  rounds = replaced = 0
  while rounds < su.refill_rounds:
    keep = parallel.to_host(batch.step_weight)[0]
    if keep.all():
      break
    rounds += 1
    extra, _ = su.programs["rollout"](jnp.int32(iteration), jnp.int32(rounds), params,
                                      teacher_params)
    src, n = objectives.refill_plan(keep, parallel.to_host(extra.step_weight)[0], su.group)
    if n:
      batch = su.programs["merge"](batch, extra, np.asarray(src, np.int32))
      replaced += n
  if su.refill_rounds:
    metrics = dict(metrics, **{"rollout/refill_rounds": rounds, "rollout/groups_refilled": replaced,
                               "rollout/groups_kept": jnp.mean(batch.step_weight[0])})
  return batch, metrics


def empty_aggregate(su: Setup, batch: Batch) -> agg_lib.Aggregate:
  """An empty buffer of ``su.capacity`` worlds shaped like ``batch``, made on the devices
  with the batch's world sharding."""
  shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), batch)
  wide = agg_lib.widen(shapes, su.capacity)
  placed = agg_lib.Aggregate(jax.tree.map(lambda x: world_sharding(x, su.mesh), wide),
                             parallel.replicated(su.mesh))
  return jax.jit(lambda: agg_lib.empty(shapes, su.capacity), out_shardings=placed)()


def iterate(su: Setup, ts: TrainState, teacher_params, iteration: int,
            kept: agg_lib.Aggregate | None = None):
  """One iteration: rollout, then the gradient steps. Returns (ts, metrics, kept): the
  metrics of the first gradient step are the on-policy ones (``train/*``); with aggregation
  (``su.capacity``), ``kept`` is the buffer after this iteration's batch joined it (None
  starts an empty one)."""
  compile_iteration(su, ts, teacher_params)
  batch, metrics = collect_batch(su, ts.params, teacher_params, iteration)
  if su.capacity:
    kept = empty_aggregate(su, batch) if kept is None else kept
    kept, batch = su.aggregate(kept, batch, jnp.int32(iteration))
    metrics["rollout/aggregated_worlds"] = jnp.minimum(kept.written, su.capacity)
  first = last = None
  for i in range(su.num_updates):
    ts, m = su.programs["update"](ts, batch, jnp.int32(i))
    first = m if first is None else first
    last = m
  metrics = dict(metrics, **{f"train/{k}": v for k, v in first.items()})
  metrics["train/loss_last"] = last["loss"]
  metrics["train/nonfinite_updates"] = ts.nonfinite_updates.astype(jnp.float32)
  return ts.replace(step=ts.step + 1), metrics, kept


