"""A scripted Franka Kitchen demonstrator: Cartesian waypoints for the end effector, solved to
arm joints by damped-least-squares inverse kinematics in C MuJoCo, and driven there with D4RL's
joint-velocity actions.

Kitchen data made here without downloads (`launch.collect --env=kitchen-complete-v0
--policy=kitchen_script`). It scripts kitchen-complete's four elements in D4RL's order (the
positions are read from the model's sites at D4RL's reset):
- microwave: reach the door's vertical handle bar from the front, close the fingers round it,
  pull it along the door's arc to -0.8 rad (done below -0.45), the hand turning as it goes;
- kettle: roll the hand a quarter turn about its approach axis, so the open fingers pass above
  and below the kettle's handle (a horizontal bar 6.4 cm thick; the open fingers leave 8 cm),
  close them on it from the front, lift the kettle 6 cm (clear of the burners, which tilt it when
  it drags), carry it 40 cm to the goal burner (the top left) in four straight legs, set it
  down, open and back off 20 cm in two (one long joint-space move bows up and lifts it again);
- light switch: the closed fingers come in from the front, right of the switch's lever (between
  the burner knobs), and push it 15.5 cm to the left, turning it about its vertical hinge;
- slide cabinet: the open fingers come round the door's vertical handle bar from the front,
  close on it and pull the door 20 cm to the right (done beyond 7 cm).

Each waypoint's arm joints are solved once (`joint_targets`: each from the previous one's, with
the joints kept inside their ranges and D4RL's position bounds). At each step the action drives
the arm's joints towards the current waypoint's, plus the servo offset that holds the arm up
against gravity (D4RL's arm is position servos without gravity compensation: without it the
hand sags 2-3 cm), divided by D4RL's 2 rad/s x 0.08 s per action and clipped to [-1, 1]. A
waypoint is left when the end effector is within `REACH_TOLERANCE` of it or after its step
budget; one marked `hold` stays its whole budget (closing or opening the fingers, settling).
The budgets add up to 363 steps, more than the episode's 280, but most waypoints are reached
early: in BUILD.md's 100 noisy episodes all four elements were done by step 262 (median 258);
BUILD.md reports each element's success rate under D4RL's observation noise.

The same script acts in the MJX env (the host-side planner protocol of
`wsrl_mjx.datagen.collect.collect_with_planner`: `start`, `reset`, `act`; it reads the true
joint positions, the env applies the action from the noisy observed ones) and in C MuJoCo
(`demonstration`, for tests, the bridge check and the success rates).
"""

from __future__ import annotations

import dataclasses

import mujoco
import numpy as np

from envs import kitchen

REACH_TOLERANCE = 0.015      # m
_STEP = kitchen.ACTION_VELOCITY * kitchen.FRAME_SKIP * 0.002   # joint change at action 1
_OPEN, _CLOSED = 1.0, -1.0
IK_DAMPING = 1e-3            # m^2: damped least squares' damping
POSTURE_GAIN = 0.1           # fraction of the way to the starting joints per IK step, null space
IK_TOLERANCE = 0.005         # m (+ rad/4): a solved waypoint pose
IK_RESTARTS = 20             # random starts where the local solution misses
LIMIT_MARGIN = 0.05          # rad inside the joints' ranges and D4RL's position bounds
MICROWAVE_PULL = -0.8        # rad: the door's angle the hand pulls it to (done below -0.45)
MICROWAVE_YAW = -0.5         # the hand turns against the door by this fraction of its angle
KETTLE_ROLL = -np.pi / 2     # rad: fingers above and below the kettle's handle bar
KETTLE_GRASP_DEPTH = 0.015   # m: end effector short of the handle bar's axis (bar mid-finger)
KETTLE_LIFT = 0.06           # m
LIGHT_REACH = 0.06           # m: end effector short of the light switch site (in front of it)
LIGHT_SIDE = 0.075           # m: where the push starts, right of the light switch site
SLIDE_PULL = 0.2             # m


@dataclasses.dataclass(frozen=True)
class Waypoint:
  position: tuple[float, float, float]   # end-effector target (world, m)
  grip: float                            # finger action: 1 open, -1 close
  max_steps: int
  hold: bool = False                     # stay the whole budget (fingers, settling)
  roll: float = 0.0                      # hand turned about its approach axis from the reset (rad)
  yaw: float = 0.0                       # then about the world's vertical axis (rad)


def _arc(hinge: np.ndarray, point: np.ndarray, angles: np.ndarray) -> list[np.ndarray]:
  """`point` turned about the vertical axis through `hinge` by each angle."""
  offset = point - hinge
  return [hinge + np.array([np.cos(a) * offset[0] - np.sin(a) * offset[1],
                            np.sin(a) * offset[0] + np.cos(a) * offset[1], offset[2]])
          for a in angles]


def _turn_z(angle: float) -> np.ndarray:
  c, s = np.cos(angle), np.sin(angle)
  return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def hand_orientation(reset: np.ndarray, waypoint: Waypoint) -> np.ndarray:
  """The hand's orientation at `waypoint` (world from site, 3x3): the reset's (`reset`) turned
  by its `roll` about the approach axis (the end-effector site's z axis, along the fingers),
  then by its `yaw` about the world's vertical."""
  return _turn_z(waypoint.yaw) @ reset @ _turn_z(waypoint.roll)


def ik_step(jacobian: np.ndarray, error: np.ndarray, q: np.ndarray, lower: np.ndarray,
            upper: np.ndarray, posture: np.ndarray) -> np.ndarray:
  """The arm's joint change (7, rad) for a 6-dim end-effector error (m, and rad about world
  axes) with the 6x7 Jacobian `jacobian`: damped least squares, plus a pull of POSTURE_GAIN
  towards `posture` in the Jacobian's null space. A joint that would leave [lower, upper] is
  held where it is and the rest solve again without it."""
  free = np.ones(len(q), bool)
  change = np.zeros(len(q))
  for _ in range(len(q)):
    part = jacobian[:, free]
    inverse = part.T @ np.linalg.inv(part @ part.T + IK_DAMPING * np.eye(len(error)))
    change = np.zeros(len(q))
    change[free] = inverse @ error + (np.eye(free.sum()) - inverse @ part) @ (
        POSTURE_GAIN * (posture - q)[free])
    leaving = free & (((q + change < lower) & (change < 0)) | ((q + change > upper) & (change > 0)))
    if not leaving.any():
      break
    free &= ~leaving
  return change


def _pose_error(model: mujoco.MjModel, data: mujoco.MjData, site: int, position: np.ndarray,
                orientation: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(6-dim error: position (m) and half-weighted rotation about world axes; 6x7 Jacobian) of
  the end effector at arm joints `q` (kinematics only)."""
  data.qpos[:7] = q
  mujoco.mj_kinematics(model, data)
  mujoco.mj_comPos(model, data)
  turn = orientation @ data.site_xmat[site].reshape(3, 3).T
  rotation_error = 0.5 * np.array([turn[2, 1] - turn[1, 2], turn[0, 2] - turn[2, 0],
                                   turn[1, 0] - turn[0, 1]])
  jacobian_position = np.zeros((3, model.nv))
  jacobian_rotation = np.zeros((3, model.nv))
  mujoco.mj_jacSite(model, data, jacobian_position, jacobian_rotation, site)
  return (np.concatenate([position - data.site_xpos[site], 0.5 * rotation_error]),
          np.vstack([jacobian_position[:, :7], jacobian_rotation[:, :7]]))


def solve_pose(model: mujoco.MjModel, position: np.ndarray, orientation: np.ndarray,
               start: np.ndarray, lower: np.ndarray, upper: np.ndarray,
               iterations: int = 200) -> tuple[np.ndarray, float]:
  """(arm joints (7, rad), remaining error (m, plus rad/4)) putting the end effector at
  `position` with `orientation` (3x3, world from site), by `ik_step` from `start`, kept near it
  (kinematics only, no contacts)."""
  data = mujoco.MjData(model)
  data.qpos[:] = kitchen.INITIAL_QPOS
  site = model.site("end_effector").id
  q = np.clip(np.asarray(start, np.float64), lower, upper)
  for _ in range(iterations):
    error, jacobian = _pose_error(model, data, site, position, orientation, q)
    q = q + np.clip(ik_step(jacobian, error, q, lower, upper, start), -0.2, 0.2)
  error, _ = _pose_error(model, data, site, position, orientation, q)
  return q, float(np.linalg.norm(error))


def joint_targets(model: mujoco.MjModel, plan: list[Waypoint], orientation: np.ndarray,
                  lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
  """[waypoints, 7]: arm joints for each waypoint, each solved from the one before (from D4RL's
  reset for the first). Where that local solution misses by over IK_TOLERANCE, the nearest in
  joint space of IK_RESTARTS solutions from fixed random starts is kept."""
  rng = np.random.default_rng(0)
  previous = np.asarray(kitchen.INITIAL_QPOS[:7])
  targets = []
  for waypoint in plan:
    goal = (np.asarray(waypoint.position), hand_orientation(orientation, waypoint))
    q, error = solve_pose(model, *goal, previous, lower, upper)
    if error > IK_TOLERANCE:
      found = [solve_pose(model, *goal, rng.uniform(lower, upper), lower, upper)
               for _ in range(IK_RESTARTS)]
      found = [x for x, e in found if e <= IK_TOLERANCE] or [q]
      q = min(found, key=lambda x: np.abs(x - previous).sum())
    targets.append(q)
    previous = q
  return np.array(targets)


def _microwave(handle: np.ndarray, hinge: np.ndarray) -> list[Waypoint]:
  """Grasp the door's vertical handle bar from the front and pull it along the door's arc to
  MICROWAVE_PULL (done below -0.45 rad), then let go and back off up and to the right."""
  plan = [Waypoint(tuple(handle + [0, -0.15, 0]), _OPEN, 25),
          Waypoint(tuple(handle + [0, -0.06, 0]), _OPEN, 15),
          Waypoint(tuple(handle), _OPEN, 15),
          Waypoint(tuple(handle), _CLOSED, 8, hold=True)]
  angles = np.linspace(0.0, MICROWAVE_PULL, 11)[1:]
  plan += [Waypoint(tuple(p), _CLOSED, 3, hold=True, yaw=MICROWAVE_YAW * a)
           for p, a in zip(_arc(hinge, handle, angles), angles)]
  pulled = _arc(hinge, handle, [MICROWAVE_PULL])[0]
  yaw = MICROWAVE_YAW * MICROWAVE_PULL
  return plan + [Waypoint(tuple(pulled), _OPEN, 4, hold=True, yaw=yaw),
                 Waypoint(tuple(pulled + [0.1, -0.05, 0.1]), _OPEN, 15, yaw=yaw)]


def _legs(start: np.ndarray, end: np.ndarray, legs: int, grip: float, max_steps: int,
          **hand) -> list[Waypoint]:
  """A straight move from `start` to `end` as `legs` waypoints (the arm moves in joint space
  between waypoints, so a long move in one would bow)."""
  return [Waypoint(tuple(p), grip, max_steps, **hand)
          for p in np.linspace(start, end, legs + 1)[1:]]


def _kettle(bar: np.ndarray, kettle: np.ndarray, goal: np.ndarray) -> list[Waypoint]:
  """Grasp the kettle's handle (a horizontal bar along x on its top) from the front with the hand
  rolled a quarter turn, fingers above and below the bar; lift it KETTLE_LIFT, carry it to the
  goal burner, set it down, open and slide the fingers off backwards."""
  roll = KETTLE_ROLL
  grasp = bar + [0.0, -KETTLE_GRASP_DEPTH, 0.0]
  place = grasp + (goal - kettle)
  lift = np.array([0.0, 0.0, KETTLE_LIFT])
  return [Waypoint(tuple(grasp + [0.0, -0.12, 0.0]), _OPEN, 25, roll=roll),
          Waypoint(tuple(grasp + [0.0, -0.06, 0.0]), _OPEN, 3, hold=True, roll=roll),
          Waypoint(tuple(grasp), _OPEN, 10, roll=roll),
          Waypoint(tuple(grasp), _CLOSED, 6, hold=True, roll=roll),
          Waypoint(tuple(grasp + lift), _CLOSED, 6, hold=True, roll=roll),
          *_legs(grasp + lift, place + lift, 4, _CLOSED, 10, roll=roll),
          Waypoint(tuple(place), _CLOSED, 8, roll=roll),
          Waypoint(tuple(place), _OPEN, 5, hold=True, roll=roll),
          *_legs(place, place + [0.0, -0.2, 0.0], 2, _OPEN, 8, roll=roll)]


def _light(lever: np.ndarray) -> list[Waypoint]:
  """Push the light switch's lever (turning left about a vertical hinge behind it) from its
  right with the closed fingers, 15.5 cm to the left."""
  front = lever + [0.0, -LIGHT_REACH, 0.0]
  return [Waypoint(tuple(front + [LIGHT_SIDE, -0.08, 0.0]), _CLOSED, 25),
          Waypoint(tuple(front + [LIGHT_SIDE, 0.0, 0.0]), _CLOSED, 10),
          Waypoint(tuple(front + [LIGHT_SIDE, 0.0, 0.0]), _CLOSED, 2, hold=True),
          Waypoint(tuple(front + [-0.08, 0.0, 0.0]), _CLOSED, 20),
          Waypoint(tuple(front + [-0.08, -0.08, 0.0]), _CLOSED, 8)]


def _slide(handle: np.ndarray) -> list[Waypoint]:
  """Grasp the slide cabinet's vertical handle bar from the front and pull it 20 cm right."""
  return [Waypoint(tuple(handle + [0.0, -0.12, 0.0]), _OPEN, 25),
          Waypoint(tuple(handle), _OPEN, 12),
          Waypoint(tuple(handle), _CLOSED, 5, hold=True),
          Waypoint(tuple(handle + [SLIDE_PULL, 0.0, 0.0]), _CLOSED, 25)]


def waypoints(model: mujoco.MjModel) -> list[Waypoint]:
  """The script, from the model's handle sites and bodies at D4RL's reset: kitchen-complete's
  elements in D4RL's order (microwave, kettle, light switch, slide cabinet)."""
  data = mujoco.MjData(model)
  data.qpos[:] = kitchen.INITIAL_QPOS
  mujoco.mj_forward(model, data)
  site = lambda name: data.site_xpos[model.site(name).id].copy()
  kettle_goal = np.asarray(kitchen.ELEMENT_GOALS["kettle"][:3])
  return (_microwave(site("microhandle_site"), data.xpos[model.body("microdoorroot").id].copy())
          + _kettle(site("kettle_site"), data.xpos[model.body("kettle").id].copy(), kettle_goal)
          + _light(site("light_site")) + _slide(site("slide_site")))


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
    bounds = np.asarray(kitchen.ROBOT_POSITION_BOUNDS)[:7]
    ranges = self.model.jnt_range[:7]
    self._lower = np.maximum(bounds[:, 0], ranges[:, 0]) + LIMIT_MARGIN
    self._upper = np.minimum(bounds[:, 1], ranges[:, 1]) - LIMIT_MARGIN
    self._stiffness = self.model.actuator_gainprm[:7, 0]
    self._targets = joint_targets(self.model, self.plan, self._orientation, self._lower,
                                  self._upper)
    self._phase = self._steps = np.zeros(0, int)

  def start(self, num_envs: int):
    self._phase = np.zeros(num_envs, int)
    self._steps = np.zeros(num_envs, int)

  def reset(self, index: int, env_info=None):
    del env_info
    self._phase[index] = self._steps[index] = 0

  def _action(self, qpos: np.ndarray, index: int) -> tuple[np.ndarray, float]:
    """(action, the end effector's distance to waypoint `index` (m)) at joint positions `qpos`:
    the arm's joints driven towards the waypoint's solved joints, plus the servo offset that
    holds the arm against gravity."""
    waypoint = self.plan[index]
    self.data.qpos[:] = qpos
    self.data.qvel[:] = 0.0
    mujoco.mj_kinematics(self.model, self.data)
    mujoco.mj_comPos(self.model, self.data)
    mujoco.mj_comVel(self.model, self.data)
    distance = np.linalg.norm(np.asarray(waypoint.position) - self.data.site_xpos[self._site])
    gravity = np.zeros(self.model.nv)
    mujoco.mj_rne(self.model, self.data, 0, gravity)
    sag = gravity[:7] / self._stiffness
    action = np.zeros(kitchen.ACTION_SIZE)
    action[:7] = np.clip((self._targets[index] - qpos[:7] + sag) / _STEP, -1.0, 1.0)
    action[7:] = waypoint.grip
    return action, float(distance)

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
        action, distance = self._action(q, self._phase[i])
        reached = (not waypoint.hold) and distance < REACH_TOLERANCE
        if self._steps[i] >= waypoint.max_steps or reached:
          self._phase[i] += 1
          self._steps[i] = 0
          continue
        self._steps[i] += 1
        actions[i] = action
        break
    return actions


def demonstration(env: kitchen.Kitchen, num_steps: int = kitchen.EPISODE_LENGTH,
                  rng: np.random.Generator | None = None,
                  model: mujoco.MjModel | None = None) -> dict[str, np.ndarray]:
  """One scripted episode in C MuJoCo with D4RL's control law: rows of qpos, qvel and the action
  taken there (the bridge check's trajectory format), plus `observations`, the 60-dim
  observation after each action, and `rewards`, the env's reward after each action (elements
  done so far in those observations).

  `rng` None: without noise. Otherwise D4RL's observation noise as the MJX env applies it
  (`kitchen.Kitchen.observe`, `step`): every observation's 30 positions get uniform noise of
  0.1 x each coordinate's amplitude, the servo targets start from the last noisy robot
  position, and the elements are judged on the noisy observations; the script itself reads the
  true joint positions, as `collect.collect_with_planner` gives it. `model`: the C model to
  simulate, by default D4RL's (`env.reference_mj_model()`).
  """
  model = env.reference_mj_model() if model is None else model
  data = mujoco.MjData(model)
  data.qpos[:] = kitchen.INITIAL_QPOS
  mujoco.mj_forward(model, data)
  script = KitchenScript(env)
  script.start(1)
  bounds = np.asarray(kitchen.ROBOT_POSITION_BOUNDS)
  goal = kitchen.task_goal(env.task_name)
  amplitude = kitchen.OBSERVATION_NOISE_RATIO * np.asarray(kitchen.POSITION_NOISE_AMPLITUDE)
  size = kitchen.NUM_ROBOT_JOINTS + kitchen.NUM_OBJECT_COORDINATES

  def observe():
    positions = data.qpos[:size].copy()
    if rng is not None:
      positions += amplitude * rng.uniform(-1.0, 1.0, size)
    return np.concatenate([positions, goal])

  observation = observe()
  qpos, qvel, actions, observations = [], [], [], []
  for _ in range(num_steps):
    action = script.act(None, data.qpos[None].copy(), None, None)[0]
    qpos.append(data.qpos.copy())
    qvel.append(data.qvel.copy())
    actions.append(action)
    data.ctrl[:] = np.clip(observation[:kitchen.NUM_ROBOT_JOINTS]
                           + kitchen.ACTION_VELOCITY * action * env.dt,
                           bounds[:, 0], bounds[:, 1])
    for _ in range(env.frame_skip):
      mujoco.mj_step(model, data)
    observation = observe()
    observations.append(observation)
  qpos.append(data.qpos.copy())
  qvel.append(data.qvel.copy())
  actions.append(np.zeros(kitchen.ACTION_SIZE))
  observations = np.array(observations)
  done = np.asarray(kitchen.elements_done(observations, env.task_name))
  rewards = np.logical_or.accumulate(done, axis=0).sum(axis=1).astype(np.float64)
  return {"qpos": np.array(qpos), "qvel": np.array(qvel), "actions": np.array(actions),
          "observations": observations, "rewards": rewards,
          "episode_ends": np.array([num_steps])}


def element_success_rates(episodes: list[dict[str, np.ndarray]], task_name: str
                          ) -> dict[str, float]:
  """Per task element, the fraction of `episodes` (each with 60-dim `next_observations`, as
  `wsrl_mjx.datagen.collect.trajectories` cuts them) in which it was done at some step."""
  done = np.array([np.asarray(kitchen.elements_done(episode["next_observations"], task_name))
                   .any(axis=0) for episode in episodes])
  return {element: float(done[:, k].mean())
          for k, element in enumerate(kitchen.TASKS[task_name].elements)}


def noisy_success_rates(env: kitchen.Kitchen, num_episodes: int, first_seed: int = 0,
                        model: mujoco.MjModel | None = None) -> dict[str, float]:
  """Per element of `env`'s task, and for all of them ("all"), the fraction of `num_episodes`
  scripted C-MuJoCo episodes (`demonstration` with D4RL's observation noise, episode i drawing
  from `np.random.default_rng(first_seed + i)`; `model` as there) in which it was done."""
  done = np.array([np.asarray(kitchen.elements_done(demonstration(
      env, rng=np.random.default_rng(first_seed + i), model=model)["observations"],
      env.task_name)).any(axis=0) for i in range(num_episodes)])
  rates = {element: float(done[:, k].mean()) for k, element in enumerate(env.task.elements)}
  return {**rates, "all": float(done.all(axis=1).mean())}
