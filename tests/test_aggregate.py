"""DAgger-style aggregation (opd_jax/aggregate.py): the ring buffer, the replayed batch, the
config checks and a run with it."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from opd_jax import aggregate, cli, train
from opd_jax.rollout import Batch
from tests.test_train import small_config

T, B, K, D, V = 3, 2, 2, 1, 4


def batch_of(iteration: int) -> Batch:
  """World w of iteration i carries the value 100 i + w in every world-axis field."""
  world = 100 * iteration + jnp.arange(B, dtype=jnp.float32)
  tw = lambda *tail: jnp.broadcast_to(world.reshape(1, B, *[1] * len(tail)), (T, B, *tail))  # noqa: E731
  return Batch(hist={"image": tw(4, 4, 3)}, tokens=tw(K, D).astype(jnp.int32),
               behaviour_logp=tw(K, D), mask=tw(K, D), step_mask=tw(), reward=tw(), done=tw(),
               success=world, teacher_logp=tw(K, D, V), teacher_weight=jnp.float32(0.5))


def test_ring_buffer_keeps_the_latest_worlds_and_replays_only_kept_ones():
  agg = aggregate.empty(batch_of(0), capacity=4)
  step = jax.jit(aggregate.add_and_sample, static_argnums=3)
  seen = []
  for i in range(3):
    agg, train_batch = step(agg, batch_of(i), jax.random.PRNGKey(i), 5)
    assert train_batch.tokens.shape == (T, B + 5, K, D)
    assert train_batch.hist["image"].shape == (T, B + 5, 4, 4, 3)
    assert train_batch.success.shape == (B + 5,)
    assert float(train_batch.teacher_weight) == 0.5
    # the iteration's own worlds come first, unchanged
    np.testing.assert_array_equal(train_batch.success[:B], batch_of(i).success)
    replayed = np.asarray(train_batch.success[B:])
    kept_now = {0: {0, 1}, 1: {0, 1, 100, 101}, 2: {100, 101, 200, 201}}[i]
    assert set(replayed.tolist()) <= kept_now, (i, replayed)
    # every field of a replayed world is that world's (one gather, not one per field)
    for f in ("tokens", "teacher_logp", "step_mask"):
      np.testing.assert_array_equal(getattr(train_batch, f)[0, B:].reshape(5, -1)[:, 0],
                                    replayed)
    seen += replayed.tolist()
  assert int(agg.written) == 3 * B
  # slots 0-1 were overwritten by iteration 2; 2-3 hold iteration 1
  np.testing.assert_array_equal(agg.kept.success, [200, 201, 100, 101])
  assert {200, 201} & set(seen) and {100, 101} & set(seen)


@pytest.mark.parametrize("over,match", [
    (dict(objective="reverse_kl"), "config.aggregate.worlds: objective 'reverse_kl' is not "
                                   "valid on replayed states"),
    (dict(**{"aggregate.replay": 0}), "config.aggregate.replay: must be >= 1"),
    (dict(**{"aggregate.worlds": 3}), "config.aggregate.worlds: must be 0 .* multiple of the 2"),
    (dict(**{"aggregate.worlds": 0}), "config.aggregate.replay: .*without"),
])
def test_bad_aggregation_configs_are_refused_naming_the_field(tmp_path, over, match):
  c = small_config(tmp_path, **{"aggregate.worlds": 4, "aggregate.replay": 2})
  for k, v in over.items():
    node = c
    *path, last = k.split(".")
    for p in path:
      node = node[p]
    node[last] = v
  with pytest.raises(cli.UsageError, match=match):
    train.validate(c)


def test_a_run_with_aggregation_trains_on_the_replayed_worlds(tmp_path, capsys):
  c = small_config(tmp_path, iterations=3, **{"aggregate.worlds": 4, "aggregate.replay": 2})
  c.objective = "forward_kl"
  su = train.setup(c)
  assert (su.capacity, su.replay) == (4, 2)
  ts = train.run(c, progress=False, prepared=su)
  assert int(ts.step) == 3
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [r["rollout/aggregated_worlds"] for r in rows] == [2, 4, 4]
  assert all(np.isfinite(r["train/loss"]) for r in rows)
  assert all(r["train/nonfinite_updates"] == 0 for r in rows)
  # the gradient step trains on the iteration's 2 worlds + 2 replayed ones (the compiled
  # program may be a kept, exported one, so its arguments are watched at the call)
  update, worlds = su.programs["update"], []

  def watched(ts, batch, i):
    worlds.append(batch.step_mask.shape[1])
    return update(ts, batch, i)
  su.programs["update"] = watched
  # a resumed run says the buffer restarts empty
  c.iterations = 4
  train.run(c, progress=False, prepared=su)
  assert "the buffer restarts empty at iteration 3" in capsys.readouterr().out
  assert worlds and set(worlds) == {4}
