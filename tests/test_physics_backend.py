"""The inputs and the MuJoCo Warp check of benchmarks/physics_backend.py, from benchmarks/timing.py
(that script defines absl flags, which tests must not import; no compile here: the timed rollouts
run on a GPU lease, benchmarks/speed_session.sh phase W)."""

import importlib.util

import numpy as np

import envs
from benchmarks import timing


def test_controls_stay_in_each_actuators_range_and_states_near_the_reference_pose():
  env, _ = envs.make("antmaze-umaze-v2")
  model = env.mj_model
  qpos, qvel, ctrl = timing.physics_inputs(env, batch=3, steps=200, seed=0)
  assert qpos.shape == (3, model.nq) and qvel.shape == (3, model.nv)
  assert ctrl.shape == (200, 3, model.nu) and ctrl.dtype == np.float32
  low, high = model.actuator_ctrlrange.T        # the ant's gears: every actuator limited
  assert model.actuator_ctrllimited.all()
  controls = np.asarray(ctrl, np.float64).reshape(-1, model.nu)
  assert np.all((controls >= low - 1e-6) & (controls <= high + 1e-6))
  # uniform draws: each actuator's range is nearly covered
  assert np.all(controls.min(0) < low + 0.05 * (high - low))
  assert np.all(controls.max(0) > high - 0.05 * (high - low))
  assert np.abs(np.asarray(qpos) - model.qpos0).max() < 0.1
  again = timing.physics_inputs(env, batch=3, steps=200, seed=0)
  assert all(np.array_equal(a, b) for a, b in zip((qpos, qvel, ctrl), again))


def test_says_why_warp_rows_are_skipped_where_warp_lang_is_missing():
  reason = timing.warp_missing()
  if importlib.util.find_spec("warp") is None:
    assert reason.startswith("warp-lang is not installed")
  else:
    assert reason == ""
