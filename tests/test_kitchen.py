"""Franka Kitchen: the registry's facts, D4RL's observation layout per task, each element's
completion test on hand-set states, the fork's reward (each element counted once) and the end at
4, the action mapping, and the MJX model against D4RL's in C MuJoCo.

The facts are written out here from D4RL's files (`d4rl/kitchen/kitchen_envs.py:9-27,94-98`,
`adept_envs/franka/kitchen_multitask_v0.py`, `robot/franka_config.xml`), not read from
envs/kitchen.py. One physics step compiles once (module fixture, about a minute cold).
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

import env_contract
import envs
from conftest import ROOT, TINY_OVERRIDES, as_flags
from envs import kitchen

# The physics step compiles for a minute on a 2-core CPU (a few seconds from the cache).
pytestmark = pytest.mark.slow

D4RL_INDICES = {"bottom burner": [11, 12], "top burner": [15, 16], "light switch": [17, 18],
                "slide cabinet": [19], "hinge cabinet": [20, 21], "microwave": [22],
                "kettle": [23, 24, 25, 26, 27, 28, 29]}
D4RL_GOALS = {"bottom burner": [-0.88, -0.01], "top burner": [-0.92, -0.01],
              "light switch": [-0.69, -0.05], "slide cabinet": [0.37], "hinge cabinet": [0.0, 1.45],
              "microwave": [-0.75], "kettle": [-0.23, 0.75, 1.62, 0.99, 0.0, 0.0, -0.06]}
D4RL_ELEMENTS = {
    "kitchen-complete": ["microwave", "kettle", "light switch", "slide cabinet"],
    "kitchen-partial": ["microwave", "kettle", "light switch", "slide cabinet"],
    "kitchen-mixed": ["microwave", "kettle", "bottom burner", "light switch"],
}
D4RL_INIT_QPOS_HEAD = [0.148388023, -1.76848573, 1.84390296, -2.4768576, 0.260252026]


# tests/env_contract.py's; kitchen-complete's on `complete_env`'s compiled step.
CONTRACT_TASKS = tuple(kitchen.TASKS)


@pytest.fixture(scope="module")
def complete_env():
  """kitchen-complete with its step compiled once."""
  env = kitchen.Kitchen("kitchen-complete")
  return env, jax.jit(env.step), jax.jit(env.reset_to)


@pytest.mark.parametrize("name,task", [
    ("kitchen-complete-v0", "kitchen-complete"), ("kitchen-partial-v1", "kitchen-partial"),
    ("kitchen-mixed-v0", "kitchen-mixed"), ("D4RL/kitchen/mixed-v2", "kitchen-mixed"),
    ("D4RL/kitchen/complete-v2", "kitchen-complete")])
def test_registry_facts(name, task):
  spec = envs.spec(name)
  assert (spec.task, spec.family) == (task, "kitchen")
  assert (spec.observation_size, spec.action_size, spec.episode_length) == (60, 9, 280)
  assert (spec.reward_scale, spec.reward_bias) == (1.0, -4.0)
  assert spec.score_is_success_rate and spec.reward_values is None
  # WSRL's score: the fraction of the 4 elements done at the end, x 100.
  np.testing.assert_allclose(spec.normalized_score([0.0, 0.0, 0.0], [0.25, 0.75, 1.0]),
                             [25.0, 75.0, 100.0])
  assert list(kitchen.TASKS[task].elements) == D4RL_ELEMENTS[task]
  if name.startswith("D4RL/"):
    assert spec.dataset_file is None
  else:
    assert spec.dataset_file.endswith("-v0.hdf5")


def d4rl_goal(task):
  goal = np.zeros(30)
  for element in D4RL_ELEMENTS[task]:
    goal[D4RL_INDICES[element]] = D4RL_GOALS[element]
  return goal


@pytest.mark.parametrize("task", CONTRACT_TASKS)
def test_env_makes_resets_and_steps(task, complete_env):
  if task == "kitchen-complete":
    env, step, _ = complete_env
  else:
    env = kitchen.Kitchen(task)
    step = jax.jit(env.step)
  env_contract.check_makes_resets_and_steps(task, env, jax.jit(env.reset), step)


@pytest.mark.parametrize("task", sorted(D4RL_ELEMENTS))
def test_observation_layout_per_task(task):
  env = kitchen.Kitchen(task)
  qpos = np.random.default_rng(0).normal(size=env.mj_model.nq).astype(np.float32)
  observation = np.asarray(env.observe(jnp.asarray(qpos), None))
  assert observation.shape == (60,)
  np.testing.assert_array_equal(observation[:30], qpos[:30])      # 9 robot + 21 object
  np.testing.assert_allclose(observation[30:], d4rl_goal(task), atol=1e-7)
  # With the noise: each coordinate within 0.1 x its franka_config.xml amplitude, goal exact.
  noisy = np.asarray(env.observe(jnp.asarray(qpos), jax.random.PRNGKey(1)))
  amplitude = 0.1 * np.array([0.1] * 9 + [0.005] * 2 + [0.0005] * 6 + [0.005] * 3 + [0.1] * 3
                             + [0.005] * 3 + [0.1] * 3 + [0.005])
  error = np.abs(noisy[:30] - qpos[:30])
  assert np.all(error <= amplitude * (1 + 1e-5) + 1e-7) and np.all(error > 0)
  assert error.max() > 0.5 * amplitude.max()
  np.testing.assert_array_equal(noisy[30:], observation[30:])


@pytest.mark.parametrize("task", sorted(D4RL_ELEMENTS))
def test_each_elements_completion_on_hand_set_states(task):
  goal = d4rl_goal(task)
  for k, element in enumerate(D4RL_ELEMENTS[task]):
    index = D4RL_INDICES[element]
    direction = np.ones(len(index)) / np.sqrt(len(index))
    for offset, expected in ((0.0, True), (0.29, True), (0.31, False), (1.0, False)):
      observation = np.concatenate([np.zeros(30), goal])
      observation[index] = np.asarray(D4RL_GOALS[element]) + offset * direction
      # the other elements far from their goals
      for other in D4RL_ELEMENTS[task]:
        if other != element:
          observation[D4RL_INDICES[other]] = np.asarray(D4RL_GOALS[other]) + 1.0
      done = np.asarray(kitchen.elements_done(jnp.asarray(observation, jnp.float32), task))
      assert done.tolist() == [expected if j == k else False for j in range(4)], (element, offset)


def test_reward_counts_each_element_once_and_never_takes_it_back():
  task = "kitchen-complete"
  goal = d4rl_goal(task)
  far = np.concatenate([np.zeros(30), goal])
  for element in D4RL_ELEMENTS[task]:
    far[D4RL_INDICES[element]] = np.asarray(D4RL_GOALS[element]) + 1.0

  def at_goal(*elements):
    observation = far.copy()
    for element in elements:
      observation[D4RL_INDICES[element]] = D4RL_GOALS[element]
    return jnp.asarray(observation, jnp.float32)

  # microwave; microwave closed again; kettle and light; the microwave again; all four.
  sequence = [at_goal(), at_goal("microwave"), at_goal(), at_goal("kettle", "light switch"),
              at_goal("microwave"), at_goal("slide cabinet")]
  expected_rewards = [0, 1, 1, 3, 3, 4]
  completed = jnp.zeros(4, bool)
  for observation, expected in zip(sequence, expected_rewards):
    completed, reward = kitchen.update_completed(completed, observation, task)
    assert float(reward) == expected


def test_action_maps_to_position_targets_as_d4rl():
  env = kitchen.Kitchen("kitchen-mixed")
  rng = np.random.default_rng(0)
  observed = rng.uniform(-3.5, 3.5, 9)
  observed[7:] = rng.uniform(-0.01, 0.05, 2)
  action = rng.uniform(-1.5, 1.5, 9)
  bounds = np.array([[-2.9, 2.9], [-1.8, 1.8], [-2.9, 2.9], [-3.1, 0.0], [-2.9, 2.9],
                     [0.0, 3.8], [-2.9, 2.9], [0.0, 0.04], [0.0, 0.04]])
  # Robot_VelAct: clip(a) x act_amp 2, clipped to +-10 rad/s, x 40 x 0.002 s, then pos bounds.
  velocity = np.clip(2.0 * np.clip(action, -1, 1), -10, 10)
  expected = np.clip(observed + velocity * 0.08, bounds[:, 0], bounds[:, 1])
  got = env.position_target(jnp.asarray(observed, jnp.float32), jnp.asarray(action, jnp.float32))
  np.testing.assert_allclose(got, expected, atol=1e-6)
  assert env.dt == pytest.approx(0.08)


def test_mjx_model_keeps_dynamics_and_drops_meshes():
  reference, model = kitchen.reference_model(), kitchen.build_mjx_model()
  assert (model.nq, model.nv, model.nu) == (30, 29, 9) == (reference.nq, reference.nv, reference.nu)
  np.testing.assert_array_equal(model.body_mass, reference.body_mass)
  np.testing.assert_allclose(model.body_inertia, reference.body_inertia, rtol=1e-12)
  np.testing.assert_array_equal(model.actuator_gainprm, reference.actuator_gainprm)
  np.testing.assert_array_equal(model.actuator_forcerange, reference.actuator_forcerange)
  np.testing.assert_array_equal(model.dof_damping, reference.dof_damping)
  colliding = (model.geom_contype | model.geom_conaffinity) > 0
  assert model.nmesh == 0 and colliding.all()
  assert not np.isin(model.geom_type, [mujoco.mjtGeom.mjGEOM_CYLINDER,
                                       mujoco.mjtGeom.mjGEOM_MESH]).any()
  # D4RL's pedestal is visual (class panda_viz); gymnasium-robotics' file lets it collide.
  assert reference.geom_contype[1] == 0 and reference.geom_type[1] == mujoco.mjtGeom.mjGEOM_CYLINDER


def _c_rollout(model, actions):
  """D4RL's control law in C MuJoCo, noise-free: qpos (30) after each action."""
  data = mujoco.MjData(model)
  data.qpos[:] = kitchen.INITIAL_QPOS
  mujoco.mj_forward(model, data)
  bounds = np.asarray(kitchen.ROBOT_POSITION_BOUNDS)
  states = []
  for action in actions:
    data.ctrl[:] = np.clip(data.qpos[:9] + 2.0 * action * 0.08, bounds[:, 0], bounds[:, 1])
    for _ in range(40):
      mujoco.mj_step(model, data)
    states.append(data.qpos[:30].copy())
  return np.asarray(states)


def test_collision_changes_move_the_arm_as_d4rls_model_in_mujoco():
  """The MJX model and D4RL's, both in C MuJoCo, under 20 random actions: the arm's joints
  agree to 1e-3 rad (measured: exactly). A model whose base link and first link collide (their
  fitted capsules overlap; the pair is excluded) is 0.018 rad off within 5 steps."""
  actions = np.clip(np.random.default_rng(0).normal(0, 0.5, (20, 9)), -1, 1)
  reference = _c_rollout(kitchen.reference_model(), actions)
  ours = _c_rollout(kitchen.build_mjx_model(), actions)
  assert np.abs(ours[:, :9] - reference[:, :9]).max() < 1e-3
  unexcluded = kitchen.build_mjx_model()
  unexcluded.exclude_signature[:] = -1
  assert np.abs(_c_rollout(unexcluded, actions[:5])[:, :9] - reference[:5, :9]).max() > 0.01


def test_reset_observes_d4rls_initial_state(complete_env):
  env, _, reset_to = complete_env
  qpos, qvel = env.initial_qpos_qvel()
  state = reset_to(jax.random.PRNGKey(0), qpos, qvel)
  np.testing.assert_allclose(state.obs[:5], D4RL_INIT_QPOS_HEAD, atol=0.0101)
  np.testing.assert_allclose(state.obs[30:], d4rl_goal("kitchen-complete"), atol=1e-7)
  assert float(state.reward) == 0 and float(state.done) == 0
  assert not np.asarray(state.info["completed"]).any()


def test_step_rewards_elements_done_so_far_and_ends_at_four(complete_env):
  """A state with the slide cabinet at its goal: after one step, with microwave, kettle and
  light already counted the reward is 4 and the episode ends; with two counted it is 3."""
  env, step, reset_to = complete_env
  qpos, qvel = env.initial_qpos_qvel()
  qpos = qpos.at[19].set(0.37)
  state = reset_to(jax.random.PRNGKey(0), qpos, qvel)
  for counted, reward, done in (([True, True, True, False], 4.0, 1.0),
                                ([True, True, False, False], 3.0, 0.0),
                                ([False, False, False, False], 1.0, 0.0)):
    start = state.replace(info={**state.info, "completed": jnp.asarray(counted)})
    after = step(start, jnp.zeros(9))
    assert (float(after.reward), float(after.done)) == (reward, done)
    assert float(after.metrics["success"]) == reward / 4
    np.testing.assert_array_equal(after.info["completed"], [counted[0], counted[1], counted[2],
                                                            True])


# --- data ---------------------------------------------------------------------------------------

def _d4rl_kitchen_file(path, observations, actions, rewards, terminals):
  """A file in D4RL's kitchen layout (generate_kitchen_datasets.py: no timeouts, int infos)."""
  import h5py
  with h5py.File(path, "w") as file:
    file.create_dataset("observations", data=np.asarray(observations, np.float32))
    file.create_dataset("actions", data=np.asarray(actions, np.float32))
    file.create_dataset("rewards", data=np.asarray(rewards, np.float32))
    file.create_dataset("terminals", data=np.asarray(terminals, np.float32))
    file.create_dataset("infos", data=np.zeros(len(rewards), np.int64))
  return path


def _numpy_returns(rewards, discount=0.99):
  out, running = np.zeros(len(rewards)), 0.0
  for i in reversed(range(len(rewards))):
    running = rewards[i] + discount * running
    out[i] = running
  return out


def test_d4rl_kitchen_file_loads_with_the_references_terminals_and_time_limit(tmp_path):
  """Episode A: 6 steps, reward 4 at its 5th (terminal there, as the reference marks it) and a
  D4RL terminal at its last; episode B: 290 steps with no terminal, cut at the 280th (the
  reference's episode_step == 279), the next 10 steps a trajectory of their own."""
  from wsrl_mjx import data
  spec = envs.spec("kitchen-partial-v0")
  rng = np.random.default_rng(0)
  rewards_a = [0, 1, 2, 3, 4, 4]
  rewards_b = list(rng.integers(0, 4, 290))
  rewards = np.array(rewards_a + rewards_b, np.float32)
  terminals = np.zeros(len(rewards)); terminals[5] = 1
  observations = rng.normal(size=(len(rewards), 60))
  actions = rng.uniform(-1, 1, (len(rewards), 9))
  path = _d4rl_kitchen_file(tmp_path / "kitchen.hdf5", observations, actions, rewards, terminals)
  dataset = data.load(path, spec)
  # Without next_observations, D4RL's pairing: a timeout step and the file's last are dropped.
  # A: rows 0..4 (row 4 terminal at reward 4; row 5 follows a terminal and is terminal itself).
  # B: rows 6..284 (285 is the 280th step: dropped), then 286..294 (295 the file's last).
  expected_rows = list(range(0, 6)) + list(range(6, 285)) + list(range(286, 295))
  np.testing.assert_array_equal(dataset.rewards, rewards[expected_rows])
  np.testing.assert_array_equal(dataset.terminals[:6], [0, 0, 0, 0, 1, 1])
  assert dataset.terminals[6:].sum() == 0
  transformed = rewards - 4.0
  expected = np.concatenate([
      _numpy_returns(transformed[0:5]), _numpy_returns(transformed[5:6]),
      _numpy_returns(transformed[6:285]), _numpy_returns(transformed[286:295])])
  np.testing.assert_allclose(dataset.mc_returns, expected, rtol=1e-5, atol=1e-4)


def test_kitchen_files_with_transformed_rewards_are_refused(tmp_path):
  from wsrl_mjx import data
  spec = envs.spec("kitchen-mixed-v0")
  path = _d4rl_kitchen_file(tmp_path / "bad.hdf5", np.zeros((5, 60)), np.zeros((5, 9)),
                            [-4, -4, -3, -3, -2], np.zeros(5))
  with pytest.raises(data.DatasetError, match=r"bad.hdf5: field 'rewards'.*element counts 0\.\.4"):
    data.load(path, spec)


def test_minari_kitchen_maps_to_d4rls_layout_and_the_envs_reward(tmp_path, monkeypatch):
  """A Gymnasium-Robotics-layout episode (59-dim `observation`): positions kept, velocities
  dropped, the task's goal appended; rewards rebuilt as elements done so far (the file's
  per-step completions discarded); the step reaching 4 terminal."""
  import h5py
  from wsrl_mjx import data
  task = "kitchen-complete"
  spec = envs.spec("D4RL/kitchen/complete-v2")
  rng = np.random.default_rng(1)
  steps = 6
  qpos = np.tile(np.asarray(kitchen.INITIAL_QPOS), (steps + 1, 1))
  # observed after step: microwave open after 1, closed again after 2 and 3 (still counted),
  # kettle and light after 3, the slide cabinet after the 6th and last
  qpos[1:, 22] = -0.75
  qpos[2:4, 22] = 0.0
  qpos[3:, 23:30] = D4RL_GOALS["kettle"]
  qpos[3:, 17:19] = D4RL_GOALS["light switch"]
  qpos[6:, 19] = 0.37
  velocities = rng.normal(size=(steps + 1, 29))
  observation = np.concatenate([qpos[:, :9], velocities[:, :9], qpos[:, 9:30], velocities[:, 9:]],
                               axis=1)
  assert observation.shape == (steps + 1, 59)
  root = tmp_path / "minari"
  monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
  main = root / "D4RL/kitchen/complete-v2/data/main_data.hdf5"
  main.parent.mkdir(parents=True)
  with h5py.File(main, "w") as file:
    episode = file.create_group("episode_0")
    episode.create_dataset("observations/observation", data=observation)
    episode.create_dataset("observations/desired_goal/kettle", data=np.zeros((steps + 1, 7)))
    episode.create_dataset("actions", data=rng.uniform(-1, 1, (steps, 9)))
    episode.create_dataset("rewards", data=[0, 1, 0, 2, 0, 1.0])
    episode.create_dataset("terminations", data=np.zeros(steps, bool))
    episode.create_dataset("truncations", data=np.zeros(steps, bool))
  dataset = data.load("D4RL/kitchen/complete-v2", spec)
  expected_observations = np.concatenate([qpos[:, :30], np.tile(d4rl_goal(task), (steps + 1, 1))],
                                         axis=1)
  np.testing.assert_allclose(dataset.observations, expected_observations[:-1], atol=1e-6)
  np.testing.assert_allclose(dataset.next_observations, expected_observations[1:], atol=1e-6)
  np.testing.assert_array_equal(dataset.rewards, [1, 1, 3, 3, 3, 4])
  np.testing.assert_array_equal(dataset.terminals, [0, 0, 0, 0, 0, 1])


@pytest.mark.slow   # 80 s cold on the 2-core CPU, alone
def test_tiny_launch_finetune_run(tmp_path):
  """launch.finetune end to end on kitchen-mixed (the other two tasks differ only in their
  element lists and goal vector; `test_env_makes_resets_and_steps` above runs each).
  Scores are multiples of 100 / 4 = 25 (one evaluation episode), from the fraction done at the
  end. As few env steps as reach updates (8-row batches after a 10-step warmup): a kitchen
  step is 40 physics steps, half a second at the tests' LLVM level 0."""
  overrides = dict(TINY_OVERRIDES, method="sac", num_seeds=1, online_steps=20, warmup_steps=10,
                   steps_per_chunk=10, eval_interval=20, checkpoint_interval=20, batch_size=8,
                   episode_length=5, eval_episodes=1)
  command = [sys.executable, "-m", "launch.finetune",
             "--config=launch/configs/finetune.py:kitchen-mixed-v0", f"--workdir={tmp_path}",
             *as_flags(overrides)]
  result = subprocess.run(command, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=2400)
  assert result.returncode == 0, result.stderr[-3000:]
  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["env_step"] for r in records] == [0, 20]
  assert records[-1]["train"]["updates"] == [9]             # indices 11-19 (warmup 10 > 8)
  config = json.loads((tmp_path / "config.json").read_text())
  assert config["last_hidden_init_scale"] is None
  for record in records:
    returns = np.asarray(record["episode_returns"])
    assert np.all((returns >= 0) & (returns <= 4 * 5))        # 0..4 per step, 5 steps
    scores = np.ravel(record["normalized_scores"])
    assert np.all(np.isclose(scores / 25, np.round(scores / 25)))


def test_scripted_demonstrator_opens_the_microwave_in_mujoco():
  """The script in C MuJoCo on D4RL's model: the microwave hinge passes D4RL's threshold
  (-0.75 + 0.3) and the env's reward counts it; the rows are the bridge check's format."""
  from wsrl_mjx.datagen import kitchen_script
  env = kitchen.Kitchen("kitchen-complete")
  trajectory = kitchen_script.demonstration(env, num_steps=120)
  assert trajectory["qpos"].shape == (121, 30) and trajectory["actions"].shape == (121, 9)
  assert np.abs(trajectory["actions"]).max() <= 1.0
  assert trajectory["qpos"][-1, 22] < -0.45
  assert trajectory["rewards"][-1] >= 1 and trajectory["rewards"][0] == 0
  # per-element rates from episodes' next observations
  goal = d4rl_goal("kitchen-complete")
  observations = np.concatenate([trajectory["qpos"][1:], np.tile(goal, (120, 1))], axis=1)
  rates = kitchen_script.element_success_rates(
      [{"next_observations": observations}, {"next_observations": observations[:10]}],
      "kitchen-complete")
  assert rates == {"microwave": 0.5, "kettle": 0.0, "light switch": 0.0, "slide cabinet": 0.0}


def _done_in_d4rls_terms(qpos, task):
  """bool [steps, 4]: D4RL's completion test (kitchen_envs.py:9-27, BONUS_THRESH 0.3) on rows of
  positions, written out from D4RL's tables above, not from envs/kitchen.py."""
  return np.stack([np.linalg.norm(qpos[:, D4RL_INDICES[e]] - np.asarray(D4RL_GOALS[e]), axis=1)
                   < 0.3 for e in D4RL_ELEMENTS[task]], axis=1)


@pytest.mark.parametrize("model_name", ["d4rl", "mjx"])
def test_scripted_demonstrator_completes_the_four_elements_in_mujoco(model_name):
  """One noise-free 280-step episode in C MuJoCo, on D4RL's model and on the model MJX runs:
  microwave, kettle, light switch and slide cabinet each pass the env's completion test
  (`kitchen.elements_done`, and D4RL's written out) at some step, in D4RL's order, and the
  env's reward reaches 4 within the episode."""
  from wsrl_mjx.datagen import kitchen_script
  env = kitchen.Kitchen("kitchen-complete")
  model = kitchen.build_mjx_model() if model_name == "mjx" else None
  trajectory = kitchen_script.demonstration(env, model=model)
  assert trajectory["qpos"].shape == (281, 30)
  assert np.abs(trajectory["actions"]).max() <= 1.0
  observations = np.concatenate([trajectory["qpos"][1:], np.tile(d4rl_goal("kitchen-complete"),
                                                                (280, 1))], axis=1)
  np.testing.assert_allclose(trajectory["observations"], observations, atol=1e-7)   # no noise
  done = np.asarray(kitchen.elements_done(jnp.asarray(observations, jnp.float32),
                                          "kitchen-complete"))
  np.testing.assert_array_equal(done, _done_in_d4rls_terms(trajectory["qpos"][1:],
                                                           "kitchen-complete"))
  assert done.any(axis=0).tolist() == [True] * 4, done.any(axis=0)
  first = [int(np.argmax(done[:, k])) for k in range(4)]
  assert first == sorted(first), first
  assert trajectory["rewards"][-1] == 4 and first[-1] < 280


def test_scripted_demonstrator_under_d4rls_observation_noise():
  """Two episodes with the env's noise (the servo targets from noisy observed joints, elements
  judged on noisy observations): the observations stay within the noise amplitudes of the
  true positions, and all four elements are done (BUILD.md has the rate over 100 episodes)."""
  from wsrl_mjx.datagen import kitchen_script
  env = kitchen.Kitchen("kitchen-complete")
  amplitude = 0.1 * np.array([0.1] * 9 + [0.005] * 2 + [0.0005] * 6 + [0.005] * 3 + [0.1] * 3
                             + [0.005] * 3 + [0.1] * 3 + [0.005])
  for seed in (0, 1):
    trajectory = kitchen_script.demonstration(env, rng=np.random.default_rng(seed))
    error = np.abs(trajectory["observations"][:, :30] - trajectory["qpos"][1:])
    assert np.all(error <= amplitude + 1e-12) and error.max() > 0.5 * amplitude.max()
    done = np.asarray(kitchen.elements_done(jnp.asarray(trajectory["observations"], jnp.float32),
                                            "kitchen-complete"))
    assert done.any(axis=0).tolist() == [True] * 4, (seed, done.any(axis=0))


@pytest.mark.slow   # 43 s cold on the 2-core CPU (19 minutes before compat's fusion flag)
def test_bridge_check_on_a_short_scripted_trajectory_passes_and_catches_a_wrong_model(
    monkeypatch):
  """The scripted demonstration's first 100 steps (reaching, grasping and pulling the microwave
  handle, then reaching for the kettle's) replayed 3 steps at a time from 8 windows: within the
  kitchen's bounds (in C MuJoCo our model and D4RL's agree exactly there); against a C model
  whose arm servos are 20% stiffer (median one-step joint error 3.6e-3 in C MuJoCo on these
  steps), the joints' one-step error is not."""
  from envs import bridge
  from wsrl_mjx.datagen import kitchen_script
  env = kitchen.Kitchen("kitchen-complete")
  trajectory = kitchen_script.demonstration(env, num_steps=100)
  trajectory["episode_ends"] = np.array([100])
  report = bridge.check(env, "kitchen-complete-v0", trajectory, horizon=3, num_starts=8,
                        rng=np.random.default_rng(0))
  assert report.tolerances == kitchen.BRIDGE_TOLERANCES
  assert not report.failures(), report.format()
  stiffer = kitchen.reference_model()
  stiffer.actuator_gainprm[:, 0] *= 1.2
  stiffer.actuator_biasprm[:, 1] *= 1.2
  monkeypatch.setattr(env, "reference_mj_model", lambda: stiffer)
  report = bridge.check(env, "kitchen-complete-v0", trajectory, horizon=3, num_starts=8,
                        rng=np.random.default_rng(0))
  assert any("robot joints: one-step" in line for line in report.failures()), report.format()
