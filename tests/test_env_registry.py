"""Every registered environment builds, resets and steps (mujoco_playground's registry test).

`envs.names()` lists each task by its bare name (`hopper`) and by every D4RL dataset name recorded
on it (`hopper-medium-v2`, ...): today 49 names for 13 tasks. A dataset name builds exactly its
task's env, so the simulation test runs once per task (under its bare name), and a cheap test
checks that every name resolves to one of those tasks with that task's sizes.

Per task: build the env, reset two episodes, take a few uniformly random actions in each, and
check the observation shape against the `EnvSpec`, the action size, finite observations and
rewards, and done flags in {0, 1}. Then one step from a state whose velocities are 1e38: its
physics is not finite, and `envs.episodes.outcome` (the rule every loop steps episodes by) makes
it a truncation, never a terminal, whatever the env's health check says (tests/test_blowups.py
checks what the online loop does with it). The programs are `jax.jit(env.reset)` and
`jax.jit(env.step)` unbatched, as tests/test_envs.py (locomotion), test_antmaze.py (the U-maze's
reset) and test_adroit.py (the hands' steps) compile them, so a run of the whole suite compiles
those once (conftest.py's persistent compilation cache). AntMaze and Adroit take about a minute
each to compile on a 2-core CPU; they are marked `slow` and still run by default (`-m "not slow"`
leaves them out).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs import episodes

NUM_EPISODES = 2
NUM_STEPS = 3
EPISODE_LENGTH = 10
SLOW_FAMILIES = ("antmaze", "adroit", "kitchen")


def tasks() -> list[str]:
  """One registered name per task: its bare name (the name with no dataset file)."""
  return sorted(name for name in envs.names() if envs.spec(name).task == name)


def task_params():
  """Every task; the AntMaze, Adroit and kitchen ones marked slow."""
  def marks(name):
    return [pytest.mark.slow] if envs.spec(name).family in SLOW_FAMILIES else []
  return [pytest.param(name, marks=marks(name)) for name in tasks()]


def test_every_registered_name_is_one_of_the_simulated_tasks():
  simulated = {name: envs.spec(name) for name in tasks()}
  assert {envs.spec(name).task for name in envs.names()} == set(simulated)
  for name in envs.names():
    env_spec = envs.spec(name)
    assert env_spec.name == name
    assert env_spec.task in simulated, name
    task_spec = simulated[env_spec.task]
    assert (env_spec.family, env_spec.observation_size, env_spec.action_size,
            env_spec.episode_length) == (task_spec.family, task_spec.observation_size,
                                         task_spec.action_size, task_spec.episode_length), name


@pytest.mark.parametrize("name", task_params())
def test_env_makes_resets_and_steps(name):
  env, env_spec = envs.make(name)
  assert (env_spec.name, env_spec.task) == (name, name)
  assert env.observation_size == env_spec.observation_size
  assert env.action_size == env_spec.action_size
  reset, step = jax.jit(env.reset), jax.jit(env.step)
  rng = np.random.default_rng(0)

  first_observations = []
  for episode in range(NUM_EPISODES):
    state = reset(jax.random.PRNGKey(episode))
    first = np.asarray(state.obs)
    assert first.shape == (env_spec.observation_size,) and first.dtype == np.float32, name
    assert np.all(np.isfinite(first)), name
    first_observations.append(first)
    for t in range(NUM_STEPS):
      action = rng.uniform(-1.0, 1.0, env_spec.action_size).astype(np.float32)
      state = step(state, action)
      observation, reward, done = (np.asarray(x) for x in (state.obs, state.reward, state.done))
      where = f"{name}, episode {episode}, step {t}"
      assert observation.shape == (env_spec.observation_size,), where
      assert reward.shape == done.shape == (), where
      assert np.all(np.isfinite(observation)) and np.isfinite(reward), where
      assert done in (0.0, 1.0), where
      assert episodes.outcome(state, t + 1, EPISODE_LENGTH).valid, where
    # The random actions moved the state.
    assert not np.array_equal(observation, first), name
  # Each reset key draws its own start.
  assert not np.array_equal(*first_observations), name

  # A blow-up: velocities of 1e38 make the next step's physics non-finite.
  physics = state.pipeline_state
  blown = step(state.replace(pipeline_state=physics.replace(qvel=jnp.full_like(physics.qvel,
                                                                                1e38))),
               np.zeros(env_spec.action_size, np.float32))
  assert not episodes.is_finite(blown), name
  result = episodes.outcome(blown, 3, EPISODE_LENGTH)
  assert not result.valid and result.timeout and not result.terminal, name   # a truncation
