"""The Adroit tasks with D4RL's dense reward: what the Adroit demonstrators are trained on.

WSRL's Adroit tasks pay only success (`goal_achieved - 1`), which a policy learning from scratch
rarely sees. D4RL's own `*-v0` envs pay a shaped reward instead; the demonstrators that make our
Adroit datasets (launch/train_adroit_demonstrator.py) are trained on it, then roll out in the
binary task (`launch.collect --policy=ppo:DIR`). Same model, observation, action mapping and
resets as envs/adroit.py; the reward, from D4RL 1.1's `hand_manipulation_suite/*_v0.py`
(`ADD_BONUS_REWARDS` on):

- door: -0.1 |palm - handle| - 0.1 (hinge - 1.57)^2 - 1e-5 |qvel|^2, plus 2, 8 and 10 once the
  hinge passes 0.2, 1.0 and 1.35 rad; never ends early;
- pen: -|pen - its place| + orientation . goal's, plus 10 when within 0.075 m and similarity
  > 0.9, 50 more above 0.95; dropping the pen (below 0.075 m) costs 5 and ends the episode;
- relocate: -0.1 |palm - ball|, and once the ball is off the table (above 0.04 m) 1 - 0.5
  |palm - target| - 0.5 |ball - target|; plus 10 within 0.1 m of the target, 20 more within
  0.05 m; never ends early.

`metrics["success"]` is still D4RL's `goal_achieved` at each step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from envs import adroit, mjx_env

PEN_DROP_HEIGHT = 0.075


def shaped_reward(task_name: str, observation: jax.Array, qvel: jax.Array,
                  ball_height: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """(D4RL's dense reward, whether the step ends the episode) from the Adroit observation (and
  for relocate the ball's height, which the observation does not hold)."""
  norm = jnp.linalg.norm
  if task_name == "door":
    palm_to_handle, hinge = observation[35:38], observation[28]
    reward = (-0.1 * norm(palm_to_handle) - 0.1 * jnp.square(hinge - 1.57)
              - 1e-5 * jnp.sum(jnp.square(qvel)))
    reward += 2.0 * (hinge > 0.2) + 8.0 * (hinge > 1.0) + 10.0 * (hinge > 1.35)
    return reward, jnp.zeros((), bool)
  if task_name == "pen":
    distance = norm(observation[39:42])
    similarity = jnp.dot(observation[33:36], observation[36:39])
    near = distance < adroit.PEN_GOAL_DISTANCE
    dropped = observation[26] < PEN_DROP_HEIGHT
    reward = (-distance + similarity + 10.0 * (near & (similarity > 0.9))
              + 50.0 * (near & (similarity > 0.95)) - 5.0 * dropped)
    return reward, dropped
  if task_name == "relocate":
    palm_to_ball, palm_to_target, ball_to_target = (observation[30:33], observation[33:36],
                                                    observation[36:39])
    lifted = ball_height > 0.04
    reward = -0.1 * norm(palm_to_ball) + jnp.where(
        lifted, 1.0 - 0.5 * norm(palm_to_target) - 0.5 * norm(ball_to_target), 0.0)
    reward += 10.0 * (norm(ball_to_target) < 0.1) + 20.0 * (norm(ball_to_target) < 0.05)
    return reward, jnp.zeros((), bool)
  raise ValueError(f"Unknown Adroit task {task_name!r}; known: {sorted(adroit.TASKS)}")


class AdroitShaped(adroit.Adroit):
  """An Adroit task with D4RL's dense reward (see the module docstring)."""

  def step(self, state: mjx_env.State, action: jax.Array) -> mjx_env.State:
    binary = super().step(state, action)
    data = binary.pipeline_state
    ball_height = data.xpos[self._object][2] if self.task_name == "relocate" else None
    reward, ends = shaped_reward(self.task_name, binary.obs, data.qvel, ball_height)
    return binary.replace(reward=reward.astype(jnp.float32), done=ends.astype(jnp.float32))
