"""Checks that a dataset fits the environment it is meant for, before any training starts.

A wrong file costs hours if it is only noticed as a shape error inside a compiled program, or
never noticed when the shapes happen to fit (NaNs, unnormalised actions). Every check here raises
`DatasetError` with a message that names the file and the field, so the fix is obvious. Opening
files goes through `open_hdf5` for the same reason: a missing, truncated or non-HDF5 file gets a
message naming the file instead of h5py's bare OSError. Writers go through `atomic_output`, so an
interrupted write never leaves a half-written file under the real name for these checks to meet.

What this is not: a reader. The readers (`d4rl`, `adroit`, `minari`) turn files into
`transitions.Trajectories`; `check` looks at those. The one repair made here is
`with_task_rewards`: a sparse task's rewards rebuilt from the file's own success flags, where the
file was recorded with another (dense) reward but has them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Iterable, Iterator

import h5py
import numpy as np
from absl import logging

import envs
from wsrl_mjx.errors import UserError

# Fields every `Trajectories` has, and the ones that carry an episode boundary flag.
_STEP_FIELDS = ("observations", "actions", "rewards", "terminals", "timeouts")
_FLAG_FIELDS = ("terminals", "timeouts")
# D4RL's per-step success flag (`infos/goal_achieved` in its Adroit files and in ours).
SUCCESS_FIELD = "goal_achieved"


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

  Checked: the file was not recorded on another task, where its `metadata/env` (launch.collect
  writes it) says (`check_recorded_task`); every field has the same number of rows; observations and
  actions have the columns the environment takes; every value is finite; terminals and timeouts are
  0/1 flags; actions lie in [-1, 1] up to `action_tolerance` (the policy is a tanh-Gaussian, so data
  outside that box means the file was recorded with unnormalised actions); a sparse task's rewards
  are its values (`EnvSpec.reward_values`: a file with other rewards was recorded for another task,
  e.g. D4RL's dense Adroit reward, whose Monte-Carlo returns reach 11,299 where the binary task's
  lie in -500..+5). Integer observations are warned about (a file that rounded its observations
  trains, but on coarser states than the env gives).
  """
  source = trajectories.source
  name = env_spec.name
  columns = dict(trajectories.fields())
  columns.update({f"infos/{key}": value for key, value in trajectories.infos.items()})
  check_recorded_task(trajectories, env_spec)

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
      recorded = (f" (its metadata/env says it was recorded on {trajectories.recorded_on})"
                  if trajectories.recorded_on not in (None, name) else "")
      raise DatasetError(f"{source}: field {field!r} has {values.shape[1]} columns but {name} "
                         f"{verb} {size}{recorded}")
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

  for field in ("observations", "next_observations"):
    if field in columns and columns[field].dtype.kind in "biu":
      logging.warning(
          "%s: field %r holds integers (%s); %s observes real numbers, so these were rounded or "
          "are not its observations. Training goes on with them as float32.", source, field,
          columns[field].dtype, name)

  if env_spec.reward_values is not None:
    outside = ~_is_one_of(columns["rewards"], env_spec.reward_values)
    if outside.any():
      row = int(np.flatnonzero(outside)[0])
      raise DatasetError(
          f"{source}: field 'rewards' has {int(outside.sum())} values outside {name}'s "
          f"{_values_text(env_spec.reward_values)} (the first, {columns['rewards'][row]:.6g}, at "
          f"row {row}): it was recorded with another reward (a dense one?). Use data of the "
          f"sparse task, or a file with '{SUCCESS_FIELD}' flags to rebuild the rewards from.")

  magnitude = np.abs(columns["actions"]).max(axis=1)
  outside = magnitude > 1.0 + action_tolerance
  if outside.any():
    row = int(np.argmax(magnitude))
    raise DatasetError(
        f"{source}: field 'actions' has values outside [-1, 1] in {int(outside.sum())} rows "
        f"(largest |action| {magnitude[row]:.4g} at row {row}); {name} takes actions in [-1, 1]")


def check_recorded_task(trajectories, env_spec) -> None:
  """Raises `DatasetError` where the file's `metadata/env` names another task than `env_spec`'s.

  Tasks are compared, not names: hopper-medium-v2 data trains hopper-expert-v2 or hopper, but
  not walker2d, whose sizes halfcheetah's data fits exactly. A file that does not say (D4RL's
  own) passes. A name the registry does not know (written by another tool, or an env since
  renamed) is warned about and passes: the file cannot be told apart from a right one, and
  refusing it would leave no way to train on it but editing the file; its sizes, values and
  rewards are still checked.
  """
  recorded = trajectories.recorded_on
  if recorded is None or recorded == env_spec.name:
    return
  try:
    recorded_task = envs.spec(recorded).task
  except ValueError:
    logging.warning(
        "%s: field 'metadata/env' says it was recorded on %r, which is not a known env "
        "(envs.names() lists them); whether it is %s data cannot be checked. Going on with it.",
        trajectories.source, recorded, env_spec.task)
    return
  if recorded_task != env_spec.task:
    raise DatasetError(
        f"{trajectories.source}: field 'metadata/env' says it was recorded on {recorded} (task "
        f"{recorded_task}), but this run's env is {env_spec.name} (task {env_spec.task}); give "
        f"a dataset recorded on {env_spec.task}")


def _is_one_of(values: np.ndarray, allowed) -> np.ndarray:
  values = np.asarray(values, np.float64)
  return np.any([np.isclose(values, value, rtol=0.0, atol=1e-6) for value in allowed], axis=0)


def _values_text(values) -> str:
  return "{" + ", ".join(f"{value:g}" for value in values) + "}"


def with_task_rewards(trajectories, env_spec):
  """`trajectories` with a sparse task's rewards rebuilt from its success flags, where needed.

  Where `env_spec` is a sparse task (`reward_values` (failure, success)) and the file's rewards
  are not all its values but it records `infos/goal_achieved` per step, each step's reward
  becomes the success value where the goal was achieved, else the failure value, and each such
  step is terminal (both sparse families' task envs end the episode there; D4RL's AntMaze files
  and WSRL's Adroit reader mark them so); a warning says so. Otherwise returned unchanged (and
  `check` refuses rewards outside the values).
  """
  values = env_spec.reward_values
  flags = trajectories.infos.get(SUCCESS_FIELD)
  if (values is None or flags is None or len(flags) != len(trajectories.rewards)
      or _is_one_of(trajectories.rewards, values).all()):
    return trajectories
  success = (np.asarray(flags, np.float64).reshape(len(flags), -1) > 0).any(axis=1)
  failure_value, success_value = values
  logging.warning(
      "%s: field 'rewards' holds values outside %s's %s (recorded with another reward); "
      "rebuilt from 'infos/%s': %g at its %d successes (terminal there, as %s ends the episode), "
      "%g elsewhere.", trajectories.source, env_spec.name, _values_text(values), SUCCESS_FIELD,
      success_value, int(success.sum()), env_spec.name, failure_value)
  rewards = np.where(success, success_value, failure_value).astype(np.float32)
  terminals = np.asarray(trajectories.terminals, bool) | success
  return dataclasses.replace(trajectories, rewards=rewards, terminals=terminals)
