"""The OPD trainer: config validation, teachers, resume, non-finite recovery, receding horizon
(the 8-device test is in test_train_devices.py)."""
import dataclasses
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from configs import libero as libero_config
from opd_jax import actions as act
from opd_jax import build, checkpoint, models, parallel, teachers, train
from opd_jax import evaluate as eval_lib
from opd_jax import rollout as rollout_lib
from opd_jax.logging import read_jsonl
from opd_jax.policy import Policy
from opd_jax.train_state import TrainState

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_config(workdir, **over):
  """Seconds-sized: 16x16 images, 8-step episodes, chunk 4 (2 policy steps), 2 worlds."""
  c = libero_config.get_config("spatial")
  c.workdir = str(workdir)
  c.student.model = libero_config.model_config("nano")
  c.env.image_size = 16
  c.env.max_episode_steps = 8
  c.student.model.chunk = 4
  c.rollout.prompts, c.rollout.group = 2, 1
  c.optim.epochs, c.optim.minibatches = 2, 2   # 4 gradient steps over the 2 policy steps
  c.iterations = 2
  c.eval.every = 0
  c.checkpoint.every = 1
  c.mesh.data = 1
  for k, v in over.items():
    node = c
    *path, last = k.split(".")
    for p in path:
      node = node[p]
    node[last] = v
  return c


@pytest.mark.parametrize("field,value,match", [
    ("objective", "reverse_kld", "config.objective"),
    ("env.suite", "libero_nope", "config.env.suite"),
    ("optim.lr", -1.0, "config.optim.lr"),
    ("rollout.temperature", 0.0, "config.rollout.temperature"),
    ("teacher.kind", "oracle", "config.teacher.kind"),
    ("rollout.prompts", 0, "config.rollout.prompts"),
    ("checkpoint.average", 1, "config.checkpoint.average"),
    ("checkpoint.average", 4, "config.checkpoint.average"),
])
def test_bad_config_is_named(tmp_path, field, value, match):
  with pytest.raises(ValueError, match=match):
    train.validate(small_config(tmp_path, **{field: value}))


@pytest.fixture(scope="module")
def small_setup(tmp_path_factory):
  """The small config's suite, student, teacher and programs, compiled once for this module
  (run(prepared=...) reuses them for configs that differ only in run-only fields)."""
  return train.setup(small_config(tmp_path_factory.mktemp("setup")))


def test_config_variants_build():
  for arg in ("spatial", "object", "goal", "long", "spatial,runlocal", "goal,pod", "spatial,sft"):
    c = libero_config.get_config(arg)
    assert c.env.suite.startswith("libero_")
  with pytest.raises(ValueError, match="unknown argument"):
    libero_config.get_config("spatial,fast")
  # -1 / () fields come from the size; conv_channels sets the stem (and so the patch count).
  env = envs.make("libero_spatial", image_size=16, render=False)
  c = libero_config.get_config("spatial,runlocal")
  assert build.model_config_from(c, env).conv_channels == models.ModelConfig(size="nano").conv_channels
  c.env.image_size = 64
  c.student.model.size = "tiny"
  assert build.model_config_from(c, env).patches_per_camera == 16  # Octo's four convs: 64 / 16
  c.student.model.conv_channels = (32, 96, 192)
  assert build.model_config_from(c, env).patches_per_camera == 64


def _saved_policy(path, chunk, stats, law="torque", iterations=8):
  """A nano checkpoint trained under arm law ``law`` and ``iterations`` solver iterations; law
  None writes no suite options (a checkpoint from before them: servo, 4 iterations)."""
  cfg = models.ModelConfig(size="nano", image_size=16, chunk=chunk)
  _, params = models.make_policy(cfg, 0)
  mgr = checkpoint.manager(str(path))
  meta = dict(model=cfg.to_dict(), action_stats=stats.to_dict())
  if law is not None:
    meta["env_kwargs"] = dict(image_size=16, control=law, solver_iterations=iterations)
  checkpoint.save(mgr, 1, params, meta)
  return cfg


def test_mismatched_teacher_is_a_clear_error_before_compiling(tmp_path):
  env = envs.make("libero_spatial", image_size=16, render=False)
  stats = build.identity_stats(7)
  s_cfg = models.ModelConfig(size="nano", image_size=16, chunk=4)
  student = Policy.build(models.abstract_policy(s_cfg)[0], s_cfg, stats, env.instructions)
  _saved_policy(tmp_path / "k8", 8, stats)
  tcfg = small_config(tmp_path).teacher
  tcfg.kind, tcfg.checkpoint = "checkpoint", str(tmp_path / "k8")
  env.image_size = 16
  with pytest.raises(ValueError, match="chunk 8 vs student 4"):
    teachers.make(tcfg, env, student)
  other = act.make_stats(-2 * np.ones(7), 2 * np.ones(7), stats.mask)
  _saved_policy(tmp_path / "stats", 4, other)
  tcfg.checkpoint = str(tmp_path / "stats")
  with pytest.raises(ValueError, match="action statistics differ"):
    teachers.make(tcfg, env, student)
  # A checkpoint trained under another arm law (or from before the option: servo) is refused.
  assert env.control == "torque"
  for name, law in (("old", None), ("servo", "servo")):
    _saved_policy(tmp_path / name, 4, stats, law)
    tcfg.checkpoint = str(tmp_path / name)
    with pytest.raises(ValueError, match="trained with control='servo' but the suite runs "
                       "control='torque'"):
      teachers.make(tcfg, env, student)
  # ...and one trained under other solver iterations than the suite's physics runs.
  _saved_policy(tmp_path / "iters", 4, stats, iterations=4)
  tcfg.checkpoint = str(tmp_path / "iters")
  with pytest.raises(ValueError, match="trained under 4 solver iterations but the suite's "
                     "physics runs 8"):
    teachers.make(tcfg, env, student)
  # A matching checkpoint teacher loads.
  _saved_policy(tmp_path / "ok", 4, stats)
  tcfg.checkpoint = str(tmp_path / "ok")
  assert teachers.make(tcfg, env, student).chunk == 4


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
  stats = build.identity_stats(7)
  _saved_policy(tmp_path / "c", 4, stats)
  with open(tmp_path / "c" / "1" / "meta" / "metadata", "w") as f:
    f.write("{not json")
  with pytest.raises(checkpoint.CheckpointError, match="meta"):
    checkpoint.load_policy(str(tmp_path / "c"))
  with pytest.raises(checkpoint.CheckpointError, match="does not exist"):
    checkpoint.load_policy(str(tmp_path / "nowhere"))


def test_scripted_teacher_peaks_on_the_experts_next_k_actions(tmp_path, small_setup):
  config = small_config(tmp_path)
  su = small_setup
  env, teacher = su.env, su.teacher
  state = jax.jit(su.benv.reset)(jax.random.split(jax.random.PRNGKey(1), 2), jnp.array([0, 4]))
  logits = jax.jit(teacher.logits)(teacher.params, state, None)
  assert logits.shape == (2, 4, 7, 256)
  got = np.asarray(act.decode(teacher.stats, jnp.argmax(logits, -1)))
  step = jax.jit(jax.vmap(lambda s, a: env.step(s, a, render=False)))
  expert = jax.jit(jax.vmap(env.expert_action))
  s, want = state, []
  for _ in range(4):
    a = expert(s)
    want.append(np.asarray(a))
    s = step(s, a)
  want = np.stack(want, 1)
  np.testing.assert_allclose(got, want, atol=1.0 / 256 + 1e-6)
  assert np.abs(want).max() > 0.05   # the expert moves: not a trivially-zero comparison
  # With a uniform floor (teacher.logits ends in with_floor; applied here to the same logits
  # rather than compiling the lookahead again): the same peaks, every bin keeps >= floor / 256,
  # and it is a distribution.
  floored = dataclasses.replace(teacher, floor=0.1)
  lp = floored.with_floor(logits)
  p = np.exp(np.asarray(lp, np.float64))
  np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
  assert p.min() >= 0.1 / 256 * (1 - 1e-5)
  assert (np.argmax(lp, -1) == np.argmax(logits, -1)).all()
  # ...and teacher.logits applies it: with the lookahead replaced by the chunk simulated above
  # (so nothing compiles again), the floored logits are with_floor of the unfloored ones.
  class Known(type(teacher)):
    def expert_chunk(self, env_state):
      return jnp.asarray(want)
  known = Known(**{f.name: getattr(floored, f.name) for f in dataclasses.fields(floored)})
  plain = dataclasses.replace(known, floor=0.0).logits(known.params, state, None)
  np.testing.assert_allclose(known.logits(known.params, state, None), known.with_floor(plain),
                             rtol=1e-6)
  assert not np.allclose(known.with_floor(plain), plain)   # the floor changes the logits
  bad = config.teacher.copy_and_resolve_references()
  bad.floor = 1.0
  with pytest.raises(ValueError, match="teacher.floor"):
    teachers.make(bad, env, su.student)


def _params_close(a, b, tol=1e-6):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  worst = max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(la, lb))
  assert worst <= tol, worst


def test_resumed_run_matches_uninterrupted_run(tmp_path, small_setup):
  # The uninterrupted run also evaluates at its end, and averages its two checkpoints.
  su = small_setup
  full = train.run(small_config(tmp_path / "full", **{
      "checkpoint.average": 2, "eval.every": 2, "eval.episodes_per_task": 1, "eval.batch": 10,
      "eval.videos": 0}), progress=False, prepared=su)
  # "Killed" after one iteration, then started again with the same command.
  part = small_config(tmp_path / "resumed", iterations=1)
  train.run(part, progress=False, prepared=su)
  # As written before ModelConfig had action_head_hidden: a run resumes from its older checkpoints.
  meta_file = tmp_path / "resumed" / "checkpoints" / "1" / "meta" / "metadata"
  meta = json.loads(meta_file.read_text())
  assert meta["model"].pop("action_head_hidden") == 0
  meta_file.write_text(json.dumps(meta))
  resumed = train.run(small_config(tmp_path / "resumed"), progress=False, prepared=su)
  assert int(resumed.step) == int(full.step) == 2
  _params_close(full.params, resumed.params)
  moved = max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(
      jax.tree.leaves(full.params), jax.tree.leaves(su.params)))
  assert moved > 0  # training changed the parameters
  rows = read_jsonl(str(tmp_path / "full" / "metrics.jsonl"))
  evals = [r for r in rows if "eval/success" in r or "eval_average/success" in r]
  rows = [r for r in rows if r not in evals]
  assert [r["step"] for r in rows] == [1, 2]
  # eval.at_start: the student as it starts is the curve's first point (step 0)
  assert [(r["step"], sorted(k for k in r if k.endswith("/success"))) for r in evals] == [
      (0, ["eval/success"]), (2, ["eval/success"]), (2, ["eval_average/success"])]
  assert os.path.exists(tmp_path / "full" / "eval" / "step_0" / "results.md")
  assert os.path.exists(tmp_path / "full" / "average" / "eval" / "step_2" / "results.md")
  # the average is evaluated by the run's own compiled episodes (placed like its parameters)
  assert su.evaluators[(1, 10, ())].compiles == 1   # (episodes, batch, tasks: the trained)
  # checkpoint.average = 2: the mean of checkpoints 1 and 2 is written beside the run.
  ck = [checkpoint.load_policy(str(tmp_path / "full" / "checkpoints" / s))[1] for s in ("1", "2")]
  _, avg, _, _, avg_meta = checkpoint.load_policy(str(tmp_path / "full" / "average"))
  assert avg_meta["averaged_from"]["steps"] == [1, 2]
  _params_close(jax.tree.map(lambda a, b: (a + b) / 2, *ck), avg)
  # The environment-step count is counted, not extrapolated, and survives the resume.
  resumed_rows = read_jsonl(str(tmp_path / "resumed" / "metrics.jsonl"))
  assert rows[-1]["rollout/env_steps_total"] == resumed_rows[-1]["rollout/env_steps_total"] == sum(
      r["rollout/control_steps"] for r in rows)
  for key in ("train/entropy", "train/reverse_kl", "train/teacher_agreement", "rollout/success",
              "rollout/episode_length", "rollout/env_steps_per_s"):
    assert np.isfinite(rows[-1][key]), key
  # The checkpoint rebuilds the policy alone.
  _, params, cfg, _, meta = checkpoint.load_policy(str(tmp_path / "full"))
  assert cfg.chunk == 4 and meta["suite"] == "libero_spatial"
  _params_close(full.params, params, 0.0)


def test_nonfinite_loss_skips_update_and_counts(tmp_path, small_setup):
  config = small_config(tmp_path)
  su = small_setup   # the programs compiled for the other tests of this module are reused
  rep = parallel.replicated(su.mesh)
  params = jax.tree.map(jnp.copy, su.params)
  ts = jax.device_put(TrainState(jnp.int32(0), params, su.tx.init(params), jnp.int32(0)), rep)
  steps = config.optim.epochs * config.optim.minibatches
  nan_teacher = jax.device_put({"sigma": jnp.float32(0.0)}, rep)   # teacher log-probs become NaN
  ts, m, _ = train.iterate(su, ts, nan_teacher, 0)
  assert int(ts.nonfinite_updates) == steps and float(m["train/nonfinite_updates"]) == steps
  _params_close(ts.params, su.params, 0.0)
  ts, m, _ = train.iterate(su, ts, jax.device_put(su.teacher.params, rep), 1)   # training goes on
  assert int(ts.nonfinite_updates) == steps and int(ts.step) == 2
  assert np.isfinite(float(m["train/loss"]))
  assert max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
      jax.tree.leaves(ts.params), jax.tree.leaves(su.params))) > 0


def test_receding_horizon_rollout_and_eval(small_setup):
  """rollout(execute=H) runs H of the K chunk actions per policy step: twice the policy steps
  for half the chunk, each observing the world anew (not the chunk's first frame); tokens of the
  unrun tail stay in the mask while the world is alive and leave it when the episode has ended;
  an H outside [1, K] is refused. (execute=None, the whole chunk, is what every training test
  runs.) One compile: the reset is inside the rollout's program."""
  su = small_setup
  benv, student, params = su.benv, su.student, su.params
  keys, tasks = jax.random.split(jax.random.PRNGKey(2), 2), jnp.array([0, 3])
  half = jax.device_get(jax.jit(lambda p: rollout_lib.rollout(
      benv, student, p, benv.reset(keys, tasks), jax.random.PRNGKey(0), 5, temperature=0.0,
      execute=2))(params))
  # 8-step episodes: 4 policy steps of 2 actions, then one after the end
  np.testing.assert_array_equal(half.length, [8, 8])
  np.testing.assert_array_equal(half.finished, [1, 1])
  assert half.batch.mask[:4].min() == 1.0 and half.batch.mask[4].max() == 0.0
  # each policy step sees a world its predecessor moved (re-observed mid-chunk)
  ee = half.hist.proprio[:4, :, -1, :3]
  assert np.abs(np.diff(ee, axis=0)).max(axis=(1, 2)).min() > 1e-4
  state = jax.eval_shape(benv.reset, keys, tasks)   # the refusals below come before any work
  with pytest.raises(ValueError, match="execute"):
    rollout_lib.rollout(benv, student, params, state, jax.random.PRNGKey(0), 1, execute=5)
  ev = eval_lib.Evaluator(benv, student, episodes_per_task=1, batch=10, execute=2)
  assert ev.num_steps == 4 and ev.execute == 2   # (running it would be one more compile)
  with pytest.raises(ValueError, match=r"execute must be in \[1, chunk=4\], got 9"):
    eval_lib.Evaluator(benv, student, episodes_per_task=1, batch=10, execute=9)
  # a history-2 policy is trained on frames one chunk apart: re-planning mid-chunk is refused
  two = dataclasses.replace(student, cfg=dataclasses.replace(student.cfg, history=2))
  with pytest.raises(ValueError, match="frames one chunk"):
    rollout_lib.rollout(benv, two, params, state, jax.random.PRNGKey(0), 1, execute=2)


def test_average_of_checkpoints(tmp_path, capsys):
  """opd_jax.average: the mean of the selected steps' parameters, written as a checkpoint that
  load_policy rebuilds; a different architecture or too few steps is one clear line, exit 2."""
  from opd_jax import average, cli  # pylint: disable=import-outside-toplevel

  def run_cli(**kw):
    return cli.run("average", average.main, ["average"] + [f"--config.{k}={v}" for k, v in kw.items()],
                   default_config=average.default_config, validate=average.validate)

  def refused(match, **kw):
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
      run_cli(**kw)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("average: error:"), err
    assert re.search(match, err[0]), err[0]

  stats = build.identity_stats(7)
  cfg = models.ModelConfig(size="nano", image_size=16, chunk=4)
  mgr = checkpoint.manager(str(tmp_path / "run" / "checkpoints"), max_to_keep=None)
  saved = []
  for step, seed in ((10, 0), (20, 1), (30, 2)):
    _, params = models.make_policy(cfg, seed)
    saved.append(params)
    checkpoint.save(mgr, step, params, dict(model=cfg.to_dict(), action_stats=stats.to_dict()))
  run_cli(checkpoints=tmp_path / "run", steps="20:30", out=tmp_path / "avg")
  _, got, got_cfg, _, meta = checkpoint.load_policy(str(tmp_path / "avg"))
  assert got_cfg == cfg and meta["averaged_from"]["steps"] == [20, 30]
  want = jax.tree.map(lambda a, b: (a + b) / 2, saved[1], saved[2])
  _params_close(want, got, tol=1e-6)
  refused("nothing is overwritten", checkpoints=tmp_path / "run", steps="20,30", out=tmp_path / "avg")
  refused("at least two", checkpoints=tmp_path / "run", steps="25:30", out=tmp_path / "a2")
  refused(r"no checkpoint steps \[40\]", checkpoints=tmp_path / "run", steps="10,40",
          out=tmp_path / "a2")
  refused("config.out: required", checkpoints=tmp_path / "run", steps="10,20")
  other = models.ModelConfig(size="nano", image_size=16, chunk=8)
  checkpoint.save(mgr, 40, models.make_policy(other, 0)[1],
                  dict(model=other.to_dict(), action_stats=stats.to_dict()))
  refused("different model", checkpoints=tmp_path / "run", steps="30:40", out=tmp_path / "avg2")
