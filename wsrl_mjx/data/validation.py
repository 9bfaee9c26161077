"""Checks that a dataset fits the environment it is meant for, before any training starts.

A wrong file costs hours if it is only noticed as a shape error inside a compiled program, or
never noticed when the shapes happen to fit (NaNs, unnormalised actions). Every check here raises
`DatasetError` with a message that names the file and the field, so the fix is obvious. Opening
files goes through `open_hdf5` for the same reason: a missing, truncated or non-HDF5 file gets a
message naming the file instead of h5py's bare OSError. Writers go through `atomic_output`, so an
interrupted write never leaves a half-written file under the real name for these checks to meet.

What this is not: a reader. The readers (`d4rl`, `adroit`, `minari`) turn files into
`transitions.Trajectories`; `check` looks at those.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator

import h5py
import numpy as np

from wsrl_mjx.errors import UserError

# Fields every `Trajectories` has, and the ones that carry an episode boundary flag.
_STEP_FIELDS = ("observations", "actions", "rewards", "terminals", "timeouts")
_FLAG_FIELDS = ("terminals", "timeouts")


class DatasetError(UserError):
  """A dataset file that cannot be trained on; the message names the file and the field."""


@contextlib.contextmanager
def open_hdf5(path: str | os.PathLike) -> Iterator[h5py.File]:
  """Opens an HDF5 file for reading; any failure, also while reading, names the file."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise DatasetError(f"{path}: no such file")
  if os.path.isdir(path):
    raise DatasetError(f"{path}: is a folder, not an HDF5 file")
  try:
    file = h5py.File(path, "r")
  except OSError as error:
    if "truncated" in str(error):
      hint = "it was cut short (an interrupted download or copy?); delete it and fetch it again"
    else:
      hint = "it is not an HDF5 file, or it is damaged"
    raise DatasetError(f"{path}: not a readable HDF5 file: {hint} (h5py: {error})") from error
  try:
    with file:
      yield file
  except OSError as error:
    raise DatasetError(
        f"{path}: reading failed ({error}); the file is probably truncated or damaged") from error


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[str]:
  """A temporary path beside `path` that replaces `path` only once the write succeeded."""
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  handle, temporary = tempfile.mkstemp(
      prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
  os.close(handle)
  try:
    yield temporary
    os.chmod(temporary, 0o644)   # mkstemp's 0600 would make shared datasets unreadable to others
    os.replace(temporary, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(temporary)
    raise


def require_fields(source: str, present: Iterable[str], required: Iterable[str],
                   where: str = "") -> None:
  """Raises if a required field is absent; `where` locates it inside the file (e.g. an episode)."""
  present = set(present)
  for field in required:
    if field not in present:
      raise DatasetError(
          f"{source}: {where}field {field!r} is missing (the file has {sorted(present)})")


def check(trajectories, env_spec, *, action_tolerance: float = 1e-3) -> None:
  """Raises `DatasetError` unless `trajectories` can train an agent for `env_spec`.

  Checked: every field has the same number of rows; observations and actions have the columns
  the environment takes; every value is finite; terminals and timeouts are 0/1 flags; actions lie
  in [-1, 1] up to `action_tolerance` (the policy is a tanh-Gaussian, so data outside that box
  means the file was recorded with unnormalised actions).
  """
  source = trajectories.source
  name = env_spec.name
  columns = dict(trajectories.fields())
  columns.update({f"infos/{key}": value for key, value in trajectories.infos.items()})

  num_steps = len(trajectories.rewards)
  if num_steps == 0:
    raise DatasetError(f"{source}: holds no steps")
  for field, values in columns.items():
    if len(values) != num_steps:
      raise DatasetError(
          f"{source}: field {field!r} has {len(values)} rows but 'rewards' has {num_steps}")

  expected_columns = {"observations": (env_spec.observation_size, "observes"),
                      "next_observations": (env_spec.observation_size, "observes"),
                      "actions": (env_spec.action_size, "takes")}
  for field, (size, verb) in expected_columns.items():
    if field not in columns:
      continue
    values = columns[field]
    if values.ndim != 2:
      raise DatasetError(
          f"{source}: field {field!r} has shape {values.shape}; expected [steps, {size}]")
    if values.shape[1] != size:
      raise DatasetError(
          f"{source}: field {field!r} has {values.shape[1]} columns but {name} {verb} {size}")
  for field in ("rewards", *_FLAG_FIELDS):
    if columns[field].ndim != 1:
      raise DatasetError(
          f"{source}: field {field!r} has shape {columns[field].shape}; expected [steps]")

  for field, values in columns.items():
    if values.dtype.kind not in "biuf":
      continue  # Strings and other non-numbers in infos are not training inputs.
    finite = np.isfinite(values.reshape(num_steps, -1)).all(axis=1)
    if not finite.all():
      bad_rows = np.flatnonzero(~finite)
      raise DatasetError(
          f"{source}: field {field!r} has non-finite values (NaN or inf) in {len(bad_rows)} "
          f"rows, the first at row {bad_rows[0]}")

  for field in _FLAG_FIELDS:
    values = columns[field]
    if values.dtype != np.bool_ and not np.isin(values, (0, 1)).all():
      row = np.flatnonzero(~np.isin(values, (0, 1)))[0]
      raise DatasetError(
          f"{source}: field {field!r} must hold 0/1 flags but row {row} holds {values[row]}")

  magnitude = np.abs(columns["actions"]).max(axis=1)
  outside = magnitude > 1.0 + action_tolerance
  if outside.any():
    row = int(np.argmax(magnitude))
    raise DatasetError(
        f"{source}: field 'actions' has values outside [-1, 1] in {int(outside.sum())} rows "
        f"(largest |action| {magnitude[row]:.4g} at row {row}); {name} takes actions in [-1, 1]")
