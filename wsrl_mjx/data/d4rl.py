"""D4RL's HDF5 dataset files: reading them, by path or by dataset name from D4RL's cache, and
writing files in exactly their layout.

The writer exists so that our own collector's data and D4RL's downloads go through one loader,
and so the loader's tests run on files this project writes itself. Layout (read from D4RL's
generation scripts, `scripts/generation/mujoco/collect_data.py` and
`generate_ant_maze_datasets.py`, and `d4rl/utils/dataset_utils.py`): one dataset per key,
gzip-compressed; `terminals` and `timeouts` bool, everything else float32 (`observations`,
`actions`, `rewards`, `next_observations`, `infos/qpos`, `infos/qvel`, `infos/goal`, ...);
rewards and flags of shape [N] (D4RL's own reader also accepts [N, 1], and so do we).

Nothing here pairs steps into transitions; that is `transitions.to_offline_dataset`.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping

import h5py
import numpy as np

import envs
from wsrl_mjx.data import kitchen
from wsrl_mjx.data.transitions import Trajectories
from wsrl_mjx.data.validation import DatasetError, atomic_output, open_hdf5, require_fields

DATASET_DIR_VARIABLE = "D4RL_DATASET_DIR"
REQUIRED_FIELDS = ("observations", "actions", "rewards", "terminals", "timeouts")
_FLAG_FIELDS = ("terminals", "timeouts")


def dataset_dir() -> pathlib.Path:
  """D4RL's download cache: $D4RL_DATASET_DIR, else ~/.d4rl/datasets (as D4RL itself decides)."""
  return pathlib.Path(os.environ.get(DATASET_DIR_VARIABLE, "~/.d4rl/datasets")).expanduser()


def dataset_path(name: str) -> pathlib.Path:
  """Where D4RL caches the dataset `name` (e.g. 'hopper-medium-replay-v2')."""
  spec = envs.spec(name)
  if spec.dataset_file is None:
    recorded = [other.name for other in map(envs.spec, envs.names())
                if other.task == spec.task and other.dataset_file]
    if recorded:
      raise DatasetError(f"{name!r} names a task, not a D4RL dataset; give a dataset name such "
                         f"as {recorded[0]!r} or a file path (--config.dataset)")
    raise DatasetError(f"{name!r} has no D4RL dataset; write one with `python -m launch.collect "
                       f"--env={name} --output=FILE.hdf5` and give its path as --config.dataset")
  return dataset_dir() / spec.dataset_file


def _column(file: h5py.File, source: str, field: str) -> np.ndarray:
  """One field as a numpy array; [N, 1] rewards and flags become [N] as D4RL's reader does."""
  node = file[field]
  if not isinstance(node, h5py.Dataset):
    raise DatasetError(f"{source}: field {field!r} is a group, not an array")
  values = node[()]
  if field in ("rewards", *_FLAG_FIELDS) and values.ndim == 2 and values.shape[1] == 1:
    values = values[:, 0]
  return values


def read_d4rl_hdf5(path: str | os.PathLike, *,
                   timeouts_every: int | None = None) -> Trajectories:
  """The steps of a D4RL-layout file, as stored (validation happens in `validation.check`).

  `timeouts_every`: for a file without `timeouts` (D4RL's kitchen files), the time limit to
  derive them from, as the reference does (`wsrl_mjx.data.kitchen.timeouts_every`); None: the
  field is required.
  """
  source = os.fspath(path)
  with open_hdf5(source) as file:
    required = REQUIRED_FIELDS
    if timeouts_every is not None and "timeouts" not in file:
      required = tuple(field for field in REQUIRED_FIELDS if field != "timeouts")
    require_fields(source, file.keys(), required)
    columns = {field: _column(file, source, field) for field in required}
    if "timeouts" not in columns:
      columns["timeouts"] = kitchen.timeouts_every(columns["terminals"], timeouts_every)
    next_observations = None
    if "next_observations" in file:
      next_observations = _column(file, source, "next_observations")
    infos = {}
    if isinstance(file.get("infos"), h5py.Group):
      for key, node in file["infos"].items():
        if isinstance(node, h5py.Dataset):
          infos[key] = node[()]
    recorded_on, node = None, file.get("metadata/env")
    if isinstance(node, h5py.Dataset):
      value = node[()]
      recorded_on = value.decode() if isinstance(value, bytes) else str(value)
  return Trajectories(source=source, next_observations=next_observations, infos=infos,
                      recorded_on=recorded_on, **columns)


def write_d4rl_hdf5(path: str | os.PathLike, *, observations, actions, rewards, terminals,
                    timeouts, next_observations=None, infos: Mapping[str, np.ndarray] | None = None,
                    metadata: Mapping[str, object] | None = None,
                    compression: str | None = "gzip") -> pathlib.Path:
  """Writes a dataset in D4RL's layout and dtypes; the file appears only once complete.

  `infos` (e.g. {'qpos': ..., 'qvel': ...}) are stored as `infos/<key>`, float32 like D4RL's;
  `metadata` entries as `metadata/<key>`, as given (D4RL stores e.g. `metadata/algorithm`).
  """
  columns = {"observations": (observations, np.float32), "actions": (actions, np.float32),
             "rewards": (rewards, np.float32), "terminals": (terminals, np.bool_),
             "timeouts": (timeouts, np.bool_)}
  if next_observations is not None:
    columns["next_observations"] = (next_observations, np.float32)
  for key, values in (infos or {}).items():
    columns[f"infos/{key}"] = (values, np.float32)
  arrays = {field: np.asarray(values, dtype) for field, (values, dtype) in columns.items()}
  num_steps = len(arrays["rewards"])
  for field, values in arrays.items():
    if values.ndim == 0 or len(values) != num_steps:
      raise ValueError(f"{field} has shape {values.shape}; every field needs {num_steps} rows")
  for field in ("rewards", *_FLAG_FIELDS):
    if arrays[field].ndim != 1:
      raise ValueError(f"{field} has shape {arrays[field].shape}; expected [{num_steps}]")
  with atomic_output(path) as temporary:
    with h5py.File(temporary, "w") as file:
      for field, values in arrays.items():
        file.create_dataset(field, data=values, compression=compression)
      for key, value in (metadata or {}).items():
        file[f"metadata/{key}"] = np.bytes_(value) if isinstance(value, str) else value
  return pathlib.Path(path)
