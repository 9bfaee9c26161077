"""A sampling-based planner (MPPI) as the door's and pen's demonstrator: data with successes.

The door needs a grasp, a latch turn and a pull in sequence, and the pen an in-hand turn that
must not drop it; neither a feedback law on the observation (datagen/scripted.py's approach)
nor Brax PPO within one device call found these. A model-predictive planner opens the door in
about 40 steps and turns the pen to two thirds of its goals (benchmarks/RESULTS.md). Each step
it samples `num_samples` smooth action sequences around its current plan, simulates each
`horizon` env steps ahead in C MuJoCo (`mujoco.rollout`, multithreaded), and moves the plan to
the cost-weighted mean (model-predictive path integral control, Williams et al. 2017). It plans
on the model MJX runs (envs/adroit.py, with the env's solver budget and no noslip, as MJX has
none) from the MJX env's own state, and only the first action is executed, in the MJX env: the
dataset holds what our env did (launch/collect.py `--policy=planner`).

The planner's cost is not the task's reward: it is a demonstrator's shaping, like the scripted
relocate phases. Every random draw comes from the `numpy` generator the caller seeds.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from typing import Callable

import jax
import mujoco
import numpy as np
from mujoco import rollout

from envs import adroit


@dataclasses.dataclass(frozen=True)
class MPPIConfig:
  num_samples: int = 48     # action sequences per env per step (one of them is the plan itself)
  horizon: int = 16         # env steps each sequence looks ahead
  noise_scale: float = 0.4  # std of the sampled deviations, in action units ([-1, 1])
  num_knots: int = 4        # deviations are linear between this many knots: smooth sequences
  temperature: float = 0.1  # of the costs' standard deviation: lower follows the best more


@dataclasses.dataclass(frozen=True)
class TaskCost:
  """A task's planning cost and the planner settings that solve it.

  `cost(qpos [..., nq], sites [..., len(sites), 3], observation [..., obs]) -> [...]` per env
  step: `sites` are the world positions of the named sites along the sampled path, and
  `observation` is the env's observation where planning starts (goals live there).
  """
  sites: tuple[str, ...]
  cost: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
  config: MPPIConfig = MPPIConfig()


def _door_cost(qpos: np.ndarray, sites: np.ndarray, observation: np.ndarray) -> np.ndarray:
  """Palm on the handle; the latch turned (the door is blocked below ~1.4 rad); the hinge open.

  The hinge term is linear so that progress pays the same from the start; the latch term only
  counts while the door is nearly shut, where the latch matters.
  """
  del observation
  hinge, latch = qpos[..., 28], qpos[..., 29]
  reach = np.linalg.norm(sites[..., 0, :] - sites[..., 1, :], axis=-1)
  latch_short = np.square(np.maximum(1.6 - latch, 0.0)) * (hinge < 0.3)
  return reach - 20.0 * hinge + 0.3 * latch_short


def _pen_cost(qpos: np.ndarray, sites: np.ndarray, observation: np.ndarray) -> np.ndarray:
  """The pen kept at its place (weighted most: a pen turned in a hurry slides off the palm),
  turned toward the goal orientation, and never dropped (below D4RL's 0.075 m drop height)."""
  del qpos
  top, bottom, place = sites[..., 0, :], sites[..., 1, :], sites[..., 2, :]
  middle = (top + bottom) / 2
  orientation = (top - bottom) / adroit.PEN_LENGTH
  similarity = np.sum(orientation * observation[..., 36:39], axis=-1)    # . goal orientation
  dropped = middle[..., 2] < 0.075
  return 30.0 * np.linalg.norm(middle - place, axis=-1) + 8.0 * (1.0 - similarity) + 50.0 * dropped


COSTS = {
    "door": TaskCost(sites=("S_grasp", "S_handle"), cost=_door_cost),
    "pen": TaskCost(sites=("object_top", "object_bottom", "eps_ball"), cost=_pen_cost,
                    config=MPPIConfig(num_samples=64, horizon=20, noise_scale=0.2)),
}


def task_config(env) -> MPPIConfig:
  """The planner settings of `env`'s task, or a clear error for an env it has no cost for."""
  task = (env.task_name if isinstance(env, adroit.Adroit)
          else f"{type(env).__name__} (not an Adroit env)")
  if task not in COSTS:
    raise ValueError(f"No planning cost for {task}; the planner has costs for the Adroit "
                     f"tasks: {', '.join(sorted(COSTS))}")
  return COSTS[task].config


def planning_model(env: adroit.Adroit) -> mujoco.MjModel:
  """The model MJX runs, in C MuJoCo, with a position sensor on each site the cost reads."""
  spec = adroit.mjx_model_spec(env.task_name)
  for name in COSTS[env.task_name].sites:
    spec.add_sensor(name=f"planner_{name}", type=mujoco.mjtSensor.mjSENS_FRAMEPOS,
                    objtype=mujoco.mjtObj.mjOBJ_SITE, objname=name)
  model = spec.compile()
  model.opt.iterations = env.mj_model.opt.iterations
  model.opt.ls_iterations = env.mj_model.opt.ls_iterations
  model.opt.noslip_iterations = 0
  return model


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int, int], num_knots: int,
                 scale: float) -> np.ndarray:
  """[samples, horizon, actions] Gaussian deviations, linear between `num_knots` knots."""
  samples, horizon, actions = shape
  knots = scale * rng.standard_normal((samples, num_knots, actions))
  position = np.linspace(0.0, num_knots - 1, horizon)
  left = np.minimum(position.astype(int), num_knots - 2)
  weight = (position - left)[None, :, None]
  return (1.0 - weight) * knots[:, left] + weight * knots[:, left + 1]


class MPPIPlanner:
  """MPPI for a batch of Adroit envs of one task (see the module docstring)."""

  def __init__(self, env: adroit.Adroit, config: MPPIConfig | None = None,
               num_threads: int | None = None):
    config = config or task_config(env)
    if config.num_samples < 2 or config.horizon < 1 or config.num_knots < 2:
      raise ValueError(f"MPPIConfig needs num_samples >= 2, horizon >= 1 and num_knots >= 2: "
                       f"{config}")
    self.env, self.config = env, config
    self._cost = COSTS[env.task_name]
    self._model = planning_model(env)
    self._datas = [mujoco.MjData(self._model) for _ in range(num_threads or os.cpu_count() or 1)]
    self._scratch = mujoco.MjData(self._model)
    self._state_spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    low, high = self._model.actuator_ctrlrange.T
    self._ctrl_mid, self._ctrl_half_range = (low + high) / 2, (high - low) / 2
    self._frame = mujoco.mj_name2id(self._model, mujoco.mjtObj.mjOBJ_BODY, "frame")
    self._plans = np.zeros((0, config.horizon, self._model.nu))
    self._models: list[mujoco.MjModel] = []

  def start(self, num_envs: int):
    """Plans for `num_envs` envs, each with its own copy of the model (its episode's draws)."""
    self._plans = np.zeros((num_envs, self.config.horizon, self._model.nu))
    self._models = [copy.deepcopy(self._model) for _ in range(num_envs)]

  def reset(self, index: int, env_info: dict[str, np.ndarray]):
    """Starts env `index`'s episode: a zero plan, and the draws of its env state's `info` that
    live in the model (the door frame's position)."""
    self._plans[index] = 0.0
    if "frame_position" in env_info:
      self._models[index].body_pos[self._frame] = env_info["frame_position"]

  def ctrl(self, actions: np.ndarray) -> np.ndarray:
    """The env's action mapping (`Adroit.action_to_ctrl`) in numpy, for actions in [-1, 1]."""
    return self._ctrl_mid + actions * self._ctrl_half_range

  def _initial_state(self, qpos, qvel) -> np.ndarray:
    """The rollout's start (time, qpos, qvel, act): what MuJoCo's full physics state holds."""
    data = self._scratch
    data.qpos[:], data.qvel[:] = qpos, qvel
    state = np.empty(mujoco.mj_stateSize(self._model, self._state_spec))
    mujoco.mj_getState(self._model, data, state, self._state_spec)
    return state

  def act(self, rng: np.random.Generator, qpos: np.ndarray, qvel: np.ndarray,
          observation: np.ndarray) -> np.ndarray:
    """[envs, actions] in [-1, 1]: each env's plan after one MPPI update from its state (and
    its observation, where the cost reads goals)."""
    num_envs, config = len(qpos), self.config
    samples, horizon, nu = config.num_samples, config.horizon, self._model.nu
    noise = smooth_noise(rng, (num_envs * samples, horizon, nu), config.num_knots,
                         config.noise_scale).reshape(num_envs, samples, horizon, nu)
    noise[:, 0] = 0.0                                        # the plan itself stays a candidate
    actions = np.clip(self._plans[:, None] + noise, -1.0, 1.0)
    ctrl = np.repeat(self.ctrl(actions).reshape(num_envs * samples, horizon, nu), adroit.FRAME_SKIP, axis=1)
    initial = np.stack([self._initial_state(q, v) for q, v in zip(qpos, qvel)])
    models = [m for m in self._models for _ in range(samples)]
    states, sensors = rollout.rollout(models, self._datas, np.repeat(initial, samples, axis=0),
                                      ctrl)
    # Each env step's end: the last of its FRAME_SKIP physics steps.
    qpos_path = states[:, adroit.FRAME_SKIP - 1::adroit.FRAME_SKIP, 1:1 + self._model.nq]
    sites = sensors[:, adroit.FRAME_SKIP - 1::adroit.FRAME_SKIP].reshape(
        num_envs * samples, horizon, len(self._cost.sites), 3)
    observation = np.repeat(observation, samples, axis=0)[:, None]
    cost = self._cost.cost(qpos_path, sites, observation).sum(-1).reshape(num_envs, samples)
    spread = np.maximum(config.temperature * cost.std(axis=1, keepdims=True), 1e-8)
    weights = np.exp(-(cost - cost.min(axis=1, keepdims=True)) / spread)
    weights /= weights.sum(axis=1, keepdims=True)
    plans = np.einsum("es,esha->eha", weights, actions)
    first = plans[:, 0].copy()
    self._plans = np.concatenate([plans[:, 1:], plans[:, -1:]], axis=1)  # shift; hold the last
    return first


def demonstration(env: adroit.Adroit, rng: np.random.Generator, num_steps: int,
                  config: MPPIConfig | None = None) -> dict[str, np.ndarray]:
  """One planner episode in C MuJoCo on D4RL's own model, recorded as
  `bridge.generate_trajectory` records random ones.

  The bridge check on demonstrations tests the dynamics the datasets are made of (the hand on
  the handle, the door swinging, the pen turning in the hand), which random actions seldom
  reach. The episode keeps the model's own draws (door frame, pen goal), as the bridge's replay
  does, and runs all `num_steps` steps, past the goal.
  """
  model = env.reference_mj_model()
  data = mujoco.MjData(model)
  mujoco.mj_forward(model, data)
  demonstrator = MPPIPlanner(env, config)
  demonstrator.start(1)
  demonstrator.reset(0, {})
  observe = jax.jit(env.observation)
  qpos, qvel, actions = [], [], []
  for _ in range(num_steps):
    qpos.append(data.qpos.copy())
    qvel.append(data.qvel.copy())
    observation = np.asarray(observe(data.qpos.astype(np.float32),
                                     data.qvel.astype(np.float32)), np.float64)
    action = demonstrator.act(rng, data.qpos[None], data.qvel[None], observation[None])[0]
    actions.append(action)
    data.ctrl[:] = demonstrator.ctrl(action)
    mujoco.mj_step(model, data, nstep=env.frame_skip)
  qpos.append(data.qpos.copy())
  qvel.append(data.qvel.copy())
  actions.append(np.zeros(env.action_size))     # the final state's action is never used
  return {"qpos": np.array(qpos), "qvel": np.array(qvel), "actions": np.array(actions),
          "episode_ends": np.array([num_steps])}
