"""Adroit pen/door/relocate (binary): layouts, resets against MuJoCo on D4RL's model, the binary
reward and termination, the bridge check, and a tiny `launch.finetune` run per task.

Each task's reset and step compile once (module fixtures, ~20 s each on a 2-core CPU)."""

import copy
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
from mujoco import mjx

import env_contract
import envs
from conftest import ROOT, TINY_OVERRIDES, as_flags
from envs import adroit, bridge

# Compiles a hand or maze model for minutes on a 2-core CPU; runs by default, -m 'not slow'
# deselects it (conftest.py).
pytestmark = pytest.mark.slow

TASKS = ("pen", "door", "relocate")
DIMS = {"pen": (45, 24, 100), "door": (39, 28, 200), "relocate": (39, 30, 200)}
CONTRACT_TASKS = TASKS     # tests/env_contract.py's, on `task_env`'s compiled step


@pytest.fixture(scope="module", params=TASKS)
def task_env(request):
  """(task, env, reset_to(draws, qpos=rest, qvel=rest), step), each compiled once per task."""
  env = adroit.Adroit(request.param)
  reset_to = jax.jit(env.reset_to)
  rest_q, rest_v = jnp.zeros(env.mj_model.nq), jnp.zeros(env.mj_model.nv)

  def reset(draws, qpos=None, qvel=None):
    return reset_to(draws, rest_q if qpos is None else qpos, rest_v if qvel is None else qvel)

  return request.param, env, reset, jax.jit(env.step)


def d4rl_observation(task, model, data):
  """D4RL's `get_obs` (hand_manipulation_suite/*_v0.py), on C MuJoCo's data."""
  qp, qv = data.qpos.copy(), data.qvel.copy()
  site = lambda n: data.site_xpos[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, n)].copy()
  body = lambda n: data.xpos[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, n)].copy()
  if task == "pen":
    position = body("Object")
    orientation = (site("object_top") - site("object_bottom")) / 0.13
    goal = (site("target_top") - site("target_bottom")) / 0.13
    return np.concatenate([qp[:-6], position, qv[-6:], orientation, goal,
                           position - site("eps_ball"), orientation - goal])
  if task == "door":
    palm, handle = site("S_grasp"), site("S_handle")
    return np.concatenate([qp[1:-2], [qp[-1]], [qp[28]], palm, handle, palm - handle,
                           [1.0 if qp[28] > 1.0 else -1.0]])
  ball, palm, target = body("Object"), site("S_grasp"), site("target")
  return np.concatenate([qp[:-6], palm - ball, palm - target, ball - target])


def d4rl_reset(task, draws, model):
  """D4RL's `reset_model`: zero state, then the draws written into the model, then forward."""
  body = lambda n: mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, n)
  if task == "pen":
    x, y = draws["goal_angles"]
    # d4rl.utils.quatmath.euler2quat([x, y, 0]) written out.
    ai, aj, ak = 0.0, -y / 2, x / 2
    si, sj, sk, ci, cj, ck = np.sin(ai), np.sin(aj), np.sin(ak), np.cos(ai), np.cos(aj), np.cos(ak)
    cc, cs, sc, ss = ci * ck, ci * sk, si * ck, si * sk
    model.body_quat[body("target")] = [cj * cc + sj * ss, cj * cs - sj * sc, -(cj * ss + sj * cc),
                                       cj * sc - sj * cs]
  elif task == "door":
    model.body_pos[body("frame")] = draws["frame_position"]
  else:
    model.body_pos[body("Object"), :2] = draws["ball_xy"]
    model.site_pos[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "target")] = draws["target"]
  data = mujoco.MjData(model)
  mujoco.mj_forward(model, data)
  return data


def test_env_makes_resets_and_steps(task_env):
  task, env, _, step = task_env
  env_contract.check_makes_resets_and_steps(task, env, jax.jit(env.reset), step)


def test_registry_facts():
  for task, (obs, act, length) in DIMS.items():
    spec = envs.spec(f"{task}-binary-v0")
    assert (spec.family, spec.task, spec.observation_size, spec.action_size,
            spec.episode_length) == ("adroit", task, obs, act, length)
    assert (spec.reward_scale, spec.reward_bias) == (10.0, 5.0)
    np.testing.assert_array_equal(spec.normalized_score([-3.0, -100.0], [True, False]),
                                  [100.0, 0.0])
    with pytest.raises(ValueError, match="success rate"):
      spec.normalized_score([-3.0])


def test_mjx_model_keeps_the_reference_masses_and_actuators():
  for task in TASKS:
    model, reference = adroit.build_mjx_model(task), adroit.reference_model(task)
    np.testing.assert_allclose(model.body_mass, reference.body_mass)
    np.testing.assert_allclose(model.body_inertia, reference.body_inertia)
    np.testing.assert_array_equal(model.actuator_ctrlrange, reference.actuator_ctrlrange)
    np.testing.assert_array_equal(model.jnt_range, reference.jnt_range)
    mjx.put_model(model)                      # the reference model is refused (cylinder-box)
    types, contype, conaffinity = model.geom_type, model.geom_contype, model.geom_conaffinity
    collide = lambda i, j: bool(contype[i] & conaffinity[j] or contype[j] & conaffinity[i])
    cylinders = np.flatnonzero(types == mujoco.mjtGeom.mjGEOM_CYLINDER)
    boxes = np.flatnonzero(types == mujoco.mjtGeom.mjGEOM_BOX)
    twins = [i for i in range(model.ngeom) if (model.geom(i).name or "").endswith("_box_twin")]
    assert len(twins) == sum(1 for c in cylinders if contype[c] or conaffinity[c])
    assert (len(twins) > 0) == (task != "relocate")    # relocate has no cylinder
    for twin in twins:
      assert types[twin] == mujoco.mjtGeom.mjGEOM_CAPSULE
      assert any(collide(twin, b) for b in boxes)
      assert not any(collide(twin, j) for j in range(model.ngeom) if types[j] != 6)
    assert not any(collide(c, b) for c in cylinders for b in boxes)


def _pulled_hinge(model, frame_position, pull_newtons=20.0, steps=500):
  """The door hinge after `steps` physics steps of a pull on the turned latch (C MuJoCo)."""
  body = lambda name: mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)
  model.body_pos[body("frame")] = frame_position
  data = mujoco.MjData(model)
  data.qpos[29] = 1.6                                    # the latch turned: the door is free
  for _ in range(steps):
    data.xfrc_applied[body("latch"), :3] = [0.0, -pull_newtons, 0.0]   # toward the hand
    mujoco.mj_step(model, data)
  return data.qpos[28]


def test_door_opens_as_in_d4rls_model_wherever_a_reset_puts_the_frame():
  """The door/table exclusion is exact, and without it the low frames wedge the door shut."""
  reference, model = adroit.reference_model("door"), adroit.build_mjx_model("door")
  body = lambda name: mujoco.mj_name2id(reference, mujoco.mjtObj.mjOBJ_BODY, name)
  door_geoms = [g for g in range(reference.ngeom)
                if reference.geom_bodyid[g] in (body("door"), body("latch"))]
  table_geoms = np.flatnonzero(reference.geom_bodyid == body("table"))
  # In D4RL's model the door never touches the table: lowest and highest frame, any hinge angle.
  for z in (0.252, 0.35):
    reference.body_pos[body("frame")] = [-0.25, 0.3, z]
    for hinge in np.linspace(0.0, 1.57, 5):
      data = mujoco.MjData(reference)
      data.qpos[28] = hinge
      mujoco.mj_forward(reference, data)
      assert min(mujoco.mj_geomDistance(reference, data, d, t, 1.0, None)
                 for d in door_geoms for t in table_geoms) > 0.0
  # The same pull opens the MJX model's door as far as D4RL's (it stayed at 0.0 rad before).
  for frame_position in ([-0.25, 0.3, 0.252], [-0.25, 0.3, 0.3]):
    opened = _pulled_hinge(model, frame_position)
    assert opened > adroit.DOOR_OPEN_ANGLE
    np.testing.assert_allclose(opened, _pulled_hinge(reference, frame_position), atol=0.01)


def test_reset_draws_cover_d4rls_ranges():
  env = adroit.Adroit("relocate")
  draws = jax.vmap(env.sample_task)(jax.random.split(jax.random.PRNGKey(0), 4000))
  ball, target = np.asarray(draws["ball_xy"]), np.asarray(draws["target"])
  for values, low, high in [(ball, [-0.15, -0.15], [0.15, 0.3]),
                            (target, [-0.2, -0.2, 0.15], [0.2, 0.2, 0.35])]:
    assert np.all(values >= low) and np.all(values <= high)
    np.testing.assert_allclose(values.min(0), low, atol=0.01)
    np.testing.assert_allclose(values.max(0), high, atol=0.01)
  keys = jax.random.split(jax.random.PRNGKey(1), 4000)
  angles = np.asarray(jax.vmap(adroit.Adroit("pen").sample_task)(keys)["goal_angles"])
  frame = np.asarray(jax.vmap(adroit.Adroit("door").sample_task)(keys)["frame_position"])
  for values, low, high in [(angles, [-1, -1], [1, 1]),
                            (frame, [-0.3, 0.25, 0.252], [-0.2, 0.35, 0.35])]:
    assert np.all(values >= low) and np.all(values <= high)
    np.testing.assert_allclose(values.min(0), low, atol=0.01)
    np.testing.assert_allclose(values.max(0), high, atol=0.01)


def test_reset_matches_d4rls_reset_in_mujoco(task_env):
  """Observations after a reset equal D4RL's, computed in C MuJoCo on the unmodified model with
  the same draws written into it the way D4RL's reset does."""
  task, env, reset_to, _ = task_env
  for seed in range(3):
    draws = env.sample_task(jax.random.PRNGKey(seed))
    state = reset_to(draws)
    assert state.obs.shape == (DIMS[task][0],) and state.obs.dtype == jnp.float32
    model = env.reference_mj_model()
    data = d4rl_reset(task, jax.tree.map(np.asarray, draws), model)
    np.testing.assert_allclose(state.obs, d4rl_observation(task, model, data), atol=1e-5)
    assert float(state.reward) == 0.0 and float(state.done) == 0.0


def success_state(task, env, reset_to):
  """A state at the goal: the pen upright under an upright goal, the door past 1.35 rad, the
  ball on its target."""
  if task == "pen":
    qpos = jnp.zeros(env.mj_model.nq).at[28].set(-np.pi / 2)   # OBJRy: the pen's axis up
    return reset_to({"goal_angles": jnp.zeros(2)}, qpos)
  if task == "door":
    return reset_to({"frame_position": jnp.array([-0.25, 0.3, 0.3])},
                    jnp.zeros(env.mj_model.nq).at[28].set(1.45))
  return reset_to({"ball_xy": jnp.array([0.1, 0.1]), "target": jnp.array([0.1, 0.1, 0.1])})


def test_binary_reward_and_termination_at_the_goal(task_env):
  task, env, reset_to, step = task_env
  action = jnp.zeros(env.action_size)
  at_goal = step(success_state(task, env, reset_to), action)
  assert float(at_goal.reward) == 0.0 and float(at_goal.done) == 1.0
  assert float(at_goal.metrics["success"]) == 1.0
  start = step(reset_to(env.sample_task(jax.random.PRNGKey(0))), action)
  assert float(start.reward) == -1.0 and float(start.done) == 0.0
  assert np.all(np.isfinite(np.asarray(start.obs)))


def test_action_maps_onto_the_control_ranges():
  env = adroit.Adroit("door")
  low, high = env.mj_model.actuator_ctrlrange.T
  np.testing.assert_allclose(env.action_to_ctrl(-jnp.ones(28)), low, rtol=1e-6)
  np.testing.assert_allclose(env.action_to_ctrl(2 * jnp.ones(28)), high, rtol=1e-6)  # clipped
  np.testing.assert_allclose(env.action_to_ctrl(jnp.zeros(28)), (low + high) / 2, atol=1e-6)


def test_bridge_check_passes_and_catches_wrong_actuator_gains(monkeypatch):
  env = adroit.Adroit("relocate")
  rng = np.random.default_rng(0)
  parts = [bridge.generate_trajectory(env, rng, num_steps=40) for _ in range(2)]
  # (generated on the true reference model, before it is swapped below)
  trajectory = {k: np.concatenate([p[k] for p in parts]) for k in ("qpos", "qvel", "actions")}
  trajectory["episode_ends"] = np.array([40, 81])
  report = bridge.check(env, "relocate-binary-v0", trajectory, horizon=3, num_starts=24,
                        rng=np.random.default_rng(1))
  assert report.quantile == 0.9 and report.tolerances == adroit.BRIDGE_TOLERANCES["relocate"]
  assert not report.failures(), report.format()

  # The same check against a C model whose actuators are 20% stiffer (the MJX side, and so its
  # compiled rollout, unchanged) must fail.
  stiffer = copy.deepcopy(env.reference_mj_model())
  stiffer.actuator_gainprm[:, 0] *= 1.2
  stiffer.actuator_biasprm[:, 1] *= 1.2
  monkeypatch.setattr(env, "reference_mj_model", lambda: stiffer)
  report = bridge.check(env, "relocate-binary-v0", trajectory, horizon=3, num_starts=24,
                        rng=np.random.default_rng(1))
  assert any("arm and hand joint angles: one-step" in line for line in report.failures()), \
      report.format()


def _scripted_relocate_grasp_states(env, num_states, horizon):
  """(qpos, qvel, ctrl of the next `horizon` steps) at the `num_states` states with the most
  contacts of a scripted relocate episode in C MuJoCo (the hand closing on and lifting the ball),
  and those contact counts."""
  from wsrl_mjx.datagen import scripted  # pylint: disable=import-outside-toplevel
  act = jax.jit(scripted.relocate_policy(env, noise_scale=0.0))
  draws = jax.tree.map(np.asarray, env.sample_task(jax.random.PRNGKey(0)))
  model = copy.deepcopy(env.mj_model)          # the target site moved, as D4RL moves it
  model.site_pos[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "target")] = draws["target"]
  data = mujoco.MjData(model)
  data.qpos[30:32] = draws["ball_xy"]          # the MJX model's ball sits on slide joints
  mujoco.mj_forward(model, data)
  rows = []
  for _ in range(160):
    observation = jnp.asarray(d4rl_observation("relocate", model, data), jnp.float32)
    ctrl = np.asarray(env.action_to_ctrl(act(None, observation, jax.random.PRNGKey(0))))
    rows.append((data.qpos.copy(), data.qvel.copy(), ctrl, data.ncon))
    data.ctrl[:] = ctrl
    mujoco.mj_step(model, data, nstep=adroit.FRAME_SKIP)
  chosen = sorted(range(len(rows) - horizon + 1), key=lambda i: -rows[i][3])[:num_states]
  stack = lambda k: jnp.asarray(np.stack([rows[i][k] for i in chosen]), jnp.float32)
  ctrl = jnp.asarray(np.stack([[rows[i + h][2] for h in range(horizon)] for i in chosen]),
                     jnp.float32)
  return stack(0), stack(1), ctrl, np.array([rows[i][3] for i in chosen])


def test_contact_cap_drops_no_contact_of_a_grasp():
  """MJX solves for the deepest `MAX_CONTACTS` contacts only: from the most contact-rich states
  of a grasp, 3 steps equal the uncapped model's.

  The cap is in force (the capped model has fewer contact slots than the uncapped one), and these
  states touch in more places than a cap of 2 would keep, so a cap that dropped any contact that
  touches would show here: with a cap of 2 one step from these starts moves by 0.045
  (2026-12-01; a third relocate compile, so measured once and not run here). The starts
  and horizon are the bridge check's (test above), so the capped rollout is compiled once."""
  capped = adroit.Adroit("relocate")
  uncapped = adroit.Adroit("relocate", max_contacts=None)
  assert adroit.MAX_CONTACTS == 48
  slots = lambda env: jax.eval_shape(mjx.make_data, env.mjx_model)._impl.contact.dist.shape
  assert slots(capped) == (116,) and slots(uncapped) == (188,)
  qpos, qvel, ctrl, touching = _scripted_relocate_grasp_states(capped, num_states=24, horizon=3)
  assert touching.min() >= 9, touching       # (C MuJoCo's count: touching pairs only)
  step = lambda env: np.asarray(bridge.mjx_rollout(env)(qpos, qvel, ctrl))
  np.testing.assert_allclose(step(capped), step(uncapped), atol=1e-4)


def test_tiny_launch_finetune_run(tmp_path):
  """The launcher end to end on one Adroit task (door, the task WSRL's Adroit figures lead
  with); the other two tasks share every line of its code path, and each is made, reset and
  stepped by `test_env_makes_resets_and_steps` above."""
  task = "door"
  overrides = dict(TINY_OVERRIDES, method="sac", num_seeds=1, online_steps=40,
                   warmup_steps=20, steps_per_chunk=20, eval_interval=40, checkpoint_interval=40,
                   batch_size=16, episode_length=10)
  command = [sys.executable, "-m", "launch.finetune",
             f"--config=launch/configs/finetune.py:{task}-binary-v0", f"--workdir={tmp_path}",
             *as_flags(overrides)]
  result = subprocess.run(command, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["env_step"] for r in records] == [0, 40]
  assert records[-1]["train"]["updates"] == [19]            # indices 21-39 (warmup 20 > 16)
  for record in records:
    # 10-step episodes of -1 per step until the goal; scored by success (0 or 100 per episode).
    assert np.all(np.asarray(record["episode_returns"]) >= -10)
    assert set(np.ravel(record["normalized_scores"])) <= {0.0, 50.0, 100.0}
    assert len(record["success_rates"]) == 1


@pytest.mark.parametrize("layout", ["rollout", "demo"])
def test_collected_rows_round_trip_through_wsrls_npy_format(layout, tmp_path):
  from wsrl_mjx.datagen import collect
  from wsrl_mjx.data import adroit as adroit_data
  rng = np.random.default_rng(0)
  # Episode 1 reaches the goal at its third step (reward 0, terminal); episode 2 times out.
  rewards = np.array([-1, -1, 0, -1, -1, -1, -1], np.float32)
  terminals = np.array([0, 0, 1, 0, 0, 0, 0], bool)
  timeouts = np.array([0, 0, 0, 0, 0, 0, 1], bool)
  rows = {"observations": rng.normal(size=(7, 45)).astype(np.float32),
          "next_observations": rng.normal(size=(7, 45)).astype(np.float32),
          "actions": rng.uniform(-1, 1, (7, 24)).astype(np.float32),
          "rewards": rewards, "terminals": terminals, "timeouts": timeouts}
  path = collect.write_adroit_npy(tmp_path / "pen.npy", rows, layout)
  loaded = adroit_data.read_adroit_npy(path)          # WSRL's processing: failures dropped
  np.testing.assert_array_equal(loaded.observations, rows["observations"][:3])
  np.testing.assert_array_equal(loaded.actions, rows["actions"][:3])
  np.testing.assert_array_equal(loaded.rewards, rewards[:3])
  np.testing.assert_array_equal(loaded.terminals, [False, False, True])
  everything = adroit_data.read_adroit_npy(path, successful_prefix_only=False)
  np.testing.assert_array_equal(everything.timeouts, timeouts)
  assert collect.success_rate({**rows, "goal_achieved": rewards == 0}) == 0.5
  # Read as one stream of 7 steps with a 5-step time limit, episode 2 (4 steps, no goal) was cut
  # short by the stream's end; with a 4-step limit it timed out in full.
  with_goal = {**rows, "goal_achieved": rewards == 0}
  assert collect.success_rate(with_goal, stream_length=7, episode_length=5) == 1.0
  assert collect.success_rate(with_goal, stream_length=7, episode_length=4) == 0.5


def test_adroit_datasets_load_by_name_or_comma_separated_files(tmp_path, monkeypatch):
  from wsrl_mjx import data
  from wsrl_mjx.data import adroit as adroit_data
  spec = envs.spec("pen-binary-v0")
  monkeypatch.setenv(adroit_data.DATA_DIR_VARIABLE, str(tmp_path))
  with pytest.raises(data.DatasetError, match=r"pen2_sparse\.npy.*pen_bc_sparse4\.npy.*no such"):
    data.load("pen-binary-v0", spec)

  rng = np.random.default_rng(0)

  def episode(length):                      # reaches the goal at its last step
    rewards = np.full(length, -1.0, np.float32)
    rewards[-1] = 0.0
    return {"observations": rng.normal(size=(length, 45)),
            "next_observations": rng.normal(size=(length, 45)),
            "actions": rng.uniform(-1, 1, (length, 24)), "rewards": rewards,
            "terminals": rewards == 0}

  demos, rollouts = adroit_data.dataset_paths("pen")
  demos.parent.mkdir(parents=True)
  adroit_data.write_adroit_npy(demos, [episode(3)], layout="demo")
  adroit_data.write_adroit_npy(rollouts, [episode(4), episode(2)], layout="rollout")
  assert data.load("pen-binary-v0", spec).size == 9
  assert data.load(f"{demos}, {rollouts}", spec).size == 9
  assert data.load(str(rollouts), spec).size == 6


def test_bridge_check_refuses_elliptic_cones_for_condim_one_contacts():
  env = adroit.Adroit("relocate")
  assert not bridge.supports_elliptic_cones(env)
  trajectory = {"qpos": np.zeros((3, 36)), "qvel": np.zeros((3, 36)),
                "actions": np.zeros((3, 30)), "episode_ends": np.array([2])}
  with pytest.raises(ValueError, match="no elliptic cones for condim-1"):
    bridge.check(env, "relocate-binary-v0", trajectory, horizon=1, num_starts=1,
                 rng=np.random.default_rng(0), cone="elliptic")


@pytest.mark.parametrize("task_env", ["door"], indirect=True)
def test_door_solver_budget_follows_mujoco_where_hand_and_door_press_together(task_env):
  """`SOLVER_BUDGET`: a state of a random door episode (row 92 of the bridge check's first
  generated episode) where C MuJoCo needs more than 4 Newton iterations. At the door's 8 / 16,
  one MJX step follows C MuJoCo on D4RL's model to 0.063 rad; at the 4 / 8 of the other tasks
  it was off by 0.67."""
  _, env, reset_to, step = task_env
  trajectory = bridge.generate_trajectory(env, np.random.default_rng(0), num_steps=93)
  qpos, qvel, action = (trajectory[k][92] for k in ("qpos", "qvel", "actions"))
  model = env.reference_mj_model()
  frame = model.body_pos[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "frame")]
  state = reset_to({"frame_position": jnp.asarray(frame, jnp.float32)},
                   jnp.asarray(qpos, jnp.float32), jnp.asarray(qvel, jnp.float32))
  mjx_qpos = np.asarray(step(state, jnp.asarray(action, jnp.float32)).pipeline_state.qpos)
  data = mujoco.MjData(model)
  data.qpos[:], data.qvel[:] = qpos, qvel
  mujoco.mj_forward(model, data)
  data.ctrl[:] = np.asarray(env.action_to_ctrl(jnp.asarray(action, jnp.float32)))
  for _ in range(adroit.FRAME_SKIP):
    mujoco.mj_step(model, data)
  assert env.mj_model.opt.iterations == 8 and env.mj_model.opt.ls_iterations == 16
  assert np.abs(mjx_qpos[:27] - data.qpos[:27]).max() < 0.15    # arm and hand joints


def test_bridge_check_generates_adroit_episodes_of_the_length_its_bounds_were_calibrated_on():
  from absl import flags, logging
  from launch import bridge_check
  absl_level = logging.get_absl_logger().level
  flags.FLAGS(["bridge_check", "--env=door-binary-v0"])       # --steps left at its default
  try:
    trajectory = bridge_check.generated(adroit.Adroit("door"), np.random.default_rng(0))
  finally:
    flags.FLAGS.unparse_flags()
    # Unparsing resets absl's --verbosity, which sets its logger to WARNING: later tests'
    # caplog would see no INFO record.
    logging.get_absl_logger().setLevel(absl_level)
  # 4 episodes of BRIDGE_EPISODE_STEPS actions (each also records its final state).
  assert adroit.BRIDGE_EPISODE_STEPS == 100
  np.testing.assert_array_equal(trajectory["episode_ends"], [100, 201, 302, 403])
