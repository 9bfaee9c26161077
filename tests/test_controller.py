"""The shipped AntMaze data controller (checkpoints/ant_controller), simulated in C MuJoCo."""

import json
import pathlib

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

from envs import ant_goal, antmaze
from wsrl_mjx.datagen import controller as controller_lib
from wsrl_mjx.datagen import navigation

SHIPPED = pathlib.Path(__file__).parent.parent / "checkpoints" / "ant_controller"


def test_shipped_controller_walks_the_ant_to_goals_in_every_direction():
  description = json.loads((SHIPPED / "controller.json").read_text())
  assert description["observation_size"] == navigation.CONTROLLER_OBSERVATION_SIZE == 29
  assert description["action_size"] == controller_lib.ACTION_SIZE == 8
  controller, params = controller_lib.load(SHIPPED)
  act = jax.jit(lambda observation: controller(params, observation, jax.random.PRNGKey(0)))
  # D4RL's ant model and step (RK4, 5 x 0.02 s) in C MuJoCo, on an open floor; the controller
  # sees what it sees during collection (qpos[2:15], qvel[:14], goal direction of length 10).
  model = ant_goal.AntGoal().reference_mj_model()
  data = mujoco.MjData(model)
  steps_to_goal = []
  for angle in np.linspace(0.0, 2 * np.pi, 8, endpoint=False):
    mujoco.mj_resetData(model, data)
    mujoco.mj_forward(model, data)
    goal = data.qpos[:2] + 4.0 * np.array([np.cos(angle), np.sin(angle)])
    for step in range(150):
      offset = goal - data.qpos[:2]
      if np.linalg.norm(offset) <= antmaze.GOAL_RADIUS:
        steps_to_goal.append(step)
        break
      direction = navigation.DIRECTION_LENGTH * offset / np.linalg.norm(offset)
      observation = np.concatenate([data.qpos[2:15], data.qvel[:14], direction])
      action = np.asarray(act(jnp.asarray(observation, jnp.float32)))
      assert action.shape == (8,) and np.all(np.abs(action) <= 1.0)
      data.ctrl[:] = np.clip(antmaze.ACTION_SCALE * action, -antmaze.ACTION_SCALE,
                             antmaze.ACTION_SCALE)
      for _ in range(antmaze.FRAME_SKIP):
        mujoco.mj_step(model, data)
      assert data.qpos[2] > 0.2, f"the ant fell heading {angle:.2f} rad at step {step}"
    else:
      raise AssertionError(f"4 m goal at {angle:.2f} rad not reached in 150 steps (15 s): "
                           f"{np.linalg.norm(goal - data.qpos[:2]):.2f} m left")
  # When shipped: 52-89 steps (about 0.5 m/s); a broken controller wanders or falls.
  assert len(steps_to_goal) == 8


def test_saving_over_a_controller_keeps_the_old_one_if_the_new_one_fails(tmp_path, monkeypatch):
  import os
  params = controller_lib.load(SHIPPED)[1]
  target = tmp_path / "ctrl"
  controller_lib.save(target, params, {"run": "first"})
  real_replace = os.replace

  def failing_replace(source, destination):
    if ".ctrl." in str(source) and ".old." not in str(source):   # the new controller's move in
      raise OSError("disk full")
    real_replace(source, destination)
  monkeypatch.setattr(os, "replace", failing_replace)
  with pytest.raises(OSError, match="disk full"):
    controller_lib.save(target, params, {"run": "second"})
  monkeypatch.undo()
  assert json.loads((target / "controller.json").read_text())["run"] == "first"
  controller_lib.load(target)
  controller_lib.save(target, params, {"run": "second"})
  assert json.loads((target / "controller.json").read_text())["run"] == "second"
  assert [p.name for p in tmp_path.iterdir()] == ["ctrl"]   # nothing staged or set aside is left
