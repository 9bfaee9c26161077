"""The point-mass task (envs/point_mass.py) against a float64 numpy model of its physics, a
hand-worked step, its termination and reset rules, and MuJoCo's C simulator.

The training loop's tests run on this task because its programs compile in seconds; what is
checked here is that it is the task its docstring says, so those tests exercise real
terminations, time limits and rewards."""

import functools

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

import env_contract
import envs
from envs import point_mass

MASS, GEAR, TIMESTEP = 1.0, 10.0, 0.01


def numpy_step(position, velocity, action):
  """One env step in float64: 5 semi-implicit Euler substeps (MuJoCo's Euler integrator updates
  the velocity first, then moves with the new one) under force gear x clip(action, -1, 1)."""
  position, velocity = np.array(position, np.float64), np.array(velocity, np.float64)
  force = GEAR * np.clip(np.asarray(action, np.float64), -1.0, 1.0)
  for _ in range(point_mass.FRAME_SKIP):
    velocity = velocity + TIMESTEP * force / MASS
    position = position + TIMESTEP * velocity
  reward = 1.0 - np.linalg.norm(position - np.asarray(point_mass.GOAL))
  done = float(np.linalg.norm(position) > point_mass.ARENA_RADIUS)
  return position, velocity, reward, done


CONTRACT_TASKS = ("point-mass",)   # tests/env_contract.py's, below


@functools.lru_cache(maxsize=None)
def compiled():
  env, spec = envs.make("point-mass")
  return env, spec, jax.jit(env.reset), jax.jit(env.step)


def at(state, position, velocity):
  """`state` moved to (position, velocity)."""
  data = state.pipeline_state.replace(qpos=jnp.asarray(position, jnp.float32),
                                      qvel=jnp.asarray(velocity, jnp.float32))
  return state.replace(pipeline_state=data)


def test_env_makes_resets_and_steps():
  env, _, reset, step = compiled()
  env_contract.check_makes_resets_and_steps("point-mass", env, reset, step)


def test_the_registry_describes_the_task():
  spec = envs.spec("point-mass")
  assert (spec.family, spec.task, spec.observation_size, spec.action_size) == (
      "point-mass", "point-mass", 4, 2)
  assert spec.episode_length == 200 and spec.dataset_file is None
  assert (spec.reward_scale, spec.reward_bias, spec.reward_values) == (1.0, 0.0, None)
  # 100 x return / 200: an episode on the goal scores 100.
  assert spec.normalized_score(200.0) == pytest.approx(100.0)
  assert spec.normalized_score(50.0) == pytest.approx(25.0)


def test_a_hand_worked_step_from_rest():
  """Push +x at full force from rest at the origin: 10 m/s^2 for 5 x 0.01 s, so v = 0.5 m/s
  and x = 0.01 x (0.1 + 0.2 + 0.3 + 0.4 + 0.5) = 0.015 m; reward 1 - |0.015 - 0.5| = 0.515."""
  _, _, reset, step = compiled()
  state = at(reset(jax.random.PRNGKey(0)), [0.0, 0.0], [0.0, 0.0])
  state = step(state, jnp.asarray([1.0, 0.0]))
  np.testing.assert_allclose(state.obs, [0.015, 0.0, 0.5, 0.0], atol=1e-6)
  assert float(state.reward) == pytest.approx(0.515, abs=1e-6)
  assert float(state.done) == 0.0
  # Actions beyond [-1, 1] are clipped by the motors' control range.
  clipped = step(at(state, [0.0, 0.0], [0.0, 0.0]), jnp.asarray([3.0, -7.0]))
  np.testing.assert_allclose(clipped.obs, [0.015, -0.015, 0.5, -0.5], atol=1e-6)


def test_random_steps_match_the_numpy_model_and_mujoco():
  env, _, reset, step = compiled()
  state = reset(jax.random.PRNGKey(1))
  mj_data = mujoco.MjData(env.reference_mj_model())
  mj_data.qpos[:] = np.asarray(state.pipeline_state.qpos)
  position = np.asarray(state.pipeline_state.qpos, np.float64)
  velocity = np.zeros(2)
  rng = np.random.default_rng(0)
  for t in range(30):
    action = rng.uniform(-1.2, 1.2, 2).astype(np.float32)
    state = step(state, jnp.asarray(action))
    position, velocity, reward, done = numpy_step(position, velocity, action)
    mj_data.ctrl[:] = action
    for _ in range(env.frame_skip):
      mujoco.mj_step(env.reference_mj_model(), mj_data)
    expected = np.concatenate([position, velocity])
    np.testing.assert_allclose(state.obs, expected, atol=1e-5, err_msg=f"step {t}")
    np.testing.assert_allclose(np.concatenate([mj_data.qpos, mj_data.qvel]), expected,
                               atol=1e-12, err_msg=f"MuJoCo, step {t}")
    assert float(state.reward) == pytest.approx(reward, abs=1e-5)
    if done:      # the episode would end here; keep stepping the physics for the comparison
      assert float(state.done) == 1.0
    else:
      assert float(state.done) == 0.0


@pytest.mark.parametrize("position, velocity, done", [
    ([0.97, 0.0], [1.0, 0.0], 1.0),     # moves 0.05 m, out through the edge
    ([0.0, -0.97], [0.0, -1.0], 1.0),
    ([0.97, 0.0], [-1.0, 0.0], 0.0),    # moves away from the edge
    ([0.6, 0.6], [0.0, 0.0], 0.0),      # |p| = 0.85 < 1
    ([0.75, 0.75], [0.0, 0.0], 1.0),    # |p| = 1.06 > 1, though each coordinate is inside
])
def test_the_episode_terminates_outside_the_disc(position, velocity, done):
  _, _, reset, step = compiled()
  state = step(at(reset(jax.random.PRNGKey(0)), position, velocity), jnp.zeros(2))
  assert float(state.done) == done
  assert float(state.done) == numpy_step(position, velocity, np.zeros(2))[3]


def test_resets_are_at_rest_near_the_origin_and_differ_by_key():
  _, _, reset, _ = compiled()
  states = [reset(jax.random.PRNGKey(k)) for k in range(20)]
  positions = np.stack([np.asarray(s.obs[:2]) for s in states])
  assert np.all(np.abs(positions) <= point_mass.RESET_HALF_WIDTH)
  assert len({tuple(p) for p in positions}) == 20
  assert all(np.all(np.asarray(s.obs[2:]) == 0.0) and float(s.done) == 0.0 for s in states)


def test_random_episodes_end_both_ways_within_forty_steps():
  """The docstring's statistics from the numpy model: a uniformly random policy leaves the disc
  after 22 steps (median), and within 40 steps most but not all episodes do, so the loop tests'
  40-step episodes see both terminations and time limits."""
  rng = np.random.default_rng(0)
  exits = []
  for _ in range(500):
    position = rng.uniform(-0.1, 0.1, 2)
    velocity = np.zeros(2)
    for t in range(1, 201):
      position, velocity, _, done = numpy_step(position, velocity, rng.uniform(-1, 1, 2))
      if done:
        break
    exits.append(t)
  assert 19 <= np.median(exits) <= 25
  assert 0.8 <= np.mean(np.asarray(exits) <= 40) <= 0.97
