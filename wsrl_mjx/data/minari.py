"""Minari datasets on disk (its HDF5 storage): reading them into `Trajectories`, and writing the
same layout for tests and our collector. The `minari` package is not needed for either.

Layout (Minari's `docs/content/dataset_standards.md` and `minari/dataset/_storages/
hdf5_storage.py`): a dataset lives in `<root>/<dataset_id>/data/`, root being
$MINARI_DATASETS_PATH or ~/.minari/datasets; an id with a namespace ('D4RL/door/human-v2') is
nested folders. `main_data.hdf5` holds one group `episode_<id>` per episode with `observations`
[T + 1, obs] (the reset observation, then every step's next one), `actions` [T, act], `rewards`
[T], `terminations` and `truncations` [T] bool, optional `infos`; dict observations are subgroups.
`metadata.json` beside it has the totals and the spaces.

Dict observations become one vector, the concatenation of `observation_keys` in that order
(`launch.pretrain --config.observation_keys=a,b`). A family's own layout is known
(`FAMILY_OBSERVATION_KEYS`): Gymnasium-Robotics' AntMaze, which Minari's `D4RL/antmaze/*`
datasets record, splits the ant's 29 numbers (qpos[:15] + qvel[:14], as D4RL and envs/antmaze.py
observe) into `achieved_goal` (qpos[:2], the x-y position) and `observation` (the other 27), with
the goal as `desired_goal` (`AntMazeEnv._get_obs`: ant_obs[:2], ant_obs[2:]); concatenating
achieved_goal then observation gives D4RL's 29.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Mapping, Sequence

import h5py
import numpy as np

from wsrl_mjx.data.transitions import Trajectories
from wsrl_mjx.data.validation import DatasetError, atomic_output, open_hdf5, require_fields

DATASETS_PATH_VARIABLE = "MINARI_DATASETS_PATH"
MAIN_FILE = "main_data.hdf5"
EPISODE_PREFIX = "episode_"
REQUIRED_FIELDS = ("observations", "actions", "rewards", "terminations", "truncations")
# The dict observation keys that give a family's observation vector (module docstring).
FAMILY_OBSERVATION_KEYS = {"antmaze": ("achieved_goal", "observation"),
                           # the 59 numbers wsrl_mjx.data.kitchen maps to D4RL's 60
                           "kitchen": ("observation",)}


def datasets_root() -> pathlib.Path:
  """Minari's local root: $MINARI_DATASETS_PATH, else ~/.minari/datasets."""
  return pathlib.Path(os.environ.get(DATASETS_PATH_VARIABLE, "~/.minari/datasets")).expanduser()


def dataset_path(dataset_id: str) -> pathlib.Path:
  """The main data file of the local Minari dataset `dataset_id`."""
  return datasets_root() / dataset_id / "data" / MAIN_FILE


def is_minari_file(file: h5py.File) -> bool:
  """Whether an open HDF5 file is laid out as Minari episodes rather than D4RL columns."""
  return any(key.startswith(EPISODE_PREFIX) for key in file.keys())


def _episode_names(file: h5py.File) -> list[str]:
  """Episode groups in id order (episode_2 before episode_10)."""
  names = [key for key in file.keys() if key.startswith(EPISODE_PREFIX)]
  def episode_id(name):
    suffix = name[len(EPISODE_PREFIX):]
    return (0, int(suffix)) if suffix.isdigit() else (1, suffix)
  return sorted(names, key=episode_id)


def _array(group: h5py.Group, field: str, source: str, where: str,
           observation_keys: Sequence[str] | None = None) -> np.ndarray:
  """A field of an episode; dict observations become the concatenation of `observation_keys`."""
  node = group[field]
  if isinstance(node, h5py.Group):
    if observation_keys is None or field != "observations":
      raise DatasetError(
          f"{source}: {where}field {field!r} is a dict of {sorted(node.keys())}; choose the parts "
          "to concatenate, in order, with observation_keys (launch.pretrain: "
          "--config.observation_keys=key1,key2)")
    require_fields(source, node.keys(), observation_keys, where=f"{where}observations: ")
    parts = [node[key][()] for key in observation_keys]
    return np.concatenate([part.reshape(len(part), -1) for part in parts], axis=1)
  values = node[()]
  if field != "observations" and field != "actions" and values.ndim == 2 and values.shape[1] == 1:
    values = values[:, 0]
  return values


def read_minari_hdf5(path: str | os.PathLike, *,
                     observation_keys: Sequence[str] | None = None) -> Trajectories:
  """The steps of a Minari `main_data.hdf5` (or of the dataset folder holding `data/`)."""
  path = pathlib.Path(path)
  if path.is_dir():
    path = path / "data" / MAIN_FILE if (path / "data").is_dir() else path / MAIN_FILE
  source = os.fspath(path)
  columns = {"observations": [], "next_observations": [], "actions": [], "rewards": [],
             "terminals": [], "timeouts": []}
  with open_hdf5(source) as file:
    names = _episode_names(file)
    if not names:
      raise DatasetError(f"{source}: no '{EPISODE_PREFIX}<id>' groups; not a Minari dataset")
    for name in names:
      where = f"{name}: "
      episode = file[name]
      require_fields(source, episode.keys(), REQUIRED_FIELDS, where=where)
      fields = {field: _array(episode, field, source, where, observation_keys)
                for field in REQUIRED_FIELDS}
      num_steps = len(fields["actions"])
      if len(fields["observations"]) != num_steps + 1:
        raise DatasetError(
            f"{source}: {where}field 'observations' has {len(fields['observations'])} rows but "
            f"'actions' has {num_steps}; Minari stores one observation more than steps")
      for field in ("rewards", "terminations", "truncations"):
        if len(fields[field]) != num_steps:
          raise DatasetError(
              f"{source}: {where}field {field!r} has {len(fields[field])} rows but 'actions' "
              f"has {num_steps}")
      if num_steps == 0:
        continue
      terminals = np.asarray(fields["terminations"], bool)
      timeouts = np.asarray(fields["truncations"], bool).copy()
      timeouts[-1] |= not terminals[-1]   # An episode the recording stopped was cut, not ended.
      columns["observations"].append(fields["observations"][:-1])
      columns["next_observations"].append(fields["observations"][1:])
      columns["actions"].append(fields["actions"])
      columns["rewards"].append(fields["rewards"])
      columns["terminals"].append(terminals)
      columns["timeouts"].append(timeouts)
  if not columns["rewards"]:
    raise DatasetError(f"{source}: holds no steps")
  return Trajectories(source=source,
                      **{key: np.concatenate(value) for key, value in columns.items()})


def write_minari_dataset(dataset_id: str, episodes: Sequence[Mapping[str, np.ndarray]], *,
                         root: str | os.PathLike | None = None) -> pathlib.Path:
  """Writes episodes as the local Minari dataset `dataset_id`; returns its main data file.

  Each episode maps `observations` [T + 1, obs], `actions` [T, act], `rewards` [T],
  `terminations` and `truncations` [T] to arrays (observations and actions stored float32,
  rewards float64 as Gymnasium returns them, flags bool). The metadata written is the totals and
  the format, not the Gymnasium spaces: the `minari` package itself needs those to open it.
  """
  folder = pathlib.Path(root).expanduser() if root is not None else datasets_root()
  folder = folder / dataset_id / "data"
  total_steps = 0
  with atomic_output(folder / MAIN_FILE) as temporary:
    with h5py.File(temporary, "w", track_order=True) as file:
      for index, episode in enumerate(episodes):
        actions = np.asarray(episode["actions"], np.float32)
        observations = np.asarray(episode["observations"], np.float32)
        if len(observations) != len(actions) + 1:
          raise ValueError(f"episode {index}: observations need {len(actions) + 1} rows (one more "
                           f"than actions), got {len(observations)}")
        group = file.create_group(f"{EPISODE_PREFIX}{index}")
        group.attrs["id"] = index
        group.attrs["total_steps"] = len(actions)
        group.create_dataset("observations", data=observations)
        group.create_dataset("actions", data=actions)
        group.create_dataset("rewards", data=np.asarray(episode["rewards"], np.float64))
        group.create_dataset("terminations", data=np.asarray(episode["terminations"], bool))
        group.create_dataset("truncations", data=np.asarray(episode["truncations"], bool))
        total_steps += len(actions)
      num_episodes = len(file.keys())
  metadata = {"dataset_id": dataset_id, "total_episodes": num_episodes,
              "total_steps": total_steps, "data_format": "hdf5"}
  with atomic_output(folder / "metadata.json") as temporary:
    with open(temporary, "w") as file:
      json.dump(metadata, file)
  return folder / MAIN_FILE
