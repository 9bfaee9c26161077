"""Replay buffer: wrap-around, sampling only written rows, seed axis, memory check."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wsrl_mjx import replay


def transition(i, observation_size=3, action_size=2):
  value = jnp.float32(i)
  return replay.Transition(
      observation=jnp.full((observation_size,), value), action=jnp.full((action_size,), -value),
      reward=value, next_observation=jnp.full((observation_size,), value + 0.5),
      terminal=jnp.float32(i % 2))


def test_insert_wraps_around_overwriting_the_oldest():
  buffer = replay.create(capacity=5, observation_size=3, action_size=2)
  insert = jax.jit(replay.insert)
  for i in range(1, 13):   # 12 inserts into 5 rows
    buffer = insert(buffer, transition(i))
  assert int(buffer.size) == 5
  assert int(buffer.insert_position) == 12 % 5
  # Row r holds the last value written there: inserts 11, 12 wrapped onto rows 0, 1.
  np.testing.assert_array_equal(buffer.data.reward, [11, 12, 8, 9, 10])
  np.testing.assert_array_equal(buffer.data.observation[:, 0], [11, 12, 8, 9, 10])
  np.testing.assert_array_equal(buffer.data.next_observation[:, 0], [11.5, 12.5, 8.5, 9.5, 10.5])
  np.testing.assert_array_equal(buffer.data.action[:, 1], [-11, -12, -8, -9, -10])
  np.testing.assert_array_equal(buffer.data.terminal, [1, 0, 0, 1, 0])


def test_a_dropped_insert_changes_nothing_even_when_full():
  """keep=False (a physics blow-up's transition) writes no row and moves no index: in a full
  buffer the oldest row it would have replaced stays."""
  buffer = replay.create(capacity=3, observation_size=3, action_size=2)
  insert = jax.jit(replay.insert)
  for i, keep in [(1, True), (2, True), (3, False), (4, True), (5, False), (6, True)]:
    nan = transition(i).replace(reward=jnp.where(keep, jnp.float32(i), jnp.nan))
    buffer = insert(buffer, nan, keep)
  assert int(buffer.size) == 3 and int(buffer.insert_position) == 4 % 3
  np.testing.assert_array_equal(buffer.data.reward, [6, 2, 4])
  np.testing.assert_array_equal(buffer.data.observation[:, 0], [6, 2, 4])


def test_sample_draws_only_written_rows_uniformly():
  buffer = replay.create(capacity=100, observation_size=3, action_size=2)
  for i in range(1, 4):
    buffer = replay.insert(buffer, transition(i))
  batch = jax.jit(replay.sample, static_argnums=2)(buffer, jax.random.PRNGKey(0), 30_000)
  rewards = np.asarray(batch.reward)
  assert set(np.unique(rewards)) == {1.0, 2.0, 3.0}          # never an unwritten zero row
  counts = np.bincount(rewards.astype(int))[1:]
  np.testing.assert_allclose(counts / counts.sum(), [1 / 3] * 3, atol=0.02)
  # Fields of one sampled row belong to the same transition.
  np.testing.assert_array_equal(batch.observation[:, 0], rewards)
  np.testing.assert_array_equal(batch.action[:, 0], -rewards)


def test_vmapped_buffers_are_independent_per_seed():
  buffers = jax.vmap(lambda _: replay.create(4, 3, 2))(jnp.arange(2))
  insert = jax.jit(jax.vmap(replay.insert))
  for i in range(1, 7):
    pair = jax.tree.map(lambda a, b: jnp.stack([a, b]), transition(i), transition(100 + i))
    buffers = insert(buffers, pair)
  np.testing.assert_array_equal(buffers.data.reward[0], [5, 6, 3, 4])
  np.testing.assert_array_equal(buffers.data.reward[1], [105, 106, 103, 104])
  np.testing.assert_array_equal(buffers.size, [4, 4])


def test_insert_is_in_place_when_donated():
  """Inserting under a donating jit reuses the buffer's memory instead of copying it."""
  buffer = replay.create(capacity=1000, observation_size=3, action_size=2)
  insert = jax.jit(replay.insert, donate_argnums=0)
  buffer = insert(buffer, transition(1))
  pointer = buffer.data.observation.unsafe_buffer_pointer()
  buffer = insert(buffer, transition(2))
  assert buffer.data.observation.unsafe_buffer_pointer() == pointer
  np.testing.assert_array_equal(buffer.data.reward[:3], [1, 2, 0])


def test_memory_is_reported_and_checked():
  per_seed = replay.bytes_per_seed(2_000_000, 17, 6)
  assert per_seed == 4 * 2_000_000 * (17 + 17 + 6 + 2)
  summary = replay.check_fits(2_000_000, 17, 6, num_seeds=64, available_bytes=80 * 2**30)
  assert "64 seeds" in summary and "MiB per seed" in summary
  with pytest.raises(MemoryError, match="replay_capacity or config.num_seeds"):
    replay.check_fits(2_000_000, 17, 6, num_seeds=64, available_bytes=16 * 2**30)
