"""The policies shipped in pretrained/: they load, match their checksums, describe how they
were made, and act in the suite under today's physics; a damaged file or other physics is
refused with a clear message."""
import json
import os
import shutil

import jax
import numpy as np
import pytest

import envs
from configs import libero as libero_config
from opd_jax import checkpoint, pretrained
from opd_jax import evaluate as eval_lib
from opd_jax.policy import Policy, check_obs_matches

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = [os.path.join(REPO, p) for p in libero_config.SHIPPED["object"]]
# a result, not a starting point: the one-demo student after 200 OPD iterations (README)
DISTILLED = os.path.join(REPO, "pretrained", "libero_object_opd")


@pytest.fixture(scope="module")
def object_env():
  return envs.make("libero_object", image_size=64)


@pytest.mark.parametrize("path", SHIPPED + [DISTILLED])
def test_shipped_policy_loads_with_its_card(path, object_env):
  card = pretrained.verify(path)   # every file against its recorded sha256
  for field in ("command", "source_commit", "success", "sha256"):
    assert card[field], field
  assert len(card["source_commit"]) == 40
  assert os.path.getsize(os.path.join(path, "params.msgpack")) < 25 * 2**20
  _, params, cfg, stats, meta = checkpoint.load_policy(path)
  assert meta["suite"] == "libero_object" and meta["shipped"]["command"] == card["command"]
  check_obs_matches(cfg, object_env, "shipped", meta)   # today's arm law and solver iterations
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))


def test_shipped_policies_act_under_todays_physics(object_env):
  """Teacher and student (one architecture, the same action statistics: one compile) each run
  two greedy policy steps from the evaluation states of every task."""
  loaded = [checkpoint.load_policy(p) for p in SHIPPED]
  (graphdef, _, cfg, stats, _), (_, _, cfg2, stats2, _) = loaded
  assert cfg == cfg2 and stats.to_dict() == stats2.to_dict()
  env = envs.core.BatchEnv(object_env)
  policy = Policy.build(graphdef, cfg, stats, object_env.instructions)
  ev = eval_lib.Evaluator(env, policy, episodes_per_task=1, batch=10, num_steps=2)
  out = [ev(params, videos=10) for _, params, *_ in loaded]
  assert ev.compiles == 1
  for res in out:
    assert res["episode_length"] == 2 * cfg.chunk   # every world ran its two chunks
  # rendered frames (the one each policy step saw: the reset's, then after the first chunk)
  # that move, and the teacher and the student do not act alike
  assert all(len(frames) == 2 for res in out for _, frames in res["clips"])
  after = [np.stack([frames[1] for _, frames in res["clips"]]).astype(int) for res in out]
  before = np.stack([frames[0] for _, frames in out[0]["clips"]]).astype(int)
  assert after[0].std() > 10 and np.abs(after[0] - before).max() > 0
  assert np.abs(after[0] - after[1]).max() > 0


def test_damaged_or_foreign_physics_is_refused(tmp_path, object_env):
  src = SHIPPED[1]
  bad = tmp_path / "damaged"
  shutil.copytree(src, bad)
  with open(bad / "params.msgpack", "r+b") as f:
    f.seek(1000)
    byte = f.read(1)
    f.seek(1000)
    f.write(bytes([byte[0] ^ 0xFF]))
  with pytest.raises(checkpoint.CheckpointError, match="params.msgpack has sha256 .* but its card"):
    checkpoint.load_policy(str(bad))
  # the same policy recorded as trained under 4 solver iterations (its card updated to match)
  other = tmp_path / "other_physics"
  shutil.copytree(src, other)
  meta = json.loads((other / "meta.json").read_text())
  meta["env_kwargs"]["solver_iterations"] = 4
  (other / "meta.json").write_text(json.dumps(meta))
  card = json.loads((other / "card.json").read_text())
  card["sha256"]["meta.json"] = pretrained.sha256(str(other / "meta.json"))
  (other / "card.json").write_text(json.dumps(card))
  _, _, cfg, _, meta = checkpoint.load_policy(str(other))
  with pytest.raises(ValueError, match="trained under 4 solver iterations but the suite's physics "
                     "runs 8"):
    check_obs_matches(cfg, object_env, "teacher", meta)
