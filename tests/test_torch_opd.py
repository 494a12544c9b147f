"""benchmarks/torch_baseline/opd.py: the PyTorch OPD iteration computes opd_jax's losses, takes
opd_jax's optimiser step, decodes tokens as opd_jax does, and runs end to end on MuJoCo C worlds.

Measured (float32, CPU): reverse_kl / reverse_kl_exact / clipped reverse_kl losses within 6e-8 of
the JAX objectives, their gradients w.r.t. the logits within 3e-9 (entries up to ~0.03); three
AdamW steps (warm-up, clipping on and off, weight decay) leave every parameter within 6e-9 of
optax's; decoded actions equal opd_jax.actions.decode bit for bit.
"""
import dataclasses
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the PyTorch baseline needs torch: "
                                            "pip install -e '.[torch]'")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.torch_baseline import opd  # noqa: E402
from benchmarks.torch_baseline import vec_env as V  # noqa: E402
from benchmarks.torch_baseline.policy import from_jax  # noqa: E402
from opd_jax import actions, models  # noqa: E402
from opd_jax.build import identity_stats  # noqa: E402
from opd_jax.objectives import distill  # noqa: E402
from opd_jax.objectives.common import Outputs  # noqa: E402
from opd_jax.rollout import Batch  # noqa: E402
from opd_jax.train_state import make_optimizer  # noqa: E402

# float32 rounding: ~10x the largest difference measured over 5 seeds
LOSS_GRAD_TOL = dict(rtol=1e-5, atol=1e-7)
PARAM_ATOL = 2e-6  # 3 steps: <= 3e-7 measured over 5 steps, moves of 5e-4 to 3.5e-3

TINY = models.ModelConfig(size="custom", num_layers=1, width=16, num_heads=2, mlp_dim=32,
                          image_size=16, conv_channels=(8, 16), chunk=2, text_len=8,
                          vocab_size=64, proprio_encoding="pose_rotvec")


def _hand_batch(seed=0, n=(2, 3), k=2, d=3, v=16, temperature=0.7):
  """logits [n..., K, D, V], tokens, a mask with zeros, off-policy behaviour log-probs."""
  rng = np.random.default_rng(seed)
  logits = rng.normal(0, 2, (*n, k, d, v)).astype(np.float32)
  tokens = rng.integers(0, v, (*n, k, d)).astype(np.int32)
  mask = (rng.random((*n, k, d)) > 0.3).astype(np.float32)
  t_logits = rng.normal(0, 2, (*n, k, d, v)).astype(np.float32)
  t_logp = np.asarray(jax.nn.log_softmax(t_logits, -1))
  s_logp = np.asarray(jax.nn.log_softmax(logits / temperature, -1))
  blogp = (np.take_along_axis(s_logp, tokens[..., None], -1)[..., 0]
           + rng.normal(0, 0.3, tokens.shape)).astype(np.float32)  # ratio != 1
  return logits, tokens, mask, blogp, t_logp


@pytest.mark.parametrize("objective,clip_eps", [("reverse_kl", None), ("reverse_kl", 0.2),
                                                 ("reverse_kl_exact", None)])
def test_losses_and_gradients_match_jax(objective, clip_eps):
  temperature = 0.7
  logits, tokens, mask, blogp, t_logp = _hand_batch(temperature=temperature)
  batch = Batch(hist=None, tokens=jnp.asarray(tokens), behaviour_logp=jnp.asarray(blogp),
                mask=jnp.asarray(mask), step_mask=None, reward=None, done=None, success=None,
                teacher_logp=jnp.asarray(t_logp))
  kw = dict(temperature=temperature) | ({"clip_eps": clip_eps} if clip_eps else {})
  fn = getattr(distill, objective)
  want, want_grad = jax.value_and_grad(lambda lg: fn(Outputs(lg), batch, **kw)[0])(
      jnp.asarray(logits))

  lg = torch.tensor(logits, requires_grad=True)
  t = {k: torch.tensor(v) for k, v in dict(tokens=tokens, mask=mask, blogp=blogp,
                                               t_logp=t_logp).items()}
  if objective == "reverse_kl_exact":
    got = opd.reverse_kl_exact(lg, t["mask"], t["t_logp"], temperature)
  else:
    got = opd.reverse_kl(lg, t["tokens"], t["mask"], t["blogp"], t["t_logp"], temperature,
                         clip_eps)
  got.backward()
  assert abs(float(want)) > 0.05 and np.abs(np.asarray(want_grad)).max() > 1e-3  # not trivial
  np.testing.assert_allclose(got.item(), float(want), **LOSS_GRAD_TOL)
  np.testing.assert_allclose(lg.grad.numpy(), np.asarray(want_grad), **LOSS_GRAD_TOL)
  # masked tokens get no gradient
  assert np.abs(lg.grad.numpy()[mask == 0]).max() == 0.0


def test_token_decoding_matches_opd_jax():
  stats = actions.make_stats([-0.44, -1, -1, -0.02, -0.11, -0.19, -1],
                             [1, 1, 1, 0.025, 0.036, 0.34, 1],
                             [True] * 6 + [False])
  tokens = np.stack([np.arange(actions.NUM_BINS)] * 7, -1).astype(np.int32)  # every bin, dim
  got = opd.TokenDecoder(stats)(torch.from_numpy(tokens)).numpy()
  np.testing.assert_array_equal(got, actions.decode(stats, tokens))


def test_adamw_step_matches_optax():
  o = ml_collections.ConfigDict(dict(optimizer="adamw", lr=1e-3, warmup=2, weight_decay=0.01,
                                     grad_clip=1.0, b1=0.9, b2=0.999))
  _, params = models.make_policy(TINY, seed=0)
  tx = make_optimizer(o)
  state = tx.init(params)
  policy = from_jax(TINY, params)
  tparams = dict(policy.named_parameters())
  c = opd.OPDConfig(lr=o.lr, warmup=o.warmup, weight_decay=o.weight_decay, b1=o.b1, b2=o.b2,
                    grad_clip=o.grad_clip)
  opt, sched = opd.make_optimizer(list(tparams.values()), c)
  rng = np.random.default_rng(1)
  for scale in (0.5, 1e-3, 0.05):  # global norm > clip (clipped), < clip, > clip
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(0, scale, p.shape), jnp.float32),
                         params)
    updates, state = tx.update(grads, state, params)
    params = jax.tree.map(lambda p, u: p + u, params, updates)
    as_torch = dict(from_jax(TINY, grads).named_parameters())  # same layout conversion
    for name, p in tparams.items():
      p.grad = as_torch[name].detach().clone()
    norm, applied = opd.guarded_step(list(tparams.values()), opt, sched, c.grad_clip)
    assert applied and (norm > 1.0) == (scale != 1e-3)
    want = dict(from_jax(TINY, params).named_parameters())
    for name, p in tparams.items():
      np.testing.assert_allclose(p.detach().numpy(), want[name].detach().numpy(), rtol=0,
                                 atol=PARAM_ATOL, err_msg=name)
  # a non-finite gradient changes nothing, not even the schedule
  before = {n: p.detach().clone() for n, p in tparams.items()}
  next(iter(tparams.values())).grad[0] = float("nan")
  assert not opd.guarded_step(list(tparams.values()), opt, sched, c.grad_clip)[1]
  assert sched.last_epoch == 3 and all(torch.equal(p, before[n]) for n, p in tparams.items())


def test_two_iterations_on_two_worlds(render_ok, spatial_blind, blind_fns):
  reset = blind_fns[0]
  qpos = np.stack([np.asarray(reset(jax.random.PRNGKey(i), i).data.qpos) for i in range(2)])
  tasks = np.arange(2, dtype=np.int32)
  # 6-step episodes, chunk 2, 4 policy steps: the episode ends after the third policy step
  cfg = dataclasses.replace(V.CConfig.from_suite("libero_spatial", image_size=16),
                            max_episode_steps=6)
  student = from_jax(TINY, models.make_policy(TINY, seed=0)[1])
  t_cfg = dataclasses.replace(TINY, history=2)  # the window of the longer history
  teacher = from_jax(t_cfg, models.make_policy(t_cfg, seed=1)[1])
  c = opd.OPDConfig(num_steps=4, minibatches=2, epochs=1, warmup=1, lr=1e-3)
  venv = opd.make_venv("serial", 2, cfg, qpos, tasks)
  try:
    run = opd.TorchOPD(student, teacher, identity_stats(7), spatial_blind.instructions, venv, c)
    start = {n: p.detach().clone() for n, p in student.named_parameters()}
    batch, m = run.rollout()
    assert batch["tokens"].shape == (4, 2, 2, 7) and batch["teacher_logp"].shape[-1] == 256
    np.testing.assert_array_equal(batch["mask"][..., 0, 0].numpy(), [[1, 1]] * 3 + [[0, 0]])
    assert batch["hist"]["agentview"].shape == (4, 2, 2, 16, 16, 3)
    assert not batch["hist"]["timestep_pad_mask"][0, :, 0].any()  # padding before the start
    for i in range(2):
      m = run.iterate()
      print(f"iteration {i + 1}: {m['control_steps']:.0f} env steps, "
            f"{m['env_steps_per_s']:.1f} env steps/s, loss {m['loss']:.4f}")
      assert m["control_steps"] == 12 and np.isfinite(m["loss"]) and m["nonfinite_updates"] == 0
    assert any(not torch.equal(p, start[n]) for n, p in student.named_parameters())

    # the process-parallel env runs the same chunks to the same observations
    sub = opd.make_venv("subproc", 2, cfg, qpos, tasks, workers=2)
    try:
      serial = opd.make_venv("serial", 2, cfg, qpos, tasks)
      a = np.random.default_rng(0).uniform(-1, 1, (2, 2, 7))
      for env in (serial, sub):
        env.reset()
      (o1, e1, d1, _), (o2, e2, d2, _) = serial.step_chunk(a), sub.step_chunk(a)
      serial.close()
      np.testing.assert_array_equal(e1, e2)
      for k in o1:
        np.testing.assert_array_equal(o1[k], o2[k], err_msg=k)
    finally:
      sub.close()
  finally:
    venv.close()
