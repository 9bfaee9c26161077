"""A point mass reaching a goal on a plane: a task that compiles in seconds, for smoke runs of
the pipeline and for the tests of the training loop. It is not one of the paper's tasks.

A 1 kg mass slides without friction on a plane, pushed by two 10 N motors (x and y; actions in
[-1, 1]). The model has no collision geometry, so MJX compiles no contact or constraint solver:
on the 2-core development CPU the tests' tiny fine-tuning run spends 4.9 s compiling against
37.8 s on hopper (BUILD.md, "Where the cold suite's time goes").

| obs | act | frame skip x dt | reward                                  | terminates when          |
| --- | --- | --------------- | --------------------------------------- | ------------------------ |
| 4   | 2   | 5 x 0.01 s      | 1 - distance to the goal (m)            | the mass leaves the disc |

Observations are (x, y, vx, vy). The goal is at (0.5, 0) m; the arena is the disc of radius
1 m around the origin, and leaving it is a true termination (like hopper's fall). Rewards range
from about -0.5 (at the far edge) to 1 (on the goal). Resets draw the position uniformly in
[-0.1, 0.1]^2 m, at rest. A uniformly random policy leaves the disc after 22 steps (median; 15
to 39 for the middle 80% of episodes, and it practically never lasts the 200-step limit), so
rollouts cut at a few dozen steps, as the tests' 40, contain both terminations and time limits.
Time limit: 200 steps (the training loop's, as for the other tasks). Normalised score: 100 x
return / 200, whatever `--config.episode_length` says (as D4RL's reference returns are fixed).
An episode spent entirely on the goal would score 100; as every episode starts about 0.5 m
away, good policies score about 90 (the `,demo` runs: SAC from scratch 75-86 after 2,000 env
steps; WSRL from a 500-step CQL pretraining on random data 88-91 after 1,500).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from envs import mjx_env

OBSERVATION_SIZE = 4
ACTION_SIZE = 2
EPISODE_LENGTH = 200
GOAL = (0.5, 0.0)             # m
ARENA_RADIUS = 1.0            # m: beyond it the episode terminates
RESET_HALF_WIDTH = 0.1        # m: initial positions are uniform in [-w, w]^2, at rest
FRAME_SKIP = 5


class PointMass(mjx_env.MjxEnv):
  """The point-mass reaching task (see the module docstring for the facts)."""

  def __init__(self, task_name: str = "point-mass", solver_iterations: int | None = None,
               solver_ls_iterations: int | None = None):
    if task_name != "point-mass":
      raise ValueError(f"Unknown point-mass task {task_name!r}; known: ['point-mass']")
    self.task_name = task_name
    super().__init__(mjx_env.ASSETS / "point_mass.xml", FRAME_SKIP, solver_iterations,
                     solver_ls_iterations)

  @property
  def observation_size(self) -> int:
    return OBSERVATION_SIZE

  def observation_fields(self) -> dict[str, slice]:
    return {"position": slice(0, 2), "velocity": slice(2, 4)}

  def observation(self, qpos: jax.Array, qvel: jax.Array) -> jax.Array:
    return jnp.concatenate([qpos, qvel])

  def reward_and_done(self, qpos: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(1 - distance to the goal, 1.0 where the mass is outside the arena else 0.0)."""
    distance = jnp.linalg.norm(qpos - jnp.asarray(GOAL, jnp.float32))
    outside = jnp.linalg.norm(qpos) > ARENA_RADIUS
    return 1.0 - distance, outside.astype(jnp.float32)

  def reset(self, rng: jax.Array) -> mjx_env.State:
    qpos = jax.random.uniform(rng, (2,), minval=-RESET_HALF_WIDTH, maxval=RESET_HALF_WIDTH)
    data = self.physics_init(qpos, jnp.zeros(2, jnp.float32))
    zero = jnp.zeros((), jnp.float32)
    return mjx_env.State(pipeline_state=data, obs=self.observation(data.qpos, data.qvel),
                         reward=zero, done=zero, metrics={}, info={})

  def step(self, state: mjx_env.State, action: jax.Array) -> mjx_env.State:
    data = self.physics_step(state.pipeline_state, action)
    reward, done = self.reward_and_done(data.qpos)
    return state.replace(pipeline_state=data, obs=self.observation(data.qpos, data.qvel),
                         reward=reward, done=done)
