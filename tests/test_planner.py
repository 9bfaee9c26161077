"""The door's and pen's demonstrator, an MPPI planner in C MuJoCo (wsrl_mjx/datagen/planner.py),
and the collector's host loop that runs a planner against MJX envs."""

import types

import flax
import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

import envs
from conftest import run_launch
from envs import adroit
from wsrl_mjx.datagen import collect, planner

# Compiles a hand or maze model for minutes on a 2-core CPU; runs by default, -m 'not slow'
# deselects it (conftest.py).
pytestmark = pytest.mark.slow


def test_smooth_noise_is_linear_between_its_knots():
  noise = planner.smooth_noise(np.random.default_rng(0), (3, 7, 2), num_knots=4, scale=0.5)
  assert noise.shape == (3, 7, 2)
  # 7 steps over knots 0..3: the even steps sit on the knots, the odd ones halfway between.
  knots = 0.5 * np.random.default_rng(0).standard_normal((3, 4, 2))
  np.testing.assert_allclose(noise[:, ::2], knots)
  np.testing.assert_allclose(noise[:, 1::2], (knots[:, :-1] + knots[:, 1:]) / 2)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_mppi_moves_the_plan_toward_the_cheaper_samples(sign, monkeypatch):
  """With a cost that pays for the arm's slide joint (ARTz) going one way, the first planned
  action drives its actuator that way, from a zero plan."""
  cost = planner.TaskCost(sites=("S_grasp",),
                          cost=lambda qpos, sites, observation: -sign * qpos[..., 0])
  monkeypatch.setitem(planner.COSTS, "door", cost)
  door = planner.MPPIPlanner(adroit.Adroit("door"), planner.MPPIConfig(
      num_samples=32, horizon=4, num_knots=2), num_threads=1)
  door.start(1)
  data = mujoco.MjData(door._model)        # the door at rest, in the model's frame position
  action = door.act(np.random.default_rng(0), data.qpos[None], data.qvel[None],
                    np.zeros((1, 39)))
  assert action.shape == (1, 28) and np.all(np.abs(action) <= 1.0)
  assert sign * action[0, 0] > 0.1, action[0, 0]


def test_planner_opens_the_door_in_mujoco_at_the_lowest_and_highest_frame():
  env = adroit.Adroit("door")
  door = planner.MPPIPlanner(env)
  frames = np.array([[-0.3, 0.25, 0.252], [-0.2, 0.35, 0.35]])
  door.start(len(frames))
  models, datas = [], []
  for index, frame in enumerate(frames):
    door.reset(index, {"frame_position": frame, "target": np.zeros(3)})
    model = planner.planning_model(env)
    model.body_pos[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "frame")] = frame
    models.append(model)
    datas.append(mujoco.MjData(model))
  rng = np.random.default_rng(0)
  opened = np.zeros(len(frames), bool)
  for _ in range(120):
    stack = lambda field: np.stack([getattr(d, field) for d in datas])
    actions = door.act(rng, stack("qpos"), stack("qvel"), np.zeros((len(datas), 39)))
    for model, data, action in zip(models, datas, actions):
      data.ctrl[:] = np.asarray(env.action_to_ctrl(action))
      mujoco.mj_step(model, data, nstep=adroit.FRAME_SKIP)
    opened |= np.array([d.qpos[28] >= adroit.DOOR_OPEN_ANGLE for d in datas])
    if opened.all():
      break
  assert opened.all(), [d.qpos[28] for d in datas]


def test_pen_cost_pays_for_place_and_orientation_and_most_for_a_drop():
  goal = np.array([0.0, 0.0, 1.0])
  observation = np.zeros(45)
  observation[36:39] = goal

  def cost(middle, orientation):
    half = np.asarray(orientation) * adroit.PEN_LENGTH / 2
    sites = np.stack([middle + half, middle - half, np.array([0.0, 0.0, 0.25])])
    return float(planner.COSTS["pen"].cost(np.zeros(30), sites, observation))

  place = np.array([0.0, 0.0, 0.25])
  assert cost(place, goal) == pytest.approx(0.0, abs=1e-9)
  assert cost(place + [0.1, 0.0, 0.0], goal) == pytest.approx(3.0)        # 30 per m
  assert cost(place, [1.0, 0.0, 0.0]) == pytest.approx(8.0)                # a quarter turn
  assert cost(place, -goal) == pytest.approx(16.0)                         # upside down
  on_table = np.array([0.0, 0.0, 0.05])
  assert cost(on_table, goal) == pytest.approx(30 * 0.2 + 50.0)            # dropped


def test_planner_turns_the_pen_to_a_goal_in_mujoco():
  """A goal 89 degrees from the pen's start (goal angles 0.9, 0.02), reached within 40 steps
  (D4RL's test: the pen within 0.075 m of its place, orientation . goal > 0.95)."""
  env = adroit.Adroit("pen")
  pen = planner.MPPIPlanner(env)
  model = planner.planning_model(env)
  data = mujoco.MjData(model)
  data.mocap_quat[:] = env._rest_mocap_quat
  data.mocap_quat[env._mocap] = adroit._euler_xy_to_quat(0.9, 0.02)
  mujoco.mj_forward(model, data)
  site = lambda name: data.site_xpos[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, name)]
  axis = lambda top, bottom: (site(top) - site(bottom)) / adroit.PEN_LENGTH
  goal = axis("target_top", "target_bottom")
  pen_body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "Object")
  reached = lambda: (np.linalg.norm(data.xpos[pen_body] - site("eps_ball")) < 0.075
                     and axis("object_top", "object_bottom") @ goal > 0.95)
  assert np.degrees(np.arccos(axis("object_top", "object_bottom") @ goal)) > 85
  observation = np.zeros((1, 45))
  observation[0, 36:39] = goal                       # the goal orientation, where the cost reads it
  pen.start(1)
  pen.reset(0, {"target": np.zeros(3)})
  rng = np.random.default_rng(0)
  for _ in range(40):
    if reached():
      break
    action = pen.act(rng, data.qpos[None], data.qvel[None], observation)
    data.ctrl[:] = np.asarray(env.action_to_ctrl(action[0]))
    mujoco.mj_step(model, data, nstep=adroit.FRAME_SKIP)
  assert reached()


def test_demonstration_records_steps_of_d4rls_own_model():
  """The bridge check's planner episodes: rows as `bridge.generate_trajectory` writes them,
  each state the reference model's step from the one before under the recorded action."""
  env = adroit.Adroit("door")
  trajectory = planner.demonstration(env, np.random.default_rng(0), num_steps=6,
                                     config=planner.MPPIConfig(num_samples=8, horizon=4))
  assert trajectory["qpos"].shape == (7, 30) and trajectory["actions"].shape == (7, 28)
  np.testing.assert_array_equal(trajectory["episode_ends"], [6])
  model = env.reference_mj_model()
  data = mujoco.MjData(model)
  for t in (0, 5):
    data.qpos[:], data.qvel[:] = trajectory["qpos"][t], trajectory["qvel"][t]
    mujoco.mj_forward(model, data)
    data.ctrl[:] = np.asarray(env.action_to_ctrl(trajectory["actions"][t]))
    mujoco.mj_step(model, data, nstep=adroit.FRAME_SKIP)
    np.testing.assert_allclose(data.qpos, trajectory["qpos"][t + 1], atol=1e-6)
  assert np.abs(trajectory["qpos"][-1] - trajectory["qpos"][0]).max() > 0.01   # it moved


class _RecordingPlanner:
  """Random actions; records what the collector hands it."""

  def __init__(self, action_size):
    self.action_size, self.resets, self.seen_qpos, self.actions = action_size, [], [], []

  def start(self, num_envs):
    self.num_envs, self.step = num_envs, 0

  def reset(self, index, env_info):
    assert set(env_info) == {"start"}
    self.resets.append((self.step, index))

  def act(self, rng, qpos, qvel, observation):
    assert qpos.shape[0] == qvel.shape[0] == observation.shape[0] == self.num_envs
    self.seen_qpos.append(qpos)
    self.actions.append(rng.uniform(-1.0, 1.0, (self.num_envs, self.action_size)))
    self.step += 1
    return self.actions[-1]


@flax.struct.dataclass
class _Physics:
  qpos: jax.Array
  qvel: jax.Array


class _Slide:
  """A point that slides right by 0.1 x (action + 1) per step and terminates past 1: the host
  loop's bookkeeping, without an MJX compile. Starts in [0, 0.5)."""
  action_size = 1

  def reset(self, key):
    start = jax.random.uniform(key, (1,), maxval=0.5)
    return envs.State(pipeline_state=_Physics(start, jnp.zeros(1)), obs=start,
                      reward=jnp.zeros(()), done=jnp.zeros(()), metrics={},
                      info={"start": start})

  def step(self, state, action):
    qpos = state.pipeline_state.qpos + 0.1 * (action + 1.0)
    done = (qpos[0] > 1.0).astype(jnp.float32)
    return state.replace(pipeline_state=_Physics(qpos, 0.1 * (action + 1.0)), obs=qpos,
                         reward=-jnp.ones(()), done=done)


def test_collect_with_planner_steps_the_envs_with_the_planners_actions():
  recorder = _RecordingPlanner(action_size=1)
  num_envs, steps, episode_length = 3, 30, 6
  spec = types.SimpleNamespace(observation_size=1, episode_length=episode_length)
  rows = collect.collect_with_planner(_Slide(), spec, recorder, jax.random.PRNGKey(0), steps,
                                      num_envs)
  by_env = lambda x: np.swapaxes(np.asarray(x), 0, 1).reshape(num_envs * steps, -1)
  # The rows hold the planner's actions, and it saw the state each observation was taken in.
  np.testing.assert_allclose(rows["actions"], by_env(recorder.actions), atol=1e-6)
  np.testing.assert_allclose(rows["qpos"], by_env(recorder.seen_qpos), atol=1e-6)
  np.testing.assert_allclose(rows["next_observations"],
                             rows["observations"] + 0.1 * (rows["actions"] + 1), atol=1e-6)
  # Terminals where the point passed 1, timeouts at the time limit, and each new episode began
  # with a reset of its env's plan.
  np.testing.assert_array_equal(rows["terminals"], rows["next_observations"][:, 0] > 1.0)
  ends = (rows["terminals"] | rows["timeouts"]).reshape(num_envs, steps)
  assert rows["terminals"].any() and (rows["timeouts"] & ~rows["terminals"]).any()
  for stream in ends:
    lengths = np.diff(np.concatenate([[-1], np.flatnonzero(stream)]))
    assert lengths.max() <= episode_length
  expected = {(0, e) for e in range(num_envs)}
  expected |= {(t + 1, e) for e, t in zip(*np.nonzero(ends[:, :-1]))}
  assert set(recorder.resets) == expected
  assert ends[:, -1].all()
  # Success over finished episodes: those ending at a terminal or at the time limit; an episode
  # the stream's end cut short (neither) is left out, by hand from the same rows.
  finished, cut = collect.finished_trajectories(rows, steps, episode_length)
  all_episodes = collect.trajectories(rows)
  by_hand = [e for e in all_episodes
             if e["next_observations"][-1, 0] > 1.0 or len(e["rewards"]) == episode_length]
  assert len(finished) == len(by_hand) and cut == len(all_episodes) - len(by_hand)
  for mine, theirs in zip(finished, by_hand):
    np.testing.assert_array_equal(mine["observations"], theirs["observations"])
  assert cut >= 1 and len(finished) >= 1, (cut, len(finished))


def test_collector_refuses_the_planner_for_a_task_it_has_no_cost_for(tmp_path):
  output = tmp_path / "relocate.npy"
  result = run_launch("launch.collect", "--env=relocate-binary-v0", "--policy=planner",
                      "--steps=10", f"--output={output}")
  assert result.returncode != 0
  assert ("--policy=planner: No planning cost for relocate; the planner has costs for the "
          "Adroit tasks: door, pen") in result.stderr
  assert not output.exists()
