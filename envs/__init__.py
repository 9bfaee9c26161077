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

from envs import adroit, antmaze, episodes, kitchen, locomotion, point_mass
from envs.mjx_env import MjxEnv, State

__all__ = ["EnvSpec", "MjxEnv", "State", "episodes", "make", "names", "spec"]


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
  # Adroit binary: WSRL reports the success rate x 100; kitchen: the fraction of its 4 elements
  # done at the episode's end (the env's `success` metric), x 100.
  score_is_success_rate: bool = False
  # Sparse tasks: every reward the env gives, failure then success (AntMaze (0, 1), Adroit
  # binary (-1, 0)); a dataset with other rewards was recorded for another task. None: dense.
  reward_values: tuple[float, float] | None = None

  def normalized_score(self, episode_return, success=None):
    """The score WSRL reports for an episode: D4RL's normalised score of the undiscounted,
    untransformed return, or for success-scored tasks 100 x (the goal was reached)."""
    if self.score_is_success_rate:
      if success is None:
        raise ValueError(f"{self.name} is scored by success rate: pass the episodes' successes")
      return 100.0 * np.asarray(success, np.float64)
    return 100.0 * (np.asarray(episode_return) - self.score_min) / (self.score_max - self.score_min)


@dataclasses.dataclass(frozen=True)
class _Family:
  tasks: dict               # task -> (observation_size, action_size, score_min, score_max)
  catalogue: dict           # D4RL dataset name -> (task, D4RL cache file name)
  episode_length: dict      # task -> time limit
  reward_scale: float
  reward_bias: float
  make: callable            # (task, **kwargs) -> MjxEnv
  score_is_success_rate: bool = False
  reward_values: tuple[float, float] | None = None   # sparse: (failure, success) rewards


def _locomotion_catalogue(tasks, kinds=("random", "medium", "expert", "medium-replay",
                                        "medium-expert", "full-replay")):
  return {f"{task}-{kind}-v2": (task, f"{task}_{kind.replace('-', '_')}-v2.hdf5")
          for task in tasks for kind in kinds}


def _antmaze_catalogue():
  """D4RL's v2 AntMaze datasets and the names of their downloads (D4RL's cache file names)."""
  files = {("umaze", ""): ("u-maze", False, False), ("umaze", "-diverse"): ("u-maze", True, True),
           ("medium", "-play"): ("big-maze", True, False),
           ("medium", "-diverse"): ("big-maze", True, True),
           ("large", "-play"): ("hardest-maze", True, False),
           ("large", "-diverse"): ("hardest-maze", True, True)}
  return {f"antmaze-{maze}{kind}-v2": (
              f"antmaze-{maze}",
              f"Ant_maze_{layout}_noisy_multistart_{start}_multigoal_{goal}_sparse_fixed.hdf5")
          for (maze, kind), (layout, start, goal) in files.items()}


_LOCOMOTION_TASKS = {
    "halfcheetah": (17, 6, -280.178953, 12135.0),
    "hopper": (11, 3, -20.272305, 3234.3),
    "walker2d": (17, 6, 1.629008, 4592.3),
}
_ADROIT_TASKS = {task: (t.observation_size, t.action_size, t.score_min, t.score_max)
                 for task, t in adroit.TASKS.items()}
_ANTMAZE_TASKS = {f"antmaze-{maze}": (29, 8, 0.0, 1.0) for maze in antmaze.MAZES}
# D4RL's reference scores 0 and 4 (elements done; d4rl/kitchen/__init__.py).
_KITCHEN_TASKS = {task: (kitchen.OBSERVATION_SIZE, kitchen.ACTION_SIZE, 0.0, 4.0)
                  for task in kitchen.TASKS}


def _kitchen_catalogue():
  """D4RL's `kitchen-<kind>-v0` (and the same task's `-v1` name) with their downloads' file names,
  and Minari's re-release `D4RL/kitchen/<kind>-v2`, which has no D4RL file."""
  names = {}
  for task, facts in kitchen.TASKS.items():
    kind = task.removeprefix("kitchen-")
    names[f"{task}-v0"] = names[f"{task}-v1"] = (task, facts.dataset_file)
    names[f"D4RL/kitchen/{kind}-v2"] = (task, None)
  return names

_FAMILIES = {
    "locomotion": _Family(
        tasks=_LOCOMOTION_TASKS,
        catalogue=_locomotion_catalogue(_LOCOMOTION_TASKS),
        episode_length={task: 1000 for task in _LOCOMOTION_TASKS},
        reward_scale=1.0,
        reward_bias=0.0,
        make=locomotion.Locomotion,
    ),
    # Sparse 0/1 reward; the normalised score is the success rate x 100.
    "antmaze": _Family(
        tasks=_ANTMAZE_TASKS,
        catalogue=_antmaze_catalogue(),
        episode_length={f"antmaze-{maze}": n for maze, n in antmaze.EPISODE_LENGTHS.items()},
        reward_scale=10.0,
        reward_bias=-5.0,
        make=lambda task, **kwargs: antmaze.AntMaze(task.removeprefix("antmaze-"), **kwargs),
        reward_values=(0.0, 1.0),     # D4RL's antmaze-*-v2: 1 within 0.5 m of the goal, else 0
    ),
    # WSRL's `<task>-binary-v0`: reward goal_achieved - 1, scored by success rate. Its datasets
    # are two `.npy` files per task (wsrl_mjx.data.adroit.dataset_paths), not a D4RL download.
    "adroit": _Family(
        tasks=_ADROIT_TASKS,
        catalogue={f"{task}-binary-v0": (task, None) for task in adroit.TASKS},
        episode_length={task: t.episode_length for task, t in adroit.TASKS.items()},
        reward_scale=10.0,
        reward_bias=5.0,
        make=adroit.Adroit,
        score_is_success_rate=True,
        reward_values=(-1.0, 0.0),    # goal_achieved - 1 (envs/adroit.py)
    ),
    # WSRL's fork of D4RL: reward = elements done so far (0..4), the episode ends at 4, scored
    # by the fraction done at the end (envs/kitchen.py).
    "kitchen": _Family(
        tasks=_KITCHEN_TASKS,
        catalogue=_kitchen_catalogue(),
        episode_length={task: kitchen.EPISODE_LENGTH for task in kitchen.TASKS},
        reward_scale=1.0,
        reward_bias=-4.0,
        make=kitchen.Kitchen,
        score_is_success_rate=True,
    ),
    # Not from the paper: a contact-free task that compiles in seconds (envs/point_mass.py), for
    # smoke runs and the training loop's tests. No D4RL dataset: make one with launch.collect.
    "point-mass": _Family(
        tasks={"point-mass": (point_mass.OBSERVATION_SIZE, point_mass.ACTION_SIZE, 0.0,
                              float(point_mass.EPISODE_LENGTH))},
        catalogue={},
        episode_length={"point-mass": point_mass.EPISODE_LENGTH},
        reward_scale=1.0,
        reward_bias=0.0,
        make=point_mass.PointMass,
    ),
}


def _catalogue() -> dict[str, tuple[str, str, str | None]]:
  """Every accepted name -> (family, task, dataset file)."""
  names = {}
  for family_name, family in _FAMILIES.items():
    for task in family.tasks:
      names[task] = (family_name, task, None)
    for name, (task, dataset_file) in family.catalogue.items():
      names[name] = (family_name, task, dataset_file)
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
        f"Unknown environment {name!r}.{hint} Known tasks: "
        f"{', '.join(sorted({task for _, task, _ in catalogue.values()}))}; D4RL dataset names "
        "such as 'hopper-medium-v2' are accepted too (envs.names() lists all).")
  family_name, task, dataset_file = catalogue[name]
  family = _FAMILIES[family_name]
  observation_size, action_size, score_min, score_max = family.tasks[task]
  return EnvSpec(name=name, task=task, family=family_name, observation_size=observation_size,
                 action_size=action_size, episode_length=family.episode_length[task],
                 reward_scale=family.reward_scale, reward_bias=family.reward_bias,
                 score_min=score_min, score_max=score_max, dataset_file=dataset_file,
                 score_is_success_rate=family.score_is_success_rate,
                 reward_values=family.reward_values)


def make(name: str, **env_kwargs) -> tuple[MjxEnv, EnvSpec]:
  """Builds the environment a task or D4RL dataset name refers to, and its facts.

  `env_kwargs` go to the environment (e.g. `solver_iterations`).
  """
  env_spec = spec(name)
  env = _FAMILIES[env_spec.family].make(env_spec.task, **env_kwargs)
  return env, env_spec
