"""The base of every wsrl-mjx environment: a MuJoCo model simulated by MJX behind Brax's `Env`.

Each task keeps the C `mujoco.MjModel` (used by the MuJoCo bridge, rendering and checks) next to
its MJX copy (used inside jitted training). Tasks implement `reset` and `step`; this class owns
model loading, solver overrides and the frame-skipped physics step. It deliberately does not use
Brax's `PipelineEnv`: the pipeline state there recomputes world-frame transforms every step, which
our tasks never read, and its auto-reset wrapper replays the first reset state instead of drawing
a fresh one.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import pathlib

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from wsrl_mjx import compat

# MJX prints "Failed to import warp" when the optional Warp backend is absent; we use the JAX one.
with contextlib.redirect_stdout(io.StringIO()):
  from brax.envs import base as brax_base
  from mujoco import mjx

ASSETS = pathlib.Path(__file__).parent / "assets"
MJX_SOLVER_ITERATIONS = 4     # Newton iterations (the models say 100)
MJX_LS_ITERATIONS = 8         # line-search steps per iteration (the models say 50)

# Brax's State: `pipeline_state` holds the `mjx.Data`, `done` is true termination only (time
# limits are the training loop's business, as in D4RL where timeouts are not terminals).
State = brax_base.State


@contextlib.contextmanager
def _simulating():
  """What every MJX call here is traced under: full float32 matmuls (TF32 or bf16 contact solves
  drift visibly from MuJoCo, whatever precision the networks use) and, on the CPU, a Cholesky
  that cannot deadlock XLA's thread pool on jaxlib 0.10 (wsrl_mjx/compat.py)."""
  with jax.default_matmul_precision("highest"), compat.lapack_free_cholesky():
    yield


def keep_inertias(spec: mujoco.MjSpec, reference: mujoco.MjModel) -> None:
  """Gives every body of `spec` whose mass and inertia come from its geoms the values `reference`
  (`spec` compiled, before any change) computed, so that replacing or dropping geoms later
  leaves the dynamics alone. Bodies are matched by their `id` in that compile."""
  for body in spec.bodies[1:]:
    if not body.explicitinertial:
      j = body.id
      body.explicitinertial = True
      body.mass = reference.body_mass[j]
      body.ipos = reference.body_ipos[j]
      body.iquat = reference.body_iquat[j]
      body.inertia = reference.body_inertia[j]


class MjxEnv(brax_base.Env):
  """A MuJoCo model stepped `frame_skip` physics steps per action, all in JAX."""

  def __init__(
      self,
      model: str | os.PathLike | mujoco.MjModel,
      frame_skip: int,
      solver_iterations: int | None = None,
      solver_ls_iterations: int | None = None,
  ):
    """`model` is an MJCF file or a model built in memory (AntMaze adds its walls in code)."""
    if isinstance(model, mujoco.MjModel):
      xml_path, mj_model = None, model
    else:
      xml_path = pathlib.Path(model)
      if not xml_path.is_file():
        raise FileNotFoundError(f"MuJoCo model file not found: {xml_path}")
      mj_model = mujoco.MjModel.from_xml_path(str(xml_path))
    self._reference_model = copy.deepcopy(mj_model)
    # MJX runs the Newton solver for a fixed budget under vmap (its line search always takes all
    # `ls_iterations` steps, and the loop runs until the slowest env converges, which float32
    # rarely does to MuJoCo's 1e-8). MuJoCo itself converges in at most 4 iterations on the
    # locomotion and AntMaze states the bridge check replays, so there the defaults cost nothing
    # in accuracy and make a step several times faster than the models' own 100 / 50. Envs
    # that need more pass their own (envs/adroit.py's door).
    mj_model.opt.iterations = solver_iterations or MJX_SOLVER_ITERATIONS
    mj_model.opt.ls_iterations = solver_ls_iterations or MJX_LS_ITERATIONS
    self.xml_path = xml_path
    self.mj_model = mj_model          # the model MJX runs, as a C model
    # On this process's first device: MJX's default, jax.devices()[0], is process 0's device in
    # every process of a multi-process run, which the others cannot use.
    self.mjx_model = mjx.put_model(mj_model, device=jax.local_devices()[0])
    self.frame_skip = frame_skip

  @property
  def dt(self) -> float:
    """Seconds of simulated time per environment step."""
    return float(self.mj_model.opt.timestep) * self.frame_skip

  @property
  def action_size(self) -> int:
    return int(self.mj_model.nu)

  @property
  def backend(self) -> str:
    return "mjx"

  def physics_init(self, qpos: jax.Array, qvel: jax.Array, model: mjx.Model | None = None,
                   **fields) -> mjx.Data:
    """Physics data at (qpos, qvel) with positions computed (bodies, geoms, sites).

    Only kinematics, not `mjx.forward`: every `mjx.step` begins with a full forward pass from
    qpos, qvel and the controls, so what a forward pass here would add (velocities, contacts,
    the constraint solve) is never read, and the auto-reset that the training loop evaluates on
    every step under `vmap` would pay for a whole solver run. Observations read positions only.
    `fields` set other `mjx.Data` inputs first (e.g. `mocap_pos`, where a reset moves a body);
    `model` replaces the env's model (a task whose reset moves a body with children).
    """
    model = self.mjx_model if model is None else model
    with _simulating():
      data = mjx.make_data(self.mjx_model).replace(qpos=qpos, qvel=qvel, **fields)
      return mjx.kinematics(model, data)

  def action_to_ctrl(self, action: jax.Array) -> jax.Array:
    """The motors' controls for a policy action in [-1, 1] (identity unless a task rescales)."""
    return action

  def physics_step(self, data: mjx.Data, ctrl: jax.Array,
                   model: mjx.Model | None = None) -> mjx.Data:
    """Applies `ctrl` as the controls and advances `frame_skip` physics steps (of `model`, by
    default the env's).
    """
    model = self.mjx_model if model is None else model
    with _simulating():
      data = data.replace(ctrl=ctrl)

      def one_step(data, _):
        return mjx.step(model, data), None

      data, _ = jax.lax.scan(one_step, data, None, length=self.frame_skip)
      return data

  def observation_fields(self) -> dict[str, slice]:
    """Named parts of the observation, for per-field error reports (the bridge check)."""
    return {"observation": slice(0, self.observation_size)}

  def observation_bounds(self) -> tuple[np.ndarray, np.ndarray]:
    """([obs_dim], [obs_dim]) float32 bounds the env clips its observation to, -inf/inf where
    it does not clip: part of what an observation means, which an exported policy applies."""
    unbounded = np.full(self.observation_size, np.inf, np.float32)
    return -unbounded, unbounded

  def reference_mj_model(self) -> mujoco.MjModel:
    """The model the task is defined by (D4RL's, with its own solver settings), for the MuJoCo
    bridge to simulate in C."""
    return self._reference_model

  def initial_qpos_qvel(self) -> tuple[jax.Array, jax.Array]:
    """The model's reference configuration (`qpos0`) at rest."""
    return (jnp.asarray(self.mj_model.qpos0, jnp.float32),
            jnp.zeros(self.mj_model.nv, jnp.float32))
