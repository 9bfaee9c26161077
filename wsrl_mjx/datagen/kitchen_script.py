"""A scripted Franka Kitchen demonstrator: Cartesian waypoints for the end effector, followed by
damped-least-squares inverse kinematics in C MuJoCo, as D4RL's joint-velocity actions.

Kitchen data made here without downloads (`launch.collect --env=kitchen-complete-v0
--policy=kitchen_script`). It scripts two of kitchen-complete's elements, in D4RL's order:
- microwave: reach the handle from the front (three waypoints), close the fingers round the
  vertical bar, pull it along the door's arc to -1.0 rad (done below -0.45);
- kettle: open the fingers, back off, go behind the kettle low on its body and push it forward,
  towards the top-left burner. Pushing turns the kettle (up to 0.5 rad), and its orientation is
  part of the element's distance, so the kettle is done only in some episodes (in C MuJoCo
  without noise: distance 0.288, just inside 0.3; pushing 1 cm higher or 4 cm shorter misses).
The light switch and the slide cabinet are not scripted (their phases would follow the same
pattern); BUILD.md reports each element's success rate.

Each waypoint is held until the end effector is within `REACH_TOLERANCE` or for its step budget.
The inverse kinematics keeps the hand's starting orientation; the action is the joint change it
asks for divided by D4RL's 2 rad/s x 0.08 s per action, clipped to [-1, 1]. The same script acts
in the MJX env (the host-side planner protocol of `wsrl_mjx.datagen.collect.collect_with_planner`:
`start`, `reset`, `act`) and in C MuJoCo (`demonstration`, for tests and the bridge check).
"""

from __future__ import annotations

import dataclasses

import mujoco
import numpy as np

from envs import kitchen

REACH_TOLERANCE = 0.015      # m
_STEP = kitchen.ACTION_VELOCITY * kitchen.FRAME_SKIP * 0.002   # joint change at action 1
_OPEN, _CLOSED = 1.0, -1.0


@dataclasses.dataclass(frozen=True)
class Waypoint:
  position: tuple[float, float, float]   # end-effector target (world, m)
  grip: float                            # finger action: 1 open, -1 close
  max_steps: int
  hold: bool = False                     # stay the whole budget (closing the fingers)


def _arc(hinge: np.ndarray, point: np.ndarray, angles: np.ndarray) -> list[np.ndarray]:
  """`point` turned about the vertical axis through `hinge` by each angle."""
  offset = point - hinge
  return [hinge + np.array([np.cos(a) * offset[0] - np.sin(a) * offset[1],
                            np.sin(a) * offset[0] + np.cos(a) * offset[1], offset[2]])
          for a in angles]


def waypoints(model: mujoco.MjModel) -> list[Waypoint]:
  """The script, from the model's handle sites and bodies at D4RL's reset."""
  data = mujoco.MjData(model)
  data.qpos[:] = kitchen.INITIAL_QPOS
  mujoco.mj_forward(model, data)
  site = lambda name: data.site_xpos[model.site(name).id].copy()
  handle = site("microhandle_site")
  hinge = data.xpos[model.body("microdoorroot").id].copy()
  kettle = data.xpos[model.body("kettle").id].copy()
  plan = [Waypoint(tuple(handle + [0, -0.15, 0]), _OPEN, 25),
          Waypoint(tuple(handle + [0, -0.06, 0]), _OPEN, 15),
          Waypoint(tuple(handle), _OPEN, 15),
          Waypoint(tuple(handle), _CLOSED, 8, hold=True)]
  plan += [Waypoint(tuple(p), _CLOSED, 2, hold=True)
           for p in _arc(hinge, handle, np.linspace(0.0, -1.0, 21)[1:])]
  pulled = _arc(hinge, handle, [-1.0])[0]
  plan += [Waypoint(tuple(pulled), _OPEN, 4, hold=True),
           Waypoint(tuple(pulled + [0.1, -0.05, 0.1]), _OPEN, 15),
           Waypoint(tuple(kettle + [0.0, -0.25, 0.15]), _OPEN, 25),
           Waypoint(tuple(kettle + [0.0, -0.19, 0.04]), _CLOSED, 20),
           Waypoint(tuple(kettle + [0.0, 0.1, 0.04]), _CLOSED, 25),
           Waypoint(tuple(kettle + [0.0, 0.3, 0.04]), _CLOSED, 35)]
  return plan


class KitchenScript:
  """The script for several envs at once: per env, the waypoint it is on and the steps spent."""

  def __init__(self, env: kitchen.Kitchen):
    self.model = env.reference_mj_model()
    self.data = mujoco.MjData(self.model)
    self.plan = waypoints(self.model)
    self._site = self.model.site("end_effector").id
    data = mujoco.MjData(self.model)
    data.qpos[:] = kitchen.INITIAL_QPOS
    mujoco.mj_forward(self.model, data)
    self._orientation = data.site_xmat[self._site].reshape(3, 3).copy()
    self._phase = self._steps = np.zeros(0, int)

  def start(self, num_envs: int):
    self._phase = np.zeros(num_envs, int)
    self._steps = np.zeros(num_envs, int)

  def reset(self, index: int, env_info=None):
    del env_info
    self._phase[index] = self._steps[index] = 0

  def _action(self, qpos: np.ndarray, waypoint: Waypoint) -> tuple[np.ndarray, float]:
    """(action, distance to the waypoint) at joint positions `qpos`."""
    self.data.qpos[:] = qpos
    mujoco.mj_kinematics(self.model, self.data)
    mujoco.mj_comPos(self.model, self.data)
    position = self.data.site_xpos[self._site]
    rotation = self.data.site_xmat[self._site].reshape(3, 3)
    jacobian_position = np.zeros((3, self.model.nv))
    jacobian_rotation = np.zeros((3, self.model.nv))
    mujoco.mj_jacSite(self.model, self.data, jacobian_position, jacobian_rotation, self._site)
    jacobian = np.vstack([jacobian_position[:, :7], jacobian_rotation[:, :7]])
    turn = self._orientation @ rotation.T
    rotation_error = 0.5 * np.array([turn[2, 1] - turn[1, 2], turn[0, 2] - turn[2, 0],
                                     turn[1, 0] - turn[0, 1]])
    error = np.concatenate([np.asarray(waypoint.position) - position, 0.5 * rotation_error])
    change = jacobian.T @ np.linalg.solve(jacobian @ jacobian.T + 1e-3 * np.eye(6), error)
    action = np.zeros(kitchen.ACTION_SIZE)
    action[:7] = np.clip(change / _STEP, -1.0, 1.0)
    action[7:] = waypoint.grip
    return action, float(np.linalg.norm(error[:3]))

  def act(self, rng: np.random.Generator, qpos: np.ndarray, qvel: np.ndarray,
          observations: np.ndarray) -> np.ndarray:
    """[envs, 9] actions for the envs' states; advances each env's script by one step."""
    del rng, qvel, observations
    actions = np.zeros((len(qpos), kitchen.ACTION_SIZE))
    for i, q in enumerate(qpos):
      while True:
        if self._phase[i] >= len(self.plan):        # done: hold still, fingers open
          actions[i, 7:] = _OPEN
          break
        waypoint = self.plan[self._phase[i]]
        action, distance = self._action(q, waypoint)
        reached = (not waypoint.hold) and distance < REACH_TOLERANCE
        if self._steps[i] >= waypoint.max_steps or reached:
          self._phase[i] += 1
          self._steps[i] = 0
          continue
        self._steps[i] += 1
        actions[i] = action
        break
    return actions


def demonstration(env: kitchen.Kitchen, num_steps: int = kitchen.EPISODE_LENGTH
                  ) -> dict[str, np.ndarray]:
  """One scripted episode in C MuJoCo on the reference model, with D4RL's control law (without
  its observation noise): rows of qpos, qvel and the action taken there (the bridge check's
  trajectory format), plus `rewards`, the env's reward after each action."""
  model = env.reference_mj_model()
  data = mujoco.MjData(model)
  data.qpos[:] = kitchen.INITIAL_QPOS
  mujoco.mj_forward(model, data)
  script = KitchenScript(env)
  script.start(1)
  bounds = np.asarray(kitchen.ROBOT_POSITION_BOUNDS)
  goal = kitchen.task_goal(env.task_name)
  qpos, qvel, actions = [], [], []
  for _ in range(num_steps):
    action = script.act(None, data.qpos[None].copy(), None, None)[0]
    qpos.append(data.qpos.copy())
    qvel.append(data.qvel.copy())
    actions.append(action)
    data.ctrl[:] = np.clip(data.qpos[:9] + kitchen.ACTION_VELOCITY * action * env.dt,
                           bounds[:, 0], bounds[:, 1])
    for _ in range(env.frame_skip):
      mujoco.mj_step(model, data)
  qpos.append(data.qpos.copy())
  qvel.append(data.qvel.copy())
  actions.append(np.zeros(kitchen.ACTION_SIZE))
  observations = np.concatenate([np.array(qpos[1:])[:, :30],
                                 np.tile(goal, (num_steps, 1))], axis=1)
  done = np.asarray(kitchen.elements_done(observations, env.task_name))
  rewards = np.logical_or.accumulate(done, axis=0).sum(axis=1).astype(np.float64)
  return {"qpos": np.array(qpos), "qvel": np.array(qvel), "actions": np.array(actions),
          "rewards": np.array(rewards), "episode_ends": np.array([num_steps])}


def element_success_rates(episodes: list[dict[str, np.ndarray]], task_name: str
                          ) -> dict[str, float]:
  """Per task element, the fraction of `episodes` (each with 60-dim `next_observations`, as
  `wsrl_mjx.datagen.collect.trajectories` cuts them) in which it was done at some step."""
  done = np.array([np.asarray(kitchen.elements_done(episode["next_observations"], task_name))
                   .any(axis=0) for episode in episodes])
  return {element: float(done[:, k].mean())
          for k, element in enumerate(kitchen.TASKS[task_name].elements)}
