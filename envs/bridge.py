"""The MuJoCo bridge's consistency check: do our MJX models move like MuJoCo's?

Recorded states and actions (a D4RL-format file's `infos/qpos`, `infos/qvel` and `actions`, or a
trajectory generated here in C MuJoCo) are replayed open-loop from many starting steps, `horizon`
env steps each, through (a) the task's MJX model, float32 on the accelerator, and (b) MuJoCo's C
simulator, float64, on the task's reference model (D4RL's, unsimplified: for AntMaze every wall
and every contact pair). Errors are reported per named observation field at horizon 1
("one-step": the model's dynamics) and at the full horizon ("multi-step": how fast small
differences grow; contact-rich motion is chaotic, so this is reported, and judged loosely).

It sits beside the envs it checks and is run by `launch/bridge_check.py`; `envs.make` does not
import it. Nothing here trains (a file's errors are `wsrl_mjx.data.DatasetError`, imported when a
file is read).
"""

from __future__ import annotations

import copy
import dataclasses
import functools

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from envs.mjx_env import MjxEnv, mjx  # mjx_env imports MJX without its "Failed to import warp"
from wsrl_mjx import batched
from wsrl_mjx.errors import UserError

# Thresholds on the MJX-vs-MuJoCo observation error: the largest absolute error over all windows,
# per field kind, (one-step, multi-step), for each way of running the check. Measured on
# AntMaze's generated wall-hitting trajectories (U-maze 3 x 12 windows, large maze 3 x 64) with
# the correct model, and with every wall 3 cm too wide (a wrong model):
#
# "elliptic" (both simulators switched to elliptic friction cones): the model-identity check.
# Elliptic friction does not depend on how a contact's tangent frame is oriented, so what is
# left is float32 against float64, contact points placed a margin apart on AntMaze's grown
# walls (envs/antmaze.py), and contacts that start within a step in one simulator and not the
# other. Correct model: positions <= 0.0075, velocities <= 0.35 (most windows ~1e-3 / 1e-2).
# Walls 3 cm too wide: positions >= 0.013, velocities >= 0.6. A missing wall, a wrong mass,
# gear or time step errs by far more.
#
# "model" (the friction cone the model declares; D4RL's models use pyramidal cones): MJX 3.17
# orients every contact's friction pyramid by the normal alone, where MuJoCo aligns it with the
# capsule's axis, so the same contact can push differently sideways. Correct model: positions
# <= 0.017, velocities <= 0.45 after one step in contact (1e-6 without contacts); planar
# models (hopper, walker2d, halfcheetah) are not affected. These bounds catch divergence (a body
# through a wall, a blow-up), not a 3 cm error: that is the elliptic check's job.
#
# Multi-step errors of a chaotic system grow by orders of magnitude over a few dozen steps even
# between two correct simulators; the multi-step bound only catches divergence.
TOLERANCES = {
    "elliptic": {"position": (1e-2, 0.5), "velocity": (0.5, 5.0)},
    "model": {"position": (3e-2, 0.5), "velocity": (1.0, 5.0)},
}
CONES = tuple(TOLERANCES)


def field_kind(name: str) -> str:
  return "velocity" if "velocit" in name else "position"


def tolerances_for(env: MjxEnv, cone: str) -> tuple[dict, float]:
  """(tolerances by field kind, quantile of windows they apply to) for `env`: `TOLERANCES` over
  every window (quantile 1, the largest error), unless the env states its own
  (`bridge_tolerances(cone)`, e.g. Adroit's)."""
  if hasattr(env, "bridge_tolerances"):
    return env.bridge_tolerances(cone)
  return TOLERANCES[cone], 1.0


@dataclasses.dataclass
class Report:
  """Per-field errors: {field: {"one_step": ..., "multi_step": ...}} for each comparison: the
  `quantile` over windows of each window's largest absolute error in the field (1: the max)."""
  env_name: str
  cone: str
  horizon: int
  num_starts: int
  mjx_vs_mujoco: dict
  mjx_vs_recorded: dict
  mujoco_vs_recorded: dict
  tolerances: dict = dataclasses.field(default_factory=dict)
  quantile: float = 1.0

  def failures(self) -> list[str]:
    """Fields whose MJX-vs-MuJoCo error exceeds the tolerances, as readable lines."""
    lines = []
    for field, errors in self.mjx_vs_mujoco.items():
      one_step_tol, multi_step_tol = self.tolerances[field_kind(field)]
      if not errors["one_step"] <= one_step_tol:
        lines.append(f"{field}: one-step error {errors['one_step']:.3g} > {one_step_tol:g}")
      if not errors["multi_step"] <= multi_step_tol:
        lines.append(f"{field}: {self.horizon}-step error {errors['multi_step']:.3g} > "
                     f"{multi_step_tol:g}")
    return lines

  def format(self) -> str:
    statistic = ("max" if self.quantile >= 1 else
                 f"{100 * self.quantile:g}th percentile over windows of the")
    lines = [f"{self.env_name} ({self.cone} friction cones): {self.num_starts} starts, horizon "
             f"{self.horizon} env steps; {statistic} |error| per observation field (one-step / "
             "multi-step)"]
    comparisons = [("MJX vs MuJoCo", self.mjx_vs_mujoco),
                   ("MJX vs recorded", self.mjx_vs_recorded),
                   ("MuJoCo vs recorded", self.mujoco_vs_recorded)]
    fields = list(self.mjx_vs_mujoco)
    width = max(len(f) for f in fields) + 2
    lines.append(" " * width + "".join(f"{name:>26s}" for name, _ in comparisons)
                 + "   tolerance (MJX vs MuJoCo)")
    for field in fields:
      cells = "".join(f"{c[field]['one_step']:12.2e} / {c[field]['multi_step']:9.2e}"
                      for _, c in comparisons)
      tol = self.tolerances[field_kind(field)]
      lines.append(f"{field:<{width}s}{cells}   {tol[0]:g} / {tol[1]:g}")
    failures = self.failures()
    lines.append("PASS" if not failures else "FAIL:\n  " + "\n  ".join(failures))
    return "\n".join(lines)


@functools.lru_cache(maxsize=8)
def mjx_rollout(env: MjxEnv):
  """jit(vmap) of: from (qpos, qvel), apply ctrl[h] for h < horizon -> observations [horizon]."""

  def rollout(qpos, qvel, ctrl):
    def step(data, ctrl_t):
      data = env.physics_step(data, ctrl_t)
      return data, env.observation(data.qpos, data.qvel)
    data = batched.batched_like(env.physics_init(qpos, qvel), (qpos, qvel))
    _, observations = jax.lax.scan(step, data, ctrl)
    return observations

  return jax.jit(jax.vmap(rollout))


def observations(env: MjxEnv, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
  """`env.observation` of states with any leading axes (float32: ~1e-6 of a 30 m position)."""
  flat = jax.vmap(env.observation)(jnp.asarray(qpos.reshape(-1, qpos.shape[-1]), jnp.float32),
                                   jnp.asarray(qvel.reshape(-1, qvel.shape[-1]), jnp.float32))
  return np.asarray(flat, np.float64).reshape(*qpos.shape[:-1], -1)


def controls(env: MjxEnv, qpos: np.ndarray, actions: np.ndarray) -> np.ndarray:
  """The motors' controls of recorded actions taken at recorded states [..., nq]:
  `env.controls(qpos, actions)` for an env whose control law reads the state (kitchen: D4RL's
  position targets from the joint positions), else `env.action_to_ctrl(actions)`."""
  actions = jnp.asarray(actions, jnp.float32)
  if hasattr(env, "controls"):
    return np.asarray(env.controls(jnp.asarray(qpos, jnp.float32), actions), np.float64)
  return np.asarray(env.action_to_ctrl(actions), np.float64)


def mujoco_rollout(env: MjxEnv, model: mujoco.MjModel, qpos, qvel, ctrl) -> np.ndarray:
  """The same in C MuJoCo (float64), one start after another."""
  data = mujoco.MjData(model)
  num_starts, horizon = ctrl.shape[:2]
  qpos_out = np.zeros((num_starts, horizon, model.nq))
  qvel_out = np.zeros((num_starts, horizon, model.nv))
  for i in range(num_starts):
    mujoco.mj_resetData(model, data)
    data.qpos[:], data.qvel[:] = qpos[i], qvel[i]
    mujoco.mj_forward(model, data)
    for h in range(horizon):
      data.ctrl[:] = ctrl[i, h]
      for _ in range(env.frame_skip):
        mujoco.mj_step(model, data)
      qpos_out[i, h], qvel_out[i, h] = data.qpos, data.qvel
  return observations(env, qpos_out, qvel_out)


def generate_trajectory(env: MjxEnv, rng: np.random.Generator, num_steps: int,
                        start_state=None, policy=None) -> dict[str, np.ndarray]:
  """A trajectory simulated in C MuJoCo on the reference model: {"qpos": [num_steps + 1, nq],
  "qvel": [num_steps + 1, nv], "actions": [num_steps + 1, action_size] (the last is zeros,
  never used), "episode_ends": [num_steps]}.

  Starts from `env.bridge_start_state(rng)` where the env defines one (AntMaze puts the ant
  anywhere in the maze, moving, so that walls are hit), else the model's rest pose with D4RL-like
  noise. Without `policy`, actions are uniform in [-1, 1], held for 4 steps so the body builds
  up speed. With it (a callable from an observation [observation_size] to an action
  [action_size] in [-1, 1], e.g. an exported `wsrl_mjx.standalone_policy.Policy`), the policy
  acts at every step on `env.observation` of the state (computed in float32, as in training),
  so the check replays the states that policy visits.
  """
  observe = None if policy is None else jax.jit(env.observation)
  model = env.reference_mj_model()
  data = mujoco.MjData(model)
  if start_state is None:
    if hasattr(env, "bridge_start_state"):
      start_state = env.bridge_start_state(rng)
    else:
      start_state = (model.qpos0 + rng.uniform(-0.005, 0.005, model.nq),
                     rng.uniform(-0.005, 0.005, model.nv))
  data.qpos[:], data.qvel[:] = start_state
  mujoco.mj_forward(model, data)
  qpos, qvel, actions = [], [], []
  action = rng.uniform(-1, 1, env.action_size)
  for t in range(num_steps):
    if policy is not None:
      observation = observe(data.qpos.astype(np.float32), data.qvel.astype(np.float32))
      action = np.asarray(policy(np.asarray(observation, np.float64)), np.float64)
    elif t % 4 == 0:
      action = rng.uniform(-1, 1, env.action_size)
    qpos.append(data.qpos.copy())
    qvel.append(data.qvel.copy())
    actions.append(action)
    data.ctrl[:] = controls(env, data.qpos, action)
    for _ in range(env.frame_skip):
      mujoco.mj_step(model, data)
  qpos.append(data.qpos.copy())
  qvel.append(data.qvel.copy())
  actions.append(np.zeros(env.action_size))     # the final state's action is never used
  return {"qpos": np.array(qpos), "qvel": np.array(qvel), "actions": np.array(actions),
          "episode_ends": np.array([num_steps])}


def _errors(a: np.ndarray, b: np.ndarray, fields: dict[str, slice], quantile: float = 1.0) -> dict:
  """Per field, after one step and after the whole horizon: the `quantile` over windows of each
  window's largest absolute difference (1: the largest overall)."""
  diff = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
  stat = lambda d: float(np.quantile(d.max(axis=-1), quantile))
  return {name: {"one_step": stat(diff[:, 0, s]), "multi_step": stat(diff[:, -1, s])}
          for name, s in fields.items()}


def start_indices(episode_ends: np.ndarray, horizon: int, num_starts: int,
                  rng: np.random.Generator) -> np.ndarray:
  """Rows t whose window t .. t + horizon (the recorded state after the last action included)
  lies in one episode; `episode_ends` are the episodes' last rows."""
  episode_ends = np.asarray(episode_ends)
  rows = np.arange(episode_ends[-1] + 1)
  end_of_episode = episode_ends[np.searchsorted(episode_ends, rows)]
  valid = np.flatnonzero(rows + horizon <= end_of_episode)
  if len(valid) == 0:
    longest = int(np.max(np.diff(np.concatenate([[-1], episode_ends])))) - 1   # rows - 1
    raise UserError(f"horizon {horizon}: no episode is longer than it (the longest has "
                    f"{longest} steps); replay a shorter horizon or longer episodes")
  return np.sort(rng.choice(valid, size=min(num_starts, len(valid)), replace=False))


def supports_elliptic_cones(env: MjxEnv) -> bool:
  """MJX 3.17 simulates elliptic cones only where no contact has condim 1 (Adroit's hand pairs
  do)."""
  model = env.mj_model
  return not (np.any(model.geom_condim == 1) or np.any(model.pair_dim == 1))


@functools.lru_cache(maxsize=8)
def _elliptic_env(env: MjxEnv) -> MjxEnv:
  """One copy per env, so that its compiled rollout is reused."""
  elliptic = copy.copy(env)
  elliptic.mj_model = copy.deepcopy(env.mj_model)
  elliptic.mj_model.opt.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
  elliptic.mjx_model = mjx.put_model(elliptic.mj_model)
  return elliptic


def with_elliptic_cones(env: MjxEnv) -> tuple[MjxEnv, mujoco.MjModel]:
  """A copy of `env` whose MJX model, and a copy of its reference model, use elliptic cones."""
  elliptic = _elliptic_env(env)
  reference = copy.deepcopy(env.reference_mj_model())
  reference.opt.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
  return elliptic, reference


def check(env: MjxEnv, env_name: str, trajectory: dict[str, np.ndarray], horizon: int,
          num_starts: int, rng: np.random.Generator, cone: str = "model") -> Report:
  """Replays `num_starts` windows of `trajectory` through MJX and MuJoCo.

  `trajectory` has rows of qpos, qvel and the action taken there, and `episode_ends`, the last
  row of each episode (whose action has no recorded outcome and is not used). `cone`: "model"
  simulates the models as they are, "elliptic" switches both to elliptic friction cones (see
  `TOLERANCES`).
  """
  if cone not in CONES:
    raise ValueError(f"cone must be one of {CONES}, not {cone!r}")
  original_env = env
  if cone == "elliptic":
    if not supports_elliptic_cones(env):
      raise ValueError(f"{env_name}: MJX has no elliptic cones for condim-1 contacts; use "
                       "cone='model'")
    env, reference = with_elliptic_cones(env)
  else:
    reference = env.reference_mj_model()
  qpos, qvel, actions = (np.asarray(trajectory[k], np.float64) for k in ("qpos", "qvel",
                                                                        "actions"))
  starts = start_indices(trajectory["episode_ends"], horizon, num_starts, rng)
  windows = starts[:, None] + np.arange(horizon)[None, :]
  ctrl = controls(env, qpos[windows], actions[windows])
  mjx_obs = np.asarray(mjx_rollout(env)(jnp.asarray(qpos[starts], jnp.float32),
                                        jnp.asarray(qvel[starts], jnp.float32),
                                        jnp.asarray(ctrl, jnp.float32)))
  mujoco_obs = mujoco_rollout(env, reference, qpos[starts], qvel[starts], ctrl)
  recorded = observations(env, qpos[windows + 1], qvel[windows + 1])
  fields = env.observation_fields()
  tolerances, quantile = tolerances_for(original_env, cone)
  return Report(env_name=env_name, cone=cone, horizon=horizon, num_starts=len(starts),
                mjx_vs_mujoco=_errors(mjx_obs, mujoco_obs, fields, quantile),
                mjx_vs_recorded=_errors(mjx_obs, recorded, fields, quantile),
                mujoco_vs_recorded=_errors(mujoco_obs, recorded, fields, quantile),
                tolerances=tolerances, quantile=quantile)


def trajectory_from_file(path: str) -> dict[str, np.ndarray]:
  """qpos, qvel, actions and episode ends of a D4RL-format file (its `infos/qpos|qvel`)."""
  import h5py  # pylint: disable=import-outside-toplevel
  from wsrl_mjx.data import DatasetError  # pylint: disable=import-outside-toplevel
  try:
    with h5py.File(path, "r") as f:
      missing = [k for k in ("infos/qpos", "infos/qvel", "actions") if k not in f]
      if missing:
        raise DatasetError(f"{path}: no {', '.join(missing)}: the bridge check replays recorded "
                           "simulator states (collect with launch.collect, or a D4RL locomotion "
                           "or AntMaze file)")
      qpos, qvel, actions = (np.asarray(f[k]) for k in ("infos/qpos", "infos/qvel", "actions"))
      ends = np.zeros(len(actions), bool)
      for key in ("terminals", "timeouts"):
        if key in f:
          ends |= np.asarray(f[key], bool)
  except OSError as e:
    raise DatasetError(f"{path}: cannot be read as hdf5 ({e})") from e
  ends[-1] = True
  return {"qpos": qpos, "qvel": qvel, "actions": actions, "episode_ends": np.flatnonzero(ends)}
