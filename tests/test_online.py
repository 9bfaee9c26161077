"""The fused loop: warmup, per-seed settings and independence, episode ends, divergence."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.mjx_env import State
from wsrl_mjx import evaluation, finetune, per_seed, tanh_gaussian


def settings_for(config, **per_seed_values):
  settings, _ = per_seed.seed_settings(config)
  settings = jax.tree.map(jnp.asarray, settings)
  return settings.replace(**{k: jnp.asarray(v, getattr(settings, k).dtype)
                             for k, v in per_seed_values.items()})


def pretrained_params(programs, num_seeds, seed=123):
  keys = jax.random.split(jax.random.PRNGKey(seed), num_seeds)
  return jax.jit(jax.vmap(programs.loop.agent.init_params))(keys)


def seed_slice(tree, i):
  return jax.tree.map(lambda x: np.asarray(x[i]), tree)


def assert_trees_equal(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


def updates_between(start, end, warmup, batch_size):
  """How many of the steps with index start..end-1 train: those past the reference's floor,
  index > max(warmup, batch size) (tests/test_reference_parity.py checks the rule itself)."""
  return sum(k > max(warmup, batch_size) for k in range(start, end))


def test_warmup_collects_with_the_pretrained_policy_and_trains_nothing(tiny_programs):
  config, _, _, programs = tiny_programs
  chunk = config.steps_per_chunk
  pretrained = pretrained_params(programs, config.num_seeds)
  settings = settings_for(config, warmup_steps=[chunk, chunk])
  state = programs.init(finetune.seed_keys(config), settings, pretrained)
  assert_trees_equal(state.agent.params, pretrained)
  before = jax.tree.map(np.asarray, state)

  state, stats = programs.run(state, chunk)
  # No parameter and no optimiser state moved; nothing was counted as an update.
  assert_trees_equal(state.agent, before.agent)
  np.testing.assert_array_equal(stats.updates, [0, 0])
  np.testing.assert_array_equal(state.buffer.size, [chunk, chunk])

  # Every stored action is the pretrained actor's sample with the loop's key for that step.
  agent = programs.loop.agent
  for seed in range(config.num_seeds):
    key = before.key[seed]
    actor = seed_slice(pretrained.actor, seed)
    rows = seed_slice(state.buffer.data, seed)
    for t in range(chunk):
      key, action_key, *_ = jax.random.split(key, 5)
      mean, std = agent.actor.apply(actor, rows.observation[t])
      expected, _ = tanh_gaussian.sample_and_log_prob(action_key, mean, std)
      expected = np.clip(expected, -config.action_clip, config.action_clip)
      np.testing.assert_allclose(rows.action[t], expected, rtol=1e-5, atol=1e-6)

  # After warmup (and a full batch) the next chunk trains.
  state, stats = programs.run(state, chunk)
  expected = updates_between(chunk, 2 * chunk, chunk, config.batch_size)
  assert expected > 0
  np.testing.assert_array_equal(stats.updates, [expected, expected])
  assert not np.allclose(state.agent.params.critic["params"]["Dense_0"]["kernel"],
                         before.agent.params.critic["params"]["Dense_0"]["kernel"])


def test_init_switches_choose_checkpoint_or_fresh_parts_per_seed(tiny_programs):
  config, _, _, programs = tiny_programs
  pretrained = pretrained_params(programs, config.num_seeds)
  settings = settings_for(config, init_actor=[True, False], init_critic=[False, True],
                          init_temperature=[True, True])
  state = programs.init(finetune.seed_keys(config), settings, pretrained)
  fresh = programs.init(finetune.seed_keys(config), settings, None)
  params, fresh_params = state.agent.params, fresh.agent.params
  assert_trees_equal(seed_slice(params.actor, 0), seed_slice(pretrained.actor, 0))
  assert_trees_equal(seed_slice(params.actor, 1), seed_slice(fresh_params.actor, 1))
  assert_trees_equal(seed_slice(params.critic, 0), seed_slice(fresh_params.critic, 0))
  assert_trees_equal(seed_slice(params.critic, 1), seed_slice(pretrained.critic, 1))
  assert_trees_equal(seed_slice(params.target_critic, 1), seed_slice(pretrained.target_critic, 1))


def test_seeds_are_independent_of_their_neighbours(tiny_programs):
  """Seed A gives the same numbers whichever seed runs beside it, in either position."""
  config, _, _, programs = tiny_programs
  key_a, key_b, key_c = jax.random.split(jax.random.PRNGKey(9), 3)
  settings = settings_for(config, warmup_steps=[10, 10])
  first = programs.init(jnp.stack([key_a, key_b]), settings, None)
  second = programs.init(jnp.stack([key_c, key_a]), settings, None)
  for _ in range(2):
    first, _ = programs.run(first, config.steps_per_chunk)
    second, _ = programs.run(second, config.steps_per_chunk)
  a_first, a_second = seed_slice(first, 0), seed_slice(second, 1)
  np.testing.assert_array_equal(a_first.env_step, 2 * config.steps_per_chunk)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6),
               a_first.agent.params, a_second.agent.params)
  assert_trees_equal(a_first.buffer.data.action, a_second.buffer.data.action)
  assert not np.allclose(seed_slice(first, 1).buffer.data.action, a_first.buffer.data.action)


def test_per_seed_warmup_in_one_program(tiny_programs):
  config, _, _, programs = tiny_programs
  chunk = config.steps_per_chunk
  settings = settings_for(config, warmup_steps=[0, 10_000])
  state = programs.init(finetune.seed_keys(config), settings, None)
  before = jax.tree.map(np.asarray, state.agent.params)
  for start in (0, chunk):
    state, stats = programs.run(state, chunk)
    expected = updates_between(start, start + chunk, 0, config.batch_size)
    np.testing.assert_array_equal(stats.updates, [expected, 0])
  assert not np.allclose(state.agent.params.actor["params"]["mean"]["kernel"][0],
                         before.actor["params"]["mean"]["kernel"][0])
  assert_trees_equal(seed_slice(state.agent.params, 1), seed_slice(before, 1))


def test_timeouts_reset_the_episode_but_are_not_terminals(tiny_programs):
  config, _, _, programs = tiny_programs
  length = config.episode_length
  settings = settings_for(config, warmup_steps=[10_000, 10_000])
  state = programs.init(finetune.seed_keys(config), settings, None)
  state, stats = programs.run(state, config.steps_per_chunk)
  data = seed_slice(state.buffer.data, 0)
  terminal_rows = np.flatnonzero(data.terminal)
  episode_ends = []
  start = 0
  for t in range(config.steps_per_chunk - 1):
    continues = np.array_equal(data.observation[t + 1], data.next_observation[t])
    if not continues:
      episode_ends.append(t)
      assert t - start + 1 == length or t in terminal_rows, (t, start)
      start = t + 1
    else:
      assert t not in terminal_rows
  # A random point mass leaves the arena before 40 steps or times out at 40; either way
  # episodes end.
  assert episode_ends and int(stats.completed_episodes[0]) >= len(episode_ends)
  timeouts = [t for t in episode_ends if t not in terminal_rows]
  assert all(data.terminal[t] == 0 for t in timeouts)


def test_non_finite_seed_is_flagged_and_the_others_keep_learning(tiny_programs):
  config, _, _, programs = tiny_programs
  pretrained = pretrained_params(programs, config.num_seeds)
  poisoned = pretrained.replace(critic=jax.tree.map(lambda x: x.at[1].set(jnp.nan),
                                                    pretrained.critic))
  chunk = config.steps_per_chunk
  settings = settings_for(config, warmup_steps=[5, 5])
  state = programs.init(finetune.seed_keys(config), settings, poisoned)
  before = jax.tree.map(np.asarray, state.agent)
  updates = 0
  for _ in range(2):
    state, stats = programs.run(state, chunk)
    updates += stats.updates
  diverged_at = np.asarray(state.diverged_at)
  first_update = max(5, config.batch_size) + 1                # its step index; env step + 1
  assert diverged_at[0] == -1 and diverged_at[1] == first_update + 1
  assert int(updates[0]) == updates_between(0, 2 * chunk, 5, config.batch_size)
  assert int(updates[1]) == 0
  assert np.all(np.isfinite(np.asarray(state.agent.params.actor["params"]["mean"]["kernel"][0])))
  # The flagged seed keeps its last parameters (and keeps stepping its env).
  assert_trees_equal(seed_slice(state.agent.params.actor, 1), seed_slice(before.params.actor, 1))
  np.testing.assert_array_equal(state.env_step, [2 * chunk] * 2)


def test_evaluation_is_deterministic_given_the_step(tiny_programs):
  config, _, env_spec, programs = tiny_programs
  state = programs.init(finetune.seed_keys(config), settings_for(config), None)
  results = programs.evaluate(state.agent.params.actor, state.eval_key, state.env_step)
  first = np.asarray(results.returns)
  again = np.asarray(programs.evaluate(state.agent.params.actor, state.eval_key,
                                       state.env_step).returns)
  assert not np.any(np.asarray(results.successes))   # the point mass has no success metric
  assert first.shape == (config.num_seeds, config.eval_episodes)
  np.testing.assert_array_equal(first, again)
  assert np.all(np.isfinite(first))
  # The point mass earns 1 - (distance to the goal) <= 1 per step, for <= 40 steps.
  assert np.all(first <= config.episode_length)


class ScriptedEpisode:
  """An env whose step t (1-based, counted in obs[0]) pays 10 t + the action it was given,
  reports the `success` metric SUCCESS[t] and terminates at step `terminate_at`; it steps on
  after that (a finished evaluation episode is stepped until the scan's end)."""
  SUCCESS = (0.0, 0.0, 0.5, 0.0, 0.0, 1.0, 0.0)      # 0.5 at step 2, 1.0 at step 5

  def __init__(self, terminate_at):
    self.terminate_at = terminate_at

  def reset(self, key):
    del key
    return State(pipeline_state=None, obs=jnp.zeros((1,)), reward=jnp.zeros(()),
                 done=jnp.zeros(()), metrics={"success": jnp.zeros(())})

  def step(self, state, action):
    t = state.obs[0] + 1
    success = jnp.asarray(self.SUCCESS)[t.astype(jnp.int32)]
    return state.replace(obs=state.obs + 1, reward=10.0 * t + action[0],
                         done=(t == self.terminate_at).astype(jnp.float32),
                         metrics={"success": success})


@pytest.mark.parametrize("terminate_at, expected_return, expected_success", [
    (4, sum(10.0 * t + 0.5 for t in range(1, 5)), 0.5),     # the steps after 4 do not count
    (99, sum(10.0 * t + 0.5 for t in range(1, 7)), 1.0),    # the time limit (6 steps) ends it
])
def test_evaluation_sums_rewards_to_the_episode_end_and_keeps_the_largest_success(
    terminate_at, expected_return, expected_success):
  """Hand-worked: the policy asks for 2.0, clipped to 0.5; the return counts the terminating
  step and nothing after it; success is the largest value the metric took while the episode
  ran (0.5 at step 2 beats step 3's 0), not its last value."""
  results = jax.jit(lambda key: evaluation.evaluate(
      ScriptedEpisode(terminate_at), lambda params, observation: jnp.full((1,), 2.0), None, key,
      num_episodes=3, episode_length=6, action_clip=0.5))(jax.random.PRNGKey(0))
  np.testing.assert_array_equal(results.returns, [expected_return] * 3)
  np.testing.assert_array_equal(results.successes, [expected_success] * 3)


# --- skipping idle work (issue 17): batch-level branches over the seed axis ------------------

class _EndingBandit:
  """tests/test_learning.py's bandit with episodes that end at random: the context turns and
  shrinks each step, and a step whose reward is below -1.2 terminates, so on some steps some
  seeds' episodes end and on others none do (timeouts after 4 steps besides)."""
  observation_size = action_size = 2

  def reset(self, key):
    from envs import State
    return State(pipeline_state=None, obs=jax.random.uniform(key, (2,), minval=-1, maxval=1),
                 reward=jnp.zeros(()), done=jnp.zeros(()))

  def step(self, state, action):
    reward = -jnp.sum(jnp.square(action - 0.7 * state.obs[::-1]))
    return state.replace(obs=0.9 * state.obs[::-1], reward=reward,
                         done=(reward < -1.2).astype(jnp.float32))


def _bandit_run(seed_axis, warmups=(10, 70, 100), steps=120):
  """(the vmapped program's jaxpr, its final TrainState and ChunkStats) for `steps` steps of
  len(warmups) seeds, with the loop's `seed_axis` set or not."""
  from wsrl_mjx import online
  from wsrl_mjx.agents import sac
  config = sac.SACConfig(observation_size=2, action_size=2, actor_hidden_sizes=(8,),
                         critic_hidden_sizes=(8,), num_critics=4, utd=4, minibatch_size=16)
  loop = online.LoopConfig(replay_capacity=50, episode_length=4, eval_episodes=2,
                           action_clip=0.99999, seed_axis=seed_axis)
  fused = online.Online(env=_EndingBandit(), agent=sac.SAC(config), loop=loop)
  n = len(warmups)
  same = lambda value, dtype=jnp.float32: jnp.full(n, value, dtype)
  settings = online.SeedSettings(
      warmup_steps=jnp.asarray(warmups, jnp.int32), actor_learning_rate=same(1e-3),
      critic_learning_rate=same(1e-3), temperature_learning_rate=same(1e-3),
      init_actor=same(False, bool), init_critic=same(False, bool),
      init_temperature=same(False, bool), init_optimizer=same(False, bool))

  def train(key, settings):
    return fused.run(fused.init(key, settings, None), steps)

  program = jax.vmap(train, axis_name="seeds")
  args = (jax.random.split(jax.random.PRNGKey(0), n), settings)
  return jax.make_jaxpr(program)(*args), jax.device_get(jax.jit(program)(*args))


def _branches_holding(jaxpr, primitive: str) -> int:
  """How many `cond`s in `jaxpr` (at any depth) have a branch that uses `primitive`."""
  def uses(j):
    return any(e.primitive.name == primitive or any(uses(s) for s in _subjaxprs(e))
               for e in j.eqns)

  def count(j):
    total = 0
    for e in j.eqns:
      if e.primitive.name == "cond" and any(uses(b.jaxpr) for b in e.params["branches"]):
        total += 1
      total += sum(count(s) for s in _subjaxprs(e))
    return total
  return count(jaxpr.jaxpr)


def _subjaxprs(eqn):
  for value in eqn.params.values():
    for v in value if isinstance(value, (tuple, list)) else (value,):
      if hasattr(v, "jaxpr") and hasattr(v.jaxpr, "eqns"):
        yield v.jaxpr
      elif hasattr(v, "eqns"):
        yield v


def test_skipping_idle_work_keeps_every_seed_s_numbers():
  """With the seed axis named, the update (matmuls) and the env reset (random draws) sit in
  real branches of the vmapped program, taken only when some seed trains or some episode ended;
  without, vmap turns those branches into selects, so both run on every step. Every seed's
  numbers agree to float32 rounding (XLA fuses a branch apart from its neighbours, so the last
  bits may differ), and its counts exactly: updates only past max(warmup, batch size)."""
  with_axis, (state, stats) = _bandit_run("seeds")
  without, (old_state, old_stats) = _bandit_run(None)
  assert _branches_holding(with_axis, "dot_general") >= 1
  assert _branches_holding(with_axis, "random_bits") >= 1    # the reset's fresh context
  assert _branches_holding(without, "dot_general") == 0
  assert _branches_holding(without, "random_bits") == 0
  np.testing.assert_array_equal(
      stats.updates, [updates_between(0, 120, w, 64) for w in (10, 70, 100)])
  np.testing.assert_array_equal(stats.updates, old_stats.updates)
  np.testing.assert_array_equal(stats.completed_episodes, old_stats.completed_episodes)
  assert 0 < stats.completed_episodes.min() and stats.completed_episodes.max() < 120
  np.testing.assert_array_equal(state.env_step, old_state.env_step)
  for new, old in zip(jax.tree.leaves((state, stats)), jax.tree.leaves((old_state, old_stats))):
    if np.issubdtype(np.asarray(new).dtype, np.floating):
      np.testing.assert_allclose(new, old, rtol=1e-4, atol=1e-5)
    else:
      np.testing.assert_array_equal(new, old)
