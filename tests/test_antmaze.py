"""AntMaze on MJX: D4RL's facts, the goal and its reward, walls, and the MuJoCo bridge check.

Compiles the U-maze's step once (the registry's contract, tests/env_contract.py, and the goal's
episode, stepped from Python), its bridge open-loop rollout, one more rollout for the
elliptic-cone bridge check, the other mazes' reset and step for the contract, and the navigator's
collection program; everything else is numpy or C MuJoCo.
"""

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

import env_contract
import envs
from envs import antmaze, bridge

# Compiles a hand or maze model for minutes on a 2-core CPU; runs by default, -m 'not slow'
# deselects it (conftest.py).
pytestmark = pytest.mark.slow

HORIZON = 6
STARTS = 12


CONTRACT_TASKS = ("antmaze-umaze", "antmaze-medium", "antmaze-large")   # tests/env_contract.py's


@pytest.fixture(scope="module")
def umaze():
  env, env_spec = envs.make("antmaze-umaze-v2")
  return env, env_spec


@pytest.fixture(scope="module")
def umaze_step(umaze):
  """The U-maze's `env.step`, compiled once here (about 40 s on the 2-core CPU)."""
  return jax.jit(umaze[0].step)


@pytest.fixture(scope="module")
def rollout(umaze):
  """The bridge's compiled MJX rollout, [STARTS] starts x [HORIZON] steps, shared here."""
  return bridge.mjx_rollout(umaze[0])


def test_d4rl_names_and_facts():
  expected = {"antmaze-umaze-v2": 700, "antmaze-umaze-diverse-v2": 700,
              "antmaze-medium-play-v2": 1000, "antmaze-medium-diverse-v2": 1000,
              "antmaze-large-play-v2": 1000, "antmaze-large-diverse-v2": 1000}
  for name, episode_length in expected.items():
    spec = envs.spec(name)
    assert (spec.family, spec.observation_size, spec.action_size) == ("antmaze", 29, 8)
    assert spec.episode_length == episode_length
    assert (spec.reward_scale, spec.reward_bias) == (10.0, -5.0)
    assert spec.normalized_score(0.35) == pytest.approx(35.0)     # success rate x 100
  assert envs.spec("antmaze-large-play-v2").dataset_file == (
      "Ant_maze_hardest-maze_noisy_multistart_True_multigoal_False_sparse_fixed.hdf5")
  assert envs.spec("antmaze-umaze-v2").dataset_file == (
      "Ant_maze_u-maze_noisy_multistart_False_multigoal_False_sparse_fixed.hdf5")


def test_maze_geometry_matches_d4rl():
  # Cell (row, col) is centred at 4 (col - 1), 4 (row - 1): the start cell is the origin.
  umaze = antmaze.MAZES["umaze"]
  assert umaze.shape == (5, 5) and umaze.start_cell == (1, 1) and umaze.goal_cell == (3, 1)
  np.testing.assert_allclose(umaze.cell_center(umaze.goal_cell), [0.0, 8.0])
  assert antmaze.MAZES["medium"].shape == (8, 8)
  np.testing.assert_allclose(antmaze.MAZES["medium"].cell_center((6, 6)), [20.0, 20.0])
  assert antmaze.MAZES["large"].shape == (9, 12)
  np.testing.assert_allclose(antmaze.MAZES["large"].cell_center((7, 9)), [32.0, 24.0])
  # Walls: 4 x 4 x 2 m boxes standing on the floor, in the reference (D4RL) model.
  model = antmaze.build_model(umaze, touchable_walls_only=False)
  wall = model.geom("wall_2_2")
  np.testing.assert_allclose(wall.size, [2.0, 2.0, 1.0])
  np.testing.assert_allclose(wall.pos, [4.0, 4.0, 1.0])
  assert sum(model.geom(i).name.startswith("wall") for i in range(model.ngeom)) == 18
  # The ant: 13 geoms, 15 qpos, 14 qvel, 8 motors of +-30, RK4 at 0.02 s, 5 per action.
  assert (model.nq, model.nv, model.nu) == (15, 14, 8)
  np.testing.assert_allclose(model.actuator_ctrlrange, [[-30, 30]] * 8)
  assert model.opt.integrator == mujoco.mjtIntegrator.mjINT_RK4
  assert model.opt.timestep == pytest.approx(0.02)


def test_goal_sampling_follows_wsrls_d4rl_fork_or_upstream():
  keys = jax.random.split(jax.random.PRNGKey(0), 4000)
  # WSRL's fork (the default): U(-1, 0) + U(0, 0.5) per axis: support [-1, 0.5], mean -0.25;
  # upstream D4RL: U(0, 1) + U(0, 0.5): [0, 1.5], mean 0.75; variance 1/12 + 1/48 for both.
  # (tests/test_reference_parity.py checks the distribution in detail.)
  for goal_offset, low, high, mean in (("wsrl", -1.0, 0.5, -0.25), ("d4rl", 0.0, 1.5, 0.75)):
    env = antmaze.AntMaze("medium", goal_offset=goal_offset)
    offset = np.asarray(jax.vmap(env.sample_goal)(keys)) - np.array([20.0, 20.0])
    assert offset.min() >= low and offset.max() <= high
    np.testing.assert_allclose(offset.mean(0), [mean, mean], atol=0.02)
    np.testing.assert_allclose(offset.var(0), [1 / 12 + 1 / 48] * 2, rtol=0.1)
  env = antmaze.AntMaze("medium")
  assert env.goal_offset == "wsrl"
  goals = np.asarray(jax.vmap(env.sample_goal)(keys))
  # Different keys, different goals; the same key, the same goal.
  assert len(np.unique(goals, axis=0)) == len(goals)
  np.testing.assert_array_equal(env.sample_goal(jax.random.PRNGKey(3)),
                                env.sample_goal(jax.random.PRNGKey(3)))


@pytest.mark.parametrize("task", CONTRACT_TASKS)
def test_env_makes_resets_and_steps(task, request):
  if task == "antmaze-umaze":
    env, _ = request.getfixturevalue("umaze")
    step = request.getfixturevalue("umaze_step")
  else:
    env, _ = envs.make(task)
    step = jax.jit(env.step)
  env_contract.check_makes_resets_and_steps(task, env, jax.jit(env.reset), step)


def test_reset_observation_layout(umaze):
  env, _ = umaze
  state = jax.jit(env.reset)(jax.random.PRNGKey(0))
  data = state.pipeline_state
  assert state.obs.shape == (29,) and state.obs.dtype == jnp.float32
  np.testing.assert_array_equal(state.obs, jnp.concatenate([data.qpos[:15], data.qvel[:14]]))
  # D4RL's reset: the origin (the start cell) + U(-0.1, 0.1) on qpos, z from 0.75.
  assert np.all(np.abs(np.asarray(data.qpos[:2])) <= 0.1)
  assert 0.65 <= float(data.qpos[2]) <= 0.85
  # The goal (WSRL's D4RL fork): the goal cell's centre (0, 8) + U(-1, 0) + U(0, 0.5), x >= 0.
  goal = np.asarray(state.info["goal"])
  assert np.all(goal >= [0.0, 7.0]) and np.all(goal <= [0.5, 8.5])


def test_an_episode_that_reaches_the_goal_pays_once_and_ends(umaze, umaze_step):
  env, env_spec = umaze
  goal = jnp.array([0.5, 8.5])
  qpos, qvel = env.initial_qpos_qvel()
  # 1.5 m short of the goal, sliding towards it at 3 m/s; no actuation.
  qpos = qpos.at[:2].set(goal - jnp.array([0.0, 1.5]))
  qvel = qvel.at[1].set(3.0)
  state = jax.jit(env.reset_to)(qpos, qvel, goal)
  steps = []
  for _ in range(10):   # the contract's compiled step, from Python: no program of its own
    state = umaze_step(state, jnp.zeros(env.action_size))
    steps.append((state.reward, state.done, state.metrics["distance_to_goal"]))
  rewards, dones, distances = (np.asarray(x) for x in zip(*steps))
  reached = np.flatnonzero(distances <= antmaze.GOAL_RADIUS)
  assert len(reached) > 0, f"the ant never got within 0.5 m: distances {distances}"
  first = reached[0]
  np.testing.assert_array_equal(rewards[:first], 0.0)
  np.testing.assert_array_equal(dones[:first], 0.0)
  assert rewards[first] == 1.0 and dones[first] == 1.0
  # What the learner sees: reward x 10 - 5.
  assert rewards[first] * env_spec.reward_scale + env_spec.reward_bias == 5.0


def test_walls_block_the_ant(umaze, rollout):
  env, _ = umaze
  # The U-maze's middle wall (cells (2, 1) and (2, 2)) fills y in [2, 6] for x < 6; the outer
  # wall on the right starts at x = 10. Throw the ant at them at 5-9 m/s from ~1 m away; the
  # control throw goes along the free corridor (y = 0) instead.
  throws = [((0.0, 0.9), (0.0, 5.0)), ((2.0, 0.9), (0.0, 9.0)), ((0.0, 7.1), (0.0, -9.0)),
            ((8.5, 4.0), (9.0, 0.0)), ((0.0, 0.0), (9.0, 0.0))]
  starts = []
  for xy, velocity in throws:
    qpos, qvel = (np.asarray(x, np.float64) for x in env.initial_qpos_qvel())
    qpos[:2], qvel[:2] = xy, velocity
    starts.append((qpos, qvel))
  starts += starts[:1] * (STARTS - len(starts))
  qpos, qvel = (np.stack(x) for x in zip(*starts))
  obs = np.asarray(rollout(jnp.asarray(qpos, jnp.float32), jnp.asarray(qvel, jnp.float32),
                           jnp.zeros((STARTS, HORIZON, env.action_size))))
  xy = obs[:len(throws), :, :2]
  # In the open the throw carries the ant 1.5 m or more in these steps, farther than any of the
  # walls is from the torso's surface (0.35-0.85 m) ...
  assert xy[4, -1, 0] > 1.5, xy[4]
  # ... at a wall it stops: the torso (radius 0.25) never enters it, and it bounces back.
  radius = 0.25
  assert np.all(xy[0, :, 1] <= 2.0 - radius) and xy[0, -1, 1] < xy[0, 0, 1], xy[0]
  assert np.all(xy[1, :, 1] <= 2.0 - radius) and xy[1, -1, 1] < xy[1, 0, 1], xy[1]
  assert np.all(xy[2, :, 1] >= 6.0 + radius) and xy[2, -1, 1] > xy[2, 0, 1], xy[2]
  assert np.all(xy[3, :, 0] <= 10.0 - radius), xy[3]


def test_bridge_check_passes_on_a_generated_trajectory(umaze, rollout):
  env, env_spec = umaze
  rng = np.random.default_rng(0)
  parts = [bridge.generate_trajectory(env, rng, 20) for _ in range(3)]
  trajectory = {k: np.concatenate([p[k] for p in parts]) for k in ("qpos", "qvel", "actions")}
  trajectory["episode_ends"] = np.cumsum([len(p["qpos"]) for p in parts]) - 1
  for cone in bridge.CONES:
    report = bridge.check(env, env_spec.name, trajectory, HORIZON, STARTS,
                          np.random.default_rng(1), cone=cone)
    assert report.num_starts == STARTS
    assert not report.failures(), report.format()
    # MuJoCo reproduces the trajectory it generated (the reference model is the one used).
    if cone == "model":
      for errors in report.mujoco_vs_recorded.values():
        assert errors["multi_step"] < 1e-5


def test_bridge_check_catches_a_wrong_model(umaze):
  """A check that cannot fail is no check: move every wall by 3 cm and the identity check fails."""
  env, env_spec = umaze
  rng = np.random.default_rng(0)
  trajectory = bridge.generate_trajectory(env, rng, 20)
  wrong = antmaze.build_model(env.maze, touchable_walls_only=False)
  for i in range(wrong.ngeom):
    if wrong.geom(i).name.startswith("wall"):
      wrong.geom_size[i, :2] += 0.03
  reference = env.reference_mj_model
  try:
    env.reference_mj_model = lambda: wrong
    report = bridge.check(env, env_spec.name, trajectory, HORIZON, STARTS,
                          np.random.default_rng(1), cone="elliptic")
  finally:
    env.reference_mj_model = reference
  assert report.failures(), report.format()


def test_planner_follows_shortest_paths_through_the_maze():
  from wsrl_mjx.datagen import navigation
  maze = antmaze.MAZES["large"]
  table = navigation.next_cells(maze)
  free = set(maze.free_cells)
  # Walking the table from the start reaches the evaluation goal along free, adjacent cells,
  # in the fewest steps: (1,1) -> (1,4) -> (3,4) -> (3,6) -> (5,6) -> (5,8) -> (7,8) -> (7,9),
  # 14 moves, counted by hand on the layout.
  cell, path = maze.start_cell, [maze.start_cell]
  while cell != maze.goal_cell:
    step = tuple(int(i) for i in table[cell[0], cell[1], maze.goal_cell[0], maze.goal_cell[1]])
    assert step in free and abs(step[0] - cell[0]) + abs(step[1] - cell[1]) == 1
    cell = step
    path.append(cell)
    assert len(path) < 100
  assert len(path) - 1 == 14
  # Waypoints: the next cell's centre + U(0, 1), or the goal itself in the goal's cell.
  planner = navigation.Planner.for_maze(maze)
  goal = jnp.array([32.3, 24.6])
  key = jax.random.PRNGKey(0)
  np.testing.assert_allclose(planner.waypoint(jnp.array([31.0, 23.0]), goal, key), goal)
  waypoint = np.asarray(planner.waypoint(jnp.array([0.3, -0.2]), goal, key))
  first = maze.cell_center(path[1])
  assert np.all(waypoint >= first) and np.all(waypoint <= first + 1.0)


def test_data_collection_env_draws_d4rl_starts_and_goals():
  env = antmaze.AntMaze("medium", data_character="play")
  assert env.goal_offset == "d4rl"          # D4RL's files were made with upstream's goals
  keys = jax.random.split(jax.random.PRNGKey(0), 500)
  goals = np.asarray(jax.vmap(env.sample_goal)(keys))
  starts = np.asarray(jax.vmap(env.sample_start)(keys))
  # "play": goals only in the hand-picked cells; starts anywhere free.
  goal_cells = {env.maze.xy_to_cell(g - 0.75) for g in goals}
  assert goal_cells == set(env.maze.cells("GP"))
  start_cells = {env.maze.xy_to_cell(s - 0.5) for s in starts}
  assert start_cells == set(env.maze.free_cells)
  diverse = antmaze.AntMaze("umaze", data_character="diverse")
  goal_cells = {diverse.maze.xy_to_cell(g - 0.75)
                for g in np.asarray(jax.vmap(diverse.sample_goal)(keys))}
  assert goal_cells == set(diverse.maze.free_cells)
  with pytest.raises(ValueError, match="data_character"):
    antmaze.AntMaze("umaze", data_character="expert")


def test_bridge_check_names_the_file_and_the_missing_field(tmp_path):
  import h5py
  from wsrl_mjx.data import DatasetError
  path = tmp_path / "no_states.hdf5"
  with h5py.File(path, "w") as f:
    f["actions"] = np.zeros((5, 8), np.float32)
    f["observations"] = np.zeros((5, 29), np.float32)
  with pytest.raises(DatasetError, match=r"no_states.hdf5: no infos/qpos, infos/qvel"):
    bridge.trajectory_from_file(str(path))
  (tmp_path / "not.hdf5").write_text("not hdf5")
  with pytest.raises(DatasetError, match=r"not.hdf5: cannot be read as hdf5"):
    bridge.trajectory_from_file(str(tmp_path / "not.hdf5"))


def test_navigator_collects_a_d4rl_antmaze_file_the_loader_reads_back(tmp_path):
  from wsrl_mjx import data
  from wsrl_mjx.datagen import collect, navigation
  env, env_spec = envs.make("antmaze-umaze-diverse-v2", data_character="diverse")
  # A stand-in controller (the trained one is a checkpoint): push along the waypoint direction
  # with the hips, so the ant moves; what is tested is the steering, recording and format.
  def controller(params, observation, key):
    del params, key
    return jnp.tanh(jnp.concatenate([observation[27:29] / 10.0] * 4))
  policy = navigation.navigation_policy(navigation.Planner.for_maze(env.maze), controller)
  rows = collect.collect(env, env_spec, policy, None, jax.random.PRNGKey(0), steps_per_env=30,
                         num_envs=2, episode_length=10, action_clip=0.99999)
  path = collect.write(tmp_path / "antmaze.hdf5", rows, {"algorithm": "test"})
  import h5py
  with h5py.File(path) as f:
    assert f["observations"].shape == (60, 29) and f["infos/goal"].shape == (60, 2)
    assert f["infos/qpos"].shape == (60, 15) and f["infos/qvel"].shape == (60, 14)
    timeouts, terminals = f["timeouts"][:], f["terminals"][:]
    goal, qpos, rewards = f["infos/goal"][:], f["infos/qpos"][:], f["rewards"][:]
  # D4RL's data: 10-step episodes end in timeouts, not at the goal; one goal per episode; as in
  # D4RL's v2 files every step with reward 1 is terminal (the episode goes on).
  np.testing.assert_array_equal(np.flatnonzero(timeouts), [9, 19, 29, 39, 49, 59])
  np.testing.assert_array_equal(terminals, rewards == 1.0)
  for start in range(0, 60, 10):
    assert np.all(goal[start:start + 10] == goal[start])
  # Sparse reward: 1 where the next state is within 0.5 m of the goal.
  inside = np.flatnonzero(~timeouts)
  distance = np.linalg.norm(qpos[inside + 1, :2] - goal[inside], axis=1)
  np.testing.assert_array_equal(rewards[inside], (distance <= 0.5).astype(np.float32))
  dataset = data.load(path, envs.spec("antmaze-umaze-diverse-v2"), negative_sparse_reward=0.0)
  assert dataset.observations.shape[1] == 29 and dataset.actions.shape[1] == 8
