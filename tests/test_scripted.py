"""The scripted Adroit demonstrator: its arm geometry and its success on D4RL's own model."""

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

from envs import adroit
from wsrl_mjx.datagen import collect, scripted


@pytest.fixture(scope="module")
def relocate():
  return adroit.Adroit("relocate")


def test_palm_to_slide_joint_map_holds_at_every_tilt(relocate):
  model = relocate.reference_mj_model()
  data = mujoco.MjData(model)
  grasp = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "S_grasp")
  for tilt in (-0.1, 0.0, 0.3):
    def palm(slides):
      data.qpos[:] = 0.0
      data.qpos[:3], data.qpos[3] = slides, tilt
      mujoco.mj_kinematics(model, data)
      return data.site_xpos[grasp].copy()
    jacobian = np.stack([(palm(0.01 * np.eye(3)[k]) - palm(np.zeros(3))) / 0.01
                         for k in range(3)], axis=1)
    np.testing.assert_allclose(np.linalg.inv(jacobian), scripted._PALM_TO_SLIDES, atol=0.01)


def _episodes(env, policy, seeds):
  """Steps to success (or -1) per episode, simulated by MuJoCo on D4RL's model with D4RL's
  reset (ball and target moved in the model)."""
  model = env.reference_mj_model()
  body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "Object")
  target_site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "target")
  grasp = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "S_grasp")
  low, high = model.actuator_ctrlrange.T
  act = jax.jit(policy)
  results = []
  for seed in seeds:
    draws = jax.tree.map(np.asarray, env.sample_task(jax.random.PRNGKey(seed)))
    model.body_pos[body, :2] = draws["ball_xy"]
    model.site_pos[target_site] = draws["target"]
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    key, outcome = jax.random.PRNGKey(100 + seed), -1
    for t in range(env.task.episode_length):
      ball, palm, target = data.xpos[body], data.site_xpos[grasp], data.site_xpos[target_site]
      if np.linalg.norm(ball - target) < adroit.RELOCATE_GOAL_DISTANCE:
        outcome = t
        break
      observation = np.concatenate([data.qpos[:-6], palm - ball, palm - target, ball - target])
      key, step_key = jax.random.split(key)
      action = np.asarray(act(None, jnp.asarray(observation, jnp.float32), step_key))
      data.ctrl[:] = (low + high) / 2 + action * (high - low) / 2
      mujoco.mj_step(model, data, nstep=adroit.FRAME_SKIP)
    results.append(outcome)
  return results


def test_scripted_relocate_succeeds_where_random_actions_do_not(relocate):
  seeds = range(5)
  demonstrated = _episodes(relocate, scripted.relocate_policy(relocate), seeds)
  assert sum(t >= 0 for t in demonstrated) >= 4, demonstrated
  random = _episodes(relocate, collect.random_policy(relocate.action_size), seeds)
  assert random == [-1] * 5, random


def test_tasks_without_a_demonstrator_are_refused():
  with pytest.raises(ValueError, match="No scripted demonstrator for pen.*relocate"):
    scripted.policy_for(adroit.Adroit("pen"))
