"""The registry and the locomotion ports, checked against MuJoCo (C) and gym's formulas in numpy."""

import functools

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

import env_contract
import envs
from envs import locomotion


def test_registry_accepts_d4rl_names_and_returns_facts():
  env_spec = envs.spec("hopper-medium-replay-v2")
  assert (env_spec.task, env_spec.family) == ("hopper", "locomotion")
  assert (env_spec.observation_size, env_spec.action_size) == (11, 3)
  assert env_spec.episode_length == 1000
  assert (env_spec.reward_scale, env_spec.reward_bias) == (1.0, 0.0)
  assert env_spec.dataset_file == "hopper_medium_replay-v2.hdf5"
  assert env_spec.normalized_score(3234.3) == pytest.approx(100.0)
  assert env_spec.normalized_score(-20.272305) == pytest.approx(0.0)
  assert envs.spec("walker2d").dataset_file is None
  assert {"halfcheetah-expert-v2", "walker2d-medium-expert-v2", "hopper"} <= set(envs.names())


# D4RL's reference returns (d4rl/infos.py, REF_MIN_SCORE / REF_MAX_SCORE) and normalised scores
# 100 (R - min) / (max - min) worked by hand for returns of 0, 1000 and 3000, e.g. halfcheetah at
# 3000: 100 x 3280.178953 / 12415.178953 = 26.420714...; walker2d at 0 is just below 0.
D4RL_LOCOMOTION_SCORES = {
    "halfcheetah": (-280.178953, 12135.0, {0.0: 2.256745183, 1000.0: 10.31140153,
                                           3000.0: 26.42071424}),
    "hopper": (-20.272305, 3234.3, {0.0: 0.6228869142, 1000.0: 31.34889040,
                                    3000.0: 92.80089738}),
    "walker2d": (1.629008, 4592.3, {0.0: -0.03548518295, 1000.0: 21.74782279,
                                    3000.0: 65.31443872}),
}


@pytest.mark.parametrize("task_name", sorted(D4RL_LOCOMOTION_SCORES))
def test_locomotion_normalised_scores_match_d4rl_reference_returns(task_name):
  """Every D4RL locomotion task (and each of its dataset names) normalises returns with D4RL's
  published reference min / max: the min scores 0, the max 100, and hand-worked returns their
  hand-computed scores. The registry's locomotion tasks are exactly these three."""
  locomotion = {envs.spec(name).task for name in envs.names()
                if envs.spec(name).family == "locomotion"}
  assert locomotion == set(D4RL_LOCOMOTION_SCORES)
  low, high, worked = D4RL_LOCOMOTION_SCORES[task_name]
  for name in (task_name, f"{task_name}-medium-v2", f"{task_name}-expert-v2",
               f"{task_name}-medium-replay-v2"):
    env_spec = envs.spec(name)
    assert (env_spec.score_min, env_spec.score_max) == (low, high), name
    assert not env_spec.score_is_success_rate
    assert env_spec.normalized_score(low) == pytest.approx(0.0, abs=1e-9)
    assert env_spec.normalized_score(high) == pytest.approx(100.0, rel=1e-12)
    for episode_return, score in worked.items():
      assert env_spec.normalized_score(episode_return) == pytest.approx(score, rel=1e-8), (
          name, episode_return)
    returns = np.array(list(worked))
    np.testing.assert_allclose(env_spec.normalized_score(returns), list(worked.values()),
                               rtol=1e-8)


def test_unknown_name_is_a_clear_error_with_suggestions():
  with pytest.raises(ValueError, match=r"Unknown environment 'hoper-medium-v2'.*hopper-medium-v2"):
    envs.spec("hoper-medium-v2")
  with pytest.raises(ValueError, match="Known tasks") as refused:
    envs.make("cartpole")
  # Each task once (Adroit's were listed twice, once per file name).
  known = str(refused.value).split("Known tasks: ")[1].split(";")[0].split(", ")
  assert len(known) == len(set(known)) and {"door", "hopper", "antmaze-umaze"} <= set(known)


def gym_reference(task_name, mj_model, data, qpos_before, action):
  """Observation, reward and termination as gym's v3 tasks compute them, in numpy."""
  task = locomotion.TASKS[task_name]
  qpos, qvel = data.qpos.copy(), data.qvel.copy()
  dt = mj_model.opt.timestep * task.frame_skip
  reward = (qpos[0] - qpos_before) / dt - task.ctrl_cost_weight * np.sum(np.square(action))
  velocity = np.clip(qvel, -10, 10) if task_name != "halfcheetah" else qvel
  observation = np.concatenate([qpos[1:], velocity])
  done = False
  if task_name == "hopper":
    reward += 1.0
    state = np.concatenate([qpos, qvel])[2:]
    healthy = (np.all((state > -100) & (state < 100)) and qpos[1] > 0.7
               and -0.2 < qpos[2] < 0.2)
    done = not healthy
  elif task_name == "walker2d":
    reward += 1.0
    done = not (0.8 < qpos[1] < 2.0 and -1.0 < qpos[2] < 1.0)
  return observation, reward, done


TASKS = ("hopper", "walker2d", "halfcheetah")
CONTRACT_TASKS = TASKS     # tests/env_contract.py's, below


@functools.lru_cache(maxsize=None)
def compiled(task_name):
  """(env, spec, jitted reset, jitted step), compiled once per test session."""
  env, env_spec = envs.make(task_name)
  return env, env_spec, jax.jit(env.reset), jax.jit(env.step)


@pytest.mark.parametrize("task_name", TASKS)
def test_env_makes_resets_and_steps(task_name):
  env, _, reset, step = compiled(task_name)
  env_contract.check_makes_resets_and_steps(task_name, env, reset, step)


@pytest.mark.parametrize("task_name", TASKS)
def test_env_matches_mujoco_and_gym(task_name):
  env, env_spec, reset, step = compiled(task_name)
  assert env.observation_size == env_spec.observation_size
  assert env.action_size == env_spec.action_size
  state = reset(jax.random.PRNGKey(0))
  assert state.obs.shape == (env_spec.observation_size,) and state.obs.dtype == jnp.float32

  # Reset noise: positions within +-scale of qpos0 (uniform), as gym's reset_model.
  scale = locomotion.TASKS[task_name].reset_noise_scale
  qpos0 = env.mj_model.qpos0
  assert np.all(np.abs(np.asarray(state.pipeline_state.qpos) - qpos0) <= scale + 1e-6)
  np.testing.assert_allclose(state.obs[: len(qpos0) - 1], state.pipeline_state.qpos[1:])

  # Step MJX and MuJoCo from the same state with the same actions.
  mj_data = mujoco.MjData(env.mj_model)
  mj_data.qpos[:] = np.asarray(state.pipeline_state.qpos)
  mj_data.qvel[:] = np.asarray(state.pipeline_state.qvel)
  mujoco.mj_forward(env.mj_model, mj_data)
  rng = np.random.default_rng(0)
  for t in range(20):
    action = rng.uniform(-1, 1, env.action_size).astype(np.float32)
    qpos_before = mj_data.qpos[0]
    mj_data.ctrl[:] = action
    for _ in range(env.frame_skip):
      mujoco.mj_step(env.mj_model, mj_data)
    state = step(state, jnp.asarray(action))
    observation, reward, done = gym_reference(task_name, env.mj_model, mj_data, qpos_before,
                                              action)
    # One step from a shared state: MJX (float32) and MuJoCo (float64) agree to ~1e-4 here.
    np.testing.assert_allclose(state.obs, observation, atol=1e-3, err_msg=f"step {t}")
    assert float(state.reward) == pytest.approx(reward, abs=1e-3)
    assert bool(state.done) == done
    # Re-synchronise MuJoCo with MJX so that float32/float64 drift does not accumulate.
    mj_data.qpos[:] = np.asarray(state.pipeline_state.qpos)
    mj_data.qvel[:] = np.asarray(state.pipeline_state.qvel)
    mujoco.mj_forward(env.mj_model, mj_data)


def test_hopper_terminates_when_it_falls():
  _, _, reset, step = compiled("hopper")
  state = reset(jax.random.PRNGKey(0))
  fallen = state.pipeline_state.replace(qpos=state.pipeline_state.qpos.at[1].set(0.5))
  assert float(step(state.replace(pipeline_state=fallen), jnp.zeros(3)).done) == 1.0
  assert float(step(state, jnp.zeros(3)).done) == 0.0


def test_reset_computes_positions_only_and_the_next_step_is_unchanged():
  """Resets skip MJX's forward pass (the next step's own forward pass recomputes it all): a step
  from the kinematics-only reset equals, bit for bit, a step from a fully forwarded one."""
  from mujoco import mjx
  env, _, reset, step = compiled("hopper")
  state = reset(jax.random.PRNGKey(4))
  data = state.pipeline_state
  # The model closed over, not passed: its arrays are committed to a device and would make the
  # output committed, which the compiled `step` (made for the reset's uncommitted state) would
  # be compiled again for (~30 s on the 2-core CPU).
  with jax.default_matmul_precision("highest"):
    forwarded = jax.jit(lambda data: mjx.forward(env.mjx_model, data))(data)
  assert not np.allclose(data.qfrc_bias, forwarded.qfrc_bias)   # the reset did skip it
  np.testing.assert_array_equal(data.xpos, forwarded.xpos)      # but has the positions
  action = jnp.array([0.3, -0.5, 0.8])
  from_reset = step(state, action)
  from_forwarded = step(state.replace(pipeline_state=forwarded), action)
  for name in ("qpos", "qvel", "qacc_warmstart"):
    np.testing.assert_array_equal(getattr(from_reset.pipeline_state, name),
                                  getattr(from_forwarded.pipeline_state, name), err_msg=name)
  np.testing.assert_array_equal(from_reset.obs, from_forwarded.obs)
  assert float(from_reset.reward) == float(from_forwarded.reward)


def test_brax_training_wrappers_drive_the_env():
  """Brax's own wrappers (vmap, episode limit, auto-reset, evaluation) work on our envs."""
  from brax.envs.wrappers import training as brax_training
  env, _, _, _ = compiled("halfcheetah")
  wrapped = brax_training.EvalWrapper(brax_training.wrap(env, episode_length=5))

  @jax.jit
  def five_steps(key):
    batch = wrapped.reset(jax.random.split(key, 2))
    return jax.lax.fori_loop(0, 5, lambda _, s: wrapped.step(s, jnp.zeros((2, 6))), batch)

  state = five_steps(jax.random.PRNGKey(1))
  np.testing.assert_array_equal(state.info["truncation"], [1.0, 1.0])
  np.testing.assert_array_equal(state.info["eval_metrics"].episode_steps, [5, 5])
