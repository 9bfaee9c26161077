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
import io
import os
import pathlib

import jax
import jax.numpy as jnp
import mujoco

# MJX prints "Failed to import warp" when the optional Warp backend is absent; we use the JAX one.
with contextlib.redirect_stdout(io.StringIO()):
  from brax.envs import base as brax_base
  from mujoco import mjx

ASSETS = pathlib.Path(__file__).parent / "assets"

# Brax's State: `pipeline_state` holds the `mjx.Data`, `done` is true termination only (time
# limits are the training loop's business, as in D4RL where timeouts are not terminals).
State = brax_base.State


class MjxEnv(brax_base.Env):
  """A MuJoCo model stepped `frame_skip` physics steps per action, all in JAX."""

  def __init__(
      self,
      xml_path: str | os.PathLike,
      frame_skip: int,
      solver_iterations: int | None = None,
      solver_ls_iterations: int | None = None,
  ):
    xml_path = pathlib.Path(xml_path)
    if not xml_path.is_file():
      raise FileNotFoundError(f"MuJoCo model file not found: {xml_path}")
    mj_model = mujoco.MjModel.from_xml_path(str(xml_path))
    if solver_iterations is not None:
      mj_model.opt.iterations = solver_iterations
    if solver_ls_iterations is not None:
      mj_model.opt.ls_iterations = solver_ls_iterations
    self.xml_path = xml_path
    self.mj_model = mj_model
    self.mjx_model = mjx.put_model(mj_model)
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

  def physics_init(self, qpos: jax.Array, qvel: jax.Array) -> mjx.Data:
    """Physics data at (qpos, qvel) with all derived quantities computed, as `set_state` does."""
    with jax.default_matmul_precision("highest"):
      data = mjx.make_data(self.mjx_model).replace(qpos=qpos, qvel=qvel)
      return mjx.forward(self.mjx_model, data)

  def physics_step(self, data: mjx.Data, action: jax.Array) -> mjx.Data:
    """Applies `action` as the controls and advances `frame_skip` physics steps.

    Matmuls here run at full float32 precision: TF32 or bf16 contact solves drift visibly from
    MuJoCo, whatever precision the networks use.
    """
    with jax.default_matmul_precision("highest"):
      data = data.replace(ctrl=action)

      def one_step(data, _):
        return mjx.step(self.mjx_model, data), None

      data, _ = jax.lax.scan(one_step, data, None, length=self.frame_skip)
      return data

  def initial_qpos_qvel(self) -> tuple[jax.Array, jax.Array]:
    """The model's reference configuration (`qpos0`) at rest."""
    return (jnp.asarray(self.mj_model.qpos0, jnp.float32),
            jnp.zeros(self.mj_model.nv, jnp.float32))
