"""The goal-reaching ant that AntMaze's data controller is trained on (not a D4RL task).

D4RL's AntMaze data came from a controller trained to walk D4RL's ant to nearby goals on an open
floor, then steered through the maze by waypoints (wsrl_mjx/datagen/navigation.py). This is that
task: the AntMaze ant (same model, same 5 x 0.02 s RK4 step, same action scaling) with no walls,
a goal drawn in a disk of radius 10 m around the ant (D4RL's `disk_goal_sampler`), and a new goal
each time the ant gets within 0.5 m of the current one. The observation is what the controller
sees during collection: qpos[2:15], qvel[:14] and the goal's direction scaled to length 10.

Reward: progress towards the goal in m/s (D4RL used minus the distance; progress gives PPO the
same optimum with less variance), minus 0.005 |a|^2. The episode ends if the ant flips over
(torso below 0.2 m or above 1.0 m, the gym ant's healthy range).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from envs import antmaze, mjx_env

GOAL_DISK_RADIUS = 10.0


class AntGoal(mjx_env.MjxEnv):
  """Walk to a goal on an open floor; goals are redrawn when reached."""

  def __init__(self, solver_iterations: int | None = None,
               solver_ls_iterations: int | None = None):
    empty = antmaze.Maze("open", ("S",))
    super().__init__(antmaze.build_model(empty), antmaze.FRAME_SKIP, solver_iterations,
                     solver_ls_iterations)

  @property
  def observation_size(self) -> int:
    return 29

  def action_to_ctrl(self, action: jax.Array) -> jax.Array:
    return jnp.clip(antmaze.ACTION_SCALE * action, -antmaze.ACTION_SCALE, antmaze.ACTION_SCALE)

  def _observe(self, data, goal):
    direction = goal - data.qpos[:2]
    direction = 10.0 * direction / (jnp.linalg.norm(direction) + 1e-6)
    return jnp.concatenate([data.qpos[2:15], data.qvel[:14], direction])

  def _sample_goal(self, rng, around):
    angle_key, radius_key = jax.random.split(rng)
    angle = 2 * jnp.pi * jax.random.uniform(angle_key)
    # At least 1 m away, so that a new goal is never reached on arrival.
    radius = 1.0 + (GOAL_DISK_RADIUS - 1.0) * jax.random.uniform(radius_key)
    return around + radius * jnp.stack([jnp.cos(angle), jnp.sin(angle)])

  def reset(self, rng: jax.Array) -> mjx_env.State:
    goal_key, qpos_key, qvel_key, next_key = jax.random.split(rng, 4)
    qpos0, qvel0 = self.initial_qpos_qvel()
    qpos = qpos0 + jax.random.uniform(qpos_key, qpos0.shape, minval=-0.1, maxval=0.1)
    qvel = qvel0 + 0.1 * jax.random.normal(qvel_key, qvel0.shape)
    data = self.physics_init(qpos, qvel)
    goal = self._sample_goal(goal_key, data.qpos[:2])
    zero = jnp.zeros((), jnp.float32)
    return mjx_env.State(pipeline_state=data, obs=self._observe(data, goal), reward=zero,
                         done=zero, metrics={"goals_reached": zero, "progress": zero},
                         info={"goal": goal, "goal_key": next_key})

  def step(self, state: mjx_env.State, action: jax.Array) -> mjx_env.State:
    before = state.pipeline_state
    data = self.physics_step(before, self.action_to_ctrl(action))
    goal = state.info["goal"]
    distance_before = jnp.linalg.norm(goal - before.qpos[:2])
    distance = jnp.linalg.norm(goal - data.qpos[:2])
    progress = (distance_before - distance) / self.dt
    reward = progress - 0.005 * jnp.sum(jnp.square(action))
    reached = distance <= antmaze.GOAL_RADIUS
    goal_key, next_key = jax.random.split(state.info["goal_key"])
    goal = jnp.where(reached, self._sample_goal(goal_key, data.qpos[:2]), goal)
    z = data.qpos[2]
    done = ((z < 0.2) | (z > 1.0)).astype(jnp.float32)
    metrics = {**state.metrics, "goals_reached": state.metrics["goals_reached"] + reached,
               "progress": progress}
    return state.replace(pipeline_state=data, obs=self._observe(data, goal), reward=reward,
                         done=done, metrics=metrics,
                         info={**state.info, "goal": goal, "goal_key": next_key})
