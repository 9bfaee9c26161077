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
mid-write leaves the previous checkpoint as the latest readable one.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from wsrl_mjx.errors import UserError

FORMAT_VERSION = 2     # 2: the `optimizer` item
CHECKPOINT_SUBDIR = "checkpoints"
_ITEMS = ("train_state", "agent", "optimizer", "description")

# Description fields that fix the agent's array shapes; a pretrained agent must match them.
AGENT_SHAPE_FIELDS = ("policy", "observation_size", "action_size", "actor_hidden_sizes",
                      "critic_hidden_sizes", "num_critics", "state_dependent_std", "layer_norm")


class CheckpointError(UserError):
  """A checkpoint that cannot be used for what was asked, with the reason."""


def _manager(directory: pathlib.Path, max_to_keep: int | None = None,
             read_only: bool = False) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
      enable_async_checkpointing=False, cleanup_tmp_directories=not read_only)
  return ocp.CheckpointManager(directory, options=options, item_names=_ITEMS)


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
  (checkpoints folder, step), choosing the latest step where none is named."""
  path = pathlib.Path(path).expanduser().absolute()
  if not path.exists():
    raise CheckpointError(f"{path}: no such checkpoint directory")
  if (path / "description").is_dir() and path.name.isdigit():
    return path.parent, int(path.name)
  directory = path / CHECKPOINT_SUBDIR if (path / CHECKPOINT_SUBDIR).is_dir() else path
  with contextlib.closing(_manager(directory, read_only=True)) as manager:
    step = manager.latest_step()
  if step is None:
    raise CheckpointError(f"{path}: holds no finished checkpoint")
  return directory, step


def load_agent(path: str | pathlib.Path, expected: dict[str, Any], abstract_params_for):
  """Restores the `agent` item of a checkpoint after checking it fits `expected`.

  `expected` holds the AGENT_SHAPE_FIELDS of the agent being built. `abstract_params_for(n)` gives
  the abstract `AgentParams` of `n` seeds. Returns (params with the checkpoint's seed axis,
  description).
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
      raise CheckpointError(
          f"{description_file}: agent.{field} is {have!r} but this run needs {want!r} "
          f"(env {expected.get('env_name', '?')}); the checkpoint was made for "
          f"{description.get('env_name', 'another configuration')}.")
  num_seeds = int(description.get("num_seeds", 0))
  if num_seeds < 1:
    raise CheckpointError(f"{description_file}: num_seeds is missing or not positive")
  agent = _restore_item(directory, step, "agent", abstract_params_for(num_seeds),
                        f"the agent described in {description_file}")
  return agent, description


def _restore_item(directory: pathlib.Path, step: int, item: str, abstract, what: str):
  """One item of a checkpoint, restored read-only to `abstract`; a CheckpointError naming the
  item's folder and `what` it should have held if it cannot be read as that."""
  try:
    with contextlib.closing(_manager(directory, read_only=True)) as manager:
      restored = manager.restore(step, args=ocp.args.Composite(
          **{item: ocp.args.StandardRestore(abstract)}))
  except (ValueError, KeyError, FileNotFoundError) as error:
    raise CheckpointError(f"{directory / str(step) / item}: cannot be read as {what}: "
                          f"{error}") from None
  return restored[item]


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


def seed_sources(num_seeds: int, checkpoint_seeds: int) -> np.ndarray:
  """Which checkpoint seed initialises each run seed: seed i takes i mod checkpoint_seeds."""
  return np.arange(num_seeds) % checkpoint_seeds
