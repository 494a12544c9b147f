"""benchmarks/torch_baseline: the PyTorch re-implementation of the Octo-style policy computes
what the JAX policy computes, from weights converted from JAX (a random small policy and the
shipped teacher), eagerly and under torch.compile.

Tolerances are float32 rounding with ~10x margin over the measured differences, and tight
enough to catch a numerics slip: exact instead of tanh GELU moves the teacher's logits by
6e-3, LayerNorm eps 1e-5 instead of 1e-6 by 8e-2, 'SAME' instead of (1, 1) conv padding by 18.
"""
import os
import sys

import jax
import numpy as np
import pytest

from opd_jax import checkpoint, models

torch = pytest.importorskip("torch", reason="the PyTorch baseline needs torch: "
                                            "pip install -e '.[torch]'")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.torch_baseline.policy import TorchPolicy, as_tensors, from_jax  # noqa: E402

# Every head and token group, history 2 (the causal rules across steps matter), two readouts,
# the rotation-vector proprio features; the teacher below covers the linear action head.
SMALL = models.ModelConfig(size="custom", num_layers=2, width=32, num_heads=2, mlp_dim=64,
                           conv_channels=(8, 16, 32, 64), history=2, num_readouts=2,
                           text_len=8, vocab_size=64, proprio_encoding="pose_rotvec",
                           action_head_hidden=16, value_head=True, gaussian_head=True)
# Measured max |torch - JAX| on these inputs (float32, CPU): small policy 2.1e-6 (logits up
# to 4; <= 1.9e-6 over 4 more seeds), teacher 3.1e-5 (logits up to 23, a float32 spacing of
# 1.9e-6; <= 4.3e-5 over 32 more observations), compiled vs eager 8.3e-7.
SMALL_ATOL, TEACHER_ATOL, COMPILE_ATOL = 2e-5, 3e-4, 2e-5


def _obs(cfg, batch, seed, pad_first_step=False):
  rng = np.random.default_rng(seed)
  shape = (batch, cfg.history, cfg.image_size, cfg.image_size, 3)
  obs = {c: rng.integers(0, 256, shape, dtype=np.uint8) for c in cfg.cameras}
  proprio = rng.normal(size=(batch, cfg.history, cfg.proprio_dim)).astype(np.float32)
  proprio[0, :, 3:6] = [0.0, 0.0, 0.0]  # the rotation's small-angle branch (angle <= 1e-3)
  proprio[-1, :, 3:6] = [3.0, -1.0, 0.5]  # an angle past pi
  obs["proprio"] = proprio
  if pad_first_step:  # row 0's first step is padding (before its episode started)
    obs["timestep_pad_mask"] = np.ones((batch, cfg.history), bool)
    obs["timestep_pad_mask"][0, 0] = False
  return obs


def _jax_apply(graphdef, params, obs, ids, mask):
  out = jax.jit(lambda p, o, i, m: models.apply(graphdef, p, o, i, m))(params, obs, ids, mask)
  return {k: np.asarray(v) for k, v in out.items()}


def _torch_apply(policy, obs, ids, mask):
  with torch.no_grad():
    out = policy(as_tensors(obs), torch.from_numpy(ids), torch.from_numpy(mask))
  return {k: v.detach().numpy() for k, v in out.items()}


@pytest.fixture(scope="module")
def small():
  graphdef, params = models.make_policy(SMALL, seed=3)
  obs = _obs(SMALL, 3, seed=0, pad_first_step=True)
  # 6 < text_len words, padded words in all but one row.
  ids, mask = models.tokenize(["pick up the bowl", "put the cream cheese in the basket",
                               "open"], 6, SMALL.vocab_size)
  return params, obs, ids, mask, _jax_apply(graphdef, params, obs, ids, mask)


def test_small_policy_matches_jax(small):
  params, obs, ids, mask, want = small
  policy = TorchPolicy.from_jax(SMALL, params)
  got = _torch_apply(policy, obs, ids, mask)
  assert sorted(got) == sorted(want) == ["log_std", "logits", "mean", "value"]
  for k in want:
    assert got[k].shape == want[k].shape and got[k].dtype == np.float32, k
    np.testing.assert_allclose(got[k], want[k], rtol=0, atol=SMALL_ATOL, err_msg=k)
  # The inputs exercise the padding: without the pad mask the first row's logits move.
  unpadded = {k: v for k, v in obs.items() if k != "timestep_pad_mask"}
  moved = np.abs(_torch_apply(policy, unpadded, ids, mask)["logits"] - want["logits"])
  assert moved[0].max() > 100 * SMALL_ATOL and moved[1:].max() <= SMALL_ATOL
  # torch's fused norms (two-pass variance) agree to the same tolerance.
  fused = _torch_apply(from_jax(SMALL, params, fused_norms=True), obs, ids, mask)
  np.testing.assert_allclose(fused["logits"], want["logits"], rtol=0, atol=SMALL_ATOL)


def test_conversion_names_missing_and_extra_parameters(small):
  from flax import nnx  # pylint: disable=import-outside-toplevel
  pure = nnx.to_pure_dict(small[0])
  del pure["blocks"][1]["mlp_in"]["bias"]
  with pytest.raises(KeyError, match=r"blocks\.1\.mlp_in\.bias"):
    from_jax(SMALL, pure)
  pure = nnx.to_pure_dict(small[0])
  pure["stems"]["wrist"]["extra"] = {"kernel": np.zeros((2, 2), np.float32)}
  with pytest.raises(KeyError, match="stems/wrist/extra/kernel"):
    from_jax(SMALL, pure)
  pure = nnx.to_pure_dict(small[0])
  pure["task_pos"] = np.zeros((SMALL.text_len + 1, SMALL.width), np.float32)
  with pytest.raises(ValueError, match="task_pos"):
    from_jax(SMALL, pure)


def test_shipped_teacher_matches_jax():
  graphdef, params, cfg, _, meta = checkpoint.load_policy("pretrained/libero_object_teacher")
  assert cfg.kind == "octo" and cfg.action_head_hidden == 0
  obs = _obs(cfg, 4, seed=1)
  ids, mask = models.tokenize(meta["instructions"][:4], cfg.text_len, cfg.vocab_size)
  want = _jax_apply(graphdef, params, obs, ids, mask)["logits"]
  got = _torch_apply(TorchPolicy.from_jax(cfg, params), obs, ids, mask)["logits"]
  assert got.shape == want.shape == (4, cfg.chunk, cfg.action_dim, cfg.num_bins)
  np.testing.assert_allclose(got, want, rtol=0, atol=TEACHER_ATOL)
  assert (got.argmax(-1) == want.argmax(-1)).mean() > 0.99


def test_torch_compile_matches_eager():
  # A smaller policy than SMALL (one camera, two convs, one layer): inductor's cold C++ compile
  # dominates this test's time and grows with the number of distinct kernels.
  cfg = models.ModelConfig(size="custom", num_layers=1, width=16, num_heads=2, mlp_dim=32,
                           image_size=16, cameras=("agentview",), conv_channels=(8, 16),
                           history=2, text_len=8, vocab_size=64, value_head=True,
                           proprio_encoding="pose_rotvec")
  _, params = models.make_policy(cfg, seed=0)
  policy = TorchPolicy.from_jax(cfg, params)
  obs = _obs(cfg, 2, seed=2, pad_first_step=True)
  ids, mask = models.tokenize(["pick up the bowl", "open the drawer now"], 5, cfg.vocab_size)
  eager = _torch_apply(policy, obs, ids, mask)
  try:
    compiled = _torch_apply(torch.compile(policy), obs, ids, mask)
  except Exception as e:  # pylint: disable=broad-except
    # Inductor on CPU builds C++ kernels: without a working C++ compiler it raises
    # InvalidCxxCompiler (wrapped in dynamo's BackendCompilerFailed). Anything else fails.
    if "InvalidCxxCompiler" in f"{type(e).__name__}: {e}":
      pytest.skip(f"torch.compile needs a C++ compiler on CPU: {type(e).__name__}: {e}")
    raise
  for k in eager:
    np.testing.assert_allclose(compiled[k], eager[k], rtol=0, atol=COMPILE_ATOL, err_msg=k)
