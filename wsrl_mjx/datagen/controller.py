"""Brax PPO policies that make data: their networks and files.

Two are trained here: the AntMaze data controller (launch/train_ant_controller.py), over the 29
numbers of `navigation.controller_observation`, and the Adroit demonstrators
(launch/train_adroit_demonstrator.py), over the task's own observation. Each is a Brax PPO policy
(observation normaliser + tanh-Gaussian MLP) saved as Brax's own parameter file next to a small
JSON that records its sizes, written atomically (a temporary folder renamed into place).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
import time

import jax
from absl import logging

from wsrl_mjx.datagen import navigation

POLICY_HIDDEN_SIZES = (128, 128, 128)
VALUE_HIDDEN_SIZES = (256, 256, 256)
ACTION_SIZE = 8


def make_network_factory(policy_hidden_sizes=POLICY_HIDDEN_SIZES,
                         value_hidden_sizes=VALUE_HIDDEN_SIZES):
  """Brax PPO's `network_factory` with these hidden sizes."""
  def factory(observation_size, action_size, preprocess_observations_fn, **kwargs):
    from brax.training.agents.ppo import networks as ppo_networks  # pylint: disable=import-outside-toplevel
    del kwargs
    return ppo_networks.make_ppo_networks(
        observation_size, action_size, preprocess_observations_fn=preprocess_observations_fn,
        policy_hidden_layer_sizes=tuple(policy_hidden_sizes),
        value_hidden_layer_sizes=tuple(value_hidden_sizes))
  return factory


network_factory = make_network_factory()


def evaluation_log(fields: dict[str, str]):
  """(history, progress_fn) for Brax PPO's `progress_fn`: each evaluation appends its step,
  seconds since this call and the named metrics (`fields`: name in the history -> Brax metric)
  to `history`, which the trainers save with the policy, and logs them."""
  history, started = [], time.time()

  def progress(step, metrics):
    row = {"step": int(step), "seconds": time.time() - started,
           **{name: float(metrics.get(key, float("nan"))) for name, key in fields.items()}}
    history.append(row)
    logging.info("step %d: %s (%.0f s)", row["step"],
                 ", ".join(f"{name} {row[name]:.2f}" for name in fields), row["seconds"])

  return history, progress


def save_at_evaluations(save_policy):
  """Brax PPO's `policy_params_fn` calling `save_policy(step, params)` at every evaluation after
  the first, so a run stopped early leaves its latest policy."""
  def policy_params_fn(step, make_policy, params):
    del make_policy
    if step:
      save_policy(int(step), params)
  return policy_params_fn


def save(directory: str | os.PathLike, params, description: dict,
         observation_size: int = navigation.CONTROLLER_OBSERVATION_SIZE,
         action_size: int = ACTION_SIZE, policy_hidden_sizes=POLICY_HIDDEN_SIZES,
         value_hidden_sizes=VALUE_HIDDEN_SIZES) -> pathlib.Path:
  """Writes the policy to `directory` (the defaults are the AntMaze controller's sizes)."""
  from brax.io import model  # pylint: disable=import-outside-toplevel
  directory = pathlib.Path(directory)
  directory.parent.mkdir(parents=True, exist_ok=True)
  staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
  model.save_params(str(staging / "params"), jax.device_get(params))
  (staging / "controller.json").write_text(json.dumps(
      {"observation_size": observation_size, "action_size": action_size,
       "policy_hidden_sizes": list(policy_hidden_sizes),
       "value_hidden_sizes": list(value_hidden_sizes), **description}, indent=1))
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


def read_description(directory: str | os.PathLike) -> dict:
  """`controller.json` of a saved policy, with a clear error for a folder that holds none."""
  directory = pathlib.Path(directory)
  for name in ("params", "controller.json"):
    if not (directory / name).is_file():
      raise FileNotFoundError(f"{directory}: no {name}; train one with "
                              "python -m launch.train_ant_controller --output=DIR or "
                              "python -m launch.train_adroit_demonstrator --output=DIR")
  description = json.loads((directory / "controller.json").read_text())
  for field in ("observation_size", "action_size", "policy_hidden_sizes", "value_hidden_sizes"):
    if field not in description:
      raise ValueError(f"{directory / 'controller.json'}: no field {field!r}")
  return description


def load(directory: str | os.PathLike, deterministic: bool = True):
  """(policy, params): policy(params, observation, key) -> action, with the sizes saved."""
  from brax.io import model  # pylint: disable=import-outside-toplevel
  from brax.training.acme import running_statistics  # pylint: disable=import-outside-toplevel
  from brax.training.agents.ppo import networks as ppo_networks  # pylint: disable=import-outside-toplevel
  description = read_description(directory)
  params = model.load_params(str(pathlib.Path(directory) / "params"))
  factory = make_network_factory(description["policy_hidden_sizes"],
                                 description["value_hidden_sizes"])
  networks = factory(description["observation_size"], description["action_size"],
                     running_statistics.normalize)
  make_policy = ppo_networks.make_inference_fn(networks)

  def controller(params, observation, key):
    action, _ = make_policy(params, deterministic=deterministic)(observation, key)
    return action

  return controller, params
