"""Franka Kitchen data: D4RL's kitchen files and Minari's `D4RL/kitchen/*` datasets, as the
WSRL reference trains on them.

- D4RL's kitchen files (`scripts/generation/generate_kitchen_datasets.py:104-140` in D4RL) have
  `observations` (60, envs/kitchen.py's layout), `actions`, `rewards` (the number of the task's
  elements within 0.3 of their goals in that step's observation), `terminals` (1 at each
  demonstration's last step) and an integer `infos` array, but no `timeouts`. The reference
  (`wsrl/envs/d4rl_dataset.py:192-231`) ends an episode at a terminal, at every 280th step
  (`episode_step == max_episode_steps - 1`), and marks as terminal every step with reward 4 ("kitchen
  envs don't set the done signal correctly"); `timeouts_every` and `prepare` do the same.
- Minari's kitchen (Gymnasium-Robotics' `FrankaKitchen-v1`) records dict observations whose
  `observation` (59) is robot qpos (9), robot qvel (9), object qpos (21), object qvel (20)
  (`kitchen_env.py`'s table there); `to_d4rl_observations` keeps the positions and appends the
  task's goal, D4RL's 60. Its rewards count the elements completed in that step only
  (Gymnasium-Robotics' `KitchenEnv.compute_reward`, with completed tasks removed), so `prepare` rebuilds them as the kitchen env's reward
  (elements done so far in the episode, envs/kitchen.py) from the observations.
"""

from __future__ import annotations

import dataclasses
import logging

import jax.numpy as jnp
import numpy as np

from envs import kitchen as kitchen_env
from wsrl_mjx.data.transitions import Trajectories
from wsrl_mjx.data.validation import DatasetError

MINARI_OBSERVATION_SIZE = 59
MINARI_OBSERVATION_KEYS = ("observation",)
_ROBOT_POSITIONS = slice(0, 9)
_OBJECT_POSITIONS = slice(18, 39)
ALL_DONE_REWARD = 4.0


def timeouts_every(terminals: np.ndarray, episode_length: int) -> np.ndarray:
  """bool [N]: the reference's time limit for a file without `timeouts`: a step ends its episode
  when it is the `episode_length`-th since the last terminal or timeout (or the file's start),
  and is not itself terminal."""
  terminals = np.asarray(terminals, bool)
  timeouts = np.zeros(len(terminals), bool)
  step = 0
  for i, terminal in enumerate(terminals):
    step += 1
    if terminal:
      step = 0
    elif step == episode_length:
      timeouts[i] = True
      step = 0
  return timeouts


def to_d4rl_observations(observations: np.ndarray, task: str) -> np.ndarray:
  """[N, 59] Gymnasium-Robotics kitchen observations -> [N, 60] D4RL's (positions, then goal)."""
  observations = np.asarray(observations)
  goal = np.broadcast_to(kitchen_env.task_goal(task), (len(observations), 30))
  return np.concatenate([observations[:, _ROBOT_POSITIONS], observations[:, _OBJECT_POSITIONS],
                         goal], axis=1).astype(np.float32)


def episode_rewards(next_observations: np.ndarray, episode_ends: np.ndarray,
                    task: str) -> np.ndarray:
  """float32 [N]: the kitchen env's reward of each step, the number of the task's elements done
  at any step of its episode so far (each counted once), from the observations it led to."""
  done_now = np.asarray(kitchen_env.elements_done(jnp.asarray(next_observations), task))
  rewards = np.zeros(len(done_now), np.float32)
  completed = np.zeros(done_now.shape[1], bool)
  for i, done in enumerate(done_now):
    completed |= done
    rewards[i] = completed.sum()
    if episode_ends[i]:
      completed[:] = False
  return rewards


def prepare(trajectories: Trajectories, env_spec) -> Trajectories:
  """A kitchen file's steps as the reference trains on them (see the module docstring): Minari's
  observations in D4RL's layout with the env's rewards rebuilt, and every step with reward 4
  terminal. Raises DatasetError for rewards that are not element counts 0..4 (a file saved with
  the reward transform applied, or of another task)."""
  observations = trajectories.observations
  if observations.ndim == 2 and observations.shape[1] == MINARI_OBSERVATION_SIZE:
    if trajectories.next_observations is None:
      raise DatasetError(f"{trajectories.source}: 59-column kitchen observations without "
                         "next observations; expected a Minari dataset")
    next_observations = to_d4rl_observations(trajectories.next_observations, env_spec.task)
    ends = np.asarray(trajectories.terminals, bool) | np.asarray(trajectories.timeouts, bool)
    rewards = episode_rewards(next_observations, ends, env_spec.task)
    logging.info("%s: Gymnasium-Robotics kitchen observations mapped to D4RL's 60 and rewards "
                 "rebuilt as %s's (elements done so far).", trajectories.source, env_spec.name)
    trajectories = dataclasses.replace(
        trajectories, observations=to_d4rl_observations(observations, env_spec.task),
        next_observations=next_observations, rewards=rewards)
  rewards = np.asarray(trajectories.rewards)
  bad = ~np.isin(rewards, np.arange(5))
  if bad.any():
    row = int(np.flatnonzero(bad)[0])
    raise DatasetError(
        f"{trajectories.source}: field 'rewards' has {int(bad.sum())} values that are not "
        f"{env_spec.name}'s element counts 0..4 (the first, {rewards[row]:.6g}, at row {row}); "
        "was the reward transform applied before saving?")
  terminals = np.asarray(trajectories.terminals, bool) | (rewards == ALL_DONE_REWARD)
  return dataclasses.replace(trajectories, terminals=terminals)
