"""The offline data bridge: D4RL / Adroit / Minari files written by our own writers, read back,
paired into Q-learning transitions with Cal-QL's Monte-Carlo returns, checked against the env."""

from __future__ import annotations

import dataclasses
import os
import re

import h5py
import jax
import numpy as np
import pytest

import envs
from wsrl_mjx import data, replay
from wsrl_mjx.data import adroit, d4rl, minari, transitions
from wsrl_mjx.data.validation import DatasetError

HOPPER = envs.spec("hopper-medium-v2")            # 11 observations, 3 actions
# A stand-in for an Adroit binary task: small dims and the family's reward transform (x10, +5).
ADROIT = dataclasses.replace(envs.spec("hopper"), name="pen-binary-v0", task="pen",
                             family="adroit", observation_size=4, action_size=2,
                             episode_length=100, reward_scale=10.0, reward_bias=5.0)


def raises_naming(path, message):
  """Expects a DatasetError whose message starts with the file and goes on with `message`."""
  return pytest.raises(DatasetError, match=f"^{re.escape(str(path))}: {message}")


def hopper_steps(num_steps, seed=0):
  """Distinct observations (row i starts with i) so every row can be told apart."""
  rng = np.random.default_rng(seed)
  observations = rng.normal(size=(num_steps, HOPPER.observation_size)).astype(np.float32)
  observations[:, 0] = np.arange(num_steps)
  return dict(observations=observations,
              actions=rng.uniform(-0.9, 0.9, (num_steps, HOPPER.action_size)),
              rewards=np.arange(num_steps, dtype=np.float32),
              terminals=np.zeros(num_steps, bool), timeouts=np.zeros(num_steps, bool))


def three_episodes():
  """12 steps: episode A ends in a terminal at 4, B in a timeout at 9, C runs off the file."""
  steps = hopper_steps(12)
  steps["terminals"][4] = True
  steps["timeouts"][9] = True
  return steps


# --- D4RL files -----------------------------------------------------------------------------

def test_d4rl_writer_uses_d4rl_keys_dtypes_and_writes_atomically(tmp_path):
  steps = three_episodes()
  qpos = np.ones((12, 7))
  path = d4rl.write_d4rl_hdf5(tmp_path / "hopper.hdf5", **steps, infos={"qpos": qpos},
                              metadata={"algorithm": "SAC"})
  assert os.listdir(tmp_path) == ["hopper.hdf5"]            # no temporary left behind
  with h5py.File(path, "r") as file:
    assert file["observations"].dtype == np.float32 and file["observations"].shape == (12, 11)
    assert file["actions"].dtype == np.float32 and file["actions"].shape == (12, 3)
    assert file["rewards"].dtype == np.float32 and file["rewards"].shape == (12,)
    assert file["terminals"].dtype == np.bool_ and file["timeouts"].dtype == np.bool_
    assert file["infos/qpos"].dtype == np.float32 and file["infos/qpos"].shape == (12, 7)
    assert file["observations"].compression == "gzip"
    assert file["metadata/algorithm"][()] == b"SAC"
    assert "next_observations" not in file
  trajectories = d4rl.read_d4rl_hdf5(path)
  np.testing.assert_array_equal(trajectories.observations, steps["observations"])
  np.testing.assert_array_equal(trajectories.actions, steps["actions"].astype(np.float32))
  np.testing.assert_array_equal(np.flatnonzero(trajectories.terminals), [4])
  np.testing.assert_array_equal(np.flatnonzero(trajectories.timeouts), [9])
  np.testing.assert_array_equal(trajectories.infos["qpos"], qpos)
  assert trajectories.next_observations is None

  # A write that fails halfway leaves the previous file untouched and no temporary behind.
  with pytest.raises(TypeError):
    d4rl.write_d4rl_hdf5(path, **hopper_steps(3), metadata={"broken": object()})
  assert os.listdir(tmp_path) == ["hopper.hdf5"]
  assert len(d4rl.read_d4rl_hdf5(path)) == 12


def test_without_next_observations_timeout_steps_are_dropped_and_terminals_kept(tmp_path):
  steps = three_episodes()
  path = d4rl.write_d4rl_hdf5(tmp_path / "hopper.hdf5", **steps)
  dataset = data.load(path, HOPPER, discount=0.5)
  # Kept: 0-4 (4 terminal), 5-8 (9 timed out: its next observation is another episode's), 10
  # (11 is the file's last row: no next observation).
  kept = [0, 1, 2, 3, 4, 5, 6, 7, 8, 10]
  np.testing.assert_array_equal(dataset.observations[:, 0], kept)
  np.testing.assert_array_equal(dataset.next_observations[:, 0], np.add(kept, 1))
  np.testing.assert_array_equal(dataset.terminals, [0, 0, 0, 0, 1, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(dataset.rewards, kept)
  for column in (dataset.observations, dataset.actions, dataset.rewards,
                 dataset.next_observations, dataset.terminals, dataset.mc_returns):
    assert column.dtype == np.float32 and len(column) == len(kept)
  # Returns stop at each trajectory's end: [0..4] ends in a terminal, [5..8] before the dropped
  # timeout step, [10] alone.  r + 0.5 r' + 0.25 r'' ...
  np.testing.assert_allclose(dataset.mc_returns, [
      0 + 0.5 * 1 + 0.25 * 2 + 0.125 * 3 + 0.0625 * 4, 1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 4,
      2 + 0.5 * 3 + 0.25 * 4, 3 + 0.5 * 4, 4,
      5 + 0.5 * 6 + 0.25 * 7 + 0.125 * 8, 6 + 0.5 * 7 + 0.25 * 8, 7 + 0.5 * 8, 8,
      10], rtol=1e-6)


def test_with_next_observations_timeout_steps_are_kept_and_bootstrap(tmp_path):
  steps = three_episodes()
  next_observations = np.roll(steps["observations"], -1, axis=0)
  next_observations[[4, 9, 11]] = 100 + np.arange(3)[:, None]   # each episode's final state
  path = d4rl.write_d4rl_hdf5(tmp_path / "hopper.hdf5", **steps,
                              next_observations=next_observations)
  dataset = data.load(path, HOPPER, discount=0.5)
  np.testing.assert_array_equal(dataset.observations[:, 0], np.arange(12))
  np.testing.assert_array_equal(dataset.next_observations, next_observations)
  np.testing.assert_array_equal(np.flatnonzero(dataset.terminals), [4])  # timeout 9 is not
  _, _, trajectory_ends = transitions.pair_steps(data.read(path))
  np.testing.assert_array_equal(np.flatnonzero(trajectory_ends), [4, 9, 11])
  np.testing.assert_allclose(dataset.mc_returns[[8, 9, 10, 11]], [8 + 0.5 * 9, 9, 10 + 5.5, 11])


def test_an_observation_that_does_not_continue_is_reported_and_split_on_request(tmp_path, caplog):
  steps = hopper_steps(8)                     # no terminal, no timeout anywhere
  next_observations = np.roll(steps["observations"], -1, axis=0)
  next_observations[2] += 1.0                 # step 3 does not start where step 2 ended
  path = d4rl.write_d4rl_hdf5(tmp_path / "stitched.hdf5", **steps,
                              next_observations=next_observations)
  # By default trajectories end only at terminals, timeouts and the file's end (as the WSRL
  # reference's Monte-Carlo returns do); the jump is logged with its count.
  with caplog.at_level("WARNING"):
    rows, _, trajectory_ends = transitions.pair_steps(data.read(path))
  np.testing.assert_array_equal(rows, np.arange(8))
  np.testing.assert_array_equal(np.flatnonzero(trajectory_ends), [7])
  assert any(record.getMessage().startswith(f"{path}: 1 of 8 steps")
             for record in caplog.records), caplog.text
  dataset = data.load(path, HOPPER, discount=0.5)
  # Row i: the sum over j = i..7 of j / 2^(j - i) (reward j at row j), the file's end the only one.
  np.testing.assert_allclose(dataset.mc_returns[:3], [1.9296875, 3.859375, 5.71875], rtol=1e-6)
  # split_at_jumps=True ends a trajectory there.
  rows, _, trajectory_ends = transitions.pair_steps(data.read(path), split_at_jumps=True)
  np.testing.assert_array_equal(np.flatnonzero(trajectory_ends), [2, 7])
  dataset = data.load(path, HOPPER, discount=0.5, split_at_jumps=True)
  np.testing.assert_array_equal(dataset.terminals, np.zeros(8))   # a cut is not a termination
  np.testing.assert_allclose(dataset.mc_returns[:4], [0 + 0.5 + 0.5, 1 + 1.0, 2, 3 + 2 + 1.25 +
                                                      0.75 + 0.4375])


def test_files_loaded_together_never_share_a_trajectory(tmp_path):
  first = d4rl.write_d4rl_hdf5(tmp_path / "first.hdf5", **hopper_steps(3))     # no flags at all
  second_steps = hopper_steps(3)
  second_steps["observations"][:, 0] += 10
  second = d4rl.write_d4rl_hdf5(tmp_path / "second.hdf5", **second_steps)
  dataset = data.load([first, second], HOPPER, discount=0.5)
  # The first file's last step has no next observation of its own: dropped, not paired with the
  # second file's first observation.
  np.testing.assert_array_equal(dataset.observations[:, 0], [0, 1, 10, 11])
  np.testing.assert_array_equal(dataset.next_observations[:, 0], [1, 2, 11, 12])
  np.testing.assert_allclose(dataset.mc_returns, [0 + 0.5 * 1, 1, 0 + 0.5 * 1, 1])


def test_load_by_name_from_d4rl_dataset_dir(tmp_path, monkeypatch):
  monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
  spec = envs.spec("hopper-medium-replay-v2")
  assert d4rl.dataset_path("hopper-medium-replay-v2") == tmp_path / "hopper_medium_replay-v2.hdf5"
  with pytest.raises(DatasetError, match=r"hopper_medium_replay-v2\.hdf5: no such file.*D4RL"):
    data.load("hopper-medium-replay-v2", spec)
  d4rl.write_d4rl_hdf5(tmp_path / "hopper_medium_replay-v2.hdf5", **three_episodes())
  dataset = data.load("hopper-medium-replay-v2", spec)
  assert dataset.size == 10
  monkeypatch.delenv("D4RL_DATASET_DIR")
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert d4rl.dataset_path("hopper-medium-v2") == (
      tmp_path / "home" / ".d4rl" / "datasets" / "hopper_medium-v2.hdf5")
  with pytest.raises(DatasetError, match="'hopper' names a task, not a D4RL dataset; give a "
                                        "dataset name such as 'hopper-"):
    d4rl.dataset_path("hopper")
  # A task D4RL recorded nothing on: how to make a file instead.
  with pytest.raises(DatasetError, match=r"'point-mass' has no D4RL dataset; write one with "
                                        r"`python -m launch.collect --env=point-mass"):
    d4rl.dataset_path("point-mass")
  with pytest.raises(DatasetError, match="neither an existing file"):
    data.load("hopper-nonsense-v9", spec)


# --- Monte-Carlo returns, reward transform, action clipping ---------------------------------

def test_monte_carlo_returns_by_hand():
  rewards = np.array([1, 2, 3,      # ends in a terminal
                      -1, -1, -1,   # a failure: every reward the negative sparse value
                      -1, -1, 0,    # solved at the end
                      5])           # a one-step trajectory
  ends = np.zeros(10, bool)
  ends[[2, 5, 8, 9]] = True
  dense = transitions.monte_carlo_returns(rewards, ends, discount=0.9)
  np.testing.assert_allclose(dense, [1 + 0.9 * 2 + 0.81 * 3, 2 + 0.9 * 3, 3,
                                     -1 - 0.9 - 0.81, -1 - 0.9, -1,
                                     -1 - 0.9, -1, 0, 5], rtol=1e-6)
  sparse = transitions.monte_carlo_returns(rewards, ends, discount=0.9, negative_sparse_reward=-1)
  np.testing.assert_allclose(sparse, [5.23, 4.7, 3, -10, -10, -10, -1.9, -1, 0, 5], rtol=1e-6)
  assert sparse.dtype == np.float32


def test_adroit_rewards_stay_raw_and_returns_use_the_transform(tmp_path):
  """Raw -1/0 rewards are stored; mc_returns see r * 10 + 5 and failures r / (1 - gamma)."""
  trajectories = transitions.Trajectories(
      source="memory", observations=np.zeros((5, 4)), actions=np.zeros((5, 2)),
      rewards=np.array([-1, -1, 0, -1, -1], np.float32),
      terminals=np.array([0, 0, 1, 0, 0], bool), timeouts=np.array([0, 0, 0, 0, 1], bool),
      next_observations=np.zeros((5, 4)))
  dataset = transitions.to_offline_dataset(trajectories, reward_scale=10.0, reward_bias=5.0,
                                           discount=0.9, negative_sparse_reward=-1.0)
  np.testing.assert_array_equal(dataset.rewards, [-1, -1, 0, -1, -1])
  # [-5, -5, 5] then the failed [-5, -5]: -5 / 0.1 = -50 at each of its steps.
  np.testing.assert_allclose(dataset.mc_returns, [-5 - 4.5 + 0.81 * 5, -5 + 4.5, 5, -50, -50],
                             rtol=1e-6)
  dense = transitions.to_offline_dataset(trajectories, reward_scale=10.0, reward_bias=5.0,
                                         discount=0.9)
  np.testing.assert_allclose(dense.mc_returns[3:], [-5 - 4.5, -5], rtol=1e-6)


def test_actions_are_clipped_only_in_the_dataset(tmp_path):
  steps = hopper_steps(4)
  steps["actions"] = np.array([[1.0, -1.0, 0.5], [1.0005, 0.0, -1.0005], [0, 0, 0], [0, 0, 0]])
  path = d4rl.write_d4rl_hdf5(tmp_path / "edge.hdf5", **steps)
  clipped = data.load(path, HOPPER)               # within the default tolerance of 1e-3
  np.testing.assert_array_equal(clipped.actions[:2], np.float32(
      [[0.99999, -0.99999, 0.5], [0.99999, 0.0, -0.99999]]))
  raw = data.load(path, HOPPER, clip_action=None)
  np.testing.assert_array_equal(raw.actions[1], np.float32([1.0005, 0.0, -1.0005]))
  np.testing.assert_array_equal(data.read(path).actions[0], [1.0, -1.0, 0.5])


# --- Adroit binary .npy ---------------------------------------------------------------------

def adroit_trajectory(rewards, start):
  """Observations that count up from `start`, so next_observations continue them."""
  length = len(rewards)
  observations = start + np.arange(length + 1, dtype=np.float32)[:, None] * np.ones(4, np.float32)
  return dict(observations=observations[:-1], next_observations=observations[1:],
              actions=np.full((length, 2), 0.5, np.float32),
              rewards=np.asarray(rewards, np.float32), terminals=np.zeros(length, np.float32))


@pytest.mark.parametrize("layout", ["demo", "rollout"])
def test_adroit_npy_round_trip(tmp_path, layout):
  episodes = [adroit_trajectory([-1, -1, 0, -1], start=0),     # solved at 2: cut after it
              adroit_trajectory([-1, -1, -1], start=100),      # never solved: skipped
              adroit_trajectory([-1, 0, 0], start=200)]
  path = adroit.write_adroit_npy(tmp_path / f"pen_{layout}.npy", episodes, layout=layout)
  assert os.listdir(tmp_path) == [path.name]
  records = np.load(path, allow_pickle=True)
  assert records.dtype == object and len(records) == 3
  if layout == "demo":
    assert set(records[0]["observations"][0]) == {"state_observation"}
  else:
    assert records[0]["rewards"].shape == (4, 1) and records[0]["observations"].shape == (4, 4)

  trajectories = adroit.read_adroit_npy(path)
  np.testing.assert_array_equal(trajectories.observations[:, 0], [0, 1, 2, 200, 201, 202])
  np.testing.assert_array_equal(trajectories.next_observations[:, 0], [1, 2, 3, 201, 202, 203])
  np.testing.assert_array_equal(trajectories.rewards, [-1, -1, 0, -1, 0, 0])
  np.testing.assert_array_equal(trajectories.terminals, [0, 0, 1, 0, 1, 1])   # success ends it
  everything = adroit.read_adroit_npy(path, successful_prefix_only=False)
  assert len(everything) == 10
  np.testing.assert_array_equal(np.flatnonzero(everything.timeouts), [3, 6])  # unsolved ends

  dataset = data.load(path, ADROIT, discount=0.9, negative_sparse_reward=-1.0)
  np.testing.assert_array_equal(dataset.rewards, [-1, -1, 0, -1, 0, 0])
  np.testing.assert_allclose(dataset.mc_returns, [-5 - 4.5 + 0.81 * 5, -5 + 4.5, 5, -5 + 4.5, 5,
                                                  5], rtol=1e-6)
  np.testing.assert_array_equal(dataset.actions, np.full((6, 2), 0.5))


def test_adroit_demo_file_with_an_extra_reward_and_a_second_file(tmp_path):
  """Demonstration files carry one reward more than steps; demos and rollouts load together."""
  episode = adroit_trajectory([-1, 0], start=0)
  record = {"observations": [{"state_observation": row} for row in episode["observations"]],
            "next_observations": [{"state_observation": r} for r in episode["next_observations"]],
            "actions": episode["actions"], "rewards": np.array([-1.0, 0.0, 0.0]),
            "terminals": np.zeros(2), "agent_infos": [], "env_infos": []}
  demo = tmp_path / "pen2_sparse.npy"
  array = np.empty(1, dtype=object)
  array[:] = [record]
  np.save(demo, array, allow_pickle=True)
  rollouts = adroit.write_adroit_npy(tmp_path / "pen_bc_sparse4.npy",
                                     [adroit_trajectory([-1, -1, 0], start=2)])
  dataset = data.load([demo, rollouts], ADROIT, discount=0.9)
  np.testing.assert_array_equal(dataset.rewards, [-1, 0, -1, -1, 0])
  np.testing.assert_array_equal(dataset.terminals, [0, 1, 0, 0, 1])
  np.testing.assert_allclose(dataset.mc_returns[:2], [-5 + 4.5, 5], rtol=1e-6)


# --- Minari ---------------------------------------------------------------------------------

def minari_episode(length, start, terminated):
  observations = np.zeros((length + 1, HOPPER.observation_size), np.float32)
  observations[:, 0] = start + np.arange(length + 1)
  flags = np.zeros(length, bool)
  ended = flags.copy()
  ended[-1] = True
  return dict(observations=observations, actions=np.zeros((length, 3)),
              rewards=np.full(length, float(start)),
              terminations=ended if terminated else flags,
              truncations=flags if terminated else ended)


def test_minari_round_trip(tmp_path, monkeypatch):
  # 12 episodes, so episode_10 must come after episode_9 (not after episode_1).
  episodes = [minari_episode(3, start=100 * i, terminated=i % 2 == 0) for i in range(12)]
  episodes[-1]["truncations"][:] = False      # the recording stopped: the episode still ends
  path = minari.write_minari_dataset("hopper/medium-v0", episodes, root=tmp_path)
  assert path == tmp_path / "hopper" / "medium-v0" / "data" / "main_data.hdf5"
  with h5py.File(path, "r") as file:
    assert file["episode_0/observations"].shape == (4, 11)
    assert file["episode_0/terminations"].dtype == np.bool_
  trajectories = minari.read_minari_hdf5(path)
  assert len(trajectories) == 36
  np.testing.assert_array_equal(trajectories.observations[::3, 0], 100 * np.arange(12))
  np.testing.assert_array_equal(trajectories.next_observations[2::3, 0], 100 * np.arange(12) + 3)
  np.testing.assert_array_equal(np.flatnonzero(trajectories.terminals), np.arange(0, 12, 2) * 3 + 2)
  np.testing.assert_array_equal(np.flatnonzero(trajectories.timeouts), np.arange(1, 12, 2) * 3 + 2)

  monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
  dataset = data.load("hopper/medium-v0", HOPPER, discount=0.5)
  assert dataset.size == 36                      # truncated steps keep their recorded next state
  np.testing.assert_array_equal(dataset.terminals.reshape(12, 3)[:, 2], np.arange(12) % 2 == 0)
  np.testing.assert_allclose(dataset.mc_returns[3:6], 100 * np.array([1.75, 1.5, 1]))


def test_minari_observations_need_one_more_row(tmp_path):
  episode = minari_episode(3, start=0, terminated=True)
  path = minari.write_minari_dataset("short-v0", [episode], root=tmp_path)
  with h5py.File(path, "a") as file:
    del file["episode_0/observations"]
    file["episode_0/observations"] = np.zeros((3, 11), np.float32)
  with pytest.raises(DatasetError, match=r"main_data\.hdf5: episode_0: field 'observations' has 3 "
                                         r"rows but 'actions' has 3"):
    minari.read_minari_hdf5(path)


def test_a_minari_dataset_folder_is_read_at_either_level(tmp_path):
  episodes = [minari_episode(3, start=100 * i, terminated=True) for i in range(2)]
  main = minari.write_minari_dataset("hopper/medium-v0", episodes, root=tmp_path)
  for folder in (tmp_path / "hopper" / "medium-v0", tmp_path / "hopper" / "medium-v0" / "data"):
    assert data.resolve(str(folder)) == main
    assert len(data.read(str(folder))) == 6


def test_a_folder_of_dataset_files_is_refused_naming_some_and_saying_how_to_pass_them(tmp_path):
  """--config.dataset=runs/data read a folder as a Minari dataset and said 'runs/data/
  main_data.hdf5: no such file'."""
  folder = tmp_path / "data"
  folder.mkdir()
  for index, name in enumerate(["d.hdf5", "b.hdf5", "c.hdf5", "a.hdf5"]):
    write_hopper(folder, name, rewards=np.full(12, index, np.float32))
  (folder / "notes.txt").write_text("not data")
  message = (f"{folder}: is a folder, and the only folders read are Minari dataset folders, "
             "holding data/main_data.hdf5 or main_data.hdf5; it holds a.hdf5, b.hdf5, c.hdf5 and "
             f"1 more: give one file's path, or several comma-separated (e.g. {folder}/a.hdf5,"
             f"{folder}/b.hdf5)")
  with pytest.raises(DatasetError) as error:
    data.load(str(folder), HOPPER)
  assert str(error.value) == message
  # The suggestion works: a.hdf5's rewards (3) then b.hdf5's (1), 10 kept rows each.
  suggested = str(error.value).rsplit("(e.g. ", 1)[1].rstrip(")")
  np.testing.assert_array_equal(data.load(suggested, HOPPER).rewards, [3] * 10 + [1] * 10)
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(DatasetError) as error:
    data.load(str(empty), HOPPER)
  assert str(error.value) == (
      f"{empty}: is a folder, and the only folders read are Minari dataset folders, holding "
      "data/main_data.hdf5 or main_data.hdf5; it holds no dataset file (.hdf5, .h5, .npy): "
      "give a file's path")


# --- validation -----------------------------------------------------------------------------

def write_hopper(tmp_path, name="hopper.hdf5", **changes):
  steps = dict(three_episodes(), **changes)
  return d4rl.write_d4rl_hdf5(tmp_path / name, **steps)


@pytest.mark.parametrize("changes, message", [
    (dict(observations=np.zeros((12, 12))),
     "field 'observations' has 12 columns but hopper-medium-v2 observes 11"),
    (dict(actions=np.zeros((12, 4))), "field 'actions' has 4 columns but hopper-medium-v2 takes 3"),
    (dict(actions=np.tile([0.5, 0.5, 1.5], (12, 1))),
     "field 'actions' has values outside \\[-1, 1\\] in 12 rows \\(largest \\|action\\| 1.5"),
    (dict(rewards=np.where(np.arange(12) == 7, np.nan, 1.0)),
     "field 'rewards' has non-finite values \\(NaN or inf\\) in 1 rows, the first at row 7"),
    (dict(observations=np.where(np.arange(12)[:, None] == 3, np.inf, np.zeros((12, 11)))),
     "field 'observations' has non-finite values .* the first at row 3"),
    (dict(actions=np.where(np.arange(12)[:, None] == 5, np.nan, np.zeros((12, 3)))),
     "field 'actions' has non-finite values .* the first at row 5"),
    (dict(next_observations=np.full((12, 11), np.nan)),
     "field 'next_observations' has non-finite values \\(NaN or inf\\) in 12 rows"),
])
def test_validation_names_the_file_and_the_field(tmp_path, changes, message):
  path = write_hopper(tmp_path, **changes)
  with raises_naming(path, message):
    data.load(path, HOPPER)


def test_a_file_of_another_env_is_refused_naming_the_env_it_was_recorded_on(tmp_path, caplog):
  """launch.collect writes `metadata/env`; a file recorded on another task is refused by it
  (below); one whose name the registry does not know is loaded with a warning, and where its
  sizes do not fit, the error says which env it was recorded on. A file that does not say
  (D4RL's own) gets the plain message."""
  said = d4rl.write_d4rl_hdf5(tmp_path / "said.hdf5", **three_episodes(),
                              metadata={"env": "hopper-medium-v2"})
  assert data.read(said).recorded_on == "hopper-medium-v2"
  with raises_naming(said, r"field 'metadata/env' says it was recorded on hopper-medium-v2 "
                           r"\(task hopper\), but this run's env is point-mass "
                           r"\(task point-mass\); give a dataset recorded on point-mass$"):
    data.load(said, envs.spec("point-mass"))
  odd = d4rl.write_d4rl_hdf5(tmp_path / "odd.hdf5", **three_episodes(),
                             metadata={"env": "hopper-v4"})
  caplog.set_level("WARNING")
  assert data.load(odd, HOPPER).size == 10     # three_episodes: 12 steps less 9 and 11
  warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
  assert any(w.startswith(f"{odd}: field 'metadata/env' says it was recorded on 'hopper-v4', "
                          "which is not a known env") for w in warnings), warnings
  with raises_naming(odd, "field 'observations' has 11 columns but point-mass observes 4 "
                          r"\(its metadata/env says it was recorded on hopper-v4\)$"):
    data.load(odd, envs.spec("point-mass"))
  silent = write_hopper(tmp_path, "silent.hdf5")
  assert data.read(silent).recorded_on is None
  with raises_naming(silent, "field 'observations' has 11 columns but point-mass observes 4$"):
    data.load(silent, envs.spec("point-mass"))


def locomotion_steps(env_spec, num_steps=12, seed=0):
  """`num_steps` steps of `env_spec`'s sizes (halfcheetah's and walker2d's are the same)."""
  rng = np.random.default_rng(seed)
  terminals = np.zeros(num_steps, bool)
  terminals[4] = True
  return dict(observations=rng.normal(size=(num_steps, env_spec.observation_size)),
              actions=rng.uniform(-0.9, 0.9, (num_steps, env_spec.action_size)),
              rewards=np.ones(num_steps), terminals=terminals, timeouts=np.zeros(num_steps, bool))


def test_a_file_recorded_on_another_task_of_the_same_sizes_is_refused(tmp_path):
  """halfcheetah's data fits walker2d's 17 observations and 6 actions exactly; its
  `metadata/env` is what tells it apart."""
  walker = envs.spec("walker2d-medium-v2")
  cheetah = envs.spec("halfcheetah-medium-v2")
  assert (cheetah.observation_size, cheetah.action_size) == (walker.observation_size,
                                                              walker.action_size)
  path = d4rl.write_d4rl_hdf5(tmp_path / "cheetah.hdf5", **locomotion_steps(cheetah),
                              metadata={"env": "halfcheetah-medium-v2"})
  message = (f"{path}: field 'metadata/env' says it was recorded on halfcheetah-medium-v2 (task "
             "halfcheetah), but this run's env is walker2d-medium-v2 (task walker2d); give a "
             "dataset recorded on walker2d")
  with pytest.raises(DatasetError) as error:
    data.load(path, walker)
  assert str(error.value) == message
  # As the launchers print it: one line.
  assert "\n" not in str(error.value)


@pytest.mark.parametrize("recorded, run", [
    ("hopper-medium-v2", "hopper-expert-v2"), ("hopper-medium-v2", "hopper"),
    ("hopper", "hopper-medium-replay-v2"), ("hopper-medium-v2", "hopper-medium-v2")])
def test_a_file_recorded_on_the_same_task_under_another_name_is_accepted(tmp_path, recorded,
                                                                          run):
  path = d4rl.write_d4rl_hdf5(tmp_path / "hopper.hdf5", **three_episodes(),
                              metadata={"env": recorded})
  dataset = data.load(path, envs.spec(run))
  # three_episodes' rows but the timed-out 9 and the file's last, 11
  np.testing.assert_array_equal(dataset.observations[:, 0], [0, 1, 2, 3, 4, 5, 6, 7, 8, 10])


def test_a_file_without_metadata_env_is_accepted_for_any_task_of_its_sizes(tmp_path):
  """D4RL's own files have no `metadata/env`: nothing to compare, so only the sizes count."""
  path = d4rl.write_d4rl_hdf5(tmp_path / "cheetah.hdf5",
                              **locomotion_steps(envs.spec("halfcheetah")))
  assert data.read(path).recorded_on is None
  assert data.load(path, envs.spec("walker2d-medium-v2")).size == 11


def test_validation_catches_nan_in_infos_and_mismatched_lengths(tmp_path):
  steps = three_episodes()
  path = d4rl.write_d4rl_hdf5(tmp_path / "infos.hdf5", **steps,
                              infos={"qpos": np.full((12, 7), np.nan)})
  with raises_naming(path, "field 'infos/qpos' has non-finite"):
    data.load(path, HOPPER)
  path = tmp_path / "short.hdf5"
  with h5py.File(path, "w") as file:
    for field, values in steps.items():
      file[field] = values[:11] if field == "rewards" else values
  with raises_naming(path, "field 'observations' has 12 rows but 'rewards' has 11"):
    data.load(path, HOPPER)


@pytest.mark.parametrize("missing", ["timeouts", "actions"])
def test_a_missing_field_is_named(tmp_path, missing):
  path = tmp_path / "partial.hdf5"
  with h5py.File(path, "w") as file:
    for field, values in three_episodes().items():
      if field != missing:
        file[field] = values
  with raises_naming(path, f"field '{missing}' is missing"):
    data.load(path, HOPPER)


def test_missing_truncated_and_non_hdf5_files(tmp_path):
  missing = tmp_path / "absent.hdf5"
  with raises_naming(missing, "no such file"):
    data.load(missing, HOPPER)

  truncated = write_hopper(tmp_path, "truncated.hdf5", **hopper_steps(2000))
  size = os.path.getsize(truncated)
  with open(truncated, "r+b") as file:
    file.truncate(size // 2)
  with raises_naming(truncated, "not a readable HDF5 file: it was cut short"):
    data.load(truncated, HOPPER)

  text = tmp_path / "notes.hdf5"
  text.write_text("observations, actions, rewards\n1, 2, 3\n")
  with raises_naming(text, "not a readable HDF5 file: it is not an HDF5 file"):
    data.load(text, HOPPER)

  not_npy = tmp_path / "pen2_sparse.npy"
  not_npy.write_text("not a pickle")
  with raises_naming(not_npy, "not a readable .npy trajectory file"):
    data.load(not_npy, ADROIT)
  cut = adroit.write_adroit_npy(tmp_path / "cut.npy", [adroit_trajectory([-1, 0], start=0)])
  payload = cut.read_bytes()
  cut.write_bytes(payload[: len(payload) // 2])
  with raises_naming(cut, "not a readable .npy trajectory file"):
    data.load(cut, ADROIT)


def test_adroit_trajectory_without_a_field_is_named(tmp_path):
  record = adroit_trajectory([-1, 0], start=0)
  del record["next_observations"]
  path = tmp_path / "door2_sparse.npy"
  array = np.empty(1, dtype=object)
  array[:] = [record]
  np.save(path, array, allow_pickle=True)
  with raises_naming(path, "trajectory 0: field 'next_observations' is missing"):
    data.load(path, ADROIT)


# --- device arrays and sampling -------------------------------------------------------------

def test_the_dataset_on_the_device_is_a_full_replay_buffer_sampled_by_whole_rows(tmp_path):
  path = d4rl.write_d4rl_hdf5(tmp_path / "hopper.hdf5", **three_episodes())
  host = data.load(path, HOPPER)
  buffer = data.to_replay_buffer(host)
  assert isinstance(buffer.data.observation, jax.Array)
  assert int(buffer.size) == buffer.capacity == host.size
  draw = jax.jit(replay.sample, static_argnums=2)
  batch = draw(buffer, jax.random.PRNGKey(0), 2000)
  assert batch.observation.shape == (2000, 11) and batch.action.shape == (2000, 3)
  assert batch.reward.shape == batch.mc_return.shape == batch.terminal.shape == (2000,)
  # Each sampled row is one row of the dataset, every field from the same row.
  sampled = jax.tree.map(np.asarray, batch)
  rows = np.searchsorted(host.observations[:, 0], sampled.observation[:, 0])
  np.testing.assert_array_equal(host.observations[rows], sampled.observation)
  for field, column in (("action", "actions"), ("reward", "rewards"),
                        ("next_observation", "next_observations"), ("terminal", "terminals"),
                        ("mc_return", "mc_returns")):
    np.testing.assert_array_equal(getattr(host, column)[rows], getattr(sampled, field))
  assert set(rows) == set(range(host.size))               # uniform over all 10 rows
  # Per-seed batches under vmap differ but come from the same rows.
  per_seed = jax.jit(jax.vmap(replay.sample, in_axes=(None, 0, None)), static_argnums=2)(
      buffer, jax.random.split(jax.random.PRNGKey(1), 3), 64)
  assert per_seed.observation.shape == (3, 64, 11)
  assert not np.array_equal(per_seed.reward[0], per_seed.reward[1])
  assert np.isin(np.asarray(per_seed.reward), host.rewards).all()


# --- the task's rewards, observation dtypes, Minari dict observations (issue 19) -----------

DOOR = envs.spec("door-binary-v0")                 # 39 observations, 28 actions; rewards -1/0
ANTMAZE = envs.spec("antmaze-umaze-v2")            # 29 observations, 8 actions; rewards 0/1


def door_steps(rewards, goal_achieved=None):
  """D4RL-layout steps for door-binary-v0 with next observations, one episode cut by the time
  limit."""
  num_steps = len(rewards)
  rng = np.random.default_rng(0)
  infos = {} if goal_achieved is None else {"goal_achieved": np.asarray(goal_achieved)}
  states = rng.normal(size=(num_steps + 1, DOOR.observation_size))
  return dict(observations=states[:-1], next_observations=states[1:],
              actions=rng.uniform(-0.9, 0.9, (num_steps, DOOR.action_size)),
              rewards=np.asarray(rewards, np.float32), terminals=np.zeros(num_steps, bool),
              timeouts=np.arange(num_steps) == num_steps - 1, infos=infos)


def test_a_dense_reward_file_for_a_sparse_task_is_refused_naming_file_and_field(tmp_path):
  """D4RL's shaped door reward loaded silently into door-binary-v0 before (MC returns up to
  11,299 where the binary task's lie in -500..+5)."""
  shaped = [-0.05, 0.3, 2.5, 10.0, 20.0]
  path = d4rl.write_d4rl_hdf5(tmp_path / "door-human.hdf5", **door_steps(shaped))
  with raises_naming(path, r"field 'rewards' has 5 values outside door-binary-v0's \{-1, 0\} "
                           r"\(the first, -0\.05, at row 0\)"):
    data.load(path, DOOR)
  maze = d4rl.write_d4rl_hdf5(tmp_path / "maze.hdf5", observations=np.zeros((3, 29)),
                              actions=np.zeros((3, 8)), rewards=np.array([0.0, 1.0, 2.0]),
                              terminals=np.zeros(3, bool), timeouts=np.array([0, 0, 1], bool))
  with raises_naming(maze, r"field 'rewards' has 1 values outside antmaze-umaze-v2's \{0, 1\} "
                           r"\(the first, 2, at row 2\)"):
    data.load(maze, ANTMAZE)
  # The task's own values load (binary door: -1 until the goal, 0 there).
  binary = d4rl.write_d4rl_hdf5(tmp_path / "door-binary.hdf5", **door_steps([-1, -1, 0, -1, 0]))
  np.testing.assert_array_equal(data.load(binary, DOOR).rewards, [-1, -1, 0, -1, 0])


def test_a_dense_reward_file_with_success_flags_gets_the_tasks_rewards_saying_so(tmp_path,
                                                                                 caplog):
  shaped, achieved = [-0.05, 0.3, 20.0, 12.0, 20.0], [0, 0, 1, 0, 1]
  path = d4rl.write_d4rl_hdf5(tmp_path / "door-human.hdf5", **door_steps(shaped, achieved))
  caplog.set_level("WARNING")
  dataset = data.load(path, DOOR, discount=0.5, negative_sparse_reward=-1.0)
  # goal_achieved - 1, each success terminal (the binary task's episode ends there).
  np.testing.assert_array_equal(dataset.rewards, [-1, -1, 0, -1, 0])
  np.testing.assert_array_equal(dataset.terminals, [0, 0, 1, 0, 1])
  # Transformed rewards r * 10 + 5: [-5, -5, 5 | -5, 5], returns at discount 0.5.
  np.testing.assert_allclose(dataset.mc_returns, [-5 - 2.5 + 1.25, -5 + 2.5, 5, -5 + 2.5, 5])
  message = " ".join(r.getMessage() for r in caplog.records)
  assert f"{path}: field 'rewards' holds values outside door-binary-v0's {{-1, 0}}" in message
  assert "rebuilt from 'infos/goal_achieved'" in message


def test_integer_observations_are_warned_about_naming_file_and_field(tmp_path, caplog):
  path = write_hopper(tmp_path)
  with h5py.File(path, "a") as file:
    rounded = np.round(file["observations"][()]).astype(np.int64)
    del file["observations"]
    file["observations"] = rounded
  caplog.set_level("WARNING")
  dataset = data.load(path, HOPPER)
  warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
  assert any(w.startswith(f"{path}: field 'observations' holds integers (int64)")
             for w in warnings), warnings
  assert dataset.observations.dtype == np.float32             # and training goes on


def write_minari_dict_episode(path, observations: dict, actions, rewards, terminations,
                              truncations):
  """One Minari episode whose observations are a dict (subgroups), as Minari stores Dict
  spaces (`hdf5_storage.py`); `minari.write_minari_dataset` writes flat ones only."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with h5py.File(path, "w") as file:
    episode = file.create_group("episode_0")
    group = episode.create_group("observations")
    for key, values in observations.items():
      group[key] = np.asarray(values, np.float64)
    episode["actions"] = np.asarray(actions, np.float32)
    episode["rewards"] = np.asarray(rewards, np.float64)
    episode["terminations"] = np.asarray(terminations, bool)
    episode["truncations"] = np.asarray(truncations, bool)
  return path


def test_minari_antmaze_dict_observations_become_d4rls_29_numbers(tmp_path, monkeypatch):
  """Gymnasium-Robotics' AntMaze observes {achieved_goal: qpos[:2], observation: qpos[2:15] +
  qvel, desired_goal}; D4RL's (and our env's) 29 are qpos[:15] + qvel[:14]."""
  rng = np.random.default_rng(1)
  length = 6
  qpos, qvel = rng.normal(size=(length + 1, 15)), rng.normal(size=(length + 1, 14))
  ant = np.concatenate([qpos, qvel], axis=1)                       # D4RL's layout, [T + 1, 29]
  rewards = np.array([0, 0, 0, 1, 1, 0], np.float64)
  write_minari_dict_episode(
      tmp_path / "D4RL/antmaze/umaze-v1/data/main_data.hdf5",
      {"achieved_goal": ant[:, :2], "observation": ant[:, 2:],
       "desired_goal": np.tile([0.5, 8.2], (length + 1, 1))},
      actions=rng.uniform(-1, 1, (length, 8)), rewards=rewards, terminations=np.zeros(length),
      truncations=np.arange(length) == length - 1)
  monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
  dataset = data.load("D4RL/antmaze/umaze-v1", ANTMAZE)
  np.testing.assert_allclose(dataset.observations, ant[:-1], rtol=1e-6)
  np.testing.assert_allclose(dataset.next_observations, ant[1:], rtol=1e-6)
  np.testing.assert_array_equal(dataset.rewards, rewards)


def test_minari_observation_keys_are_a_pretrain_config_field(tmp_path):
  from conftest import tiny_pretrain_config
  from wsrl_mjx import pretrain
  rng = np.random.default_rng(2)
  length = 5
  state = rng.normal(size=(length + 1, 11))
  path = write_minari_dict_episode(
      tmp_path / "hopper-dict/data/main_data.hdf5",
      {"velocities": state[:, 5:], "positions": state[:, :5]},
      actions=rng.uniform(-1, 1, (length, 3)), rewards=np.ones(length),
      terminations=np.arange(length) == length - 1, truncations=np.zeros(length))
  config = tiny_pretrain_config(path)
  with raises_naming(path, r"episode_0: field 'observations' is a dict of \['positions', "
                           r"'velocities'\]; .* --config.observation_keys=key1,key2"):
    pretrain.load_dataset(config, HOPPER)
  config.observation_keys = "positions, velocities"
  dataset, _ = pretrain.load_dataset(config, HOPPER)
  np.testing.assert_allclose(dataset.observations, state[:-1], rtol=1e-6)
