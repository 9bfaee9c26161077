"""Offline datasets for the pretraining phase: D4RL, Adroit binary and Minari files in,
Q-learning transitions with Cal-QL's Monte-Carlo returns out.

`load(path_or_name, env_spec)` is the entry point: it finds the file (a path, a D4RL dataset name
looked up in D4RL's cache, or a local Minari dataset id), reads it, checks it against the
environment (`validation.check`, errors name the file and the field) and pairs its steps into an
`OfflineDataset`; `to_replay_buffer` feeds it to the learner.

| module | what it is |
| --- | --- |
| `d4rl` | D4RL's HDF5 files: reader, writer in D4RL's layout and dtypes, the cache path |
| `adroit` | the Adroit binary `.npy` trajectory pickles WSRL/Cal-QL use: reader, writer |
| `minari` | Minari's on-disk HDF5 episodes: reader, writer |
| `kitchen` | D4RL's and Minari's kitchen files as the reference trains on them |
| `transitions` | `Trajectories` (steps as recorded) -> `OfflineDataset`; MC returns; the device buffer |
| `validation` | `DatasetError` and the checks against an `EnvSpec` |

Not here: the replay buffer itself (`wsrl_mjx.replay`, both phases'); WSRL fine-tunes without
this data.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

import envs
from envs import EnvSpec
from wsrl_mjx.data import adroit, d4rl, kitchen, minari, transitions, validation
from wsrl_mjx.data.transitions import (OfflineDataset, Trajectories, concatenate,
                                       monte_carlo_returns, pair_steps, to_offline_dataset,
                                       to_replay_buffer, unflagged_jumps)
from wsrl_mjx.data.validation import DatasetError, check

__all__ = ["DatasetError", "OfflineDataset", "Trajectories", "adroit", "check", "concatenate",
           "d4rl", "kitchen", "load", "minari", "monte_carlo_returns", "pair_steps", "read", "resolve",
           "to_offline_dataset", "to_replay_buffer", "transitions", "unflagged_jumps",
           "validation"]

_FILE_SUFFIXES = (".hdf5", ".h5", ".npy")


def resolve(path_or_name: str | os.PathLike, env_spec: EnvSpec | None = None) -> pathlib.Path:
  """The file a path, a D4RL dataset name or a local Minari dataset id refers to (a Minari
  dataset folder: its main data file)."""
  path = pathlib.Path(path_or_name).expanduser()
  if path.exists() or isinstance(path_or_name, os.PathLike) or path.suffix in _FILE_SUFFIXES:
    if not path.exists():
      raise DatasetError(f"{path}: no such file")
    if path.is_dir():
      return _minari_main_file(path)
    return path
  name = os.fspath(path_or_name)
  if env_spec is not None and name == env_spec.name and env_spec.dataset_file:
    path = d4rl.dataset_dir() / env_spec.dataset_file
  elif minari.dataset_path(name).exists():
    return minari.dataset_path(name)
  elif name in envs.names():
    path = d4rl.dataset_path(name)
  else:
    raise DatasetError(
        f"{name!r} is neither an existing file, a D4RL dataset name (envs.names() lists them) "
        f"nor a Minari dataset under {minari.datasets_root()} (${minari.DATASETS_PATH_VARIABLE})")
  if not path.exists():
    raise DatasetError(
        f"{path}: no such file; D4RL dataset {name!r} is not in D4RL's cache "
        f"(${d4rl.DATASET_DIR_VARIABLE}, else ~/.d4rl/datasets). Download it there with d4rl, or "
        "pass the file's path.")
  return path


def _minari_main_file(folder: pathlib.Path) -> pathlib.Path:
  """The main data file of a Minari dataset folder (`<id>` or `<id>/data`); DatasetError saying
  what a folder must be where `folder` is not one, naming the dataset files it holds."""
  for candidate in (folder / "data" / minari.MAIN_FILE, folder / minari.MAIN_FILE):
    if candidate.is_file():
      return candidate
  message = (f"{folder}: is a folder, and the only folders read are Minari dataset folders, "
             f"holding data/{minari.MAIN_FILE} or {minari.MAIN_FILE}")
  files = sorted(child for child in folder.iterdir()
                 if child.suffix in _FILE_SUFFIXES and child.is_file())
  if not files:
    raise DatasetError(f"{message}; it holds no dataset file ({', '.join(_FILE_SUFFIXES)}): "
                       "give a file's path")
  shown = ", ".join(child.name for child in files[:3])
  more = f" and {len(files) - 3} more" if len(files) > 3 else ""
  raise DatasetError(
      f"{message}; it holds {shown}{more}: give one file's path, or several comma-separated "
      f"(e.g. {','.join(map(str, files[:2]))})")


def read(path_or_name: str | os.PathLike, env_spec: EnvSpec | None = None, *,
         observation_keys: Sequence[str] | None = None) -> Trajectories:
  """The recorded steps of one dataset, whatever its format (chosen by suffix and contents).

  `observation_keys`: the parts of a Minari file's dict observations to concatenate, in order;
  None: the family's known layout (`minari.FAMILY_OBSERVATION_KEYS`, AntMaze), if any.
  """
  path = resolve(path_or_name, env_spec)
  family = env_spec.family if env_spec is not None else None
  if observation_keys is None and env_spec is not None:
    observation_keys = minari.FAMILY_OBSERVATION_KEYS.get(family)
  if path.suffix == ".npy":
    return adroit.read_adroit_npy(path)
  with validation.open_hdf5(path) as file:
    is_minari = minari.is_minari_file(file)
  if is_minari:
    return minari.read_minari_hdf5(path, observation_keys=observation_keys)
  return d4rl.read_d4rl_hdf5(
      path, timeouts_every=env_spec.episode_length if family == "kitchen" else None)


def load(path_or_name: str | os.PathLike | Sequence[str | os.PathLike], env_spec: EnvSpec, *,
         discount: float = 0.99, clip_action: float | None = 0.99999,
         negative_sparse_reward: float | None = None,
         action_tolerance: float = 1e-3, split_at_jumps: bool = False,
         observation_keys: Sequence[str] | None = None) -> OfflineDataset:
  """Reads, checks against `env_spec` and pairs one dataset, or several end to end.

  Several sources (a list, or one string of comma-separated paths; an Adroit task's name stands
  for WSRL's demonstrations and BC rollouts) are checked one by one, so an error names the file
  at fault, and no trajectory runs across files. The reward transform, the sparse value and
  `split_at_jumps` (False: trajectories end only at terminals, timeouts and file ends, as in the
  WSRL reference; unflagged jumps are logged): see `transitions.to_offline_dataset`.
  `observation_keys`: see `read`. A sparse task's file recorded with another reward is rebuilt
  from its success flags where it has them, else refused (`validation.with_task_rewards`). Arrays
  stay numpy: `to_replay_buffer` next.
  """
  if isinstance(path_or_name, os.PathLike):
    sources = [path_or_name]
  elif isinstance(path_or_name, str):
    sources = [s.strip() for s in path_or_name.split(",") if s.strip()]
  else:
    sources = list(path_or_name)
  if len(sources) == 1 and isinstance(sources[0], str) and sources[0] in envs.names() \
     and envs.spec(sources[0]).family == "adroit":
    sources = adroit.dataset_paths(envs.spec(sources[0]).task)
    missing = [str(p) for p in sources if not p.exists()]
    if missing:
      raise DatasetError(
          f"{', '.join(missing)}: no such file; WSRL's Adroit data goes under "
          f"${adroit.DATA_DIR_VARIABLE}/offpolicy_hand_data (default ~/adroit_data). Or pass files "
          "(comma-separated), e.g. from launch.collect")
  parts = []
  for source in sources:
    part = read(source, env_spec, observation_keys=observation_keys)
    if env_spec.family == "kitchen":
      part = kitchen.prepare(part, env_spec)
    part = validation.with_task_rewards(part, env_spec)
    check(part, env_spec, action_tolerance=action_tolerance)
    parts.append(part)
  return to_offline_dataset(
      concatenate(parts), reward_scale=env_spec.reward_scale, reward_bias=env_spec.reward_bias,
      discount=discount, clip_action=clip_action, negative_sparse_reward=negative_sparse_reward,
      split_at_jumps=split_at_jumps)
