"""D4RL's Franka Kitchen tasks as WSRL fine-tunes on them (complete, partial, mixed), on MJX.

The task, from D4RL's `d4rl/kitchen/kitchen_envs.py` and `adept_envs/franka/kitchen_multitask_v0.py`
with the reward of the D4RL fork WSRL installs (github zhouzypaul/D4RL, commit e33f96a) and WSRL's
`KitchenTerminalWrapper` (`wsrl/envs/wrappers/kitchen.py:14-20`):

- the model: a Franka arm (7 joints, 2 fingers) in a kitchen with 21 object coordinates
  (4 burner knobs and their burners, the light switch, the slide and two hinge cabinet doors, the
  microwave door, the kettle's free joint); 0.002 s physics steps, 40 per env step (0.08 s;
  `KitchenV0.__init__(frame_skip=40)`);
- the observation (60): the robot's 9 joint positions, the 21 object coordinates, then the goal
  (30, indexed like qpos: zero except at the task's elements, which hold their goal values;
  `KitchenV0._get_obs`, `KitchenBase._get_task_goal`). The 30 positions carry D4RL's uniform
  observation noise, 0.1 x each coordinate's `pos_noise_amp` (`franka_robot.py:153-159`,
  `franka_config.xml`): +-0.01 on the robot, +-0.0005 to +-0.01 on objects;
- the action (9) is a joint velocity: clipped to [-1, 1], times 2 rad/s (`act_amp`), and the
  position target of the arm's position servos is the last *observed* (noisy) robot position
  plus velocity x 0.08 s, clipped to the config's position bounds
  (`kitchen_multitask_v0.py:87-96`, `franka_robot.py:255-264,171-174`);
- an element is done when the norm of its observed coordinates minus its goal is below 0.3
  (`BONUS_THRESH`, `OBS_ELEMENT_INDICES`, `OBS_ELEMENT_GOALS` in `kitchen_envs.py:9-27`); each
  counts once, at its first completion; the reward of a step is the number of the task's 4
  elements done so far (the fork's `num_solved`, `kitchen_envs.py:61-85` there; D4RL upstream
  rewards only the step of completion), and the episode ends when it reaches 4
  (`KitchenTerminalWrapper`). Episodes are 280 steps; the reset is D4RL's `init_qpos` at rest;
- the score WSRL reports is the last reward / 4 (`finetune.py:248-251`), x 100 here.

The model is the Franka kitchen that ships with `gymnasium-robotics` (D4RL's files with its joints
renamed); `reference_mj_model()` is that model with the robot's pedestal made visual-only, as in
D4RL (class `panda_viz` there; gymnasium-robotics lets it collide). The model MJX runs differs
where the task does not depend on exact shapes (BUILD.md, "Franka Kitchen on MJX"):
- the arm's 9 collision meshes are replaced by primitives MuJoCo fits to each mesh's inertia
  (capsules for the links, a box for the hand; `FIT_AABB`); the fingers' capsules and boxes are
  kept;
- every colliding cylinder (kitchen handles, knobs, rails, the kettle's lid) becomes a capsule of
  the same radius and straight length (MJX has no cylinder-box collision; only the robot and the
  kettle ever touch them);
- visual geoms and meshes are dropped; bodies keep the mass and inertia the reference
  computes from its geoms; the kitchen's moving parts no longer collide with the floor, which
  they cannot reach, and the arm's fixed base and first link (whose fitted capsules overlap) are
  an excluded pair;
- MJX keeps only the `MAX_GEOM_PAIRS` nearest candidate pairs of each geom-type group (bounding
  spheres) and the `MAX_CONTACTS` deepest contacts per condim.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from envs import mjx_env

FRAME_SKIP = 40
EPISODE_LENGTH = 280
OBSERVATION_SIZE = 60
ACTION_SIZE = 9
NUM_ROBOT_JOINTS = 9
NUM_OBJECT_COORDINATES = 21
ACTION_VELOCITY = 2.0         # rad/s (m/s for the fingers) at action 1: D4RL's `act_amp`
COMPLETION_THRESHOLD = 0.3    # D4RL's BONUS_THRESH
OBSERVATION_NOISE_RATIO = 0.1  # KitchenV0's robot_noise_ratio, applied to robot and objects

# Each element's coordinates in qpos (= in the observation) and their goal values
# (`kitchen_envs.py:9-26`).
ELEMENT_INDICES = {
    "bottom burner": (11, 12),
    "top burner": (15, 16),
    "light switch": (17, 18),
    "slide cabinet": (19,),
    "hinge cabinet": (20, 21),
    "microwave": (22,),
    "kettle": (23, 24, 25, 26, 27, 28, 29),
}
ELEMENT_GOALS = {
    "bottom burner": (-0.88, -0.01),
    "top burner": (-0.92, -0.01),
    "light switch": (-0.69, -0.05),
    "slide cabinet": (0.37,),
    "hinge cabinet": (0.0, 1.45),
    "microwave": (-0.75,),
    "kettle": (-0.23, 0.75, 1.62, 0.99, 0.0, 0.0, -0.06),
}


@dataclasses.dataclass(frozen=True)
class KitchenTask:
  elements: tuple[str, str, str, str]   # TASK_ELEMENTS, in D4RL's order
  dataset_file: str                     # the D4RL download's file name


# `d4rl/kitchen/__init__.py` and `kitchen_envs.py:94-98`: complete and partial share a task.
TASKS = {
    "kitchen-complete": KitchenTask(("microwave", "kettle", "light switch", "slide cabinet"),
                                    "mini_kitchen_microwave_kettle_light_slider-v0.hdf5"),
    "kitchen-partial": KitchenTask(("microwave", "kettle", "light switch", "slide cabinet"),
                                   "kitchen_microwave_kettle_light_slider-v0.hdf5"),
    "kitchen-mixed": KitchenTask(("microwave", "kettle", "bottom burner", "light switch"),
                                 "kitchen_microwave_kettle_bottomburner_light-v0.hdf5"),
}

# `KitchenV0.__init__`'s init_qpos (the reset; qvel is 0).
INITIAL_QPOS = (
    1.48388023e-01, -1.76848573e+00, 1.84390296e+00, -2.47685760e+00, 2.60252026e-01,
    7.12533105e-01, 1.59515394e+00, 4.79267505e-02, 3.71350919e-02, -2.66279850e-04,
    -5.18043486e-05, 3.12877220e-05, -4.51199853e-05, -3.90842156e-06, -4.22629655e-05,
    6.28065475e-05, 4.04984708e-05, 4.62730939e-04, -2.26906415e-04, -4.65501369e-04,
    -6.44129196e-03, -1.77048263e-03, 1.08009684e-03, -2.69397440e-01, 3.50383255e-01,
    1.61944683e+00, 1.00618764e+00, 4.06395120e-03, -6.62095997e-03, -2.68278933e-04)
# `franka_config.xml`: the robot's position bounds (the servo targets are clipped to them) and
# every coordinate's position noise amplitude.
ROBOT_POSITION_BOUNDS = ((-2.9, 2.9), (-1.8, 1.8), (-2.9, 2.9), (-3.1, 0.0), (-2.9, 2.9),
                         (0.0, 3.8), (-2.9, 2.9), (0.0, 0.04), (0.0, 0.04))
POSITION_NOISE_AMPLITUDE = (0.1,) * 9 + (0.005, 0.005) + (0.0005,) * 6 + (0.005,) * 3 + (
    0.1,) * 3 + (0.005,) * 3 + (0.1,) * 3 + (0.005,)

# The bridge check on kitchen (envs/bridge.py): bounds per field kind, (one-step, multi-step),
# on the median over windows. Measured on the earlier two-element scripted demonstration (280
# steps, 64 windows of 10 steps, seed 0) with both models in C MuJoCo: where the arm folded low
# to push the kettle, its fitted capsules touch each other where D4RL's meshes do not, and the
# joints differ by up to 0.056 rad after one step (the hand's box on the kettle: 0.005 m, 0.019
# in its quaternion); in the median window nothing differs (0; 1.3e-3 rad after 10 steps). Arm
# servos 20% stiffer: median one-step joint error 3.6e-3 (max 6.1e-3). So the one-step bound sits
# between the two; the multi-step bound catches divergence. The observation has no velocities.
# On the four-element script (the kettle carried by its handle) the two C models differ by at
# most 0.010 rad after one step, and the stiffer servos by 3.6e-3 in the median over its first
# 100 steps (BUILD.md).
BRIDGE_TOLERANCES = {"position": (2e-3, 0.05), "velocity": (1.0, 10.0)}
BRIDGE_QUANTILE = 0.5
# Fit the primitives to the mesh's equivalent-inertia box (False) rather than its bounding box:
# the bounding-box capsules touch each other when the arm folds (one-step joint error on the
# scripted demonstration up to 0.20 rad against D4RL's model, 0.056 with inertia fits).
FIT_AABB = False
MAX_GEOM_PAIRS = 48
MAX_CONTACTS = 48
_HAND_MESH = "hand_col"


def model_path() -> pathlib.Path:
  """The kitchen model file in `gymnasium-robotics` (found without importing it)."""
  spec = importlib.util.find_spec("gymnasium_robotics")
  if spec is None or not spec.submodule_search_locations:
    raise ImportError("The Franka kitchen model ships with gymnasium-robotics: pip install "
                      "gymnasium-robotics==1.4.2 (it is in requirements.txt)")
  path = (pathlib.Path(spec.submodule_search_locations[0]) / "envs" / "assets" / "kitchen_franka"
          / "kitchen_assets" / "kitchen_env_model.xml")
  if not path.is_file():
    raise FileNotFoundError(f"No kitchen model at {path}: is gymnasium-robotics 1.4.2 installed?")
  return path


def _reference_spec() -> mujoco.MjSpec:
  spec = mujoco.MjSpec.from_file(str(model_path()))
  pedestal = spec.body("panda0_link0").parent     # the arm's mount, holding the pedestal
  for geom in pedestal.geoms:
    if geom.type == mujoco.mjtGeom.mjGEOM_CYLINDER:
      geom.contype, geom.conaffinity = 0, 0       # D4RL's class panda_viz
  return spec


def reference_model() -> mujoco.MjModel:
  """D4RL's kitchen (meshes and all), from gymnasium-robotics' files."""
  return _reference_spec().compile()


def build_mjx_model(max_geom_pairs: int | None = MAX_GEOM_PAIRS,
                    max_contacts: int | None = MAX_CONTACTS) -> mujoco.MjModel:
  """The reference model changed only as the module docstring lists, so that MJX runs it."""
  spec = _reference_spec()
  reference = spec.compile()
  mjx_env.keep_inertias(spec, reference)
  kitchen_parts = set()
  for geom in list(spec.geoms):
    if not geom.contype and not geom.conaffinity:
      spec.delete(geom)                         # visual only
      continue
    if geom.meshname:
      geom.type = (mujoco.mjtGeom.mjGEOM_BOX if geom.meshname == _HAND_MESH
                   else mujoco.mjtGeom.mjGEOM_CAPSULE)
    elif geom.type == mujoco.mjtGeom.mjGEOM_CYLINDER:
      geom.type = mujoco.mjtGeom.mjGEOM_CAPSULE   # same radius and half-length
    if not geom.contype and geom.parent.name not in ("", "world"):
      kitchen_parts.add(geom.parent.name)
  spec.compiler.fitaabb = FIT_AABB
  fitted = spec.compile()                       # fits the new primitives to their meshes
  for geom in spec.geoms:
    if geom.meshname:
      i = geom.id
      geom.size, geom.pos, geom.quat = fitted.geom_size[i], fitted.geom_pos[i], fitted.geom_quat[i]
      geom.meshname = ""
  for mesh in list(spec.meshes):
    spec.delete(mesh)
  for body in sorted(kitchen_parts):
    spec.add_exclude(bodyname1="world", bodyname2=body)
  # The arm's base link is fixed, so MuJoCo's parent-child filter (moving bodies only) does not
  # apply to it and its first link; their meshes never touch, their fitted capsules overlap.
  spec.add_exclude(bodyname1="panda0_link0", bodyname2="panda0_link1")
  if max_geom_pairs is not None:
    spec.add_numeric(name="max_geom_pairs", data=[float(max_geom_pairs)])
  if max_contacts is not None:
    spec.add_numeric(name="max_contact_points", data=[float(max_contacts)])
  return spec.compile()


def task_goal(task_name: str) -> np.ndarray:
  """The goal part of the observation (30, float32): D4RL's `_get_task_goal`."""
  goal = np.zeros(NUM_ROBOT_JOINTS + NUM_OBJECT_COORDINATES, np.float32)
  for element in TASKS[task_name].elements:
    goal[list(ELEMENT_INDICES[element])] = ELEMENT_GOALS[element]
  return goal


def element_distances(observation: jax.Array, task_name: str) -> jax.Array:
  """[..., 4]: each task element's distance to its goal, from 60-dim observations (the observed
  coordinates, noise included, as D4RL measures them)."""
  distances = []
  for element in TASKS[task_name].elements:
    index = jnp.asarray(ELEMENT_INDICES[element])
    goal = jnp.asarray(ELEMENT_GOALS[element], jnp.float32)
    distances.append(jnp.linalg.norm(observation[..., index] - goal, axis=-1))
  return jnp.stack(distances, axis=-1)


def elements_done(observation: jax.Array, task_name: str) -> jax.Array:
  """bool [..., 4]: which elements are within D4RL's 0.3 of their goal in these observations."""
  return element_distances(observation, task_name) < COMPLETION_THRESHOLD


def update_completed(completed: jax.Array, observation: jax.Array,
                     task_name: str) -> tuple[jax.Array, jax.Array]:
  """One step of the fork's bookkeeping: (elements done so far, bool [4]; the reward, their
  number). An element, once done, stays counted whatever happens to it after."""
  completed = completed | elements_done(observation, task_name)
  return completed, completed.sum(axis=-1).astype(jnp.float32)


class Kitchen(mjx_env.MjxEnv):
  """One Franka Kitchen task (see the module docstring for the facts)."""

  def __init__(self, task_name: str, solver_iterations: int | None = None,
               solver_ls_iterations: int | None = None, observation_noise: bool = True,
               max_geom_pairs: int | None = MAX_GEOM_PAIRS,
               max_contacts: int | None = MAX_CONTACTS):
    if task_name not in TASKS:
      raise ValueError(f"Unknown kitchen task {task_name!r}; known: {sorted(TASKS)}")
    self.task_name = task_name
    self.task = TASKS[task_name]
    self.observation_noise = observation_noise
    super().__init__(build_mjx_model(max_geom_pairs, max_contacts), FRAME_SKIP,
                     solver_iterations, solver_ls_iterations)
    self._reference_model = reference_model()
    self._goal = jnp.asarray(task_goal(task_name))
    self._noise = jnp.asarray(POSITION_NOISE_AMPLITUDE, jnp.float32) * OBSERVATION_NOISE_RATIO
    bounds = np.asarray(ROBOT_POSITION_BOUNDS, np.float32)
    self._low, self._high = jnp.asarray(bounds[:, 0]), jnp.asarray(bounds[:, 1])

  @property
  def observation_size(self) -> int:
    return OBSERVATION_SIZE

  def observation_fields(self) -> dict[str, slice]:
    return {"robot joints": slice(0, 7), "fingers": slice(7, 9),
            "burners and light": slice(9, 19), "cabinets and microwave": slice(19, 23),
            "kettle position": slice(23, 26), "kettle orientation": slice(26, 30)}

  def position_target(self, observed_robot_qpos: jax.Array, action: jax.Array) -> jax.Array:
    """The servos' targets (9) for an action from the last observed robot position (D4RL's
    `Robot_VelAct.ctrl_velocity_limits` and `ctrl_position_limits`)."""
    velocity = ACTION_VELOCITY * jnp.clip(action, -1.0, 1.0)
    return jnp.clip(observed_robot_qpos + velocity * self.dt, self._low, self._high)

  def controls(self, qpos: jax.Array, action: jax.Array) -> jax.Array:
    """`position_target` from true joint positions [..., nq] (no noise): the controls of
    recorded actions at recorded states, for the bridge check (envs/bridge.py)."""
    return self.position_target(qpos[..., :NUM_ROBOT_JOINTS], action)

  def observe(self, qpos: jax.Array, key: jax.Array | None) -> jax.Array:
    """The 60-dim observation of positions `qpos`; `key` None: without the noise."""
    positions = qpos[:NUM_ROBOT_JOINTS + NUM_OBJECT_COORDINATES]
    if key is not None and self.observation_noise:
      positions = positions + self._noise * jax.random.uniform(
          key, positions.shape, minval=-1.0, maxval=1.0)
    return jnp.concatenate([positions, self._goal])

  def observation(self, qpos: jax.Array, qvel: jax.Array) -> jax.Array:
    """The noise-free observation at (qpos, qvel) (the bridge check replays states with it)."""
    del qvel
    return self.observe(qpos, None)

  def bridge_tolerances(self, cone: str) -> tuple[dict, float]:
    """The bridge check's bounds for kitchen (its observation has positions only)."""
    del cone
    return BRIDGE_TOLERANCES, BRIDGE_QUANTILE

  @property
  def bridge_episode_steps(self) -> int:
    return EPISODE_LENGTH

  def bridge_start_state(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """D4RL's reset with the arm's joints moved by up to 0.01 rad (random-action bridge runs)."""
    qpos = np.asarray(INITIAL_QPOS, np.float64).copy()
    qpos[:NUM_ROBOT_JOINTS] += rng.uniform(-0.01, 0.01, NUM_ROBOT_JOINTS)
    return qpos, np.zeros(self.mj_model.nv)

  def initial_qpos_qvel(self) -> tuple[jax.Array, jax.Array]:
    return jnp.asarray(INITIAL_QPOS, jnp.float32), jnp.zeros(self.mj_model.nv, jnp.float32)

  def reset(self, rng: jax.Array) -> mjx_env.State:
    qpos, qvel = self.initial_qpos_qvel()
    return self.reset_to(rng, qpos, qvel)

  def reset_to(self, rng: jax.Array, qpos: jax.Array, qvel: jax.Array) -> mjx_env.State:
    """An episode from (qpos, qvel), nothing done yet."""
    noise_key, rng = jax.random.split(rng)
    data = self.physics_init(qpos, qvel)
    zero = jnp.zeros((), jnp.float32)
    return mjx_env.State(
        pipeline_state=data, obs=self.observe(data.qpos, noise_key), reward=zero, done=zero,
        metrics={"success": zero},
        info={"rng": rng, "completed": jnp.zeros(len(self.task.elements), bool)})

  def step(self, state: mjx_env.State, action: jax.Array) -> mjx_env.State:
    ctrl = self.position_target(state.obs[:NUM_ROBOT_JOINTS], action)
    data = self.physics_step(state.pipeline_state, ctrl)
    noise_key, rng = jax.random.split(state.info["rng"])
    observation = self.observe(data.qpos, noise_key)
    completed, reward = update_completed(state.info["completed"], observation, self.task_name)
    done = (reward >= len(self.task.elements)).astype(jnp.float32)
    return state.replace(
        pipeline_state=data, obs=observation, reward=reward, done=done,
        metrics={**state.metrics, "success": reward / len(self.task.elements)},
        info={**state.info, "rng": rng, "completed": completed})
