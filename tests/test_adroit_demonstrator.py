"""The Adroit demonstrators' pieces: D4RL's shaped rewards, the PPO policy files, and the
collector's `ppo:DIR` policy."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import run_launch
from envs import adroit_shaped
from wsrl_mjx.datagen import controller


def _reward(task, observation, qvel=np.zeros(3), ball_height=None):
  reward, ends = adroit_shaped.shaped_reward(task, jnp.asarray(observation, jnp.float32),
                                             jnp.asarray(qvel, jnp.float32), ball_height)
  return float(reward), bool(ends)


def test_door_reward_is_d4rls_dense_reward():
  observation = np.zeros(39)
  observation[35:38] = [0.3, 0.4, 0.0]             # palm - handle: 0.5 m
  qvel = np.full(5, 10.0)                            # |qvel|^2 = 500
  for hinge, bonus in [(0.1, 0.0), (0.5, 2.0), (1.1, 10.0), (1.4, 20.0)]:
    observation[28] = hinge
    expected = -0.1 * 0.5 - 0.1 * (hinge - 1.57) ** 2 - 1e-5 * 500 + bonus
    reward, ends = _reward("door", observation, qvel)
    assert reward == pytest.approx(expected, abs=1e-5) and not ends


def test_pen_reward_pays_for_place_and_orientation_and_punishes_a_drop():
  observation = np.zeros(45)
  observation[26] = 0.2                              # pen height
  observation[39:42] = [0.03, 0.04, 0.0]             # pen - its place: 0.05 m
  observation[33:36] = [1.0, 0.0, 0.0]
  observation[36:39] = [0.96, 0.28, 0.0]             # similarity 0.96: both bonuses
  assert _reward("pen", observation) == pytest.approx((-0.05 + 0.96 + 60.0, False), abs=1e-5)
  observation[36:39] = [0.92, 0.3919, 0.0]           # 0.92: the first bonus only
  assert _reward("pen", observation)[0] == pytest.approx(-0.05 + 0.92 + 10.0, abs=1e-5)
  observation[26] = 0.05                             # dropped: -5, and the episode ends
  assert _reward("pen", observation) == pytest.approx((-0.05 + 0.92 + 10.0 - 5.0, True),
                                                      abs=1e-5)


def test_relocate_reward_counts_the_target_only_once_the_ball_is_lifted():
  observation = np.zeros(39)
  observation[30:33] = [0.1, 0.0, 0.0]               # palm - ball
  observation[33:36] = [0.0, 0.2, 0.0]               # palm - target
  observation[36:39] = [0.024, 0.032, 0.0]           # ball - target: 0.04 m, both bonuses
  lifted = _reward("relocate", observation, ball_height=jnp.float32(0.1))
  assert lifted == pytest.approx((-0.01 + 1.0 - 0.1 - 0.02 + 30.0, False), abs=1e-5)
  resting = _reward("relocate", observation, ball_height=jnp.float32(0.03))
  assert resting == pytest.approx((-0.01 + 30.0, False), abs=1e-5)


def test_shaped_door_step_returns_a_float_reward_and_no_termination():
  env = adroit_shaped.AdroitShaped("door")
  state = jax.eval_shape(env.reset, jax.random.PRNGKey(0))
  stepped = jax.eval_shape(env.step, state, jnp.zeros(env.action_size))
  assert stepped.reward.shape == () and stepped.reward.dtype == jnp.float32
  assert stepped.done.dtype == jnp.float32 and stepped.obs.shape == (39,)
  with pytest.raises(ValueError, match="Unknown Adroit task 'hammer'"):
    adroit_shaped.shaped_reward("hammer", jnp.zeros(39), jnp.zeros(3))


def _random_ppo_params(observation_size, action_size, hidden):
  from brax.training.acme import running_statistics
  networks = controller.make_network_factory(hidden, hidden)(
      observation_size, action_size, running_statistics.normalize)
  policy_key, value_key = jax.random.split(jax.random.PRNGKey(0))
  normaliser = running_statistics.init_state(
      jax.ShapeDtypeStruct((observation_size,), jnp.float32))
  return (normaliser, networks.policy_network.init(policy_key),
          networks.value_network.init(value_key))


def test_a_policy_saved_with_its_sizes_loads_and_acts_at_those_sizes(tmp_path):
  params = _random_ppo_params(39, 28, (16, 16))
  path = controller.save(tmp_path / "door", params, {"env": "door"}, observation_size=39,
                         action_size=28, policy_hidden_sizes=(16, 16),
                         value_hidden_sizes=(16, 16))
  policy, loaded = controller.load(path)
  action = policy(loaded, jnp.ones(39), jax.random.PRNGKey(1))
  assert action.shape == (28,) and bool(jnp.all(jnp.abs(action) <= 1.0))
  # A policy file without its sizes is refused, naming the file and the field.
  description = json.loads((path / "controller.json").read_text())
  del description["action_size"]
  (path / "controller.json").write_text(json.dumps(description))
  with pytest.raises(ValueError, match=r"door/controller.json: no field 'action_size'"):
    controller.load(path)


def test_collector_refuses_a_ppo_policy_of_another_task(tmp_path):
  output = tmp_path / "door.hdf5"
  result = run_launch("launch.collect", "--env=door-binary-v0",
                      "--policy=ppo:checkpoints/ant_controller", "--steps=10",
                      f"--output={output}")
  assert result.returncode != 0
  assert ("checkpoints/ant_controller/controller.json: observation_size 29 and action_size 8 "
          "do not fit door-binary-v0 (39, 28)") in result.stderr
  assert not output.exists()


def test_training_log_keeps_each_evaluation_and_saves_after_the_first():
  history, progress = controller.evaluation_log(
      {"episode_reward": "eval/episode_reward", "steps_at_success": "eval/episode_success"})
  progress(0, {"eval/episode_reward": -55.8})
  progress(819200, {"eval/episode_reward": -40.0, "eval/episode_success": 3.0})
  assert [row["step"] for row in history] == [0, 819200]
  assert history[1]["episode_reward"] == -40.0 and history[1]["steps_at_success"] == 3.0
  assert np.isnan(history[0]["steps_at_success"])         # a metric the evaluation lacked
  assert history[0]["seconds"] <= history[1]["seconds"]
  saved = []
  policy_params_fn = controller.save_at_evaluations(lambda step, params: saved.append(
      (step, params)))
  policy_params_fn(0, None, "untrained")
  policy_params_fn(np.int64(819200), None, "trained")
  assert saved == [(819200, "trained")] and type(saved[0][0]) is int
