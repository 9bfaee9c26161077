"""Behaviours of the WSRL reference implementation that wsrl-mjx reproduces, one test each.

The reference is zhouzypaul/wsrl @891ee35 with the environments its README installs (the D4RL
fork zhouzypaul/D4RL @d005dca); each test names the reference file and lines it follows. Expected
values come from float64 numpy written here from the reference's procedure, or are worked by hand.
Only the update-floor and optimiser hand-off tests compile MJX (the session's shared tiny
point-mass programs and tiny CQL run, tests/conftest.py).

Data and environments:
- AntMaze's evaluation goal: the fork's offsets, upstream D4RL's as an option.
- AntMaze data we collect: terminal = 1 wherever reward = 1, the episode going on (D4RL's files).
- Trajectories (masks and Monte-Carlo returns) split at terminals and timeouts only; unflagged
  jumps in the observations are reported, and split only on request.

The agent:
- Every UTD call applies every network's Adam (momentum-only steps for the untrained ones);
  the option steps only the trained network. Hand-computed Adam on the temperature.
- Target critics drawn with replacement; the option draws distinct ones.
- AntMaze fine-tuning backs up the best of 10 sampled next actions, and the temperature's
  entropy estimate averages 10 fresh samples at s'.
- No update while the step index is at most max(warmup, batch size).
- Fine-tuning continues the pretraining's Adam moments and counts (at its own learning rates);
  per-seed option: fresh Adam; checkpoints without optimiser state warn and start fresh.
- Pretraining: the max-target backup for every family; CQL's alpha a softplus Lagrange
  multiplier; the CQL penalty on 2 critics drawn with replacement (option: all critics); the
  actor's step on the critics from before the update's critic step (option: after it).
- The online budget: 500,000 env steps for every family.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from typing import NamedTuple

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from scipy.special import logsumexp

import envs
from conftest import tiny_config
from envs import antmaze
from launch.configs import finetune as finetune_config
from launch.configs import pretrain as pretrain_config
from numpy_reference import np_actor, np_ensemble, np_sample, random_transitions
from wsrl_mjx import checkpoint, configs, data, finetune, per_seed, replay
from wsrl_mjx.datagen import collect
from wsrl_mjx.agents import cql, sac
from wsrl_mjx.errors import ConfigError
from wsrl_mjx.data import adroit, d4rl, transitions

DISCOUNT = 0.99
ANTMAZE = envs.spec("antmaze-umaze-v2")        # rewards 0/1, learner sees r * 10 - 5
HOPPER = envs.spec("hopper-medium-v2")          # 11 observations, 3 actions
# A stand-in for an Adroit binary task: small dims and the family's reward transform (x10, +5).
ADROIT = dataclasses.replace(envs.spec("hopper"), name="pen-binary-v0", task="pen",
                             family="adroit", observation_size=6, action_size=2,
                             episode_length=100, reward_scale=10.0, reward_bias=5.0)


# --- float64 re-statements of the reference's procedures -------------------------------------

def reference_return_to_go(rewards, masks, negative):
  """`wsrl/envs/env_common.py:160-211` calc_return_to_go: r / (1 - discount) at every step of a
  trajectory whose (transformed) rewards all equal `negative`, else the discounted sum backwards
  with the bootstrap cut where mask = 0."""
  rewards = np.asarray(rewards, np.float64)
  if negative is not None and np.all(rewards == negative):
    return np.full(len(rewards), rewards[0] / (1 - DISCOUNT))
  returns, following = np.zeros(len(rewards)), 0.0
  for i in reversed(range(len(rewards))):
    returns[i] = following = rewards[i] + DISCOUNT * following * masks[i]
  return returns


def reference_d4rl_returns(rewards, terminals, timeouts, scale, bias, negative):
  """`wsrl/envs/d4rl_dataset.py:171-253` qlearning_dataset_and_calc_mc: (rows it keeps, their
  Monte-Carlo returns). A trajectory closes at a terminal or a timeout; timeout steps and the
  file's last step are not kept; nothing else splits."""
  kept, returns, segment = [], [], []
  for i in range(len(rewards)):
    if not (timeouts[i] or i == len(rewards) - 1):
      segment.append(i)
    if (terminals[i] or timeouts[i]) and segment:
      segment = np.array(segment)
      returns.append(reference_return_to_go(
          np.asarray(rewards, np.float64)[segment] * scale + bias,
          1.0 - np.asarray(terminals, np.float64)[segment], negative * scale + bias))
      kept.append(segment)
      segment = []
  return np.concatenate(kept), np.concatenate(returns)


def reference_adroit_returns(trajectory_rewards, scale, bias):
  """`wsrl/envs/adroit_binary_dataset.py:47-83,113-116,135-137`: per file trajectory, cut after
  its last reward-0 step (skipped if it has none); done = (reward == 0); returns of
  r * scale + bias with masks 1 - done, r / (1 - discount) if every step is -1."""
  returns = []
  for rewards in trajectory_rewards:
    rewards = np.asarray(rewards, np.float64)
    if not np.any(rewards == 0):
      continue
    rewards = rewards[:np.flatnonzero(rewards == 0)[-1] + 1]
    returns.append(reference_return_to_go(rewards * scale + bias, 1.0 - (rewards == 0),
                                          -1.0 * scale + bias))
  return np.concatenate(returns)


def jump_warnings(caplog):
  return [r.getMessage() for r in caplog.records
          if r.levelno == logging.WARNING and "does not continue" in r.getMessage()]


# --- item: AntMaze evaluation goal -----------------------------------------------------------

# zhouzypaul/D4RL d4rl/locomotion/maze_env.py:260-267 (_rowcol_to_xy with noise: centre - s/8
# + U(0, s/4) - s/8) and 286-289 (goal_sampler: + U(0, 0.5) * s/4, then max(., 0) per axis),
# s = 4: centre + U(-1, 0) + U(0, 0.5). Upstream D4RL (the fork's parent of d3a2d37): centre
# + U(0, 1) + U(0, 0.5), the same floor.
def test_antmaze_evaluation_goal_is_the_forks_by_default_and_upstreams_as_an_option():
  keys = jax.random.split(jax.random.PRNGKey(0), 40_000)

  def offsets(maze, **kwargs):
    env = antmaze.AntMaze(maze, **kwargs)
    goals = np.asarray(jax.vmap(env.sample_goal)(keys), np.float64)
    return goals - env.maze.cell_center(env.maze.goal_cell), env

  # Medium maze, goal cell centre (20, 20): the floor never binds. U(-1, 0) + U(0, 0.5): support
  # [-1, 0.5], mean -0.5 + 0.25 = -0.25, variance 1/12 + 1/48 = 5/48; upstream: [0, 1.5], 0.75.
  for kwargs, low, high, mean in (({}, -1.0, 0.5, -0.25),
                                  ({"goal_offset": "wsrl"}, -1.0, 0.5, -0.25),
                                  ({"goal_offset": "d4rl"}, 0.0, 1.5, 0.75)):
    offset, env = offsets("medium", **kwargs)
    assert offset.min() >= low and offset.max() <= high
    assert offset.min() < low + 0.05 and offset.max() > high - 0.05     # the whole support
    np.testing.assert_allclose(offset.mean(0), [mean, mean], atol=0.01)
    np.testing.assert_allclose(offset.var(0), [5 / 48] * 2, rtol=0.05)
    assert env.goal_offset == kwargs.get("goal_offset", "wsrl")

  # U-maze, goal cell centre (0, 8): x = max(U(-1, 0) + U(0, 0.5), 0). P(x = 0) = P(A > B) for
  # A ~ U(0, 1), B ~ U(0, 0.5): 1 - E[B] = 3/4; E[x] = 2 * int_0^.5 int_0^b (b - a) da db = 1/24.
  offset, _ = offsets("umaze")
  x, y = offset[:, 0], offset[:, 1]
  assert x.min() == 0.0 and x.max() <= 0.5
  np.testing.assert_allclose(np.mean(x == 0.0), 0.75, atol=0.01)
  np.testing.assert_allclose(x.mean(), 1 / 24, atol=0.003)
  assert y.min() >= -1.0 and y.max() <= 0.5
  np.testing.assert_allclose(y.mean(), -0.25, atol=0.01)
  offset, _ = offsets("umaze", goal_offset="d4rl")
  assert offset.min() >= 0.0 and offset.max() <= 1.5 and np.mean(offset == 0.0) == 0.0
  np.testing.assert_allclose(offset.mean(0), [0.75, 0.75], atol=0.01)

  # Reachable through the registry; the data-collection variant keeps upstream's (D4RL's files
  # were made with it); anything else is refused, naming the field and the allowed values.
  assert envs.make("antmaze-umaze-v2")[0].goal_offset == "wsrl"
  assert envs.make("antmaze-umaze-v2", goal_offset="d4rl")[0].goal_offset == "d4rl"
  assert antmaze.AntMaze("umaze", data_character="diverse").goal_offset == "d4rl"
  with pytest.raises(ValueError, match=r"goal_offset must be one of \('wsrl', 'd4rl'\).*'fork'"):
    envs.make("antmaze-umaze-v2", goal_offset="fork")


# --- item: terminals in the AntMaze data we collect ------------------------------------------

class _PointState(NamedTuple):
  """Stands in for mjx.Data: the fields AntMaze and the collector read."""
  qpos: jax.Array
  qvel: jax.Array


SPEED = 0.3      # m per env step of the stand-in physics at |action| = 1


def _point_mass_antmaze():
  """D4RL's data-collection U-maze env (its goal, reward, no termination, observation) with the
  MJX physics replaced by a point that moves SPEED x action[:2] per step, walls ignored: what
  is tested is how the collector writes AntMaze rows, not the ant."""
  env = antmaze.AntMaze("umaze", data_character="fixed")
  env.physics_init = lambda qpos, qvel, **_: _PointState(qpos, qvel)
  env.physics_step = lambda data, ctrl, model=None: _PointState(
      data.qpos.at[:2].add(SPEED * ctrl[:2] / antmaze.ACTION_SCALE), data.qvel)
  return env


def _through_the_goal(params, observation, key):
  """Heads for the goal (observation[29:31] = goal - xy) and, once level with it, walks on in +y:
  a few steps within 0.5 m (reward 1), then away from it (reward 0) for the rest of the episode."""
  del params, key
  to_goal = observation[29:31]
  heading = jnp.where(to_goal[1] > 0.15, to_goal / jnp.linalg.norm(to_goal), jnp.array([0., 1.]))
  return jnp.concatenate([heading, jnp.zeros(6)])


# D4RL's AntMaze v2 files: terminals = 1 at every reward-1 step, in clusters inside 1000-step
# episodes (D4RL issue 199; episodes reset only at the time limit:
# scripts/generation/generate_ant_maze_datasets.py:141-158). The reference trains on
# masks = 1 - terminals and closes its Monte-Carlo trajectories there:
# wsrl/envs/d4rl_dataset.py:207-247, returns by wsrl/envs/env_common.py:160-211.
def test_collected_antmaze_data_is_terminal_where_the_reward_is_1_and_returns_stop_there(
    tmp_path):
  env = _point_mass_antmaze()
  rows = collect.collect(env, ANTMAZE, _through_the_goal, None, jax.random.PRNGKey(0),
                         steps_per_env=80, num_envs=2, episode_length=40, action_clip=0.99999)
  path = collect.write(tmp_path / "antmaze.hdf5", rows, {"algorithm": "test"})
  with h5py.File(path) as file:
    rewards, terminals = file["rewards"][:], file["terminals"][:]
    timeouts, goals = file["timeouts"][:], file["infos/goal"][:]
    observations, next_observations = file["observations"][:], file["next_observations"][:]
  reached = np.flatnonzero(rewards == 1.0)
  assert len(reached) >= 4, rewards                          # each of the 4 episodes gets there
  np.testing.assert_array_equal(terminals, rewards == 1.0)
  # The episode goes on past its terminal rows: 40-step episodes, one goal each, and after each
  # terminal row the next observation is where that row's step ended.
  np.testing.assert_array_equal(np.flatnonzero(timeouts), [39, 79, 119, 159])
  for start in range(0, 160, 40):
    np.testing.assert_array_equal(goals[start:start + 40], goals[start:start + 1].repeat(40, 0))
  inside = reached[~timeouts[reached]]
  np.testing.assert_array_equal(observations[inside + 1], next_observations[inside])
  assert np.any(rewards[inside + 1] == 0.0)                  # reward 0 again after the goal
  np.testing.assert_array_equal(collect.episode_ends(rows), timeouts)

  dataset = data.load(path, ANTMAZE, discount=DISCOUNT, negative_sparse_reward=0.0)
  np.testing.assert_array_equal(dataset.terminals, terminals)
  # Every terminal row's return is its own reward (10 x 1 - 5); the step before it adds only the
  # discounted 5; the rest as the reference computes it (it drops timeout rows, whose
  # trajectories here are all 0-reward: -5 / (1 - 0.99) = -500 either way).
  np.testing.assert_allclose(dataset.mc_returns[reached], 5.0)
  before = reached[(reached > 0) & (rewards[reached - 1] == 0.0)] - 1
  np.testing.assert_allclose(dataset.mc_returns[before], -5.0 + DISCOUNT * 5.0, rtol=1e-6)
  kept, expected = reference_d4rl_returns(rewards, terminals, timeouts, ANTMAZE.reward_scale,
                                          ANTMAZE.reward_bias, 0.0)
  np.testing.assert_allclose(dataset.mc_returns[kept], expected, rtol=1e-5)
  assert np.any(np.isclose(expected, -500.0)) and np.any((expected > -499) & (expected < -5))


# --- item: where trajectories split ----------------------------------------------------------

def _antmaze_like_file(path, rng, observation_dtype, next_observation_dtype, goal_step=40,
                       num_steps=60):
  """One 60-step AntMaze-like episode (xy around 10-30 m) that reaches the goal at `goal_step`
  (reward 1, terminal) and times out at the last step; next_observations recorded."""
  observations = np.concatenate([rng.uniform(10.0, 30.0, (num_steps + 1, 2)),
                                 rng.normal(size=(num_steps + 1, 27))], axis=1)
  rewards = np.zeros(num_steps, np.float32)
  rewards[goal_step] = 1.0
  terminals, timeouts = rewards == 1.0, np.zeros(num_steps, bool)
  timeouts[-1] = True
  with h5py.File(path, "w") as file:
    file["observations"] = observations[:-1].astype(observation_dtype)
    file["next_observations"] = observations[1:].astype(next_observation_dtype)
    file["actions"] = rng.uniform(-1, 1, (num_steps, 8)).astype(np.float32)
    file["rewards"], file["terminals"], file["timeouts"] = rewards, terminals, timeouts
  return rewards, terminals, timeouts


# wsrl/envs/d4rl_dataset.py:204-247 (qlearning_dataset_and_calc_mc) closes a trajectory at
# terminal | timeout only; the 1e-6 continuity rule of :114-134 feeds an unread `dones`.
def test_float_rounding_between_observations_and_next_observations_does_not_split(
    tmp_path, caplog):
  rng = np.random.default_rng(0)
  path = tmp_path / "float64_observations.hdf5"
  rewards, terminals, timeouts = _antmaze_like_file(path, rng, np.float64, np.float32)
  stored = data.read(path)
  assert stored.observations.dtype == np.float64
  gaps = np.linalg.norm(stored.observations[1:] - stored.next_observations[:-1], axis=1)
  assert gaps.max() > 1e-6        # rounding to float32 alone: what the old 1e-6 rule cut at
  with caplog.at_level(logging.WARNING):
    dataset = data.load(path, ANTMAZE, discount=DISCOUNT, negative_sparse_reward=0.0)
  kept, expected = reference_d4rl_returns(rewards, terminals, timeouts, ANTMAZE.reward_scale,
                                          ANTMAZE.reward_bias, 0.0)
  np.testing.assert_allclose(dataset.mc_returns[kept], expected, rtol=1e-5)
  # By hand, 7 steps before the goal: -5 (1 + .99 + ... + .99^6) + 5 x .99^7 = -500 + 505 x .99^7.
  np.testing.assert_allclose(dataset.mc_returns[33], -500 + 505 * 0.99 ** 7, rtol=1e-6)
  np.testing.assert_allclose(dataset.mc_returns[33], -29.31, atol=0.01)
  assert jump_warnings(caplog) == []
  assert not transitions.unflagged_jumps(stored).any()


# wsrl/envs/adroit_binary_dataset.py:47-83 (truncate_traj: dones = rewards == 0, returns by
# env_common.py:160-211) and :113-116, 135-137 (skip trajectories without success, cut after the
# last).
def test_adroit_next_observations_off_by_1e_5_give_the_reference_returns(tmp_path, caplog):
  rng = np.random.default_rng(1)
  trajectory_rewards = [[-1, -1, 0, -1, 0, -1], [-1, -1, -1], [-1, 0, 0]]
  trajectories = []
  for rewards in trajectory_rewards:
    states = rng.normal(size=(len(rewards) + 1, ADROIT.observation_size)).astype(np.float32)
    trajectories.append(dict(
        observations=states[:-1], next_observations=states[1:] + np.float32(1e-5),
        actions=rng.uniform(-1, 1, (len(rewards), 2)), rewards=np.float32(rewards),
        terminals=np.zeros(len(rewards))))
  path = adroit.write_adroit_npy(tmp_path / "pen_bc_sparse4.npy", trajectories)
  with caplog.at_level(logging.WARNING):
    dataset = data.load(path, ADROIT, discount=DISCOUNT, negative_sparse_reward=-1.0)
  assert jump_warnings(caplog) == []
  expected = reference_adroit_returns(trajectory_rewards, ADROIT.reward_scale, ADROIT.reward_bias)
  np.testing.assert_allclose(dataset.mc_returns, expected, rtol=1e-5)
  # By hand (x10 + 5: -1 -> -5, 0 -> 5): -5 + .99 (-5 + .99 x 5) = -5.0495, then -0.05, 5, ...
  np.testing.assert_allclose(dataset.mc_returns[:5], [-5.0495, -0.05, 5, -0.05, 5], rtol=1e-5)
  np.testing.assert_allclose(dataset.mc_returns[5:], [-0.05, 5, 5], rtol=1e-5)


def _hopper_file(path, num_steps=12, jumps=(), timeout_gap_at=None, next_observations=True):
  """Hopper-sized steps, one trajectory with no flags but a timeout at the end; at each row in
  `jumps` the next observation teleports by 1.0 in every coordinate (an unflagged jump); at
  `timeout_gap_at` a timeout with such a gap (flagged, so not a jump)."""
  rng = np.random.default_rng(2)
  states = rng.normal(size=(num_steps + 1, HOPPER.observation_size)).astype(np.float32)
  observations, following = states[:-1].copy(), states[1:].copy()
  for row in jumps:
    observations[row + 1] += 1.0
  timeouts = np.zeros(num_steps, bool)
  timeouts[-1] = True
  if timeout_gap_at is not None:
    timeouts[timeout_gap_at] = True
    observations[timeout_gap_at + 1] += 1.0
  rewards = rng.uniform(0, 1, num_steps).astype(np.float32)
  # Reward 0 at the timeouts: the reference drops timeout steps where wsrl-mjx keeps them (audit
  # H4, left as is), and then the returns before them agree.
  rewards[timeouts] = 0.0
  d4rl.write_d4rl_hdf5(path, observations=observations, actions=np.zeros((num_steps, 3)),
                       rewards=rewards, terminals=np.zeros(num_steps, bool), timeouts=timeouts,
                       next_observations=following if next_observations else None)
  return rewards, timeouts


def _returns_split_at(rewards, ends):
  """float64 discounted returns of raw (dense, x1 + 0) rewards with trajectories ending at
  `ends`."""
  returns, following = np.zeros(len(rewards)), 0.0
  for i in reversed(range(len(rewards))):
    following = rewards[i] + (0.0 if i in ends else DISCOUNT * following)
    returns[i] = following
  return returns


# wsrl/envs/d4rl_dataset.py:204-247: no split where observations jump (a teleport between
# episodes that no flag marks); wsrl-mjx reports those and splits only with split_at_jumps.
def test_an_unflagged_jump_is_reported_and_split_only_on_request(tmp_path, caplog):
  path = tmp_path / "teleports.hdf5"
  # Jumps after rows 3 and 10 (10: into the file's last row); a flagged gap at the timeout 6.
  rewards, timeouts = _hopper_file(path, jumps=(3, 10), timeout_gap_at=6)
  with caplog.at_level(logging.WARNING):
    merged = data.load(path, HOPPER, discount=DISCOUNT)
  np.testing.assert_allclose(merged.mc_returns, _returns_split_at(rewards, {6, 11}), rtol=1e-5)
  kept, expected = reference_d4rl_returns(rewards, np.zeros(12, bool), timeouts, 1.0, 0.0, 0.0)
  np.testing.assert_allclose(merged.mc_returns[kept], expected, rtol=1e-5)
  assert len(jump_warnings(caplog)) == 1
  message = jump_warnings(caplog)[0]
  assert message.startswith(f"{path}: 2 of 12 steps") and "Not split" in message, message
  stored = data.read(path)
  np.testing.assert_array_equal(np.flatnonzero(transitions.unflagged_jumps(stored)), [3, 10])

  caplog.clear()
  with caplog.at_level(logging.WARNING):
    split = data.load(path, HOPPER, discount=DISCOUNT, split_at_jumps=True)
  assert "Split there" in jump_warnings(caplog)[0]
  _, _, trajectory_ends = transitions.pair_steps(stored, split_at_jumps=True)
  np.testing.assert_array_equal(np.flatnonzero(trajectory_ends), [3, 6, 10, 11])
  np.testing.assert_allclose(split.mc_returns, _returns_split_at(rewards, {3, 6, 10, 11}),
                             rtol=1e-5)
  assert split.mc_returns[11] == rewards[11]          # the last row alone after its jump
  np.testing.assert_array_equal(split.terminals, np.zeros(12))   # a split is no termination

  # Without recorded next_observations, step i's next observation is step i + 1's: nothing to
  # detect, nothing reported, and the option changes nothing.
  caplog.clear()
  bare = tmp_path / "no_next_observations.hdf5"
  _hopper_file(bare, jumps=(3,), next_observations=False)
  assert not transitions.unflagged_jumps(data.read(bare)).any()
  with caplog.at_level(logging.WARNING):
    plain = data.load(bare, HOPPER, discount=DISCOUNT)
    optioned = data.load(bare, HOPPER, discount=DISCOUNT, split_at_jumps=True)
  assert jump_warnings(caplog) == []
  np.testing.assert_array_equal(plain.mc_returns, optioned.mc_returns)


# --- The agent: online SAC update, hand-off and offline CQL -------------------------------------

AGENT_OBS, AGENT_ACT, AGENT_B = 5, 2, 8
AGENT_CONFIG = sac.SACConfig(observation_size=AGENT_OBS, action_size=AGENT_ACT,
                             actor_hidden_sizes=(8, 8), critic_hidden_sizes=(16, 16),
                             num_critics=10, num_target_critics=2, utd=4,
                             minibatch_size=AGENT_B)
ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8


def agent_batch(seed=0, size=4 * AGENT_B):
  return random_transitions(seed, size, AGENT_OBS, AGENT_ACT)


def np_adam(param, m, v, t, grad, lr):
  """One step of Adam (optax.adam's defaults) on a float64 scalar -> (param, m, v, t)."""
  t += 1
  m = ADAM_B1 * m + (1 - ADAM_B1) * grad
  v = ADAM_B2 * v + (1 - ADAM_B2) * grad * grad
  step = (m / (1 - ADAM_B1 ** t)) / (np.sqrt(v / (1 - ADAM_B2 ** t)) + ADAM_EPS)
  return param - lr * step, m, v, t


def np_softplus(x):
  return np.log1p(np.exp(x))


def np_sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def scalar_adam_state(opt_state):
  """(m, v, count) of a scalar parameter's inject_hyperparams(adam) state, as float64."""
  inner = opt_state.inner_state[0]
  return float(inner.mu), float(inner.nu), int(inner.count)


# wsrl/common/common.py (JaxRLTrainState.apply_gradients) applies every optimiser in every
# update call; wsrl/agents/sac.py (update, update_high_utd) calls update(networks_to_update=
# {"critic"}) utd times, then {"actor", "temperature"}, replacing the other losses by 0.
@pytest.mark.parametrize("step_all_optimizers", [True, False])
def test_adam_steps_every_network_in_every_utd_call_by_default(step_all_optimizers):
  """The temperature is one scalar: follow it through two UTD updates by hand."""
  agent = sac.SAC(dataclasses.replace(AGENT_CONFIG, step_all_optimizers=step_all_optimizers))
  rates = sac.LearningRates(actor=1e-3, critic=3e-3, temperature=1e-2)
  state = agent.init_state(agent.init_params(jax.random.PRNGKey(0)), rates)
  update = jax.jit(agent.update)
  raw, m, v, t = float(state.params.temperature), 0.0, 0.0, 0
  for call in range(3):
    state, metrics = update(state, agent_batch(call), jax.random.PRNGKey(10 + call))
    if step_all_optimizers:                        # 4 critic calls: zero gradient, Adam moves
      for _ in range(4):
        raw, m, v, t = np_adam(raw, m, v, t, 0.0, 1e-2)
    # The actor call: the temperature loss softplus(raw) (H - target) at the current raw.
    assert float(metrics["temperature"]) == pytest.approx(np_softplus(raw), rel=1e-6)
    grad = np_sigmoid(raw) * (float(metrics["entropy"]) + AGENT_ACT)
    raw, m, v, t = np_adam(raw, m, v, t, grad, 1e-2)
    assert float(state.params.temperature) == pytest.approx(raw, rel=1e-6, abs=1e-7)
    assert scalar_adam_state(state.temperature_opt_state) == pytest.approx((m, v, t), rel=1e-4)
  # Three calls: the reference's counts are 15 for every network, the option's 12 / 3 / 3.
  counts = [int(getattr(state, f"{name}_opt_state").inner_state[0].count)
            for name in ("critic", "actor", "temperature")]
  assert counts == ([15, 15, 15] if step_all_optimizers else [12, 3, 3])


def test_momentum_only_steps_move_the_actor_about_twice_as_far_per_env_step():
  """The audit's hand-worked effect (reference-audit.md 2.3): with a constant gradient of 1 on
  each real step, the reference's 4 zero-gradient steps + 1 real step per env step move a
  parameter by ~2.236 lr per env step in steady state, against 1 lr for 1 real step."""
  def per_env_step_move(schedule, env_steps=3000):
    p, m, v, t = 0.0, 0.0, 0.0, 0
    for _ in range(env_steps):
      start = p
      for grad in schedule:
        p, m, v, t = np_adam(p, m, v, t, grad, 1.0)
    return start - p
  assert per_env_step_move([0.0] * 4 + [1.0]) == pytest.approx(np.sqrt(5.0), rel=1e-3)
  assert per_env_step_move([1.0]) == pytest.approx(1.0, rel=1e-6)


# wsrl/agents/sac.py (critic_loss_fn): jax.random.randint((critic_subsample_size,), 0, size).
def test_target_critics_are_drawn_with_replacement():
  keys = jax.random.split(jax.random.PRNGKey(3), 4000)
  for with_replacement, low, high in ((True, 0.085, 0.115), (False, 0.0, 0.0)):
    agent = sac.SAC(dataclasses.replace(AGENT_CONFIG,
                                        subsample_with_replacement=with_replacement))
    subsets = np.asarray(jax.vmap(lambda k: agent.subsample(k, 2))(keys))
    assert subsets.min() == 0 and subsets.max() == 9
    duplicates = np.mean(subsets[:, 0] == subsets[:, 1])       # 1/10 with replacement
    assert low <= duplicates <= high, duplicates


# experiments/configs/train_config.py (antmaze_wsrl: max_target_backup=True, n_actions 10);
# wsrl/agents/sac.py (_compute_next_actions, _process_target_next_qs, temperature_loss_fn).
def test_antmaze_fine_tuning_backs_up_the_best_of_ten_next_actions():
  for env_name, expected in (("antmaze-large-diverse-v2", 10), ("hopper-medium-v2", 1),
                             ("door-binary-v0", 1)):
    config = finetune_config.get_config(env_name)
    assert configs.sac_config(config, envs.spec(env_name)).num_next_actions == expected

  agent = sac.SAC(dataclasses.replace(AGENT_CONFIG, num_next_actions=10))
  params = agent.init_params(jax.random.PRNGKey(2))
  batch = agent_batch(1, AGENT_B)
  key = jax.random.PRNGKey(8)
  got = np.asarray(agent.td_target(params, batch, key))
  action_key, subset_key = jax.random.split(key)
  next_observation = np.asarray(batch.next_observation, np.float64)
  mean, std = np_actor(params.actor, next_observation)
  noise = np.asarray(jax.random.normal(action_key, (10, AGENT_B, AGENT_ACT)), np.float64)
  actions, _ = np_sample(mean[None], std[None], noise)
  subset = np.asarray(jax.random.randint(subset_key, (2,), 0, 10))
  values = np.stack([np_ensemble(params.target_critic, next_observation, actions[j])[subset]
                     .min(0) for j in range(10)])                          # [10, B]
  expected = (np.asarray(batch.reward)
              + 0.99 * (1 - np.asarray(batch.terminal)) * values.max(0))
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
  assert np.all(values.max(0) > values.mean(0))

  # The temperature's entropy estimate: 10 fresh samples per s', averaged.
  entropy_key = jax.random.PRNGKey(4)
  got_entropy = float(agent.entropy_estimate(params.actor, batch, None, entropy_key))
  noise = np.asarray(jax.random.normal(entropy_key, (10, AGENT_B, AGENT_ACT)), np.float64)
  _, log_prob = np_sample(mean[None], std[None], noise)
  assert got_entropy == pytest.approx(-log_prob.mean(), rel=1e-4)


# finetune.py: no update while step - num_offline_steps <= max(warmup_steps,
# batch_size * (1 - offline_data_ratio)); the env step comes before the update in each iteration.
def test_no_update_before_max_of_warmup_and_batch_size(tiny_programs):
  config, _, _, programs = tiny_programs
  chunk, batch_size = config.steps_per_chunk, config.batch_size                # 50, 64
  settings = jax.tree.map(jnp.asarray, per_seed.seed_settings(config)[0])
  settings = settings.replace(warmup_steps=jnp.asarray([0, 70], jnp.int32))
  state = programs.init(finetune.seed_keys(config), settings, None)
  before = jax.tree.map(np.asarray, state.agent)
  state, stats = programs.run(state, chunk)                 # indices 0..49: below both floors
  np.testing.assert_array_equal(stats.updates, [0, 0])
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, state.agent), before)
  state, stats = programs.run(state, chunk)                 # indices 50..99
  # Warmup 0 waits for the batch: indices 65..99 (35); warmup 70: indices 71..99 (29).
  np.testing.assert_array_equal(stats.updates, [99 - batch_size, 99 - 70])


# finetune.py: checkpoints.restore_checkpoint(resume_path, target=agent) restores the whole
# agent, Adam states (wsrl/common/common.py, JaxRLTrainState.opt_states) included.
def test_fine_tuning_continues_the_pretrained_adam_states(cql_run, tiny_programs, tmp_path,
                                                          caplog):
  workdir, _ = cql_run
  config, _, spec, programs = tiny_programs
  params, optimizer, _ = finetune.load_pretrained(tiny_config(pretrained=str(workdir)),
                                                  programs, spec)
  saved = ocp.CheckpointManager(workdir / "checkpoints").restore(
      100, args=ocp.args.Composite(optimizer=ocp.args.StandardRestore())).optimizer
  settings = jax.tree.map(jnp.asarray, per_seed.seed_settings(config)[0])
  state = programs.init(finetune.seed_keys(config), settings, params, optimizer)
  restored = checkpoint.flatten_for_saving(
      jax.tree.map(np.asarray, sac.optimizer_states(state.agent)))
  assert set(restored) == set(saved)
  for name, leaf in restored.items():
    if "learning_rate" not in name:               # moments and counts as pretraining left them
      np.testing.assert_array_equal(leaf, np.asarray(saved[name]), err_msg=name)
  for name in ("actor", "critic", "temperature"):
    opt_state = getattr(state.agent, f"{name}_opt_state")
    np.testing.assert_array_equal(opt_state.inner_state[0].count, [100, 100])  # CQL's steps
    np.testing.assert_allclose(opt_state.hyperparams["learning_rate"],  # this run's rates
                               [config[f"{name}_learning_rate"]] * 2, rtol=1e-7)

  # The first fine-tuning update continues the moments: the temperature by hand.
  agent = programs.loop.agent
  seed0 = jax.tree.map(lambda x: x[0], state.agent)
  m, v, t = scalar_adam_state(seed0.temperature_opt_state)
  raw = float(seed0.params.temperature)
  rng = np.random.default_rng(5)
  obs, act = spec.observation_size, spec.action_size
  batch = replay.Transition(
      observation=jnp.asarray(rng.normal(size=(config.batch_size, obs)), jnp.float32),
      action=jnp.asarray(rng.uniform(-0.9, 0.9, size=(config.batch_size, act)), jnp.float32),
      reward=jnp.asarray(rng.normal(size=config.batch_size), jnp.float32),
      next_observation=jnp.asarray(rng.normal(size=(config.batch_size, obs)), jnp.float32),
      terminal=jnp.zeros(config.batch_size, jnp.float32))
  new, metrics = jax.jit(agent.update)(seed0, batch, jax.random.PRNGKey(0))
  lr = config.temperature_learning_rate
  for _ in range(config.utd):
    raw, m, v, t = np_adam(raw, m, v, t, 0.0, lr)
  raw, m, v, t = np_adam(raw, m, v, t, np_sigmoid(raw) * (float(metrics["entropy"]) + act), lr)
  assert float(new.params.temperature) == pytest.approx(raw, rel=1e-6, abs=1e-8)
  assert int(new.temperature_opt_state.inner_state[0].count) == 105

  # init_optimizer=false (per seed): fresh Adam states for that seed.
  fresh = programs.init(finetune.seed_keys(config),
                        settings.replace(init_optimizer=jnp.asarray([True, False])),
                        params, optimizer)
  counts = np.asarray(fresh.agent.critic_opt_state.inner_state[0].count)
  np.testing.assert_array_equal(counts, [100, 0])

  # A checkpoint from before format 2 (no optimizer item): a warning, fresh Adam, no crash.
  old = tmp_path / "old"
  shutil.copytree(workdir, old)
  shutil.rmtree(old / "checkpoints" / "100" / "optimizer")
  caplog.set_level("WARNING")
  params, optimizer, _ = finetune.load_pretrained(tiny_config(pretrained=str(old)), programs,
                                                  spec)
  assert optimizer is None
  assert any("holds no optimiser state" in r.getMessage() for r in caplog.records)
  state = programs.init(finetune.seed_keys(config), settings, params, optimizer)
  np.testing.assert_array_equal(state.agent.critic_opt_state.inner_state[0].count, [0, 0])


# experiments/configs/cql_config.py: cql_max_target_backup = True, never turned off by
# experiments/configs/train_config.py; wsrl/agents/cql.py (_compute_next_actions).
def test_pretraining_uses_the_max_target_backup_for_every_family():
  for env_name in ("hopper-medium-v2", "pen-binary-v0", "antmaze-umaze-v2"):
    config = pretrain_config.get_config(env_name)
    assert config.cql_max_target_backup and not config.cql_penalty_on_all_critics
    learner, _ = configs.make_learner(config, envs.spec(env_name))
    assert learner.sac.config.num_next_actions == config.cql_num_sampled_actions == 10


# wsrl/networks/lagrange.py (LeqLagrangeMultiplier: softplus, initialised at
# softplus^-1(init_value)); wsrl/agents/cql.py (cql_alpha_loss_fn).
def test_cql_alpha_is_a_softplus_lagrange_multiplier():
  learner = cql.CQL(cql.CQLConfig(sac=dataclasses.replace(AGENT_CONFIG, utd=1),
                                  num_sampled_actions=3, autotune_alpha=True,
                                  target_action_gap=-100.0, alpha_learning_rate=0.1))
  state = learner.init(jax.random.PRNGKey(0))
  raw = np.log(np.expm1(1.0))
  assert float(state.raw_alpha) == pytest.approx(raw, rel=1e-6)
  assert float(learner.alpha(state)) == pytest.approx(1.0, rel=1e-6)
  update = jax.jit(learner.update)
  m = v = 0.0
  t = 0
  for step in range(3):
    state, metrics = update(state, agent_batch(step, AGENT_B), jax.random.PRNGKey(step))
    grad = -np_sigmoid(raw) * (float(metrics["cql_gap"]) + 100.0)
    raw, m, v, t = np_adam(raw, m, v, t, grad, 0.1)
    assert float(state.raw_alpha) == pytest.approx(raw, rel=1e-5)
    assert float(learner.alpha(state)) == pytest.approx(np_softplus(raw), rel=1e-5)
  # exp(log_alpha) after three Adam steps of 0.1 up would be ~1.35; softplus gives ~1.20.
  assert float(learner.alpha(state)) < 1.25


# wsrl/agents/sac.py (update -> loss_fns) and wsrl/common/common.py (apply_loss_fns): offline,
# one update computes the critic, actor and temperature losses all from `self.state.params`, so
# the actor's step sees the critics before that update's critic step.
@pytest.mark.parametrize("order", ["simultaneous", "critic_first"])
def test_cql_actor_step_sees_the_critics_before_the_critic_step(order):
  """Default "simultaneous": the actor's first Adam step (hand-computed: -lr g / (|g| + eps)) is
  that of the actor loss on the critics the update started from; option "critic_first": on the
  critics its critic step made. The critics, targets and critic Adam are the critic step's."""
  assert pretrain_config.get_config("hopper-medium-v2").cql_update_order == "simultaneous"
  assert cql.CQLConfig(sac=AGENT_CONFIG).update_order == "simultaneous"
  learner = cql.CQL(cql.CQLConfig(sac=dataclasses.replace(AGENT_CONFIG, utd=1),
                                  num_sampled_actions=3, actor_learning_rate=1e-2,
                                  critic_learning_rate=1e-2, update_order=order))
  state = learner.init(jax.random.PRNGKey(0))
  params, batch, key = state.agent.params, agent_batch(3, AGENT_B), jax.random.PRNGKey(1)
  new, _ = jax.jit(learner.update)(state, batch, key)
  actor_key = jax.random.split(jax.random.split(key)[1])[0]
  temperature = learner.sac.temperature(params)

  def actor_after_one_step(critic):
    grads = jax.grad(lambda actor: learner.sac.actor_loss(
        actor, critic, temperature, batch.observation, actor_key)[0])(params.actor)
    return jax.tree.map(lambda p, g: np.asarray(p) - 1e-2 * np.asarray(g) / (
        np.abs(np.asarray(g)) + 1e-8), params.actor, grads)

  before = actor_after_one_step(params.critic)
  after = actor_after_one_step(new.agent.params.critic)
  seen, unseen = (before, after) if order == "simultaneous" else (after, before)
  jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-6),
               new.agent.params.actor, seen)
  assert max(float(np.max(np.abs(np.asarray(a) - e))) for a, e in zip(
      jax.tree.leaves(new.agent.params.actor), jax.tree.leaves(unseen))) > 1e-4
  assert int(new.agent.critic_opt_state.inner_state[0].count) == 1
  critic, old_target = (np.asarray(jax.tree.leaves(t)[0]) for t in (
      new.agent.params.critic, params.target_critic))
  assert not np.allclose(critic, jax.tree.leaves(params.critic)[0])
  np.testing.assert_allclose(jax.tree.leaves(new.agent.params.target_critic)[0],
                             0.995 * old_target + 0.005 * critic, rtol=1e-5, atol=1e-7)
  with pytest.raises(ConfigError, match=r"config.cql_update_order='later'; choose one of "
                     "simultaneous, critic_first"):
    cql.CQL(cql.CQLConfig(sac=dataclasses.replace(AGENT_CONFIG, utd=1), update_order="later"))


# wsrl/agents/cql.py (_get_cql_q_diff): with critic_subsample_size (--use_redq), the penalty's
# Q-values come from critic_subsample_size critics drawn by jax.random.randint each step.
@pytest.mark.parametrize("on_all_critics", [False, True])
def test_cql_penalty_falls_on_two_critics_drawn_with_replacement(on_all_critics):
  n = 3
  learner = cql.CQL(cql.CQLConfig(sac=dataclasses.replace(AGENT_CONFIG, utd=1),
                                  num_sampled_actions=n, alpha=5.0,
                                  penalty_on_all_critics=on_all_critics))
  state = learner.init(jax.random.PRNGKey(0))
  params = state.agent.params
  batch = agent_batch(2, AGENT_B)
  key = jax.random.PRNGKey(6)
  _, metrics = jax.jit(learner.update)(state, batch, key)
  critic_key, _ = jax.random.split(key)
  penalty_key = jax.random.fold_in(critic_key, 1)
  if on_all_critics:
    gaps = np_cql_gaps(params, batch, n, penalty_key)                  # [critics, B]
    expected = gaps.mean()
  else:
    subset_key, gap_key = jax.random.split(penalty_key)
    gaps = np_cql_gaps(params, batch, n, gap_key)
    subset = np.asarray(jax.random.randint(subset_key, (2,), 0, 10))
    expected = gaps[subset].mean()
    assert not np.isclose(expected, gaps.mean(), rtol=1e-3)
  assert float(metrics["cql_gap"]) == pytest.approx(expected, rel=1e-4, abs=1e-4)
  assert float(metrics["critic_loss"]) == pytest.approx(
      float(metrics["td_loss"]) + 5.0 * expected, rel=1e-4)


def np_cql_gaps(params, batch, n, key):
  """CQL's per-critic, per-state gap (importance sampled, no Cal-QL bound) in float64 from the
  same draws: logsumexp over 3n sampled actions of Q - log density, minus Q(s, a_data)."""
  size = batch.observation.shape[0]
  random_key, current_key, next_key = jax.random.split(key, 3)
  random_actions = np.asarray(
      jax.random.uniform(random_key, (size, n, AGENT_ACT), minval=-1, maxval=1), np.float64)
  observation = np.asarray(batch.observation, np.float64)

  def policy(obs, k):
    mean, std = np_actor(params.actor, obs)
    noise = np.asarray(jax.random.normal(k, (size, n, AGENT_ACT)), np.float64)
    return np_sample(mean[:, None], std[:, None], noise)

  current, current_log_prob = policy(observation, current_key)
  following, next_log_prob = policy(np.asarray(batch.next_observation, np.float64), next_key)
  actions = np.concatenate([random_actions, current, following], axis=1)
  q = np.stack([np_ensemble(params.critic, observation, actions[:, j]) for j in range(3 * n)],
               axis=-1)
  log_density = np.concatenate([np.full((size, n), AGENT_ACT * np.log(0.5)), current_log_prob,
                                next_log_prob], axis=1)
  q_data = np_ensemble(params.critic, observation, np.asarray(batch.action, np.float64))
  return logsumexp(q - log_density, axis=-1) - q_data


# finetune.py (num_online_steps 500_000), not overridden by
# experiments/scripts/locomotion/launch_wsrl_finetune.sh.
def test_online_budget_is_500k_env_steps_for_every_family():
  for env_name in ("hopper-medium-v2", "halfcheetah-medium-replay-v2", "pen-binary-v0",
                   "antmaze-large-diverse-v2"):
    assert finetune_config.get_config(env_name).online_steps == 500_000
