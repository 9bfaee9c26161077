"""HalfCheetah, Hopper and Walker2d as D4RL's locomotion datasets were recorded on them.

D4RL's `*-v2` locomotion datasets come from gym's `HalfCheetah-v3`, `Hopper-v3` and `Walker2d-v3`
on mujoco-py. This module reproduces those tasks' observation layout, reset distribution, reward
and termination on MJX, so that a D4RL transition means the same thing here:

| task        | obs | act | frame skip x dt | reward                                    | terminates when |
| ----------- | --- | --- | --------------- | ----------------------------------------- | --------------- |
| halfcheetah | 17  | 6   | 5 x 0.01 s      | forward velocity - 0.1 |a|^2               | never           |
| hopper      | 11  | 3   | 4 x 0.002 s     | forward velocity + 1 - 0.001 |a|^2         | unhealthy       |
| walker2d    | 17  | 6   | 4 x 0.002 s     | forward velocity + 1 - 0.001 |a|^2         | unhealthy       |

Observations are qpos[1:] followed by qvel (clipped to +-10 for hopper and walker2d). Time limits
(1000 steps) are not part of the env: the training loop truncates episodes, as D4RL's timeouts.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from envs import mjx_env


def _hopper_is_healthy(qpos: jax.Array, qvel: jax.Array) -> jax.Array:
  z, angle = qpos[1], qpos[2]
  state = jnp.concatenate([qpos[2:], qvel])
  return (jnp.all((state > -100.0) & (state < 100.0))
          & (z > 0.7)
          & (angle > -0.2) & (angle < 0.2))


def _walker2d_is_healthy(qpos: jax.Array, qvel: jax.Array) -> jax.Array:
  del qvel
  z, angle = qpos[1], qpos[2]
  return (z > 0.8) & (z < 2.0) & (angle > -1.0) & (angle < 1.0)


@dataclasses.dataclass(frozen=True)
class LocomotionTask:
  """The facts that distinguish one gym locomotion task from another."""
  xml_file: str
  frame_skip: int
  observation_size: int
  ctrl_cost_weight: float
  reset_noise_scale: float
  # HalfCheetah perturbs velocities with a Gaussian, the others with a uniform.
  gaussian_velocity_noise: bool
  clip_velocity: bool
  healthy_reward: float
  # None: the task never terminates.
  is_healthy: Callable[[jax.Array, jax.Array], jax.Array] | None


VELOCITY_CLIP = 10.0   # hopper's and walker2d's observed qvel, gym's `np.clip(qvel, -10, 10)`


TASKS = {
    "halfcheetah": LocomotionTask(
        xml_file="half_cheetah.xml", frame_skip=5, observation_size=17,
        ctrl_cost_weight=0.1, reset_noise_scale=0.1, gaussian_velocity_noise=True,
        clip_velocity=False, healthy_reward=0.0, is_healthy=None),
    "hopper": LocomotionTask(
        xml_file="hopper.xml", frame_skip=4, observation_size=11,
        ctrl_cost_weight=1e-3, reset_noise_scale=5e-3, gaussian_velocity_noise=False,
        clip_velocity=True, healthy_reward=1.0, is_healthy=_hopper_is_healthy),
    "walker2d": LocomotionTask(
        xml_file="walker2d.xml", frame_skip=4, observation_size=17,
        ctrl_cost_weight=1e-3, reset_noise_scale=5e-3, gaussian_velocity_noise=False,
        clip_velocity=True, healthy_reward=1.0, is_healthy=_walker2d_is_healthy),
}


class Locomotion(mjx_env.MjxEnv):
  """One of the gym locomotion tasks on MJX (see the module docstring for the facts)."""

  def __init__(self, task_name: str, solver_iterations: int | None = None,
               solver_ls_iterations: int | None = None):
    if task_name not in TASKS:
      raise ValueError(f"Unknown locomotion task {task_name!r}; known: {sorted(TASKS)}")
    self.task_name = task_name
    self.task = TASKS[task_name]
    super().__init__(mjx_env.ASSETS / self.task.xml_file, self.task.frame_skip,
                     solver_iterations, solver_ls_iterations)

  @property
  def observation_size(self) -> int:
    return self.task.observation_size

  def observation_fields(self) -> dict[str, slice]:
    # Planar models: qpos = (rootx, rootz, rooty, joints...), qvel likewise; x is not observed.
    nq = int(self.mj_model.nq)
    return {"root height, angle": slice(0, 2), "joint angles": slice(2, nq - 1),
            "root velocities": slice(nq - 1, nq + 2), "joint velocities": slice(nq + 2, None)}

  def observation_bounds(self) -> tuple[np.ndarray, np.ndarray]:
    low, high = super().observation_bounds()
    if self.task.clip_velocity:   # gym's Hopper-v3 / Walker2d-v3 `_get_obs`
      velocities = slice(int(self.mj_model.nq) - 1, None)
      low[velocities], high[velocities] = -VELOCITY_CLIP, VELOCITY_CLIP
    return low, high

  def observation(self, qpos: jax.Array, qvel: jax.Array) -> jax.Array:
    if self.task.clip_velocity:
      qvel = jnp.clip(qvel, -VELOCITY_CLIP, VELOCITY_CLIP)
    return jnp.concatenate([qpos[1:], qvel])

  def reset(self, rng: jax.Array) -> mjx_env.State:
    qpos_key, qvel_key = jax.random.split(rng)
    qpos0, qvel0 = self.initial_qpos_qvel()
    scale = self.task.reset_noise_scale
    qpos = qpos0 + jax.random.uniform(qpos_key, qpos0.shape, minval=-scale, maxval=scale)
    if self.task.gaussian_velocity_noise:
      qvel = qvel0 + scale * jax.random.normal(qvel_key, qvel0.shape)
    else:
      qvel = qvel0 + jax.random.uniform(qvel_key, qvel0.shape, minval=-scale, maxval=scale)
    data = self.physics_init(qpos, qvel)
    zero = jnp.zeros((), jnp.float32)
    metrics = {"x_position": data.qpos[0], "x_velocity": zero, "reward_ctrl": zero}
    return mjx_env.State(pipeline_state=data, obs=self.observation(data.qpos, data.qvel),
                         reward=zero, done=zero, metrics=metrics, info={})

  def step(self, state: mjx_env.State, action: jax.Array) -> mjx_env.State:
    before = state.pipeline_state
    data = self.physics_step(before, action)
    x_velocity = (data.qpos[0] - before.qpos[0]) / self.dt
    ctrl_cost = self.task.ctrl_cost_weight * jnp.sum(jnp.square(action))
    # gym terminates on unhealthy states and pays `healthy_reward` on every step, the
    # terminating one included.
    reward = x_velocity + self.task.healthy_reward - ctrl_cost
    if self.task.is_healthy is None:
      done = jnp.zeros((), jnp.float32)
    else:
      done = 1.0 - self.task.is_healthy(data.qpos, data.qvel).astype(jnp.float32)
    # Keep what wrappers added to `metrics` (Brax's EvalWrapper tracks rewards there).
    metrics = {**state.metrics, "x_position": data.qpos[0], "x_velocity": x_velocity,
               "reward_ctrl": -ctrl_cost}
    return state.replace(pipeline_state=data, obs=self.observation(data.qpos, data.qvel),
                         reward=reward, done=done, metrics=metrics)
