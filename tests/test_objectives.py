"""Objectives: values and gradients against hand computation; the sampled
reverse-KL estimator's mean against the exact gradient (Monte Carlo)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from opd_jax import objectives
from opd_jax.rollout import Batch


def _batch(teacher_probs, tokens, mask=None, behaviour_logp=None, **fields):
  """A Batch whose leading axes are (policy steps, worlds); fields for the RL objectives."""
  t = jnp.log(jnp.asarray(teacher_probs, jnp.float32))
  tokens = jnp.asarray(tokens, jnp.int32)
  mask = jnp.ones(tokens.shape, jnp.float32) if mask is None else jnp.asarray(mask, jnp.float32)
  if behaviour_logp is None:
    behaviour_logp = jnp.zeros(tokens.shape, jnp.float32)
  steps = tokens.shape[:2]
  base = dict(hist={}, tokens=tokens, mask=mask, behaviour_logp=jnp.asarray(behaviour_logp),
              teacher_logp=t, step_mask=jnp.ones(steps), reward=jnp.zeros(steps),
              done=jnp.zeros(steps), success=jnp.zeros(steps[1:]))
  base.update({k: None if v is None else jnp.asarray(v, jnp.float32) for k, v in fields.items()})
  return Batch(**base)


def O(logits, value=None):  # noqa: E743  the student's outputs
  return objectives.Outputs(logits, value)


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


# One token (N=K=D=1) with V=3 bins: small enough to differentiate by hand.
Z = np.array([0.3, -0.2, 0.9])
T = np.array([0.5, 0.3, 0.2])


def _logits():
  return jnp.asarray(Z, jnp.float32).reshape(1, 1, 1, 3)


def test_reverse_kl_exact_value_and_gradient_by_hand():
  b = _batch(T.reshape(1, 1, 1, 3), [[[0]]])
  loss, grad = jax.value_and_grad(lambda z: objectives.reverse_kl_exact(O(z), b)[0])(_logits())
  p = _softmax(Z)
  kl = np.sum(p * (np.log(p) - np.log(T)))
  # d/dz_j Σ p (log p − log t) = p_j (log p_j − log t_j − KL)
  expected = p * (np.log(p) - np.log(T) - kl)
  np.testing.assert_allclose(loss, kl, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(grad).ravel(), expected, rtol=1e-4, atol=1e-6)


def test_reverse_kl_sampled_gradient_by_hand():
  a = 2
  p = _softmax(Z)
  b = _batch(T.reshape(1, 1, 1, 3), [[[a]]], behaviour_logp=np.log(p[a]).reshape(1, 1, 1))
  loss, grad = jax.value_and_grad(lambda z: objectives.reverse_kl(O(z), b)[0])(_logits())
  r = np.log(T[a]) - np.log(p[a])
  # loss = −ratio·r; ∇ratio at ratio 1 = ∇log p_a = onehot(a) − p
  expected = -(np.eye(3)[a] - p) * r
  np.testing.assert_allclose(loss, -r, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(grad).ravel(), expected, rtol=1e-4, atol=1e-6)


def test_forward_kl_and_hard_ce_gradients_by_hand():
  b = _batch(T.reshape(1, 1, 1, 3), [[[1]]])
  p = _softmax(Z)
  g_fkl = jax.grad(lambda z: objectives.forward_kl(O(z), b)[0])(_logits())
  np.testing.assert_allclose(np.asarray(g_fkl).ravel(), p - T, rtol=1e-4, atol=1e-6)
  g_ce = jax.grad(lambda z: objectives.hard_ce(O(z), b)[0])(_logits())
  np.testing.assert_allclose(np.asarray(g_ce).ravel(), p - np.eye(3)[0], rtol=1e-4, atol=1e-6)


def test_temperature_divides_student_logits():
  b = _batch(T.reshape(1, 1, 1, 3), [[[0]]])
  loss = objectives.reverse_kl_exact(O(_logits()), b, temperature=2.0)[0]
  p = _softmax(Z / 2.0)
  np.testing.assert_allclose(loss, np.sum(p * (np.log(p) - np.log(T))), rtol=1e-5)


def test_masked_tokens_have_no_effect():
  rng = np.random.default_rng(0)
  z = jnp.asarray(rng.normal(size=(2, 2, 3, 5)), jnp.float32)
  t = _softmax(rng.normal(size=(2, 2, 3, 5)))
  tokens = rng.integers(0, 5, size=(2, 2, 3))
  mask = np.ones((2, 2, 3))
  mask[1, 1] = 0.0
  for name in ("reverse_kl", "reverse_kl_exact", "forward_kl", "hard_ce"):
    fn = objectives.get(name)
    b = _batch(t, tokens, mask)
    g = jax.grad(lambda zz: fn(O(zz), b)[0])(z)
    assert np.all(np.asarray(g)[1, 1] == 0.0), name
    # Changing the teacher on masked tokens changes nothing.
    t2 = t.copy()
    t2[1, 1] = _softmax(rng.normal(size=(3, 5)))
    l1 = fn(O(z), b)[0]
    l2 = fn(O(z), _batch(t2, tokens, mask))[0]
    np.testing.assert_allclose(l1, l2, rtol=1e-6)


def test_sampled_estimator_mean_matches_exact_gradient():
  """E_{a~p_S}[∇log p_S(a)·(log p_T(a) − log p_S(a))] = −∇KL(p_S ‖ p_T)."""
  rng = np.random.default_rng(1)
  V, n = 8, 100_000
  z = jnp.asarray(rng.normal(size=(1, 1, 1, V)), jnp.float32)
  t = _softmax(rng.normal(size=V) * 2.0)
  exact = jax.grad(lambda zz: objectives.reverse_kl_exact(O(zz), _batch(t.reshape(1, 1, 1, V), [[[0]]]))[0])(z)
  p = jax.nn.softmax(z[0, 0, 0])
  a = jax.random.categorical(jax.random.PRNGKey(0), z[0, 0, 0], shape=(n,))
  zs = jnp.broadcast_to(z[0], (n, 1, 1, V))
  b = _batch(np.broadcast_to(t, (n, 1, 1, V)), a.reshape(n, 1, 1),
             behaviour_logp=jnp.log(p[a]).reshape(n, 1, 1))
  sampled = jax.grad(lambda zz: objectives.reverse_kl(O(zz), b)[0])(zs).sum(0)
  # The mean over n samples of per-sample gradients (loss is a token mean).
  np.testing.assert_allclose(np.asarray(sampled).ravel(), np.asarray(exact).ravel(), atol=4e-3)
  # And the estimate is not trivially zero.
  assert np.abs(np.asarray(exact)).max() > 0.05


def test_ppo_clip_stops_gradient_outside_trust_region():
  p = _softmax(Z)
  a = 0
  # Behaviour policy made the token much less likely: ratio >> 1 + eps.
  b = _batch(T.reshape(1, 1, 1, 3), [[[a]]], behaviour_logp=np.log(p[a] / 3).reshape(1, 1, 1))
  r = np.log(T[a]) - np.log(p[a])
  assert r > 0  # positive reward: clipping binds for ratio > 1 + eps
  fn = functools.partial(objectives.reverse_kl, clip_eps=0.2)
  loss, m = fn(O(_logits()), b)
  g = jax.grad(lambda z: fn(O(z), b)[0])(_logits())
  np.testing.assert_allclose(loss, -1.2 * r, rtol=1e-5)
  assert float(m["clip_fraction"]) == 1.0
  np.testing.assert_allclose(np.asarray(g), 0.0, atol=1e-7)


def test_metrics_entropy_and_agreement():
  z = jnp.log(jnp.asarray([[[[0.25, 0.25, 0.25, 0.25]], [[0.7, 0.1, 0.1, 0.1]]]], jnp.float32))
  t = np.array([[[[0.1, 0.6, 0.2, 0.1]], [[0.9, 0.05, 0.03, 0.02]]]])
  _, m = objectives.reverse_kl_exact(O(z), _batch(t, [[[0], [0]]]))
  np.testing.assert_allclose(m["entropy"], (np.log(4) + -np.sum([.7, .1, .1, .1] * np.log([.7, .1, .1, .1]))) / 2,
                             rtol=1e-5)
  # Uniform student's argmax is bin 0 (≠ teacher's 1); second agrees (0 == 0).
  assert float(m["teacher_agreement"]) == 0.5


def test_unknown_objective_is_a_clear_error():
  with pytest.raises(ValueError, match="config.objective"):
    objectives.get("reverse_kld")
