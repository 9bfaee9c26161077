"""The Adroit binary datasets WSRL and Cal-QL pretrain on: `.npy` pickles of trajectory lists.

The format, as the WSRL reference reads it (`wsrl/envs/adroit_binary_dataset.py`, taken from
Cal-QL): `np.save` of an object array of dicts, one per trajectory, loaded with allow_pickle.

- Demonstrations (`pen2_sparse.npy`, `door2_sparse.npy`, `relocate2_sparse.npy`):
  `observations` and `next_observations` are sequences of dicts whose `state_observation` holds
  the vector; `actions` [T, act]; `terminals` [T]; `rewards` [T], in some trajectories with one
  extra trailing entry, which is dropped; `agent_infos` and `env_infos`, ignored.
- BC rollouts (`pen_bc_sparse4.npy`, ...): the same keys with plain [T, obs] arrays, and
  `rewards` and `terminals` as [T, 1] columns.

Rewards are goal_achieved - 1, so -1 or 0. The environment ends an episode on success, so, as the
reference does, a step with reward 0 is terminal (the file's own `terminals` are not used), and by
default trajectories that never succeed are skipped and the others cut after their last success.

Pickles run code when loaded: read only files from a source you trust.
"""

from __future__ import annotations

import os
import pathlib
import pickle
from collections.abc import Mapping, Sequence

import numpy as np

from wsrl_mjx.data.transitions import Trajectories
from wsrl_mjx.data.validation import DatasetError, atomic_output, require_fields

SUCCESS_REWARD = 0.0      # goal_achieved - 1 at a step that reaches the goal
DATA_DIR_VARIABLE = "ADROIT_DATA_DIR"   # WSRL's DATA_DIR_PREFIX; default ~/adroit_data
REQUIRED_FIELDS = ("observations", "next_observations", "actions", "rewards")


def _observation_rows(values, source: str, where: str) -> np.ndarray:
  """[T, obs] from either a plain array or a sequence of {'state_observation': vector} dicts."""
  if isinstance(values, np.ndarray) and values.dtype != object:
    return values
  steps = list(values)
  if not steps:
    return np.zeros((0, 0), np.float32)
  if isinstance(steps[0], Mapping):
    if any("state_observation" not in step for step in steps):
      raise DatasetError(f"{source}: {where}observation dicts lack 'state_observation'")
    steps = [step["state_observation"] for step in steps]
  try:
    return np.stack([np.asarray(step) for step in steps])
  except ValueError as error:
    raise DatasetError(f"{source}: {where}observations are not equally long vectors") from error


def dataset_paths(task: str) -> list[pathlib.Path]:
  """WSRL's two files for `<task>-binary-v0`: demonstrations and BC rollouts, where WSRL keeps
  them (`$ADROIT_DATA_DIR/offpolicy_hand_data/`, default ~/adroit_data)."""
  root = pathlib.Path(os.environ.get(DATA_DIR_VARIABLE, "~/adroit_data")).expanduser()
  return [root / "offpolicy_hand_data" / f"{task}2_sparse.npy",
          root / "offpolicy_hand_data" / f"{task}_bc_sparse4.npy"]


def read_adroit_npy(path: str | os.PathLike, *,
                    successful_prefix_only: bool = True) -> Trajectories:
  """The steps of an Adroit binary `.npy` file, trajectories laid end to end.

  `successful_prefix_only` (the reference's processing) skips trajectories without a success and
  ends each at its last success; without it every step is kept and a trajectory that never
  succeeds ends in a timeout.
  """
  source = os.fspath(path)
  if not os.path.isfile(source):
    raise DatasetError(f"{source}: no such file")
  try:
    records = np.load(source, allow_pickle=True)
  except (OSError, ValueError, EOFError, pickle.UnpicklingError) as error:
    raise DatasetError(
        f"{source}: not a readable .npy trajectory file ({type(error).__name__}: {error}); it may "
        "be truncated") from error
  if not (isinstance(records, np.ndarray) and records.dtype == object and records.ndim == 1
          and all(isinstance(record, Mapping) for record in records)):
    found = f"{type(records).__name__} of {getattr(records, 'dtype', '?')}"
    raise DatasetError(f"{source}: expected an array of per-trajectory dicts (Cal-QL's Adroit "
                       f"format), found {found}")

  parts = {"observations": [], "next_observations": [], "actions": [], "rewards": [],
           "terminals": [], "timeouts": []}
  for index, record in enumerate(records):
    where = f"trajectory {index}: "
    require_fields(source, record.keys(), REQUIRED_FIELDS, where=where)
    observations = _observation_rows(record["observations"], source, where)
    next_observations = _observation_rows(record["next_observations"], source, where)
    actions = np.asarray(record["actions"])
    rewards = np.asarray(record["rewards"]).reshape(-1)
    length = len(observations)
    if len(next_observations) != length or len(actions) != length or len(rewards) < length:
      raise DatasetError(
          f"{source}: {where}fields have unequal lengths (observations {length}, "
          f"next_observations {len(next_observations)}, actions {len(actions)}, "
          f"rewards {len(rewards)})")
    if length == 0:
      continue
    rewards = rewards[:length]   # Demonstrations may carry one reward too many.
    successes = np.flatnonzero(rewards == SUCCESS_REWARD)
    if successful_prefix_only:
      if len(successes) == 0:
        continue
      length = successes[-1] + 1
    terminals = rewards[:length] == SUCCESS_REWARD
    timeouts = np.zeros(length, bool)
    timeouts[-1] = not terminals[-1]   # A trajectory that ends unsolved was cut, not finished.
    parts["observations"].append(observations[:length])
    parts["next_observations"].append(next_observations[:length])
    parts["actions"].append(actions[:length])
    parts["rewards"].append(rewards[:length])
    parts["terminals"].append(terminals)
    parts["timeouts"].append(timeouts)
  if not parts["rewards"]:
    raise DatasetError(
        f"{source}: none of its {len(records)} trajectories reaches the goal (reward "
        f"{SUCCESS_REWARD:g}); nothing to train on with successful_prefix_only=True")
  return Trajectories(source=source, **{key: np.concatenate(value) for key, value in parts.items()})


def write_adroit_npy(path: str | os.PathLike, trajectories: Sequence[Mapping[str, np.ndarray]], *,
                     layout: str = "rollout") -> pathlib.Path:
  """Writes trajectories in the Adroit binary format; the file appears only once complete.

  Each trajectory maps `observations`, `next_observations` [T, obs], `actions` [T, act],
  `rewards` [T] and `terminals` [T] to arrays. `layout` 'demo' stores observations as
  {'state_observation': vector} dicts as the demonstration files do; 'rollout' stores arrays and
  [T, 1] reward and terminal columns as the BC rollout files do.
  """
  if layout not in ("demo", "rollout"):
    raise ValueError(f"layout must be 'demo' or 'rollout', not {layout!r}")
  records = []
  for trajectory in trajectories:
    observations = np.asarray(trajectory["observations"], np.float32)
    next_observations = np.asarray(trajectory["next_observations"], np.float32)
    rewards = np.asarray(trajectory["rewards"], np.float32).reshape(-1)
    terminals = np.asarray(trajectory["terminals"], np.float32).reshape(-1)
    record = {"actions": np.asarray(trajectory["actions"], np.float32),
              "agent_infos": [], "env_infos": []}
    if layout == "demo":
      record["observations"] = [{"state_observation": row} for row in observations]
      record["next_observations"] = [{"state_observation": row} for row in next_observations]
      record["rewards"], record["terminals"] = rewards, terminals
    else:
      record["observations"], record["next_observations"] = observations, next_observations
      record["rewards"], record["terminals"] = rewards[:, None], terminals[:, None]
    records.append(record)
  array = np.empty(len(records), dtype=object)
  array[:] = records
  with atomic_output(path) as temporary:
    with open(temporary, "wb") as file:
      np.save(file, array, allow_pickle=True)
  return pathlib.Path(path)
