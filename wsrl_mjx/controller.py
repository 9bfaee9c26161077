"""The AntMaze data controller's networks and files (trained by launch/train_ant_controller.py).

A Brax PPO policy (observation normaliser + tanh-Gaussian MLP) over the 29 numbers of
`navigation.controller_observation`. Saved as Brax's own parameter file next to a small JSON,
written atomically (a temporary folder renamed into place).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile

import jax
import jax.numpy as jnp

from wsrl_mjx import navigation

POLICY_HIDDEN_SIZES = (128, 128, 128)
VALUE_HIDDEN_SIZES = (256, 256, 256)
ACTION_SIZE = 8


def patch_brax_for_this_jax() -> None:
  """brax 0.14.2's trainers call `jax.device_put_replicated`, which jax 0.10 removed; give them
  the documented equivalent (a copy per device along a new leading axis)."""
  try:
    jax.device_put_replicated  # noqa: B018
  except AttributeError:
    def device_put_replicated(tree, devices):
      return jax.tree.map(lambda x: jax.device_put(jnp.stack([jnp.asarray(x)] * len(devices))),
                          tree)
    jax.device_put_replicated = device_put_replicated


def network_factory(observation_size, action_size, preprocess_observations_fn, **kwargs):
  from brax.training.agents.ppo import networks as ppo_networks  # pylint: disable=import-outside-toplevel
  del kwargs
  return ppo_networks.make_ppo_networks(
      observation_size, action_size, preprocess_observations_fn=preprocess_observations_fn,
      policy_hidden_layer_sizes=POLICY_HIDDEN_SIZES, value_hidden_layer_sizes=VALUE_HIDDEN_SIZES)


def save(directory: str | os.PathLike, params, description: dict) -> pathlib.Path:
  from brax.io import model  # pylint: disable=import-outside-toplevel
  directory = pathlib.Path(directory)
  directory.parent.mkdir(parents=True, exist_ok=True)
  staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
  model.save_params(str(staging / "params"), jax.device_get(params))
  (staging / "controller.json").write_text(json.dumps(
      {"observation_size": navigation.CONTROLLER_OBSERVATION_SIZE, "action_size": ACTION_SIZE,
       "policy_hidden_sizes": POLICY_HIDDEN_SIZES, "value_hidden_sizes": VALUE_HIDDEN_SIZES,
       **description}, indent=1))
  # The old controller moves aside before the new one moves in, and is deleted only after: a
  # crash at any point leaves a complete controller at `directory` or beside it.
  previous = None
  if directory.exists():
    previous = pathlib.Path(tempfile.mkdtemp(prefix=f".{directory.name}.old.",
                                             dir=directory.parent))
    os.replace(directory, previous / directory.name)
  try:
    os.replace(staging, directory)
  except OSError:
    if previous is not None:
      os.replace(previous / directory.name, directory)
      shutil.rmtree(previous)
    shutil.rmtree(staging, ignore_errors=True)
    raise
  if previous is not None:
    shutil.rmtree(previous)
  return directory


def load(directory: str | os.PathLike, deterministic: bool = True):
  """(controller, params): controller(params, controller observation, key) -> action."""
  from brax.io import model  # pylint: disable=import-outside-toplevel
  from brax.training.acme import running_statistics  # pylint: disable=import-outside-toplevel
  from brax.training.agents.ppo import networks as ppo_networks  # pylint: disable=import-outside-toplevel
  directory = pathlib.Path(directory)
  for name in ("params", "controller.json"):
    if not (directory / name).is_file():
      raise FileNotFoundError(f"{directory}: no {name}; train one with "
                              "python -m launch.train_ant_controller --output=DIR")
  params = model.load_params(str(directory / "params"))
  networks = network_factory(navigation.CONTROLLER_OBSERVATION_SIZE, ACTION_SIZE,
                             running_statistics.normalize)
  make_policy = ppo_networks.make_inference_fn(networks)

  def controller(params, observation, key):
    action, _ = make_policy(params, deterministic=deterministic)(observation, key)
    return action

  return controller, params
