"""The Adroit hand tasks WSRL fine-tunes on (pen, door, relocate; binary reward), on MJX.

WSRL (like Cal-QL) runs the `*-binary-v0` tasks of the `mj_envs` fork it installs: D4RL's Adroit
models, observations and resets, with reward `goal_achieved - 1` and an episode that ends at the
first success. The facts, from D4RL 1.1's `hand_manipulation_suite/*_v0.py` and that fork:

| task     | obs | act | steps | goal achieved when                                    | reset draws      |
| -------- | --- | --- | ----- | ----------------------------------------------------- | ---------------- |
| pen      | 45  | 24  | 100   | pen within 0.075 m of its place, orientation . goal > 0.95 | goal orientation |
| door     | 39  | 28  | 200   | door hinge >= 1.35 rad                                | door frame place |
| relocate | 39  | 30  | 200   | ball within 0.1 m of the target                       | ball and target  |

Every task: frame skip 5 x 0.002 s; actions clipped to [-1, 1] and mapped linearly onto each
actuator's control range; the state starts at qpos = qvel = 0. Hammer is not ported.

The models are the Adroit hand files that ship with `gymnasium-robotics` (the D4RL files with
the attribute MuJoCo 3 rejects removed); `reference_mj_model()` is that model as it is. MJX 3.17
cannot simulate it as shipped, so the model MJX runs differs where the tasks do not depend on it:
- MJX has no cylinder-box collision: against boxes (palm, table, door), each colliding cylinder
  (pen, goal, door frame and door parts) is stood in for by a capsule of the same radius and
  straight length; against everything else it stays the cylinder it is. Visual geoms and meshes
  are dropped, and the pen keeps its original mass and inertia (its geoms set them);
- the door's capsule twins would reach into the table (their round ends stick out 5 cm below the
  cylinder's flat ends), so the door and the table, which never touch in D4RL's model, are an
  excluded pair;
- what a reset moves lives in each env's state: the pen's goal is a mocap body; the door
  frame's position (a body with the door as child, which MJX's mocap does not carry along) is
  kept in the state and set in the model each step; relocate's ball is placed through its slide
  joints (its xy start is in qpos, where D4RL moved the body; observations are the same);
- MJX solves for the 48 deepest contacts per condim each step (`MAX_CONTACTS`), not for every
  pair that can collide (at most 27 were seen touching at once), with a fixed solver budget
  (`SOLVER_BUDGET`: the door 8 Newton iterations of 16 line-search steps, the others 4 of 8);
- sensors are removed (no observation or reward reads them); MJX ignores the models'
  `noslip_iterations` (20), so grasps slip a little more than in MuJoCo. The bridge check
  (`launch.bridge_check --env=pen-binary-v0`) measures what this changes.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import mujoco

from envs import mjx_env
from envs.mjx_env import mjx  # imported there without MJX's "Failed to import warp" print

FRAME_SKIP = 5


@dataclasses.dataclass(frozen=True)
class AdroitTask:
  xml_file: str
  observation_size: int
  action_size: int
  episode_length: int
  # D4RL's reference returns of the dense task (kept for completeness; WSRL scores binary
  # Adroit by success rate).
  score_min: float
  score_max: float


TASKS = {
    "pen": AdroitTask("adroit_pen.xml", 45, 24, 100, 96.262799, 3076.8331017826877),
    "door": AdroitTask("adroit_door.xml", 39, 28, 200, -56.512833, 2880.5693087298737),
    "relocate": AdroitTask("adroit_relocate.xml", 39, 30, 200, -6.425911, 4233.877797728884),
}
PEN_LENGTH = 0.13             # object_top to object_bottom (and target_top to target_bottom)
PEN_GOAL_DISTANCE = 0.075
PEN_GOAL_SIMILARITY = 0.95
DOOR_OPEN_ANGLE = 1.35
RELOCATE_GOAL_DISTANCE = 0.1
# The bridge check (envs/bridge.py) on Adroit: bounds per field kind, (one-step, multi-step),
# on the 90th percentile over windows (BUILD.md says why not the worst window). Measured with
# `launch.bridge_check` defaults for Adroit (4 generated random-action episodes of
# `BRIDGE_EPISODE_STEPS`, 64 windows of 10 steps, seed 0), one-step 90th percentiles, correct
# model -> wrong MJX models (all actuator gains x1.2 / object mass and inertia x1.5 / joint
# damping x2; the door measured at 4 / 8 solver steps, and 0.0138 at its 8 / 16 since):
#   pen      hand joints 0.0043 -> 0.011 / 0.0096 / 0.027; pen orientation 0.0038 -> 0.0084 /
#            0.0075 / 0.0079; pen velocity 1.00 -> 1.86 / 1.27 / 1.72
#   door     arm and hand joints 0.014 -> 0.067 / 0.047 (door mass)
#   relocate arm and hand joints 0.0026 -> 0.033 / 0.0001 (the flailing hand rarely touches
#            the ball, so its mass goes unseen: a check on generated data sees the hand, and
#            objects only where the hand moves them)
# so each one-step bound sits between the correct model and the nearest wrong one. Multi-step
# errors (10 steps of fingers at up to 80 rad/s) are chaotic: those bounds catch divergence.
BRIDGE_TOLERANCES = {
    "pen": {"position": (0.007, 1.0), "velocity": (1.2, 10.0)},
    "door": {"position": (0.03, 1.5), "velocity": (1.0, 10.0)},
    "relocate": {"position": (0.01, 1.0), "velocity": (1.0, 10.0)},
}
BRIDGE_QUANTILE = 0.9
# Random actions held for 4 steps drive the arm into the table: after ~100 steps door episodes
# have fingers pushed more than halfway through its 5 cm top, where C MuJoCo's capsule-box
# contact pushes them out through the bottom face and MJX's through the top. Both are wrong
# there, differently, so the bounds are calibrated on, and the check defaults to, 100 steps.
BRIDGE_EPISODE_STEPS = 100
# Newton iterations and line-search steps MJX runs per physics step, where the 4 / 8 of
# envs/mjx_env.py is not enough: with the hand on the door and the frame, C MuJoCo needs more than
# 4 iterations in 44 of 64 bridge windows, and at 4 / 8 its own one-step error reaches 0.36 rad.
# At 8 / 16 MJX's error from C MuJoCo is what it is at the model's 20 / 50 (90th percentile 0.045
# against 0.083 at 4 / 8, on 200-step episodes); 10% slower on the CPU (benchmarks/RESULTS.md).
SOLVER_BUDGET = {"door": (8, 16)}
# Contacts MJX hands its constraint solver per step: the deepest `MAX_CONTACTS` of each condim
# group, instead of a slot for every geom pair that can collide (pen 264, door 559, relocate 188,
# each a block of solver rows whether touching or not). The most ever seen touching in one
# group is 27 (door, random actions mashing the hand into the table; a relocate grasp: 13), so
# 48 keeps every contact with room to spare: steps from those states match the uncapped
# model's to 1e-5 (tests/test_adroit.py, benchmarks/RESULTS.md).
MAX_CONTACTS = 48
# The body a reset moves, per task (made a mocap body in the MJX model).
_MOVED_BODY = {"pen": "target"}
# Body pairs the MJX model must not collide, per task. The door's edge cylinders stand on their
# flat ends 2 mm above the table at the lowest frame position a reset draws (0.252 m), so in
# D4RL's model door and table never touch: the door turns about a vertical axis. Their capsule
# twins reach one radius (5 cm) further, into the table, for every frame below 0.30 m (half of
# the resets), and wedged the door shut there. Excluding the pair is exact: tests/test_adroit.py
# checks that the reference door clears the table over the whole reset range and hinge range.
_EXCLUDED_BODY_PAIRS = {"door": (("door", "table"),)}


def model_dir() -> pathlib.Path:
  """Where `gymnasium-robotics` keeps the Adroit hand models (found without importing it)."""
  spec = importlib.util.find_spec("gymnasium_robotics")
  if spec is None or not spec.submodule_search_locations:
    raise ImportError("The Adroit models ship with gymnasium-robotics: pip install "
                      "gymnasium-robotics==1.4.2 (it is in requirements.txt)")
  path = pathlib.Path(spec.submodule_search_locations[0]) / "envs" / "assets" / "adroit_hand"
  if not path.is_dir():
    raise FileNotFoundError(f"No Adroit models at {path}: is gymnasium-robotics 1.4.2 installed?")
  return path


def reference_model(task_name: str) -> mujoco.MjModel:
  """The task's model as D4RL defines it (cylinders, meshes, sensors, noslip and all)."""
  return mujoco.MjModel.from_xml_path(str(model_dir() / TASKS[task_name].xml_file))


# Collision channels (contype/conaffinity bits) of the MJX model. The Adroit models use bit 1
# only; MJX 3.17 has no cylinder-box collision, so boxes and cylinders move to channels that never
# meet, and each colliding cylinder gets a capsule twin that stands in for it against boxes only.
# A pair collides when one's contype shares a bit with the other's conaffinity; twins send on
# one bit and receive on another, so they meet boxes both ways but never each other.
_ANY, _BOX, _CYLINDER, _TWIN_SENDS, _TWIN_RECEIVES = 1, 2, 4, 8, 16
_CHANNELS = {  # geom type -> (contype, conaffinity) for a geom that had (1, 1)
    mujoco.mjtGeom.mjGEOM_BOX: (_BOX | _TWIN_RECEIVES, _ANY | _BOX | _TWIN_SENDS),
    mujoco.mjtGeom.mjGEOM_CYLINDER: (_CYLINDER, _ANY | _CYLINDER),
}
_OTHER_CHANNELS = (_ANY, _ANY | _BOX | _CYLINDER)
_TWIN_CHANNELS = (_TWIN_SENDS, _TWIN_RECEIVES)


def build_mjx_model(task_name: str, max_contacts: int | None = None) -> mujoco.MjModel:
  """The reference model changed only as the module docstring lists, so that MJX runs it."""
  return mjx_model_spec(task_name, max_contacts).compile()


def mjx_model_spec(task_name: str, max_contacts: int | None = None) -> mujoco.MjSpec:
  """`build_mjx_model`'s spec, for callers that add to it (the planner's site sensors).

  Every pair of geoms that collides in the reference model collides here with the same shapes,
  except cylinder-box pairs: there the cylinder's capsule twin touches the box. The twin has the
  cylinder's radius and straight length, so its round ends reach one radius further: on pen
  states of a random-action trajectory this follows C MuJoCo's cylinder more closely (one-step
  pen velocity error: median 0, 95th percentile 0.2 rad/s) than a twin of the same overall
  length (median 0.002, 95th percentile 0.4), whose ends miss contacts at the pen's rim.
  """
  spec = mujoco.MjSpec.from_file(str(model_dir() / TASKS[task_name].xml_file))
  reference = spec.compile()     # the reference model; gives each element its `id` in it
  # Bodies whose mass comes from their geoms keep it when the geoms change (pen: 0.182 kg).
  mjx_env.keep_inertias(spec, reference)
  for geom, i in [(geom, geom.id) for geom in spec.geoms]:
    contype, conaffinity = int(geom.contype), int(geom.conaffinity)
    if contype not in (0, 1) or conaffinity not in (0, 1):
      raise ValueError(f"{task_name}: geom {i} uses collision bits beyond 1; the channel remap "
                       "(envs/adroit.py) assumes the Adroit models' 0/1")
    if not contype and not conaffinity:
      if geom.type == mujoco.mjtGeom.mjGEOM_MESH:
        spec.delete(geom)                      # visual only
      continue
    channels = _CHANNELS.get(geom.type, _OTHER_CHANNELS)
    geom.contype, geom.conaffinity = channels[0] * contype, channels[1] * conaffinity
    if geom.type == mujoco.mjtGeom.mjGEOM_CYLINDER:
      radius, half_length = reference.geom_size[i, :2]
      twin = geom.parent.add_geom(
          type=mujoco.mjtGeom.mjGEOM_CAPSULE, size=[radius, half_length, 0],
          pos=reference.geom_pos[i], quat=reference.geom_quat[i],
          contype=_TWIN_CHANNELS[0] * contype, conaffinity=_TWIN_CHANNELS[1] * conaffinity,
          condim=int(reference.geom_condim[i]), friction=reference.geom_friction[i],
          margin=float(reference.geom_margin[i]), gap=float(reference.geom_gap[i]),
          solref=reference.geom_solref[i], solimp=reference.geom_solimp[i],
          priority=int(reference.geom_priority[i]), rgba=[0, 0, 0, 0])
      twin.name = f"{geom.name or f'cylinder{i}'}_box_twin"
  for mesh in list(spec.meshes):
    spec.delete(mesh)
  for sensor in list(spec.sensors):
    spec.delete(sensor)
  if task_name in _MOVED_BODY:
    spec.body(_MOVED_BODY[task_name]).mocap = True
  for body1, body2 in _EXCLUDED_BODY_PAIRS.get(task_name, ()):
    spec.add_exclude(bodyname1=body1, bodyname2=body2)
  if max_contacts is not None:
    # MJX reads this (C MuJoCo ignores it): of the contacts found each step, only the
    # `max_contacts` deepest per condim go to the constraint solver.
    spec.add_numeric(name="max_contact_points", data=[float(max_contacts)])
  return spec


def _euler_xy_to_quat(x: jax.Array, y: jax.Array) -> jax.Array:
  """D4RL's `euler2quat([x, y, 0])` (rotation about x, then about the new y)."""
  cx, sx, cy, sy = jnp.cos(x / 2), jnp.sin(x / 2), jnp.cos(y / 2), jnp.sin(y / 2)
  return jnp.stack([cy * cx, cy * sx, sy * cx, sy * sx])


class Adroit(mjx_env.MjxEnv):
  """One Adroit hand task with WSRL's binary reward (see the module docstring for the facts)."""

  def __init__(self, task_name: str, solver_iterations: int | None = None,
               solver_ls_iterations: int | None = None,
               max_contacts: int | None = MAX_CONTACTS):
    if task_name not in TASKS:
      raise ValueError(f"Unknown Adroit task {task_name!r}; known: {sorted(TASKS)}")
    self.task_name = task_name
    self.task = TASKS[task_name]
    iterations, ls_iterations = SOLVER_BUDGET.get(task_name, (None, None))
    super().__init__(build_mjx_model(task_name, max_contacts), FRAME_SKIP,
                     solver_iterations or iterations, solver_ls_iterations or ls_iterations)
    self._reference_model = reference_model(task_name)
    model = self.mj_model
    low, high = model.actuator_ctrlrange[:, 0], model.actuator_ctrlrange[:, 1]
    self._ctrl_mid = jnp.asarray((low + high) / 2, jnp.float32)
    self._ctrl_half_range = jnp.asarray((high - low) / 2, jnp.float32)
    body = lambda name: mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)
    site = lambda name: mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, name)
    self._object = body("Object") if task_name != "door" else None
    self._sites = {name: site(name) for name in (
        "object_top", "object_bottom", "target_top", "target_bottom", "eps_ball", "S_grasp",
        "S_handle", "target") if site(name) >= 0}
    self._frame = body("frame")
    self._mocap = (int(model.body_mocapid[body(_MOVED_BODY[task_name])])
                   if task_name in _MOVED_BODY else None)
    self._rest_mocap_quat = jnp.asarray(mujoco.MjData(model).mocap_quat, jnp.float32)
    # Relocate's target is a site on the world that D4RL moves; ours lives in the env state.
    self._default_target = (jnp.asarray(model.site_pos[self._sites["target"]], jnp.float32)
                            if task_name == "relocate" else jnp.zeros(3, jnp.float32))

  @property
  def observation_size(self) -> int:
    return self.task.observation_size

  def observation_fields(self) -> dict[str, slice]:
    if self.task_name == "pen":
      return {"hand joint angles": slice(0, 24), "pen position": slice(24, 27),
              "pen velocity": slice(27, 33), "pen orientation": slice(33, 36),
              "goal orientation": slice(36, 39), "pen position error": slice(39, 42),
              "pen orientation error": slice(42, 45)}
    if self.task_name == "door":
      return {"arm and hand joint angles": slice(0, 27), "latch and door angles": slice(27, 29),
              "palm and handle positions": slice(29, 38), "door open": slice(38, 39)}
    return {"arm and hand joint angles": slice(0, 30), "palm-ball-target offsets": slice(30, 39)}

  def action_to_ctrl(self, action: jax.Array) -> jax.Array:
    """mj_envs' mapping: [-1, 1] (clipped) onto each actuator's control range."""
    return self._ctrl_mid + jnp.clip(action, -1.0, 1.0) * self._ctrl_half_range

  def ctrl_to_action(self, ctrl: jax.Array) -> jax.Array:
    """The action that `action_to_ctrl` maps onto `ctrl` (unclipped; scripted controllers)."""
    return (ctrl - self._ctrl_mid) / self._ctrl_half_range

  @property
  def bridge_episode_steps(self) -> int:
    return BRIDGE_EPISODE_STEPS

  def bridge_tolerances(self, cone: str) -> tuple[dict, float]:
    """The bridge check's bounds for Adroit, on the 90th percentile of windows (see BUILD.md)."""
    del cone
    return BRIDGE_TOLERANCES[self.task_name], BRIDGE_QUANTILE

  # --- observation and goal -----------------------------------------------------------------

  def _observe(self, data: mjx.Data, target: jax.Array) -> jax.Array:
    """D4RL's `get_obs` from a physics state (site positions as `mj_step` leaves them)."""
    qpos, qvel, site = data.qpos, data.qvel, lambda name: data.site_xpos[self._sites[name]]
    if self.task_name == "pen":
      pen_position = data.xpos[self._object]
      orientation = (site("object_top") - site("object_bottom")) / PEN_LENGTH
      goal_orientation = (site("target_top") - site("target_bottom")) / PEN_LENGTH
      return jnp.concatenate([
          qpos[:-6], pen_position, qvel[-6:], orientation, goal_orientation,
          pen_position - site("eps_ball"), orientation - goal_orientation])
    if self.task_name == "door":
      palm, handle = site("S_grasp"), site("S_handle")
      door_open = jnp.where(qpos[28] > 1.0, 1.0, -1.0)
      return jnp.concatenate([qpos[1:-2], qpos[-1:], qpos[28:29], palm, handle, palm - handle,
                              door_open[None]])
    ball, palm = data.xpos[self._object], site("S_grasp")
    return jnp.concatenate([qpos[:-6], palm - ball, palm - target, ball - target])

  def _goal_achieved(self, observation: jax.Array) -> jax.Array:
    """D4RL's `goal_achieved`, from the observation, which holds every quantity it reads."""
    if self.task_name == "pen":
      distance = jnp.linalg.norm(observation[39:42])            # pen - its place
      similarity = jnp.dot(observation[33:36], observation[36:39])  # orientation . goal's
      return (distance < PEN_GOAL_DISTANCE) & (similarity > PEN_GOAL_SIMILARITY)
    if self.task_name == "door":
      return observation[28] >= DOOR_OPEN_ANGLE                  # the door hinge
    return jnp.linalg.norm(observation[36:39]) < RELOCATE_GOAL_DISTANCE  # ball - target

  def observation(self, qpos: jax.Array, qvel: jax.Array) -> jax.Array:
    """The observation at (qpos, qvel) with the model's own goal placement (the bridge check
    replays states with it; the positions are computed from qpos)."""
    data = mjx.make_data(self.mjx_model).replace(qpos=qpos, qvel=qvel)
    return self._observe(mjx.kinematics(self.mjx_model, data), self._default_target)

  # --- episodes -----------------------------------------------------------------------------

  def sample_task(self, rng: jax.Array) -> dict[str, jax.Array]:
    """The reset's random draws, in D4RL's ranges: the pen's goal orientation angles, the door
    frame's position, or the ball's xy offset and the target's position."""
    if self.task_name == "pen":
      return {"goal_angles": jax.random.uniform(rng, (2,), minval=-1.0, maxval=1.0)}
    if self.task_name == "door":
      return {"frame_position": jax.random.uniform(
          rng, (3,), minval=jnp.array([-0.3, 0.25, 0.252]), maxval=jnp.array([-0.2, 0.35, 0.35]))}
    ball_key, target_key = jax.random.split(rng)
    return {"ball_xy": jax.random.uniform(ball_key, (2,), minval=jnp.array([-0.15, -0.15]),
                                          maxval=jnp.array([0.15, 0.3])),
            "target": jax.random.uniform(target_key, (3,), minval=jnp.array([-0.2, -0.2, 0.15]),
                                         maxval=jnp.array([0.2, 0.2, 0.35]))}

  def reset(self, rng: jax.Array) -> mjx_env.State:
    return self.reset_to(self.sample_task(rng))

  def reset_to(self, task: dict[str, jax.Array], qpos: jax.Array | None = None,
               qvel: jax.Array | None = None) -> mjx_env.State:
    """An episode with the given draws (`sample_task`), from rest unless qpos/qvel are given."""
    model = self.mj_model
    qpos = jnp.zeros(model.nq, jnp.float32) if qpos is None else qpos
    qvel = jnp.zeros(model.nv, jnp.float32) if qvel is None else qvel
    fields, info = {}, {}
    target = self._default_target
    if self.task_name == "pen":
      fields["mocap_quat"] = self._rest_mocap_quat.at[self._mocap].set(
          _euler_xy_to_quat(*task["goal_angles"]))
    elif self.task_name == "door":
      info["frame_position"] = task["frame_position"]
    else:
      qpos = qpos.at[30:32].add(task["ball_xy"])
      target = task["target"]
    info["target"] = target
    data = self.physics_init(qpos, qvel, self._task_model(info), **fields)
    zero = jnp.zeros((), jnp.float32)
    return mjx_env.State(pipeline_state=data, obs=self._observe(data, target), reward=zero,
                         done=zero, metrics={"success": zero}, info=info)

  def _task_model(self, info: dict) -> mjx.Model | None:
    """The door's model with this episode's frame position (None: the env's model)."""
    if "frame_position" not in info:
      return None
    body_pos = self.mjx_model.body_pos.at[self._frame].set(info["frame_position"])
    return self.mjx_model.replace(body_pos=body_pos)

  def step(self, state: mjx_env.State, action: jax.Array) -> mjx_env.State:
    data = self.physics_step(state.pipeline_state, self.action_to_ctrl(action),
                             self._task_model(state.info))
    observation = self._observe(data, state.info["target"])
    success = self._goal_achieved(observation).astype(jnp.float32)
    # Binary reward; WSRL's wrapper ends the episode at the first success.
    return state.replace(pipeline_state=data, obs=observation,
                         reward=success - 1.0, done=success,
                         metrics={**state.metrics, "success": success})
