"""How D4RL made its AntMaze data: a waypoint planner over the maze grid steering a goal-reaching
ant controller towards the goal, with noisy actions.

The planner is a breadth-first search over free cells, done once per maze in numpy into a table
(from cell, to cell) -> next cell, so that picking a waypoint inside a jitted rollout is a
lookup. The waypoint is the next cell's centre plus U(0, 1) per axis (D4RL's waypoint noise),
or the goal itself once the ant is in the goal's cell. The controller sees what D4RL's did: the
ant's qpos[2:15] and qvel[:14] and the waypoint's direction scaled to length 10.

One difference from D4RL's script: D4RL mapped a position to a cell with int(1 + y / 4), which
puts the cell boundary at the cell's centre; here a cell is the square around its centre.
"""

from __future__ import annotations

import collections
from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from envs import antmaze

CONTROLLER_OBSERVATION_SIZE = 29     # qpos[2:15] + qvel[:14] + waypoint direction (2)
DIRECTION_LENGTH = 10.0              # D4RL scaled the relative goal to this length
ACTION_NOISE = 0.2                   # D4RL's "noisy" datasets: N(0, 0.2^2) added, clipped


def next_cells(maze: antmaze.Maze) -> np.ndarray:
  """[rows, cols, rows, cols, 2]: the first cell on a shortest path from a cell to a target
  (4-connected free cells; the cell itself where it is the target or cannot reach it)."""
  n_rows, n_cols = maze.shape
  free = set(maze.free_cells)
  table = np.zeros((n_rows, n_cols, n_rows, n_cols, 2), np.int32)
  table[..., 0] = np.arange(n_rows)[:, None, None, None]
  table[..., 1] = np.arange(n_cols)[None, :, None, None]
  for target in free:
    # Search outwards from the target: a cell's next step is the neighbour it was reached from.
    reached_from = {target: target}
    queue = collections.deque([target])
    while queue:
      cell = queue.popleft()
      for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        neighbour = (cell[0] + dr, cell[1] + dc)
        if neighbour in free and neighbour not in reached_from:
          reached_from[neighbour] = cell
          queue.append(neighbour)
    for cell, toward in reached_from.items():
      table[cell[0], cell[1], target[0], target[1]] = toward
  return table


@flax.struct.dataclass
class Planner:
  next_cell: jax.Array                               # next_cells(maze)
  start_cell: tuple[int, int] = flax.struct.field(pytree_node=False)
  shape: tuple[int, int] = flax.struct.field(pytree_node=False)

  @classmethod
  def for_maze(cls, maze: antmaze.Maze) -> "Planner":
    return cls(next_cell=jnp.asarray(next_cells(maze)), start_cell=maze.start_cell,
               shape=maze.shape)

  def cell_of(self, xy: jax.Array) -> jax.Array:
    col = jnp.floor(xy[0] / antmaze.CELL + 0.5).astype(jnp.int32) + self.start_cell[1]
    row = jnp.floor(xy[1] / antmaze.CELL + 0.5).astype(jnp.int32) + self.start_cell[0]
    return jnp.clip(jnp.stack([row, col]), 0, jnp.array(self.shape) - 1)

  def center_of(self, cell: jax.Array) -> jax.Array:
    return antmaze.CELL * jnp.stack([cell[1] - self.start_cell[1],
                                     cell[0] - self.start_cell[0]]).astype(jnp.float32)

  def waypoint(self, xy: jax.Array, goal: jax.Array, key: jax.Array) -> jax.Array:
    here, target = self.cell_of(xy), self.cell_of(goal)
    step = self.next_cell[here[0], here[1], target[0], target[1]]
    noisy_center = (self.center_of(step)
                    + jax.random.uniform(key, (2,), maxval=0.25 * antmaze.CELL))
    return jnp.where(jnp.all(here == target), goal, noisy_center)


def controller_observation(observation: jax.Array, waypoint: jax.Array) -> jax.Array:
  """What the goal-reaching controller sees, from a 29-number AntMaze observation."""
  direction = waypoint - observation[:2]
  direction = DIRECTION_LENGTH * direction / (jnp.linalg.norm(direction) + 1e-6)
  return jnp.concatenate([observation[2:29], direction])


# (controller params, controller observation [29], key) -> action [8]
Controller = Callable[[object, jax.Array, jax.Array], jax.Array]


def navigation_policy(planner: Planner, controller: Controller, action_noise: float = ACTION_NOISE):
  """A collector policy for AntMaze's data-collection env (observation = 29 + goal direction)."""

  def policy(controller_params, observation, key):
    waypoint_key, controller_key, noise_key = jax.random.split(key, 3)
    xy, goal = observation[:2], observation[:2] + observation[29:31]
    waypoint = planner.waypoint(xy, goal, waypoint_key)
    action = controller(controller_params, controller_observation(observation, waypoint),
                        controller_key)
    action = action + action_noise * jax.random.normal(noise_key, action.shape)
    return jnp.clip(action, -1.0, 1.0)

  return policy
