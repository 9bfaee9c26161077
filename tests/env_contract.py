"""What every registered task's env must do (mujoco_playground's registry test), checked by each
family's own test file on the reset and step programs it has already compiled, so no step is
compiled twice for it; tests/test_env_registry.py checks that every task is covered.

Per task: reset two episodes, take a few uniformly random actions in each, and check the
observation shape against the `EnvSpec`, the action size, finite observations and rewards, and
done flags in {0, 1}. Then one step from a state whose velocities are 1e38: its physics is not
finite, and `envs.episodes.outcome` (the rule every loop steps episodes by) makes it a
truncation, never a terminal, whatever the env's health check says (tests/test_blowups.py checks
what the online loop does with it).
"""

import jax
import jax.numpy as jnp
import numpy as np

import envs
from envs import episodes

NUM_EPISODES = 2
NUM_STEPS = 3
EPISODE_LENGTH = 10


def check_makes_resets_and_steps(task: str, env, reset, step) -> None:
  """`env` is `task`'s (its bare registered name); `reset(key)` and `step(state, action)` are
  the caller's compiled `env.reset` and `env.step`. AssertionError naming the task, episode and
  step where the contract fails."""
  env_spec = envs.spec(task)
  assert env_spec.task == task, task
  assert env.observation_size == env_spec.observation_size, task
  assert env.action_size == env_spec.action_size, task
  rng = np.random.default_rng(0)

  first_observations = []
  for episode in range(NUM_EPISODES):
    state = reset(jax.random.PRNGKey(episode))
    first = np.asarray(state.obs)
    assert first.shape == (env_spec.observation_size,) and first.dtype == np.float32, task
    assert np.all(np.isfinite(first)), task
    first_observations.append(first)
    for t in range(NUM_STEPS):
      action = rng.uniform(-1.0, 1.0, env_spec.action_size).astype(np.float32)
      state = step(state, action)
      observation, reward, done = (np.asarray(x) for x in (state.obs, state.reward, state.done))
      where = f"{task}, episode {episode}, step {t}"
      assert observation.shape == (env_spec.observation_size,), where
      assert reward.shape == done.shape == (), where
      assert np.all(np.isfinite(observation)) and np.isfinite(reward), where
      assert done in (0.0, 1.0), where
      assert episodes.outcome(state, t + 1, EPISODE_LENGTH).valid, where
    # The random actions moved the state.
    assert not np.array_equal(observation, first), task
  # Each reset key draws its own start.
  assert not np.array_equal(*first_observations), task

  # A blow-up: velocities of 1e38 make the next step's physics non-finite.
  physics = state.pipeline_state
  blown = step(state.replace(pipeline_state=physics.replace(qvel=jnp.full_like(physics.qvel,
                                                                                1e38))),
               np.zeros(env_spec.action_size, np.float32))
  assert not episodes.is_finite(blown), task
  result = episodes.outcome(blown, 3, EPISODE_LENGTH)
  assert not result.valid and result.timeout and not result.terminal, task   # a truncation
