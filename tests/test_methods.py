"""The fine-tuning arms (`--config.method`, wsrl_mjx/methods.py): what makes each arm that arm,
against independent computations, the bad inputs each refuses before anything compiles, and one
tiny end-to-end run per arm that is not WSRL or SAC (those two: tests/test_finetune.py,
tests/test_pretrain.py)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import envs
from conftest import TINY_ENV, tiny_config, tiny_pretrain_config
from wsrl_mjx import checkpoint, configs, finetune, methods, offline, online, pretrain, replay
from wsrl_mjx.agents import sac
from wsrl_mjx.errors import ConfigError

SPEC = envs.spec(TINY_ENV)


def marked_buffer(capacity, rows, first_reward):
  """A buffer whose first `rows` rows have rewards first_reward, first_reward + 1, ..."""
  buffer = replay.create(capacity, 2, 1)
  rewards = first_reward + np.arange(rows, dtype=np.float32)
  return replay.extend(buffer, replay.Transition(
      observation=jnp.zeros((rows, 2)), action=jnp.zeros((rows, 1)), reward=jnp.asarray(rewards),
      next_observation=jnp.zeros((rows, 2)), terminal=jnp.zeros(rows)))


def sampler(offline_rows, batch_size=64, interleave=False):
  """An `Online` whose only use here is `sample_batch` (no env is stepped)."""
  agent = sac.SAC(sac.SACConfig(observation_size=2, action_size=1, utd=4,
                                minibatch_size=batch_size // 4))
  loop = online.LoopConfig(replay_capacity=100, episode_length=10, eval_episodes=1,
                           action_clip=1.0, offline_rows=offline_rows,
                           interleave_offline=interleave)
  return online.Online(env=None, agent=agent, loop=loop)


def test_rlpd_batches_are_exactly_half_offline_rows_after_the_online_half():
  """offline_data_ratio 0.5 of 64: rows 0-31 from the replay buffer (rewards 0..), rows 32-63
  from the dataset (rewards 1000..), as the reference concatenates them (finetune.py:345-354)."""
  buffer, dataset = marked_buffer(100, 30, 0.0), marked_buffer(500, 500, 1000.0)
  fused = sampler(offline_rows=int(64 * 0.5))
  for seed in range(5):
    batch = jax.jit(fused.sample_batch)(buffer, dataset, jax.random.PRNGKey(seed),
                                        buffer.size)
    reward = np.asarray(batch.reward)
    assert reward.shape == (64,)
    assert np.all(reward[:32] < 30) and np.all(reward[32:] >= 1000)
  # The online half never reaches past `online_rows` (Cal-QL leaves the running episode out).
  batch = fused.sample_batch(buffer, dataset, jax.random.PRNGKey(9), jnp.asarray(7))
  assert np.all(np.asarray(batch.reward)[:32] < 7)
  # offline_interleave (RLPD's own code): rows alternate, so each of the 4 UTD minibatches of
  # 16 rows is half offline.
  batch = sampler(32, interleave=True).sample_batch(buffer, dataset, jax.random.PRNGKey(3),
                                                    buffer.size)
  reward = np.asarray(batch.reward)
  assert np.all(reward[0::2] < 30) and np.all(reward[1::2] >= 1000)
  assert [int(np.sum(part >= 1000)) for part in reward.reshape(4, 16)] == [8] * 4


def test_without_offline_data_no_batch_row_comes_from_the_dataset():
  buffer, dataset = marked_buffer(100, 30, 0.0), marked_buffer(500, 500, 1000.0)
  fused = sampler(offline_rows=0)
  for seed in range(5):
    batch = fused.sample_batch(buffer, dataset, jax.random.PRNGKey(seed), buffer.size)
    assert np.all(np.asarray(batch.reward) < 30)


def test_the_appended_dataset_fills_the_first_rows_and_online_rows_follow():
  dataset = marked_buffer(5, 5, 1000.0)
  fused = sampler(offline_rows=0)
  state = online.TrainState(
      agent=None, buffer=replay.create(8, 2, 1), env_state=None, episode=None,
      key=None, eval_key=None, env_step=None, warmup_steps=None, diverged_at=None)
  buffer = fused.append_offline(state, dataset).buffer
  assert int(buffer.size) == 5 and int(buffer.insert_position) == 5
  for reward in (7.0, 8.0):
    buffer = replay.insert(buffer, replay.Transition(
        observation=jnp.zeros(2), action=jnp.zeros(1), reward=jnp.asarray(reward),
        next_observation=jnp.zeros(2), terminal=jnp.asarray(0.0)))
  np.testing.assert_array_equal(buffer.data.reward[:7], [1000, 1001, 1002, 1003, 1004, 7, 8])
  assert int(buffer.size) == 7


def hand_worked_returns(rewards, scale, bias, discount, negative=None):
  """Discounted return-to-go of r * scale + bias in float64, by the definition."""
  transformed = np.asarray(rewards, np.float64) * scale + bias
  if negative is not None and np.all(transformed == negative * scale + bias):
    return transformed / (1 - discount)
  return np.array([sum(transformed[k] * discount ** (k - t) for k in range(t, len(transformed)))
                   for t in range(len(transformed))])


def test_calql_online_monte_carlo_returns_of_a_hand_worked_episode():
  """An episode of rewards 1, 0, 2 (scale 2, bias -1: 1, -1, 3; gamma 0.9) ending in rows 4-6
  of a ring of 8 after three rows of an earlier episode: 3, -1 + 0.9 * 3 = 1.7 and
  1 + 0.9 * 1.7 = 2.53; the earlier rows keep their returns."""
  buffer = replay.create(8, 2, 1, mc_return=True)
  rows = [(5.0, 11.0), (5.0, 12.0), (5.0, 13.0), (5.0, 14.0), (1.0, 0.0), (0.0, 0.0), (2.0, 0.0)]
  for reward, mc_return in rows:
    buffer = replay.insert(buffer, replay.Transition(
        observation=jnp.zeros(2), action=jnp.zeros(1), reward=jnp.asarray(reward),
        next_observation=jnp.zeros(2), terminal=jnp.asarray(0.0),
        mc_return=jnp.asarray(mc_return)))
  settings = dict(discount=0.9, reward_scale=2.0, reward_bias=-1.0)
  written = jax.jit(replay.write_episode_returns, static_argnums=2,
                    static_argnames=("discount", "reward_scale", "reward_bias"))(
      buffer, jnp.asarray(3), 5, **settings)
  np.testing.assert_allclose(written.data.mc_return[4:7], [2.53, 1.7, 3.0], rtol=1e-6)
  np.testing.assert_allclose(written.data.mc_return[4:7],
                             hand_worked_returns([1, 0, 2], 2.0, -1.0, 0.9), rtol=1e-6)
  np.testing.assert_array_equal(written.data.mc_return[:4], [11, 12, 13, 14])
  # No episode ended: nothing is written.
  same = replay.write_episode_returns(buffer, jnp.asarray(0), 5, **settings)
  np.testing.assert_array_equal(same.data.mc_return, buffer.data.mc_return)
  # Across the ring's end (rows 7, 0), a sparse task's all-negative episode: r / (1 - gamma) in
  # every row (Cal-QL's rule; reward -1 is -3 after scale and bias); rows 6, 7, 0 (rewards
  # 2, -1, -1) are not all negative and are summed.
  for reward in (-1.0, -1.0):
    buffer = replay.insert(buffer, replay.Transition(
        observation=jnp.zeros(2), action=jnp.zeros(1), reward=jnp.asarray(reward),
        next_observation=jnp.zeros(2), terminal=jnp.asarray(0.0), mc_return=jnp.asarray(0.0)))
  failed = replay.write_episode_returns(buffer, jnp.asarray(2), 5, negative_reward=-1.0,
                                        **settings)
  expected = hand_worked_returns([-1, -1], 2.0, -1.0, 0.9, negative=-1.0)
  np.testing.assert_allclose(np.asarray(failed.data.mc_return)[[7, 0]], expected, rtol=1e-6)
  np.testing.assert_allclose(expected, [-30.0] * 2)
  mixed = replay.write_episode_returns(buffer, jnp.asarray(3), 5, negative_reward=-1.0,
                                       **settings)
  np.testing.assert_allclose(np.asarray(mixed.data.mc_return)[[6, 7, 0]],
                             hand_worked_returns([2, -1, -1], 2.0, -1.0, 0.9), rtol=1e-6)


def test_the_reference_settings_of_each_arm():
  from launch.configs import finetune as finetune_config
  calql = finetune_config.get_config("antmaze-large-diverse-v2,calql")
  assert (calql.method, calql.utd, calql.batch_size, calql.warmup_steps) == ("calql", 1, 256, 0)
  rlpd = finetune_config.get_config("antmaze-large-diverse-v2,rlpd")
  assert (rlpd.offline_data, rlpd.offline_data_ratio, rlpd.num_target_critics) == ("keep", 0.5, 1)
  assert finetune_config.get_config("hopper-medium-v2,rlpd").num_target_critics == 2
  assert finetune_config.get_config("hopper-medium-v2").method == "wsrl"
  assert set(methods.NAMES) == {"wsrl", "sac", "rlpd", "calql", "cql", "iql", "jsrl", "so2"}
  with pytest.raises(ValueError, match="more than one method"):
    finetune_config.get_config("hopper-medium-v2,cql,iql")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
  """Checkpoint folders whose descriptions say which algorithm they hold (no learner needed
  for the refusals, which read only the description)."""
  made = {}
  for name, description in [
      ("sac_finetune", {"kind": "wsrl-mjx finetune", "method": "wsrl"}),
      ("cql_pretrain", {"kind": "wsrl-mjx pretrain", "algo": "cql"}),
      ("calql_pretrain", {"kind": "wsrl-mjx pretrain", "algo": "calql"}),
      ("iql_pretrain", {"kind": "wsrl-mjx pretrain", "algo": "iql"})]:
    workdir = tmp_path_factory.mktemp(name)
    saver = checkpoint.RunCheckpoints(workdir)
    saver.save(1, {"x": np.zeros(2)}, {"x": np.zeros(2)}, dict(description, num_seeds=1))
    saver.close()
    made[name] = workdir
  return made


@pytest.mark.parametrize("overrides, error, message", [
    (dict(method="wsrl"), ConfigError,
     r"config.pretrained is empty but config.method='wsrl' starts from a pretrained agent .*"
     r"--config.method=sac"),
    (dict(method="iql"), ConfigError, r"config.pretrained is empty but config.method='iql'"),
    (dict(method="sac", pretrained="sac_finetune"), ConfigError,
     r"config.method='sac' starts from scratch"),
    (dict(method="rlpd"), ConfigError, r"config.offline_data='none': config.method='rlpd' takes "
                                       r"'keep'"),
    (dict(method="rlpd", offline_data="keep", dataset="/nonexistent/d.hdf5"), ConfigError,
     r"config.offline_data='keep' \(config.method='rlpd'\) needs the offline dataset "
     r"\(config.dataset.*/nonexistent/d.hdf5: no such file"),
    (dict(method="iql", pretrained="sac_finetune", utd=1), checkpoint.CheckpointError,
     r"description/metadata: holds a sac agent, but config.method='iql' starts from iql"),
    (dict(method="calql", pretrained="cql_pretrain", utd=1), checkpoint.CheckpointError,
     r"holds a cql agent, but config.method='calql' starts from calql"),
    (dict(method="wsrl", pretrained="iql_pretrain"), checkpoint.CheckpointError,
     r"holds an iql agent, but config.method='wsrl' starts from calql or cql or sac"),
    (dict(method="cql", pretrained="cql_pretrain"), ConfigError,
     r"config.utd=4: config.method='cql' takes one update per environment step"),
    (dict(method="cql", pretrained="cql_pretrain", utd=1, init_critic=False), ConfigError,
     r"config.init_critic \(or config.per_seed\): config.method='cql' continues the whole"),
    (dict(method="cql", pretrained="cql_pretrain", utd=1, offline_data="keep",
          offline_sampling="both"), ConfigError, r"config.offline_sampling='both': must be one of"),
    (dict(method="rlpd", offline_data="keep", offline_data_ratio=0.25, offline_interleave=True,
          dataset="/nonexistent/d.hdf5"), ConfigError,
     r"config.offline_interleave alternates .* needs config.offline_data_ratio=0.5, not 0.25"),
    (dict(method="jsrl"), ConfigError, r"config.pretrained is empty but config.method='jsrl'"),
    (dict(method="dqn"), ConfigError, r"config.method='dqn'; choose one of wsrl, sac, rlpd"),
])
def test_what_an_arm_needs_is_checked_before_anything_is_built(checkpoints, overrides, error,
                                                                message):
  if overrides.get("pretrained") in checkpoints:
    overrides = dict(overrides, pretrained=str(checkpoints[overrides["pretrained"]]))
  with pytest.raises(error, match=message):
    configs.validate(tiny_config(**overrides))


def test_calql_refuses_a_buffer_that_cannot_keep_every_episode(checkpoints):
  config = tiny_config(method="calql", utd=1, pretrained=str(checkpoints["calql_pretrain"]))
  with pytest.raises(ConfigError, match=r"config.replay_capacity=120 is below config.online_s"):
    configs.validate(config)
  config.replay_capacity = 200
  configs.validate(config)


# --- one tiny end-to-end run per arm ----------------------------------------------------------

# Fine-tuning at the tiny size, shortened: 100 env steps in two chunks, one evaluation at the end.
ARM = dict(online_steps=100, eval_interval=100, checkpoint_interval=100, warmup_steps=0,
           replay_capacity=200, utd=1)


def records(workdir):
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def description(workdir, step):
  return json.loads((workdir / f"checkpoints/{step}/description/metadata").read_text())


def untrained_pretraining(random_dataset, tmp_path_factory, algo):
  """A pretraining checkpoint of `algo` as `launch.pretrain` writes it (its description, the
  whole learner as train_state), holding freshly initialised learners: continuing one online
  needs no trained one, and no MJX program compiles here (the pretraining itself:
  tests/test_pretrain.py)."""
  path, _ = random_dataset
  config = tiny_pretrain_config(path, algo=algo)
  spec = pretrain.env_spec_for(config)
  learner, block = configs.make_learner(config, spec)
  reader = offline.Offline(env=None, learner=learner, batch_size=0, eval_episodes=0,
                           episode_length=0, action_clip=1.0)
  state = jax.jit(jax.vmap(reader.init))(finetune.seed_keys(config))
  workdir = tmp_path_factory.mktemp(f"{algo}_pretrain")
  saver = checkpoint.RunCheckpoints(workdir, step_unit="gradient_step")
  saver.save(1, state, learner.handoff_params(state.learner),
             pretrain.run_description(config, spec, block, str(path),
                                      pretrain.load_dataset(config, spec)[0].size),
             None if algo == "iql" else learner.handoff_optimizer(state.learner))
  saver.close()
  return workdir


def run_arm(config, workdir):
  """(programs, last record): the arm's programs are kept to inspect a state of them."""
  env, spec = envs.make(config.env_name)
  rows = 0
  if finetune._appends(config):
    rows = pretrain.load_dataset(config, spec)[0].size
  programs = finetune.build_programs(config, env, spec, rows)
  return programs, finetune.train_and_evaluate(config, workdir, programs)


@pytest.fixture(scope="module")
def rlpd_run(random_dataset, tmp_path_factory):
  path, _ = random_dataset
  config = tiny_config(method="rlpd", offline_data="keep", dataset=str(path),
                       per_seed="warmup_steps=50,60", **dict(ARM, utd=4))
  workdir = tmp_path_factory.mktemp("rlpd")
  return config, workdir, run_arm(config, workdir)


def test_rlpd_runs_from_scratch_on_half_offline_batches(rlpd_run, random_dataset):
  config, workdir, (programs, last) = rlpd_run
  assert programs.loop.loop.offline_rows == 32 and programs.loop.update_floor() == 32
  # The last chunk (indices 50-99) updates from index 51 (seed 0's warmup 50 > the floor 32):
  # 49, and seed 1 (a per-seed warmup of 60) from index 61: 39.
  assert records(workdir)[-1]["train"]["updates"] == [49, 39]
  assert np.all(np.isfinite(last["normalized_scores"]))
  saved = description(workdir, 100)
  assert saved["method"] == "rlpd" and saved["config"]["offline_data"] == "keep"
  assert saved["dataset_transitions"] == pretrain.load_dataset(config, SPEC)[0].size > 0


def test_resuming_a_run_with_another_method_is_refused(rlpd_run):
  config, workdir, _ = rlpd_run
  recorded = (workdir / "config.json").read_text()
  other = config.copy_and_resolve_references()
  other.method = "sac"
  other.offline_data = "none"
  with pytest.raises(checkpoint.CheckpointError,
                     match=r"config.method='rlpd' \(this one: 'sac'\), config.offline_data='keep' "
                           r"\(this one: 'none'\)"):
    finetune.train_and_evaluate(other, workdir)
  assert (workdir / "config.json").read_text() == recorded


@pytest.fixture(scope="module")
def calql_pretrained(random_dataset, tmp_path_factory):
  return untrained_pretraining(random_dataset, tmp_path_factory, "calql")


def test_calql_continues_online_keeping_the_data_with_online_monte_carlo_returns(
    calql_pretrained, random_dataset, tmp_path):
  path, _ = random_dataset
  config = tiny_config(method="calql", pretrained=str(calql_pretrained), offline_data="keep",
                       dataset=str(path), **ARM)
  programs, last = run_arm(config, tmp_path)
  # The floor: max(64 - 32 online rows, the 40-step episode) = 40; the last chunk (indices
  # 50-99) updates at every step.
  assert programs.loop.update_floor() == 40
  assert records(tmp_path)[-1]["train"]["updates"] == [50, 50]
  assert description(tmp_path, 100)["method"] == "calql"
  assert np.all(np.isfinite(last["returns"]))
  # The buffer's Monte-Carlo returns (seed 0's, from the final checkpoint's train state),
  # recomputed in float64 from its rows: episodes end at terminals or where the next row does
  # not continue (a reset); the episode still running at the end has none yet.
  flat = ocp.CheckpointManager(tmp_path / "checkpoints").restore(
      100, args=ocp.args.Composite(train_state=ocp.args.StandardRestore())).train_state
  column = lambda name: np.asarray(flat[f"buffer__data__{name}"][0], np.float64)
  size, running = int(flat["buffer__size"][0]), int(flat["episode__stored"][0])
  assert size == 100 and 0 <= running < 40
  observation, next_observation = column("observation"), column("next_observation")
  ends = (column("terminal")[:size - 1] > 0) | np.any(
      next_observation[:size - 1] != observation[1:size], axis=-1)
  starts = np.concatenate([[0], np.flatnonzero(ends) + 1])
  stops = np.concatenate([np.flatnonzero(ends) + 1, [size]])
  assert stops[-1] - starts[-1] == running and len(starts) > 2
  reward, mc_return = column("reward"), column("mc_return")
  for start, stop in zip(starts[:-1], stops[:-1]):
    np.testing.assert_allclose(mc_return[start:stop], hand_worked_returns(
        reward[start:stop], SPEC.reward_scale, SPEC.reward_bias, 0.99), rtol=1e-5, atol=1e-5)
  assert np.all(mc_return[stops[-2]:size] == 0)       # the running episode's rows: none yet


def test_cql_continues_online_without_the_data(random_dataset, tmp_path_factory,
                                              tmp_path):
  workdir = untrained_pretraining(random_dataset, tmp_path_factory, "cql")
  config = tiny_config(method="cql", pretrained=str(workdir), **ARM)
  programs, last = run_arm(config, tmp_path)
  assert programs.loop.loop.offline_rows == 0 and programs.loop.update_floor() == 64
  assert records(tmp_path)[-1]["train"]["updates"] == [35, 35]    # indices 65-99
  assert np.all(np.isfinite(records(tmp_path)[-1]["train"]["critic_loss"]))
  assert description(tmp_path, 100)["method"] == "cql"


def test_iql_continues_online_with_the_data_appended(random_dataset, tmp_path_factory,
                                                     tmp_path):
  path, rows = random_dataset
  pretrained = untrained_pretraining(random_dataset, tmp_path_factory, "iql")
  arm = dict(method="iql", pretrained=str(pretrained), offline_data="keep",
             offline_sampling="append", dataset=str(path), iql_hidden_sizes=(32, 32),
             **dict(ARM, replay_capacity=2_000))
  config = tiny_config(**arm)
  programs, last = run_arm(config, tmp_path)
  dataset = pretrain.load_dataset(config, SPEC)[0]
  kept = dataset.size
  assert programs.loop.loop.replay_capacity == kept + 100
  # Each seed's buffer holds the dataset in its first rows, then its 100 online transitions.
  flat = ocp.CheckpointManager(tmp_path / "checkpoints").restore(
      100, args=ocp.args.Composite(train_state=ocp.args.StandardRestore())).train_state
  np.testing.assert_array_equal(flat["buffer__size"], [kept + 100] * 2)
  for seed in range(2):
    observation = np.asarray(flat["buffer__data__observation"][seed])
    np.testing.assert_array_equal(observation[:kept], dataset.observations)
    np.testing.assert_array_equal(np.asarray(flat["buffer__data__reward"][seed])[:kept],
                                  dataset.rewards)
    assert not np.any(np.all(observation[kept:] == 0, axis=-1))     # online rows written
  assert records(tmp_path)[-1]["train"]["updates"] == [35, 35]
  saved = description(tmp_path, 100)
  assert saved["method"] == "iql" and saved["agent"]["policy"] == "gaussian"
  assert saved["replay_capacity"] == kept + 100
  assert not (tmp_path / "checkpoints/100/optimizer").exists()
  assert np.all(np.isfinite(last["returns"]))
  # A pretraining of other networks, or of another reward transform, is refused by name.
  for overrides, message in [
      (dict(iql_hidden_sizes=(64, 64)), r"agent.hidden_sizes is \[32, 32\] but this run's "
                                        r"config.iql_hidden_sizes gives \[64, 64\]; "
                                        r"--config.iql_hidden_sizes=32,32 fine-tunes this "),
      (dict(reward_scale=2.0), r"agent.reward_scale is 1.0 but this run has 2.0")]:
    with pytest.raises(checkpoint.CheckpointError, match=message):
      finetune.load_pretrained_learner(tiny_config(**dict(arm, **overrides)), programs, SPEC)
