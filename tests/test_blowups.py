"""A physics blow-up ends the episode as a truncation and nothing non-finite is learned from.

Velocities set to 1e38 by hand make the next physics step non-finite. The rule itself
(`envs.episodes.step`) is checked for every registered task by tests/env_contract.py, in each
family's test file on the programs it compiles anyway; here, what the online loop does with such
a step (the session's compiled tiny point-mass programs: the point mass's arena check would call
a NaN state inside the arena), what evaluation scores and what the collector writes.
"""

import jax
import jax.numpy as jnp
import numpy as np

import conftest
import envs
from wsrl_mjx import evaluation, host_loop, per_seed
from wsrl_mjx.datagen import collect


def blown_up(state):
  """`state` with every velocity set to 1e38: its next step's physics is not finite."""
  physics = state.pipeline_state
  return state.replace(pipeline_state=physics.replace(qvel=jnp.full_like(physics.qvel, 1e38)))


def test_the_online_loop_stores_nothing_of_a_blow_up_and_starts_a_fresh_episode(tiny_programs):
  config, _, _, programs = tiny_programs
  settings, _ = per_seed.seed_settings(config)
  state = programs.init(host_loop.seed_keys(config), jax.tree.map(jnp.asarray, settings), None,
                        None)
  # Seed 0's first episode blows up at its first step; seed 1 is left alone.
  physics = state.env_state.pipeline_state
  state = state.replace(env_state=state.env_state.replace(pipeline_state=physics.replace(
      qvel=physics.qvel.at[0].set(1e38))))
  after, stats = jax.device_get(programs.run(state, config.steps_per_chunk))  # warmup: no update
  steps = config.steps_per_chunk
  # Seed 0 stored every step but the blow-up, from row 0 on; seed 1 stored every step.
  np.testing.assert_array_equal(after.buffer.size, [steps - 1, steps])
  np.testing.assert_array_equal(after.buffer.insert_position, [steps - 1, steps])
  for column in jax.tree.leaves(after.buffer.data):
    assert np.isfinite(column).all()
  # Row 0 of seed 0 starts the fresh episode: its observation is a reset's (finite, at rest
  # within 0.1 m of the origin), not the blown-up state's.
  first = after.buffer.data.observation[0, 0]
  assert np.all(np.abs(first[:2]) <= 0.1) and np.all(first[2:] == 0), first
  # The blown-up episode counts as one completed episode with a finite return.
  assert stats.completed_episodes[0] >= 1 and np.isfinite(stats.completed_return_sum).all()
  for leaf in jax.tree.leaves(after.env_state):
    assert np.isfinite(np.asarray(leaf, np.float64)).all()


class BlowsUpAtStart:
  """An env whose episodes start with velocities of 1e38 (its first step blows up)."""

  def __init__(self, env):
    self.env = env

  def reset(self, key):
    return blown_up(self.env.reset(key))

  def step(self, state, action):
    return self.env.step(state, action)


def test_evaluation_scores_a_blown_up_episode_by_its_finite_steps():
  """A task without a health check (found on halfcheetah): before, its NaN state went on with
  done = 0 and the episode's return (and score) was NaN. The point mass is such a task too (its
  arena check calls a NaN state inside) and compiles in seconds where halfcheetah takes ~25 s."""
  env, spec = envs.make(conftest.TINY_ENV)
  results = jax.jit(lambda key: evaluation.evaluate(
      BlowsUpAtStart(env), lambda params, observation: jnp.zeros(spec.action_size), None, key,
      num_episodes=2, episode_length=3, action_clip=0.99999))(jax.random.PRNGKey(0))
  # The first step blew up: the episode ended there, with nothing added to its return.
  np.testing.assert_array_equal(results.returns, [0.0, 0.0])
  np.testing.assert_array_equal(results.successes, [False, False])
  assert np.isfinite(spec.normalized_score(np.asarray(results.returns))).all()


def test_the_collector_drops_a_blow_ups_row_and_ends_its_episode_before_it():
  """[2 envs, 4 steps] of rows; env 0's step 2 blew up, env 1's step 0 did."""
  spec = envs.spec("hopper-medium-v2")
  valid = np.array([[True, True, False, True], [False, True, True, True]])
  step_index = np.broadcast_to(np.arange(4, dtype=np.float32), (2, 4))
  rows = {"observations": np.repeat(step_index[..., None], 11, axis=-1),
          "next_observations": np.repeat(step_index[..., None] + 1, 11, axis=-1),
          "actions": np.zeros((2, 4, 3), np.float32), "rewards": np.where(valid, 1.0, np.nan),
          "terminals": np.zeros((2, 4), bool), "timeouts": ~valid,
          "episode_ends": ~valid, "valid": valid,
          "qpos": np.zeros((2, 4, 6)), "qvel": np.zeros((2, 4, 6))}
  dataset = collect._as_dataset(rows, spec)
  np.testing.assert_array_equal(dataset["observations"][:, 0], [0, 1, 3, 1, 2, 3])
  assert np.isfinite(dataset["rewards"]).all()
  # Env 0's step 1 (before the blow-up) and each stream's last step end their episodes.
  np.testing.assert_array_equal(dataset["timeouts"], [False, True, True, False, False, True])
  np.testing.assert_array_equal(dataset["episode_ends"], dataset["timeouts"])
