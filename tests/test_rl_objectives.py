"""RL objectives: advantages, GAE, clipping and the RPD term against hand computation, and
a learning check per objective on a bandit small enough for CI (each fails if the
gradient's sign is wrong)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from opd_jax import actions as act
from opd_jax import objectives
from opd_jax.rollout import Batch, expected_action
from opd_jax.train_state import TrainState, guarded_update


def _batch(tokens, **fields):
  """Batch over [T, B, K, D] tokens; other fields as given (arrays) or neutral."""
  tokens = jnp.asarray(tokens, jnp.int32)
  t, b = tokens.shape[:2]
  base = dict(hist={}, tokens=tokens, behaviour_logp=jnp.zeros(tokens.shape),
              mask=jnp.ones(tokens.shape), step_mask=jnp.ones((t, b)), reward=jnp.zeros((t, b)),
              done=jnp.zeros((t, b)), success=jnp.zeros((b,)))
  base.update({k: jnp.asarray(v, jnp.float32) for k, v in fields.items()})
  return Batch(**base)


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


# ------------------------------------------------------------------------ advantages
def test_group_advantages_by_hand():
  r = jnp.asarray([1., 0., 1., 1., 0., 0., 1., 0.])
  adv, mixed = objectives.group_advantages(r, 2)
  # group (1, 0): mean .5, unbiased std sqrt(.5) -> +-0.7071; (1, 1) and (0, 0) carry nothing
  np.testing.assert_allclose(adv, [0.70710, -0.70710, 0, 0, 0, 0, 0.70710, -0.70710], atol=1e-4)
  np.testing.assert_array_equal(mixed, [1, 1, 0, 0, 0, 0, 1, 1])
  adv4, mixed4 = objectives.group_advantages(r, 4)
  # (1, 0, 1, 1): mean .75, std sqrt(.75 / 3) = .5 -> (.5, -1.5, .5, .5)
  np.testing.assert_allclose(adv4[:4], [0.5, -1.5, 0.5, 0.5], atol=1e-4)
  np.testing.assert_array_equal(mixed4, [1] * 8)


def test_refill_plan_replaces_groups_without_signal_in_order():
  keep_a = np.array([1, 1, 0, 0, 0, 0, 1, 1])
  keep_b = np.array([0, 0, 1, 1, 0, 0, 1, 1])
  src, n = objectives.refill_plan(keep_a, keep_b, 2)
  assert n == 2
  np.testing.assert_array_equal(src, [0, 1, 10, 11, 14, 15, 6, 7])
  src, n = objectives.refill_plan(keep_a, np.zeros(8), 2)
  assert n == 0 and (src == np.arange(8)).all()


def test_gae_by_hand():
  gamma, lam = 0.9, 0.8
  # one world: 3 steps, the episode ends at step 1 (done), step 2 is after the end
  r = jnp.asarray([[0.5], [1.0], [7.0]])
  v = jnp.asarray([[0.2], [0.4], [9.0]])
  done = jnp.asarray([[0.], [1.], [0.]])
  m = jnp.asarray([[1.], [1.], [0.]])
  adv, ret = objectives.gae(r, v, done, m, gamma=gamma, lam=lam)
  d1 = 1.0 - 0.4                      # terminal: no bootstrap
  d0 = 0.5 + gamma * 0.4 - 0.2
  a0 = d0 + gamma * lam * d1
  np.testing.assert_allclose(adv[:, 0], [a0, d1, 0.0], rtol=1e-5)
  np.testing.assert_allclose(ret[:, 0], [a0 + 0.2, d1 + 0.4, 0.0], rtol=1e-5)


def test_cosine_weight():
  assert float(objectives.cosine_weight(5, 2.0, 0)) == 2.0
  np.testing.assert_allclose([float(objectives.cosine_weight(i, 2.0, 10)) for i in (0, 5, 10, 20)],
                             [2.0, 1.0, 0.0, 0.0], atol=1e-6)


# ---------------------------------------------------------------------------- losses
Z = np.array([0.3, -0.2, 0.9])


def test_clip_is_asymmetric_and_stops_the_gradient():
  p = _softmax(Z)
  z = jnp.asarray(Z, jnp.float32).reshape(1, 1, 1, 1, 3)
  for ratio, adv, clip_high, clipped in [(1.25, 1.0, 0.28, False), (1.25, 1.0, 0.2, True),
                                         (0.7, -1.0, 0.28, True), (0.7, 1.0, 0.28, False)]:
    b = _batch([[[[0]]]], behaviour_logp=np.log(p[0] / ratio).reshape(1, 1, 1, 1),
               advantage=[[adv]])
    fn = functools.partial(objectives.grpo, clip_low=0.2, clip_high=clip_high)
    loss, m = fn(objectives.Outputs(z), b)
    g = np.asarray(jax.grad(lambda zz: fn(objectives.Outputs(zz), b)[0])(z)).ravel()
    assert float(m["clip_fraction"]) == float(clipped)
    if clipped:
      bound = 1 + clip_high if adv > 0 else 0.8
      np.testing.assert_allclose(loss, -bound * adv, rtol=1e-5)
      np.testing.assert_allclose(g, 0.0, atol=1e-7)
    else:   # d(-ratio A)/dz = -A ratio (onehot - p)
      np.testing.assert_allclose(g, -adv * ratio * (np.eye(3)[0] - p), rtol=1e-4, atol=1e-6)


def test_dropped_groups_and_masked_steps_have_no_effect():
  rng = np.random.default_rng(0)
  z = jnp.asarray(rng.normal(size=(2, 2, 1, 1, 5)), jnp.float32)
  b = _batch(rng.integers(0, 5, size=(2, 2, 1, 1)), advantage=rng.normal(size=(2, 2)),
             step_weight=[[1, 0], [1, 0]])
  g = jax.grad(lambda zz: objectives.grpo(objectives.Outputs(zz), b)[0])(z)
  assert np.all(np.asarray(g)[:, 1] == 0) and np.abs(np.asarray(g)[:, 0]).max() > 0


def test_rpd_term_gradient_by_hand():
  p = _softmax(Z)
  c = np.asarray(act.from_tokens(np.arange(3)))   # the bins' centres
  target = 0.1
  z = jnp.asarray(Z, jnp.float32).reshape(1, 1, 1, 1, 3)
  b = _batch([[[[0]]]], teacher_mean=np.full((1, 1, 1, 1), target))
  mse, g = jax.value_and_grad(lambda zz: objectives.teacher_mse(objectives.Outputs(zz), b))(z)
  mu = float(np.sum(p * c))
  np.testing.assert_allclose(mse, (mu - target) ** 2, rtol=1e-5)
  # d/dz_j (mu - t)^2 = 2 (mu - t) p_j (c_j - mu)
  np.testing.assert_allclose(np.asarray(g).ravel(), 2 * (mu - target) * p * (c - mu),
                             rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(expected_action(jnp.asarray(Z)), mu, rtol=1e-5)


def test_ppo_value_loss_and_explained_variance():
  z = jnp.zeros((2, 1, 1, 1, 4))
  b = _batch(np.zeros((2, 1, 1, 1)), advantage=[[0.], [0.]], returns=[[1.], [3.]],
             value=[[1.], [2.]])
  v = jnp.asarray([[2.], [2.]])
  loss, m = objectives.ppo(objectives.Outputs(z, v), b, value_coef=0.5)
  np.testing.assert_allclose(m["value_loss"], 0.5 * (1 + 1) / 2, rtol=1e-6)
  np.testing.assert_allclose(loss, 0.5 * 0.5, rtol=1e-6)   # no policy term at A = 0
  # residual of the acting values (1, 2) vs returns (1, 3): var .5 of 1 -> EV 1 - .5 / 1
  np.testing.assert_allclose(m["explained_variance"], 0.5, rtol=1e-6)
  gv = jax.grad(lambda vv: objectives.ppo(objectives.Outputs(z, vv), b, value_coef=0.5)[0])(v)
  np.testing.assert_allclose(gv, [[0.5 * 1.0 / 2], [-0.5 * 1.0 / 2]], rtol=1e-6)
  with pytest.raises(ValueError, match="value head"):
    objectives.ppo(objectives.Outputs(z), b)


# -------------------------------------------------------------- learning on a bandit
V, GOOD = 8, 5     # one token of 8 bins; bin 5 succeeds


def _bandit_run(name, steps=40, group=4, prompts=8, rewarded=True, **hp):
  """A one-step task learned with objective ``name`` through the trainer's guarded update
  (``rewarded=False``: success pays nothing, only a teacher term can teach); returns
  (P(good bin) before, after, the policy's mean action after)."""
  params = {"z": jnp.zeros((V,)), "v": jnp.zeros(())}
  tx = optax.adam(0.1)
  fn = objectives.get(name, **hp)
  teacher_logp = jnp.log(jnp.full((V,), 0.02).at[GOOD].set(1 - 0.02 * (V - 1)))
  n = group * prompts

  def loss_fn(p, b):
    logits = jnp.broadcast_to(p["z"], (1, n, 1, 1, V))
    return fn(objectives.Outputs(logits, jnp.broadcast_to(p["v"], (1, n))), b)

  update = jax.jit(guarded_update(loss_fn, tx))

  @jax.jit
  def batch_of(p, key):
    tok = jax.random.categorical(key, p["z"], shape=(1, n, 1, 1))
    success = (tok[0, :, 0, 0] == GOOD).astype(jnp.float32) * rewarded
    logp = jax.nn.log_softmax(p["z"])[tok]
    adv, mixed = objectives.group_advantages(success, group)
    f = dict(behaviour_logp=logp, teacher_logp=jnp.broadcast_to(teacher_logp, (1, n, 1, 1, V)),
             teacher_mean=jnp.full((1, n, 1, 1), act.from_tokens(jnp.asarray(GOOD))),
             teacher_weight=1.0, value=jnp.broadcast_to(p["v"], (1, n)), reward=success[None],
             done=jnp.ones((1, n)))
    if OBJ[name].advantage == "group":
      f.update(advantage=adv[None], step_weight=mixed[None])
    else:
      a, ret = objectives.gae(success[None], f["value"], f["done"], jnp.ones((1, n)),
                              gamma=0.99, lam=0.95)
      f.update(advantage=a, returns=ret)
    return _batch(tok, **f)

  ts = TrainState(jnp.int32(0), params, tx.init(params), jnp.int32(0))
  before = float(jax.nn.softmax(params["z"])[GOOD])
  for i in range(steps):
    ts, _ = update(ts, batch_of(ts.params, jax.random.PRNGKey(i)))
  z = ts.params["z"]
  return before, float(jax.nn.softmax(z)[GOOD]), float(expected_action(z))


OBJ = objectives.OBJECTIVES


@pytest.mark.parametrize("name", ["grpo", "ppo", "rpd", "reverse_kl+grpo"])
def test_each_rl_objective_learns_a_bandit(name):
  before, after, _ = _bandit_run(name)
  assert before == pytest.approx(1 / V)
  assert after > 0.6, (name, after)     # a wrong sign drives it towards 0


def test_rpd_teacher_term_alone_moves_the_mean_to_the_teacher():
  target = float(act.from_tokens(np.asarray(GOOD)))
  _, _, mean = _bandit_run("rpd", rewarded=False, steps=60)
  assert abs(mean - target) < 0.05, (mean, target)     # from 0 (uniform) to the teacher's
  _, after, _ = _bandit_run("grpo", rewarded=False)
  assert after < 0.3                                   # nothing else teaches here


def test_merge_worlds_takes_each_field_from_the_planned_world():
  from opd_jax.iteration import merge_worlds
  a = _batch(np.zeros((3, 4, 1, 1)), advantage=np.zeros((3, 4)), teacher_weight=0.5)
  b = _batch(np.ones((3, 4, 1, 1)), advantage=np.ones((3, 4)), teacher_weight=0.9)
  b = b.replace(success=jnp.asarray([0., 0., 1., 1.]))
  m = merge_worlds(a, b, jnp.asarray([0, 1, 6, 7]))
  np.testing.assert_array_equal(m.tokens[:, :, 0, 0], [[0, 0, 1, 1]] * 3)
  np.testing.assert_array_equal(m.advantage, [[0, 0, 1, 1]] * 3)
  np.testing.assert_array_equal(m.success, [0, 0, 1, 1])
  assert float(m.teacher_weight) == 0.5


def test_gaussian_student_log_probs_are_joint_over_the_chunk():
  from opd_jax.policy import gaussian_log_prob
  mean, log_std = jnp.zeros((1, 1, 2, 1)), jnp.log(jnp.full((1, 1, 2, 1), 0.5))
  x = jnp.asarray([0.5, -0.25]).reshape(1, 1, 2, 1)
  out = objectives.Outputs(None, mean=mean, log_std=log_std)
  b = _batch(np.zeros((1, 1, 2, 1))).replace(tokens=None, actions=x,
                                              behaviour_logp=gaussian_log_prob(x, mean, log_std))
  logp, blogp, w, m = objectives.action_log_probs(out, b, 1.0)
  by_hand = sum(-0.5 * (v / 0.5) ** 2 - np.log(0.5) - 0.5 * np.log(2 * np.pi) for v in (0.5, -0.25))
  np.testing.assert_allclose(logp, [[by_hand]], rtol=1e-5)
  np.testing.assert_allclose(blogp, logp, rtol=1e-6)
  assert w.shape == (1, 1)
  np.testing.assert_allclose(m["entropy"], np.log(0.5) + 0.5 * np.log(2 * np.pi * np.e), rtol=1e-5)
  # at temperature 2 the draws are judged under twice the std
  np.testing.assert_allclose(objectives.action_log_probs(out, b, 2.0)[0],
                             [[sum(-0.5 * (v / 1.0) ** 2 - np.log(1.0) - 0.5 * np.log(2 * np.pi)
                                   for v in (0.5, -0.25))]], rtol=1e-5)


def test_gaussian_ppo_and_rpd_learn_a_bandit():
  """A one-dim Gaussian policy: reward for actions near 0.5 (PPO), or only the teacher's
  mean at 0.5 (RPD); the mean moves there from 0."""
  params = {"mean": jnp.zeros(()), "log_std": jnp.log(0.3) * jnp.ones(()), "v": jnp.zeros(())}
  tx = optax.adam(0.05)

  def run(name, rewarded):
    fn = objectives.get(name)
    n = 64

    def loss_fn(p, b):
      out = objectives.Outputs(None, jnp.broadcast_to(p["v"], (1, n)),
                               jnp.broadcast_to(p["mean"], (1, n, 1, 1)),
                               jnp.broadcast_to(p["log_std"], (1, n, 1, 1)))
      return fn(out, b)

    update = jax.jit(guarded_update(loss_fn, tx))

    @jax.jit
    def batch_of(p, key):
      x = p["mean"] + jnp.exp(p["log_std"]) * jax.random.normal(key, (1, n, 1, 1))
      from opd_jax.policy import gaussian_log_prob
      blogp = gaussian_log_prob(x, p["mean"], p["log_std"])
      r = (jnp.abs(x[0, :, 0, 0] - 0.5) < 0.2).astype(jnp.float32) * rewarded
      v = jnp.broadcast_to(p["v"], (1, n))
      a, ret = objectives.gae(r[None], v, jnp.ones((1, n)), jnp.ones((1, n)), gamma=0.99, lam=0.95)
      return _batch(np.zeros((1, n, 1, 1))).replace(
          tokens=None, actions=x, behaviour_logp=blogp, reward=r[None], value=v,
          advantage=objectives.normalize(a, jnp.ones((1, n))), returns=ret,
          teacher_mean=jnp.full((1, n, 1, 1), 0.5), teacher_weight=jnp.float32(1.0))

    ts = TrainState(jnp.int32(0), params, tx.init(params), jnp.int32(0))
    for i in range(60):
      ts, _ = update(ts, batch_of(ts.params, jax.random.PRNGKey(i)))
    return float(ts.params["mean"])

  assert abs(run("ppo", 1.0) - 0.5) < 0.15
  assert abs(run("rpd", 0.0) - 0.5) < 0.1
  assert abs(run("ppo", 0.0)) < 0.2      # no reward, no teacher: nothing pulls it there


def test_collect_batch_replaces_groups_without_signal_by_a_refill():
  """The trainer's refill loop (iteration.collect_batch) with a rollout program that returns
  a batch whose group 0 carries no signal, then a refill whose group 0 does: the merged batch
  takes the refill's group in its place and the metrics count one round, one group."""
  import dataclasses as dc   # pylint: disable=import-outside-toplevel
  from flax import struct   # pylint: disable=import-outside-toplevel
  from opd_jax import iteration   # pylint: disable=import-outside-toplevel

  @struct.dataclass
  class Part:
    step_weight: jax.Array   # [T, B]
    x: jax.Array             # [T, B]

  rounds = {0: Part(jnp.array([[0., 0., 1., 1.]] * 3), jnp.array([[0., 1., 2., 3.]] * 3)),
            1: Part(jnp.array([[1., 1., 0., 0.]] * 3), jnp.array([[10., 11., 12., 13.]] * 3))}
  calls = []

  def rollout(iteration_, round_, params, teacher_params):
    calls.append(int(round_))
    return rounds[int(round_)], {"rollout/success": jnp.float32(0.5)}

  fields = {f.name: None for f in dc.fields(iteration.Setup) if f.default is dc.MISSING
            and f.default_factory is dc.MISSING}
  su = iteration.Setup(**fields)
  su.group, su.refill_rounds = 2, 3
  su.programs = {"rollout": rollout, "merge": jax.jit(
      lambda a, b, src: iteration.merge_worlds(a, b, src))}
  batch, m = iteration.collect_batch(su, None, None, 7)
  np.testing.assert_array_equal(batch.x[0], [10., 11., 2., 3.])
  np.testing.assert_array_equal(batch.step_weight[0], [1., 1., 1., 1.])
  assert calls == [0, 1]     # every group carries signal after one round: no second refill
  assert m["rollout/refill_rounds"] == 1 and m["rollout/groups_refilled"] == 1
  assert float(m["rollout/groups_kept"]) == 1.0
