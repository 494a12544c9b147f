"""The RL objectives through the trainer: bad input refused before compiling, and one run
each of the value-based (rpd: value head, GAE, dense shaping, teacher means) and the
group-based (reverse_kl+grpo: group advantages, dynamic sampling with refills) families."""
import jax
import numpy as np
import pytest
from test_train import small_config

from opd_jax import cli, train
from opd_jax.logging import read_jsonl


@pytest.mark.parametrize("over,match", [
    (dict(objective="grpo"), "config.rollout.group: .*must be >= 2"),
    (dict(objective="rpd", **{"teacher.kind": "none", "student.value_head": True}),
     "config.teacher.kind: objective 'rpd' learns from a teacher"),
    (dict(objective="ppo"), "config.student.value_head: objective 'ppo' needs a value head"),
    (dict(objective="grpo", **{"rollout.group": 2, "rl.refill_rounds": 2,
                               "rl.dynamic_sampling": False}), "config.rl.refill_rounds"),
    (dict(objective="grpo", **{"rollout.group": 2, "rl.clip_low": 1.5}), "config.rl.clip_low"),
])
def test_bad_rl_config_is_one_clear_line(tmp_path, over, match):
  with pytest.raises(cli.UsageError, match=match):
    train.validate(small_config(tmp_path, **over))


def test_rpd_run_trains_value_head_and_teacher_term(tmp_path):
  """RPD as the paper ran it: the small CNN Gaussian student, PPO on dense shaping, the
  teacher's action means."""
  c = small_config(tmp_path, objective="rpd", **{
      "student.model.kind": "cnn_gaussian", "student.model.conv_channels": (8, 16),
      "student.model.width": 32, "teacher.kind": "scripted", "rl.dense_coef": 1.0,
      "rl.teacher_weight": 2.0, "rl.teacher_anneal": 4, "iterations": 2})
  train.validate(c)
  ts = train.run(c, progress=False)
  assert int(ts.step) == 2 and int(ts.nonfinite_updates) == 0
  assert "value" in ts.params and "mean_head" in ts.params and "blocks" not in ts.params
  rows = [r for r in read_jsonl(f"{c.workdir}/metrics.jsonl") if "train/loss" in r]
  for r in rows:
    for k in ("train/value_loss", "train/explained_variance", "train/teacher_mse",
              "train/clip_fraction", "train/advantage_std", "rollout/return"):
      assert np.isfinite(r[k]), k
    assert r["train/value_loss"] > 0 and r["train/teacher_mse"] > 0
  # lambda cosine-annealed over 4 iterations: 2.0 at iteration 0, 1.71 at 1
  np.testing.assert_allclose([r["train/teacher_weight"] for r in rows], [2.0, 1.7071], rtol=1e-3)
  # dense shaping rewards progress: the returns are not all zero
  assert any(abs(r["rollout/return"]) > 1e-4 for r in rows)


def test_grpo_with_teacher_runs_dynamic_sampling_and_refills(tmp_path):
  c = small_config(tmp_path, objective="reverse_kl+grpo", **{
      "rollout.prompts": 2, "rollout.group": 2, "rl.refill_rounds": 2,
      "teacher.kind": "scripted", "iterations": 1})
  train.validate(c)
  ts = train.run(c, progress=False)
  r = [r for r in read_jsonl(f"{c.workdir}/metrics.jsonl") if "train/loss" in r][0]
  # 8-step episodes of a fresh student never succeed: no group carries signal, every refill
  # round is tried, nothing is replaced, and the GRPO term is empty (only the KL teaches)
  assert r["rollout/groups_mixed"] == 0 and r["rollout/refill_rounds"] == 2
  assert r["rollout/groups_refilled"] == 0 and r["rollout/groups_kept"] == 0
  assert r["train/policy_tokens"] == 0 and r["train/grpo_loss"] == 0
  assert r["train/kl_loss"] > 0 and np.isfinite(r["train/loss"])
  assert int(ts.nonfinite_updates) == 0


def test_token_student_with_value_head_runs_ppo(tmp_path):
  c = small_config(tmp_path, objective="ppo", **{"student.value_head": True,
                                                 "rl.dense_coef": 1.0, "iterations": 1})
  train.validate(c)
  ts = train.run(c, progress=False)
  r = [r for r in read_jsonl(f"{c.workdir}/metrics.jsonl") if "train/loss" in r][0]
  assert "value" in ts.params and "action_head" in ts.params
  assert r["train/value_loss"] > 0 and np.isfinite(r["train/explained_variance"])
  assert "train/reverse_kl" not in r       # no teacher was built for ppo


def test_a_token_objective_refuses_a_gaussian_student(tmp_path):
  c = small_config(tmp_path, objective="reverse_kl_exact",
                   **{"student.model.kind": "cnn_gaussian", "teacher.kind": "scripted"})
  with pytest.raises(cli.UsageError, match="config.objective: 'reverse_kl_exact' compares action"):
    train.setup(c)


def test_a_checkpoint_student_gets_a_fresh_value_head():
  from opd_jax import build, models
  cfg = models.ModelConfig(size="nano", image_size=16, chunk=4)
  graphdef, params = models.make_policy(cfg, seed=0)
  g2, p2, cfg2 = build.with_value_head(graphdef, params, cfg, seed=1)
  assert cfg2.value_head and "value" in p2 and "value" not in params
  old = dict(jax.tree_util.tree_leaves_with_path(params))
  new = dict(jax.tree_util.tree_leaves_with_path(p2))
  for k, v in old.items():
    np.testing.assert_array_equal(new[k], v)


def test_task_subset_is_checked(tmp_path):
  with pytest.raises(cli.UsageError, match=r"config.env.tasks: \[12\] out of range"):
    train.setup(small_config(tmp_path, **{"env.tasks": (1, 12)}))
  with pytest.raises(cli.UsageError, match="config.env.tasks: task ids must be distinct"):
    train.validate(small_config(tmp_path, **{"env.tasks": (1, 1)}))
