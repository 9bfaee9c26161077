"""Orbax checkpoints: resuming a run exactly, and handing agents from one phase to the next.

A run directory holds `checkpoints/<env_step>/` with these items:

- `train_state`: everything of every seed (agent, optimisers, replay buffer, env state, keys,
  counters), so that a killed run resumed from it produces the same numbers;
- `agent`: only the networks and temperature (`AgentParams`, leading seed axis); this is what
  `--config.pretrained` reads and what the robot team loads;
- `optimizer` (format 2 on, SAC-shaped agents only): the Adam states of actor, critics and
  temperature (`sac.optimizer_states`, leading seed axis), which fine-tuning continues as the
  reference does when it restores the whole agent;
- `description`: a small JSON of what is inside (env, dimensions, network sizes, config).

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a crash
mid-write leaves the previous checkpoint as the latest readable one. A finished checkpoint that
was damaged afterwards (a file cut short by a full disk or a failed copy) is set aside when a run
resumes (`RunCheckpoints.restore_newest_readable`, renamed `damaged-<step>`, a warning naming it)
and the newest one that reads is used; as `--config.pretrained` it is a `CheckpointError` naming
it.

A pretrained agent is also checked for meaning, not only shapes (`check_meaning`): the task,
reward scale, reward bias and discount its values were learned for must be the run's.
"""

from __future__ import annotations

import contextlib
import json
import logging as python_logging
import pathlib
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from wsrl_mjx import compat
from wsrl_mjx.errors import UserError

FORMAT_VERSION = 2     # 2: the `optimizer` item
CHECKPOINT_SUBDIR = "checkpoints"
_ITEMS = ("train_state", "agent", "optimizer", "description")

# Description fields that fix the agent's array shapes; a pretrained agent must match them.
AGENT_SHAPE_FIELDS = ("policy", "observation_size", "action_size", "actor_hidden_sizes",
                      "critic_hidden_sizes", "num_critics", "state_dependent_std", "layer_norm")


class CheckpointError(UserError):
  """A checkpoint that cannot be used for what was asked, with the reason."""


# What an agent's values mean: Q-values estimate returns of this task's reward, scaled and
# shifted by the family's transform, discounted by `discount`. (description key, key in the
# `agent` block or None for a top-level one.)
MEANING_FIELDS = (("task", None), ("reward_scale", "agent"), ("reward_bias", "agent"),
                  ("discount", "agent"))
DAMAGED_PREFIX = "damaged-"    # a damaged step folder is renamed damaged-<step>, out of orbax's way


def _not_a_read_only_notice(record: python_logging.LogRecord) -> bool:
  """orbax warns each time it opens a manager read-only ("Given directory is read only", "...
  read_only=True, setting save_interval_steps=0"): what we asked for, not a problem to report."""
  return not record.getMessage().startswith(("Given directory is read only",
                                             "CheckpointManagerOptions.read_only=True"))


def _manager(directory: pathlib.Path, max_to_keep: int | None = None,
             read_only: bool = False) -> ocp.CheckpointManager:
  compat.drain_orbax_reads_on_failure()   # a damaged file: one error, not pages of stderr
  absl_logger = logging.get_absl_logger()
  absl_logger.addFilter(_not_a_read_only_notice)
  try:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
        enable_async_checkpointing=False, cleanup_tmp_directories=not read_only)
    return ocp.CheckpointManager(directory, options=options, item_names=_ITEMS)
  finally:
    absl_logger.removeFilter(_not_a_read_only_notice)


def abstract_like(tree):
  """Shape/dtype/sharding of every leaf: the restore target for orbax."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
      tree)


def _leaf_name(path) -> str:
  name = jax.tree_util.keystr(path, simple=True, separator="__")
  return re.sub(r"[^A-Za-z0-9_]", "_", name)


def flatten_for_saving(tree) -> dict[str, Any]:
  """{leaf path: array} of the non-empty leaves. Orbax refuses zero-size arrays, and MJX state
  has some (e.g. actuator activations of a model without stateful actuators)."""
  flat = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if np.size(leaf):
      flat[_leaf_name(path)] = leaf
  return flat


def unflatten_restored(flat: dict[str, Any], abstract_tree):
  """Inverse of `flatten_for_saving`, given the abstract tree it came from."""
  paths_and_leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract_tree)
  leaves = []
  for path, leaf in paths_and_leaves:
    # Zero-size leaves were not saved: rebuild them where the restored state lives (on the
    # abstract leaf's sharding), or the next chunk would see new input shardings and recompile.
    leaves.append(flat[_leaf_name(path)] if np.prod(leaf.shape)
                  else jax.device_put(jnp.zeros(leaf.shape, leaf.dtype),
                                      getattr(leaf, "sharding", None)))
  return jax.tree_util.tree_unflatten(treedef, leaves)


class RunCheckpoints:
  """The checkpoints of one run directory."""

  def __init__(self, workdir: str | pathlib.Path, max_to_keep: int = 2,
               step_unit: str = "env_step"):
    self.step_unit = step_unit    # what checkpoint steps count: env or gradient steps
    self.directory = pathlib.Path(workdir).absolute() / CHECKPOINT_SUBDIR
    self._manager = _manager(self.directory, max_to_keep=max_to_keep)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, train_state, agent_params, description: dict[str, Any],
           optimizer=None) -> None:
    """`optimizer`: the hand-off Adam states (`sac.optimizer_states`), or None (IQL)."""
    description = dict(description, format_version=FORMAT_VERSION, step=int(step),
                       step_unit=self.step_unit)
    items = dict(train_state=ocp.args.StandardSave(flatten_for_saving(train_state)),
                 agent=ocp.args.StandardSave(agent_params),
                 description=ocp.args.JsonSave(description))
    if optimizer is not None:
      items["optimizer"] = ocp.args.StandardSave(flatten_for_saving(optimizer))
    self._manager.save(step, args=ocp.args.Composite(**items))
    self._manager.wait_until_finished()

  def description(self, step: int) -> dict[str, Any]:
    return read_description(self.directory, step)

  def restore(self, step: int, abstract_train_state):
    restored = self._manager.restore(step, args=ocp.args.Composite(
        train_state=ocp.args.StandardRestore(flatten_for_saving(abstract_train_state))))
    return unflatten_restored(restored.train_state, abstract_train_state)

  def restore_newest_readable(self, abstract_train_state: Callable[[], Any],
                              check_description: Callable[[dict[str, Any]], None]):
    """(step, train state) of the newest checkpoint that reads, or None where there is none.

    Newest first: each checkpoint's description goes to `check_description` (which raises for a
    run that may not resume, e.g. another config: that error is passed on, not skipped), then
    its train state is restored to `abstract_train_state()`. A checkpoint that is damaged (its
    description or a file of its train state unreadable: `_damage`) is renamed
    `damaged-<step>` (kept, out of orbax's way, so this run can save that step again) with a
    warning naming it, and the next older one is tried. Raises CheckpointError naming them if
    none reads, rather than starting the run afresh over them.
    """
    damaged = []
    abstract = None
    for step in sorted(self._manager.all_steps(), reverse=True):
      folder = self.directory / str(step)
      try:
        description = self.description(step)
      except CheckpointError as error:
        damaged.append(self._set_aside(step, error))
        continue
      check_description(description)
      abstract = abstract_train_state() if abstract is None else abstract
      try:
        return step, self.restore(step, abstract)
      except Exception as error:   # noqa: BLE001 (orbax and TensorStore raise many kinds)
        damage = _damage(error)
        if damage is None:
          raise CheckpointError(f"{folder / 'train_state'}: cannot be read as this run's "
                                f"state: {_first_line(error)}") from error
        damaged.append(self._set_aside(step, damage))
    if damaged:
      raise CheckpointError(
          f"{self.directory}: none of its checkpoints reads (each damaged, set aside as "
          f"{', '.join(p.name for p in damaged)}). Put intact copies back to resume, or run "
          "again to start afresh.")
    return None

  def _set_aside(self, step: int, error: Exception) -> pathlib.Path:
    """Renames the damaged checkpoint `step` to damaged-<step> (a new name if that is taken)."""
    folder = self.directory / str(step)
    target = self.directory / f"{DAMAGED_PREFIX}{step}"
    suffix = 1
    while target.exists():
      target, suffix = self.directory / f"{DAMAGED_PREFIX}{step}.{suffix}", suffix + 1
    if jax.process_index() == 0:     # of several processes, the first renames it
      folder.rename(target)
    multihost_utils.sync_global_devices(f"set aside {folder}")
    self._manager.reload()
    logging.warning("%s: damaged, cannot be read (%s); set aside as %s, resuming from the "
                    "newest older checkpoint that reads.", folder, _first_line(error), target.name)
    return target

  def close(self) -> None:
    # orbax 0.12's close() does not wait for the temporary-folder cleanup its constructor starts
    # in a thread; a process that ends first prints "cannot schedule new futures after
    # interpreter shutdown" tracebacks. A save waits for it; without a save, wait here.
    getattr(self._manager, "_maybe_await_cleanup_tmp_directory", lambda: None)()
    self._manager.close()


def read_description(checkpoints_dir: pathlib.Path, step: int) -> dict[str, Any]:
  path = checkpoints_dir / str(step) / "description" / "metadata"
  try:
    return json.loads(path.read_text())
  except FileNotFoundError:
    raise CheckpointError(f"{path}: missing; this is not a wsrl-mjx checkpoint") from None
  except json.JSONDecodeError as error:
    raise CheckpointError(f"{path}: not valid JSON ({error})") from None


def resolve(path: str | pathlib.Path) -> tuple[pathlib.Path, int]:
  """A run directory, its `checkpoints/` folder or one `checkpoints/<step>/` folder ->
  (checkpoints folder, step), choosing the latest step where none is named. Raises
  CheckpointError for a path that is missing, a file, or holds no finished checkpoint."""
  path = pathlib.Path(path).expanduser().absolute()
  if not path.exists():
    raise CheckpointError(f"{path}: no such checkpoint directory")
  if not path.is_dir():
    raise CheckpointError(f"{path}: is a file, not a run or checkpoint directory")
  if (path / "description").is_dir() and path.name.isdigit():
    return path.parent, int(path.name)
  directory = path / CHECKPOINT_SUBDIR if (path / CHECKPOINT_SUBDIR).is_dir() else path
  with contextlib.closing(_manager(directory, read_only=True)) as manager:
    step = manager.latest_step()
  if step is None:
    raise CheckpointError(f"{path}: holds no finished checkpoint")
  return directory, step


def load_agent(path: str | pathlib.Path, expected: dict[str, Any], abstract_params_for, *,
               meaning: dict[str, Any] | None = None, allow_transfer: bool = False):
  """Restores the `agent` item of a checkpoint after checking it fits `expected`.

  `expected` holds the AGENT_SHAPE_FIELDS of the agent being built. `abstract_params_for(n)` gives
  the abstract `AgentParams` of `n` seeds. `meaning`, where given, is checked by `check_meaning`
  (with `allow_transfer`) before anything is restored. Returns (params with the checkpoint's seed
  axis, description). Raises CheckpointError naming the file and field of a mismatch, or the
  folder of a damaged item.
  """
  directory, step = resolve(path)
  description = read_description(directory, step)
  description_file = directory / str(step) / "description" / "metadata"
  agent = description.get("agent", {})
  for field in AGENT_SHAPE_FIELDS:
    have, want = agent.get(field), expected[field]
    if isinstance(want, (list, tuple)):
      have, want = list(have or []), list(want)
    if have != want:
      here, there = expected.get("env_name", "?"), description.get("env_name")
      where = (f" (both are {here}: the run's config asks for other sizes than the "
               "pretraining's)" if there == here else
               f" (env {here}); the checkpoint was made for {there or 'another configuration'}")
      raise CheckpointError(
          f"{description_file}: agent.{field} is {have!r} but this run needs {want!r}{where}.")
  if meaning is not None:
    check_meaning(description, description_file, meaning, allow_transfer)
  num_seeds = int(description.get("num_seeds", 0))
  if num_seeds < 1:
    raise CheckpointError(f"{description_file}: num_seeds is missing or not positive")
  agent = _restore_item(directory, step, "agent", abstract_params_for(num_seeds),
                        f"the agent described in {description_file}")
  return agent, description


def _first_line(error: BaseException, limit: int = 400) -> str:
  """The error's first line without TensorStore's appendices (the JSON spec of the file that
  failed, the source locations: kilobytes on one line), cut at `limit` characters."""
  line = (str(error).strip().splitlines() or [type(error).__name__])[0]
  line = re.split(r" \[(?:tensorstore_spec|source locations=)", line, maxsplit=1)[0]
  return line if len(line) <= limit else line[:limit].rstrip() + " ..."


def _damage(error: BaseException) -> BaseException | None:
  """The exception in `error`'s chain (orbax wraps TensorStore's) that says a restore failed on
  the files themselves (cut short, changed, missing), not on a tree that differs from the one
  asked for; None if there is none. TensorStore reports such failures with an absl status code
  (DATA_LOSS, OUT_OF_RANGE, NOT_FOUND, ...: "CODE: message"), and a cut-short JSON file of
  orbax's fails to decode."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, (json.JSONDecodeError, FileNotFoundError, EOFError)) or re.match(
        r"[A-Z][A-Z_]+: ", str(error)):
      return error
    error = error.__cause__ or error.__context__
  return None


def _restore_item(directory: pathlib.Path, step: int, item: str, abstract, what: str):
  """One item of a checkpoint, restored read-only to `abstract`; a CheckpointError naming the
  item's folder and either the damage (a file cut short or changed) or `what` it should have
  held, if it cannot be read as that."""
  folder = directory / str(step) / item
  # Where the caller names no placement, each process gets a whole copy on its first device
  # (orbax would otherwise place it as it was saved, on devices of the run that wrote it).
  local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(
      lambda x: x if getattr(x, "sharding", None) is not None
      else jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=local), abstract)
  try:
    with contextlib.closing(_manager(directory, read_only=True)) as manager:
      restored = manager.restore(step, args=ocp.args.Composite(
          **{item: ocp.args.StandardRestore(abstract)}))
  except Exception as error:   # noqa: BLE001 (orbax and TensorStore raise many kinds)
    damage = _damage(error)
    if damage is not None:
      raise CheckpointError(
          f"{folder}: damaged, cannot be read ({_first_line(damage)}); a file was cut short or "
          "changed (disk full, failed copy?). Use an older step folder of that run, or make the "
          "checkpoint again.") from None
    if not isinstance(error, (ValueError, KeyError)):
      raise
    raise CheckpointError(f"{folder}: cannot be read as {what}: {error}") from None
  if jax.process_count() > 1:
    # As numpy arrays: an array on this process's device cannot be laid out over all processes'
    # devices (jax.device_put refuses it), a host array can.
    return jax.tree.map(np.asarray, restored[item])
  return restored[item]


def check_meaning(description: dict[str, Any], description_file: pathlib.Path,
                  expected: dict[str, Any], allow_transfer: bool = False) -> None:
  """Refuses a pretrained agent learned for another problem than `expected` describes.

  `expected` maps each of MEANING_FIELDS' names (task, reward_scale, reward_bias, discount) to
  the run's value. A difference raises CheckpointError naming the field and both values, unless
  `allow_transfer` (a deliberate transfer experiment), which logs it. Fields the description
  does not record (checkpoints of older versions) are named in a warning, not refused.
  """
  missing, differing = [], []
  for name, block in MEANING_FIELDS:
    field = f"{block}.{name}" if block else name
    have = (description.get(block) or {} if block else description).get(name)
    want = expected[name]
    if have is None:
      missing.append(f"{field} (this run: {want!r})")
    elif (have != want if isinstance(want, str)
          else not np.isclose(float(have), float(want), rtol=1e-9, atol=0.0)):
      differing.append((field, have, want))
  if missing:
    logging.warning("%s records no %s: made by an older wsrl-mjx, so not checked.",
                    description_file, ", ".join(missing))
  for field, have, want in differing:
    message = (f"{description_file}: {field} is {have!r} but this run has {want!r}; the agent "
               f"was pretrained for {description.get('env_name', 'another problem')}")
    if not allow_transfer:
      raise CheckpointError(f"{message}. Set --config.allow_transfer=true to fine-tune it anyway.")
    logging.warning("%s (allowed: config.allow_transfer).", message)


def load_optimizer(path: str | pathlib.Path, abstract_optimizer_for):
  """The `optimizer` item of the checkpoint `load_agent` read from `path`, or None where the
  checkpoint has none (made before format 2, or by IQL). `abstract_optimizer_for(n)` gives the
  abstract Adam states of `n` seeds (`sac.optimizer_states` of an abstract `AgentState`)."""
  directory, step = resolve(path)
  if not (directory / str(step) / "optimizer").is_dir():
    return None
  num_seeds = int(read_description(directory, step).get("num_seeds", 0))
  abstract = abstract_optimizer_for(num_seeds)
  flat = _restore_item(directory, step, "optimizer", flatten_for_saving(abstract),
                       "the Adam states of this agent")
  return unflatten_restored(flat, abstract)


def load_train_state(path: str | pathlib.Path, abstract_for):
  """The `train_state` item of the checkpoint at `path` (a run directory, its checkpoints
  folder or a step folder): everything of every seed the run saved, e.g. a pretraining's whole
  learner, which fine-tuning arms that continue it start from. `abstract_for(n)` gives the
  abstract state of `n` seeds. Returns (state, description); CheckpointError naming the folder
  if it cannot be read as that."""
  directory, step = resolve(path)
  description = read_description(directory, step)
  num_seeds = int(description.get("num_seeds", 0))
  if num_seeds < 1:
    raise CheckpointError(f"{directory / str(step) / 'description' / 'metadata'}: num_seeds is "
                          "missing or not positive")
  abstract = abstract_for(num_seeds)
  flat = _restore_item(directory, step, "train_state", flatten_for_saving(abstract),
                       "the state of this run's learner")
  return unflatten_restored(flat, abstract), description


def seed_sources(num_seeds: int, checkpoint_seeds: int) -> np.ndarray:
  """Which checkpoint seed initialises each run seed: seed i takes i mod checkpoint_seeds."""
  return np.arange(num_seeds) % checkpoint_seeds
