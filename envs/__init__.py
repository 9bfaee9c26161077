"""The task registry: `envs.make(name)` builds an MJX environment from a D4RL dataset name.

A D4RL dataset name (`hopper-medium-v2`) names both a task and the data recorded on it; the
registry resolves either that or the bare task name (`hopper`) to the environment plus the facts
fine-tuning needs about it (`EnvSpec`): episode length, reward transform, score normaliser and the
file name D4RL caches the dataset under. Families register themselves in `_FAMILIES` below.
"""

from __future__ import annotations

import dataclasses
import difflib

import numpy as np

from envs import locomotion
from envs.mjx_env import MjxEnv, State

__all__ = ["EnvSpec", "MjxEnv", "State", "make", "names", "spec"]


@dataclasses.dataclass(frozen=True)
class EnvSpec:
  """What training needs to know about a task besides its dynamics."""
  name: str                 # the name it was asked for, e.g. "hopper-medium-v2"
  task: str                 # e.g. "hopper"
  family: str               # "locomotion", "antmaze", "adroit", ...
  observation_size: int
  action_size: int
  episode_length: int       # the time limit; reaching it is a timeout, not a terminal
  reward_scale: float       # the learner sees reward * scale + bias
  reward_bias: float
  score_min: float          # D4RL reference returns: score = 100 (R - min) / (max - min)
  score_max: float
  dataset_file: str | None  # D4RL's cache file name; None for a bare task name

  def normalized_score(self, episode_return):
    """D4RL's normalised score of an undiscounted, untransformed episode return."""
    return 100.0 * (np.asarray(episode_return) - self.score_min) / (self.score_max - self.score_min)


@dataclasses.dataclass(frozen=True)
class _Family:
  tasks: dict               # task -> (observation_size, action_size, score_min, score_max)
  datasets: tuple           # D4RL dataset kinds recorded on every task of the family
  versions: tuple
  episode_length: int
  reward_scale: float
  reward_bias: float
  make: callable            # (task, **kwargs) -> MjxEnv
  dataset_file: callable    # (task, kind, version) -> D4RL cache file name


_FAMILIES = {
    "locomotion": _Family(
        tasks={
            "halfcheetah": (17, 6, -280.178953, 12135.0),
            "hopper": (11, 3, -20.272305, 3234.3),
            "walker2d": (17, 6, 1.629008, 4592.3),
        },
        datasets=("random", "medium", "expert", "medium-replay", "medium-expert", "full-replay"),
        versions=("v2",),
        episode_length=1000,
        reward_scale=1.0,
        reward_bias=0.0,
        make=locomotion.Locomotion,
        dataset_file=lambda task, kind, version: f"{task}_{kind.replace('-', '_')}-{version}.hdf5",
    ),
}


def _catalogue() -> dict[str, tuple[str, str, str | None]]:
  """Every accepted name -> (family, task, dataset file)."""
  names = {}
  for family_name, family in _FAMILIES.items():
    for task in family.tasks:
      names[task] = (family_name, task, None)
      for kind in family.datasets:
        for version in family.versions:
          names[f"{task}-{kind}-{version}"] = (
              family_name, task, family.dataset_file(task, kind, version))
  return names


def names() -> list[str]:
  """All names `make` accepts."""
  return sorted(_catalogue())


def spec(name: str) -> EnvSpec:
  """The facts about a task, without building its model."""
  catalogue = _catalogue()
  if name not in catalogue:
    close = difflib.get_close_matches(name, catalogue, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(
        f"Unknown environment {name!r}.{hint} Known tasks: {sorted(t for _, t, f in catalogue.values() if f is None)}; "
        "D4RL dataset names such as 'hopper-medium-v2' are accepted too (envs.names() lists all).")
  family_name, task, dataset_file = catalogue[name]
  family = _FAMILIES[family_name]
  observation_size, action_size, score_min, score_max = family.tasks[task]
  return EnvSpec(name=name, task=task, family=family_name, observation_size=observation_size,
                 action_size=action_size, episode_length=family.episode_length,
                 reward_scale=family.reward_scale, reward_bias=family.reward_bias,
                 score_min=score_min, score_max=score_max, dataset_file=dataset_file)


def make(name: str, **env_kwargs) -> tuple[MjxEnv, EnvSpec]:
  """Builds the environment a task or D4RL dataset name refers to, and its facts.

  `env_kwargs` go to the environment (e.g. `solver_iterations`).
  """
  env_spec = spec(name)
  env = _FAMILIES[env_spec.family].make(env_spec.task, **env_kwargs)
  return env, env_spec
