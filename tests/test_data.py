"""Demo collection (opd_jax.collect) and the HDF5 loader / sample builder (opd_jax.data)."""
import json
import shutil

import h5py
import numpy as np
import pytest

from opd_jax import actions as act
from opd_jax import collect, data

TASKS = (0, 2)
MAX_STEPS = 60   # a short time limit: slow expert episodes fail, and must not be written


@pytest.fixture(scope="session")
def demo_file(tmp_path_factory):
  """Two tasks x 2 demos at 16x16, collected with a tight time limit."""
  path = str(tmp_path_factory.mktemp("demos") / "spatial16.hdf5")
  r = collect.collect("libero_spatial", 2, path, image_size=16, batch=4, seed=0, block=8,
                      tasks=list(TASKS), progress=False,
                      env_kwargs=dict(max_episode_steps=MAX_STEPS))
  return path, r


def test_collect_layout_and_only_successes(demo_file):
  path, r = demo_file
  assert [r["kept"][t] for t in TASKS] == [2, 2], r
  assert all(k <= s <= a for k, s, a in zip(r["kept"], r["succeeded"], r["attempted"]))
  assert all(r["attempted"][t] == 0 for t in range(10) if t not in TASKS)
  with h5py.File(path) as f:
    d = f["data"]
    assert d.attrs["suite"] == "libero_spatial" and int(d.attrs["image_size"]) == 16
    assert json.loads(d.attrs["env_args"])["env_kwargs"]["solver_iterations"] == 8
    instructions = json.loads(d.attrs["instructions"])
    assert len(instructions) == 10
    names = sorted(d.keys())
    assert names == [f"demo_{i}" for i in range(4)]
    total = 0
    for name in names:
      g = d[name]
      n = int(g.attrs["num_samples"])
      total += n
      t = int(g.attrs["task_id"])
      assert t in TASKS and g.attrs["instruction"] == instructions[t]
      assert g["obs/agentview_rgb"].shape == (n, 16, 16, 3) == g["obs/eye_in_hand_rgb"].shape
      assert g["obs/agentview_rgb"].dtype == np.uint8
      assert g["obs/ee_states"].shape == (n, 6) and g["obs/gripper_states"].shape == (n, 2)
      assert g["actions"].shape == (n, 7)
      rewards, dones = g["rewards"][()], g["dones"][()]
      # successful episodes only: success (reward 1, done) exactly at the last step
      assert rewards[-1] == 1 and dones[-1] == 1
      assert not rewards[:-1].any() and not dones[:-1].any()
      assert n <= MAX_STEPS
      assert np.all(np.abs(g["actions"][()]) <= 1)
    assert int(d.attrs["total"]) == total


def test_collection_states_are_not_eval_states():
  import envs  # pylint: disable=import-outside-toplevel
  env = envs.make("libero_spatial", render=False)
  ev = {tuple(np.asarray(env.eval_key(t, i)).tolist()) for t in range(3) for i in range(50)}
  tr = {tuple(np.asarray(collect.collection_key(0, t, a)).tolist())
        for t in range(3) for a in range(50)}
  assert not ev & tr


def test_load_and_select(demo_file):
  path, _ = demo_file
  d = data.load(path)
  assert d.num_episodes == 4 and d.per_task(10)[0] == 2 and d.per_task(10)[2] == 2
  assert d.images["agentview"].shape == (d.num_steps, 16, 16, 3)
  assert d.proprio.shape == (d.num_steps, 8) and d.actions.shape == (d.num_steps, 7)
  one = data.load(path, demos_per_task=1)
  assert one.per_task(10) == [1, 0, 1] + [0] * 7
  with h5py.File(path) as f:   # the first demo of each task in file order: demo_0 among them
    np.testing.assert_array_equal(one.actions[:one.ep_len[0]], f["data/demo_0/actions"][()])


@pytest.mark.parametrize("drop", ["data/demo_1/obs/gripper_states", "data/demo_0/actions", "data"])
def test_loader_names_missing_key(demo_file, tmp_path, drop):
  src, _ = demo_file
  bad = str(tmp_path / "bad.hdf5")
  shutil.copy(src, bad)
  with h5py.File(bad, "a") as f:
    if drop == "data":
      f.move("data", "not_data")
    else:
      del f[drop]
  with pytest.raises(data.FormatError, match=f"missing key '{drop.split('/')[-1]}'"):
    data.load(bad)


def test_loader_maps_libero_instruction_to_task(demo_file, tmp_path):
  """A LIBERO-style file (no task_id; the instruction in problem_info) maps by instruction."""
  src, _ = demo_file
  path = str(tmp_path / "libero_like.hdf5")
  shutil.copy(src, path)
  with h5py.File(path, "a") as f:
    instr = json.loads(f["data"].attrs["instructions"])
    f["data"].attrs["problem_info"] = json.dumps({"language_instruction": instr[2]})
    for n in list(f["data"]):
      for a in ("task_id", "instruction"):
        del f["data"][n].attrs[a]
  d = data.load(path, instructions=instr)
  assert set(d.ep_task.tolist()) == {2}


def test_windows_padding_and_chunks():
  # two episodes of lengths 3 and 2
  obs_index, pad, chunk = data.windows(np.array([0, 3]), np.array([3, 2]), history=2, chunk=4,
                                       stride=1)
  np.testing.assert_array_equal(obs_index, [[0, 0], [0, 1], [1, 2], [3, 3], [3, 4]])
  np.testing.assert_array_equal(pad, [[False, True], [True, True], [True, True],
                                      [False, True], [True, True]])
  # past the episode end the last action repeats; never crosses into the next episode
  np.testing.assert_array_equal(chunk, [[0, 1, 2, 2], [1, 2, 2, 2], [2, 2, 2, 2],
                                        [3, 4, 4, 4], [4, 4, 4, 4]])
  # by default a window's frames are one chunk apart, as a rollout observes them
  o2, p2, _ = data.windows(np.array([0]), np.array([7]), history=2, chunk=3)
  np.testing.assert_array_equal(o2, [[0, 0], [0, 1], [0, 2], [0, 3], [1, 4], [2, 5], [3, 6]])
  np.testing.assert_array_equal(p2[:, 0], [False, False, False, True, True, True, True])
  o1, p1, _ = data.windows(np.array([0]), np.array([3]), history=1, chunk=1)
  np.testing.assert_array_equal(o1[:, 0], [0, 1, 2])
  assert p1.all()


def test_build_arrays_and_gather(demo_file):
  path, _ = demo_file
  d = data.load(path)
  stats = data.demo_stats(d)
  assert not stats.mask[6] and stats.mask[:6].all()
  arr = data.build_arrays(d, stats, history=2, chunk=8)
  last = int(d.ep_start[0] + d.ep_len[0] - 1)
  hist, tokens = data.gather(arr, np.array([0, last]))
  assert hist.images["agentview"].shape == (2, 2, 16, 16, 3) and tokens.shape == (2, 8, 7)
  assert hist.pad_mask.tolist() == [[False, True], [True, True]]
  np.testing.assert_array_equal(hist.images["wrist"][0, 0], d.images["wrist"][0])
  np.testing.assert_array_equal(hist.proprio[1, 0], d.proprio[last - 8])  # a chunk back
  np.testing.assert_array_equal(tokens[0], act.encode(stats, d.actions[:8]))
  np.testing.assert_array_equal(tokens[1], np.repeat(act.encode(stats, d.actions[last:last + 1]),
                                                     8, axis=0))
  assert int(hist.task_id[0]) == int(d.ep_task[0])


def test_stats_json_round_trip(tmp_path, demo_file):
  path, _ = demo_file
  stats = data.demo_stats(data.load(path))
  p = str(tmp_path / "s" / "action_stats.json")
  data.write_stats(p, stats)
  back = data.read_stats(p)
  assert back.to_dict() == stats.to_dict()
  with pytest.raises(FileNotFoundError, match="stats_path"):
    data.read_stats(str(tmp_path / "nope.json"))
