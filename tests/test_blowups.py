"""A physics blow-up ends the episode as a truncation and nothing non-finite is learned from.

Velocities set to 1e38 by hand make the next physics step non-finite in every family. Per family:
one compiled loop step (tiny networks, 2 critics) and one `episodes.step` with a reset.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from conftest import tiny_config
from envs import episodes
from wsrl_mjx import configs, evaluation, online, per_seed
from wsrl_mjx.datagen import collect

# The cheapest task of each family (AntMaze's smallest maze, Adroit's pen: the door needs more
# solver iterations).
CHEAPEST = ["hopper-medium-v2", "halfcheetah-medium-v2", "walker2d-medium-v2",
            "antmaze-umaze-v2", "pen-binary-v0"]
EPISODE_LENGTH = 50


def blown_up(state):
  """`state` with every velocity set to 1e38: its next step's physics is not finite."""
  physics = state.pipeline_state
  return state.replace(pipeline_state=physics.replace(qvel=jnp.full_like(physics.qvel, 1e38)))


def tiny_loop(env, spec):
  config = tiny_config(env_name=spec.name, num_critics=2, utd=1, batch_size=8)
  settings, _ = per_seed.seed_settings(config)
  loop = online.make_online(env, spec, configs.sac_config(config, spec), online.LoopConfig(
      replay_capacity=8, episode_length=EPISODE_LENGTH, eval_episodes=1, action_clip=0.99999))
  return loop, jax.tree.map(lambda x: jnp.asarray(x[0]), settings)


@pytest.mark.slow
@pytest.mark.parametrize("name", CHEAPEST)
def test_a_blow_up_ends_the_episode_as_a_truncation_and_is_not_stored(name):
  env, spec = envs.make(name)
  loop, settings = tiny_loop(env, spec)
  state = jax.jit(loop.init, static_argnums=2)(jax.random.PRNGKey(0), settings, None)
  state = state.replace(env_state=blown_up(state.env_state),
                        episode=state.episode.replace(length=jnp.asarray(3, jnp.int32)))

  @jax.jit
  def probe(state):
    # What one step of the blown-up episode is, by the shared rule, and the fresh episode the
    # loop's first step must start (its reset key, as online.step splits it).
    _, result = episodes.step(env, episodes.Episode(state=state.env_state, length=jnp.asarray(
        3, jnp.int32)), jnp.zeros(env.action_size), EPISODE_LENGTH, jax.random.PRNGKey(1))
    return result, env.reset(jax.random.split(state.key, 5)[2])

  # Two steps of the online loop (one compiled step, run twice): the blow-up, then the fresh
  # episode's first step.
  one_step = jax.jit(lambda state: loop.run(state, 1))
  after_one, stats_one = one_step(state)
  after_two, _ = one_step(after_one)
  assert one_step._cache_size() == 1                                    # compiled once
  result, fresh, after_one, stats_one, after_two = jax.device_get(
      (*probe(state), after_one, stats_one, after_two))
  assert not np.isfinite(result.state.pipeline_state.qvel).all()        # it did blow up
  assert not result.valid and result.timeout and not result.terminal    # a truncation
  # The loop ended the episode, stored nothing, and started a fresh, finite episode.
  assert stats_one.completed_episodes == 1 and np.isfinite(stats_one.completed_return_sum)
  assert after_one.buffer.size == 0 and after_one.buffer.insert_position == 0
  assert after_one.episode.length == 0 and after_one.episode.episode_return == 0
  np.testing.assert_array_equal(after_one.env_state.obs, fresh.obs)
  for leaf in (after_one.env_state.obs, after_one.env_state.pipeline_state.qpos,
               after_one.env_state.pipeline_state.qvel):
    assert np.isfinite(leaf).all()
  # The next transition is the fresh episode's, written at row 0; every row is finite.
  assert after_two.buffer.size == 1 and after_two.buffer.insert_position == 1
  np.testing.assert_array_equal(after_two.buffer.data.observation[0], fresh.obs)
  for column in jax.tree.leaves(after_two.buffer.data):
    assert np.isfinite(column).all()


class BlowsUpAtStart:
  """An env whose episodes start with velocities of 1e38 (its first step blows up)."""

  def __init__(self, env):
    self.env = env

  def reset(self, key):
    return blown_up(self.env.reset(key))

  def step(self, state, action):
    return self.env.step(state, action)


def test_evaluation_scores_a_blown_up_episode_by_its_finite_steps():
  """halfcheetah has no health check: before, its NaN state went on with done = 0 and the
  episode's return (and score) was NaN."""
  env, spec = envs.make("halfcheetah-medium-v2")
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
