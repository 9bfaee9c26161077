"""CQL, Cal-QL and IQL losses on fixed batches against float64 numpy re-implementations."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from numpy_reference import (np_actor, np_ensemble, np_sample, np_value,
                             random_transitions)
from wsrl_mjx.agents import cql, iql, sac

OBS, ACT, B, N = 5, 2, 8, 3
SAC_CONFIG = sac.SACConfig(observation_size=OBS, action_size=ACT, actor_hidden_sizes=(8, 8),
                           critic_hidden_sizes=(16, 16), num_critics=4, utd=1,
                           minibatch_size=B)


@pytest.fixture(scope="module")
def batch():
  return random_transitions(1, B, OBS, ACT)


def np_penalty_gap(learner, params, batch, key, calql, importance_sample):
  """The CQL gap per critic and state, recomputed from the same random draws."""
  random_key, current_key, next_key = jax.random.split(key, 3)
  random_actions = np.asarray(jax.random.uniform(random_key, (B, N, ACT), minval=-1, maxval=1),
                              np.float64)
  observation = np.asarray(batch.observation, np.float64)
  next_observation = np.asarray(batch.next_observation, np.float64)

  def policy(obs, k):
    mean, std = np_actor(params.actor, obs)
    noise = np.asarray(jax.random.normal(k, (B, N, ACT)), np.float64)
    return np_sample(mean[:, None], std[:, None], noise)

  current, current_log_prob = policy(observation, current_key)
  following, next_log_prob = policy(next_observation, next_key)
  actions = np.concatenate([random_actions, current, following], axis=1)          # [B, 3N, A]
  q = np.stack([np_ensemble(params.critic, observation, actions[:, j]) for j in range(3 * N)],
               axis=-1)                                                            # [E, B, 3N]
  q_data = np_ensemble(params.critic, observation, np.asarray(batch.action, np.float64))
  if calql:
    bound = np.asarray(batch.mc_return, np.float64)[:, None]
    q[..., N:] = np.maximum(q[..., N:], bound)
  if importance_sample:
    log_density = np.concatenate([np.full((B, N), ACT * np.log(0.5)), current_log_prob,
                                  next_log_prob], axis=1)
    q = q - log_density
  else:
    q = np.concatenate([q, q_data[..., None]], axis=-1) - np.log(3 * N + 1)
  return logsumexp(q, axis=-1) - q_data


@pytest.mark.parametrize("calql, importance_sample", [(False, True), (True, True),
                                                      (False, False)])
def test_cql_penalty_matches_numpy(batch, calql, importance_sample):
  learner = cql.CQL(cql.CQLConfig(sac=SAC_CONFIG, calql=calql, num_sampled_actions=N,
                                  importance_sample=importance_sample))
  state = learner.init(jax.random.PRNGKey(0))
  params = state.agent.params
  key = jax.random.PRNGKey(4)
  q_data = jnp.asarray(np_ensemble(params.critic, np.asarray(batch.observation, np.float64),
                                   np.asarray(batch.action, np.float64)), jnp.float32)
  got = learner.penalty_gap(params.critic, params.actor, batch, q_data, key)
  expected = np_penalty_gap(learner, params, batch, key, calql, importance_sample)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_calql_bound_raises_the_penalty_only_through_policy_actions(batch):
  base = dict(sac=SAC_CONFIG, num_sampled_actions=N)
  cql_learner, calql_learner = cql.CQL(cql.CQLConfig(**base)), cql.CQL(
      cql.CQLConfig(**base, calql=True))
  params = cql_learner.init(jax.random.PRNGKey(0)).agent.params
  q_data = jnp.zeros((4, B))
  key = jax.random.PRNGKey(4)
  low = batch.replace(mc_return=jnp.full((B,), -1e4))
  high = batch.replace(mc_return=jnp.full((B,), 50.0))
  plain = cql_learner.penalty_gap(params.critic, params.actor, batch, q_data, key)
  # A bound below every value changes nothing; a high bound dominates the soft maximum.
  np.testing.assert_allclose(calql_learner.penalty_gap(params.critic, params.actor, low, q_data,
                                                       key), plain, rtol=1e-6)
  high_gap = calql_learner.penalty_gap(params.critic, params.actor, high, q_data, key)
  assert np.all(np.asarray(high_gap) > 45.0)


def test_max_target_backup_takes_the_best_of_sampled_next_actions(batch):
  learner = sac.SAC(dataclasses.replace(SAC_CONFIG, num_next_actions=N))
  params = learner.init_params(jax.random.PRNGKey(2))
  key = jax.random.PRNGKey(8)
  got = learner.td_target(params, batch, key)
  action_key, subset_key = jax.random.split(key)
  next_observation = np.asarray(batch.next_observation, np.float64)
  mean, std = np_actor(params.actor, next_observation)
  noise = np.asarray(jax.random.normal(action_key, (N, B, ACT)), np.float64)
  actions, _ = np_sample(mean[None], std[None], noise)
  subset = np.asarray(jax.random.randint(subset_key, (2,), 0, 4))     # with replacement
  values = np.stack([np_ensemble(params.target_critic, next_observation, actions[j])[subset]
                     .min(0) for j in range(N)])
  expected = (np.asarray(batch.reward)
              + 0.99 * (1 - np.asarray(batch.terminal)) * values.max(0))
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_cql_update_trains_critics_with_the_penalty_and_tunes_alpha(batch):
  fixed = cql.CQL(cql.CQLConfig(sac=SAC_CONFIG, num_sampled_actions=N, alpha=5.0))
  state = fixed.init(jax.random.PRNGKey(0))
  new, metrics = jax.jit(fixed.update)(state, batch, jax.random.PRNGKey(1))
  assert bool(metrics["finite"])
  # critic loss = TD loss + alpha * mean gap
  assert float(metrics["critic_loss"]) == pytest.approx(
      float(metrics["td_loss"]) + 5.0 * float(metrics["cql_gap"]), rel=1e-5)
  assert int(new.agent.critic_opt_state.inner_state[0].count) == 1
  assert int(new.agent.actor_opt_state.inner_state[0].count) == 1
  assert float(new.raw_alpha) == float(state.raw_alpha)              # fixed alpha stays

  tuned = cql.CQL(cql.CQLConfig(sac=SAC_CONFIG, num_sampled_actions=N, autotune_alpha=True,
                                target_action_gap=-1e3))
  state = tuned.init(jax.random.PRNGKey(0))
  new, metrics = jax.jit(tuned.update)(state, batch, jax.random.PRNGKey(1))
  assert float(metrics["alpha"]) == pytest.approx(1.0)                # initial_alpha
  assert float(new.raw_alpha) > float(state.raw_alpha)               # gap above target: rises
  tuned_low = cql.CQL(cql.CQLConfig(sac=SAC_CONFIG, num_sampled_actions=N, autotune_alpha=True,
                                    target_action_gap=1e3))
  new_low, _ = jax.jit(tuned_low.update)(state, batch, jax.random.PRNGKey(1))
  assert float(new_low.raw_alpha) < float(state.raw_alpha)


# --- IQL ----------------------------------------------------------------------------------------

IQL_CONFIG = iql.IQLConfig(observation_size=OBS, action_size=ACT, hidden_sizes=(16, 16),
                           expectile=0.7, beta=3.0, reward_scale=10.0, reward_bias=-5.0)


def test_expectile_loss_is_asymmetric():
  diff = jnp.array([-2.0, 1.0])
  np.testing.assert_allclose(iql.expectile_loss(diff, 0.9), [0.1 * 4.0, 0.9 * 1.0], rtol=1e-6)


def test_iql_losses_match_numpy(batch):
  learner = iql.IQL(IQL_CONFIG)
  params = learner.init_params(jax.random.PRNGKey(3))
  params = params.replace(target_critic=jax.tree.map(lambda x: x * 1.1, params.target_critic))
  observation = np.asarray(batch.observation, np.float64)
  action = np.asarray(batch.action, np.float64)
  q_target = np_ensemble(params.target_critic, observation, action, layer_norm=False).min(0)
  v = np_value(params.value, observation, layer_norm=False)
  diff = q_target - v
  expected_value = np.mean(np.where(diff > 0, 0.7, 0.3) * diff ** 2)
  assert float(learner.value_loss(params.value, params, batch)) == pytest.approx(
      expected_value, rel=1e-4)

  next_v = np_value(params.value, np.asarray(batch.next_observation, np.float64),
                    layer_norm=False)
  target = (np.asarray(batch.reward) * 10 - 5
            + 0.99 * (1 - np.asarray(batch.terminal)) * next_v)
  q = np_ensemble(params.critic, observation, action, layer_norm=False)
  assert float(learner.critic_loss(params.critic, params, batch)) == pytest.approx(
      np.mean((q - target) ** 2), rel=1e-4)

  mean, std = np_actor(params.actor, observation, layer_norm=False)
  log_prob = np.sum(-0.5 * ((action - mean) / std) ** 2 - np.log(std)
                    - 0.5 * np.log(2 * np.pi), -1)
  weight = np.minimum(np.exp(3.0 * diff), 100.0)
  assert float(learner.actor_loss(params.actor, params, batch, jax.random.PRNGKey(0))) == \
      pytest.approx(-np.mean(weight * log_prob), rel=1e-4)


def test_iql_update_moves_all_three_networks(batch):
  learner = iql.IQL(IQL_CONFIG)
  state = learner.init(jax.random.PRNGKey(0))
  new, metrics = jax.jit(learner.update)(state, batch, jax.random.PRNGKey(1))
  assert bool(metrics["finite"])
  for name in ("actor", "critic", "value", "target_critic"):
    before, after = jax.tree.leaves(getattr(state.params, name)), jax.tree.leaves(
        getattr(new.params, name))
    assert any(not np.array_equal(a, b) for a, b in zip(before, after)), name
  # Targets move by tau towards the new critics.
  jax.tree.map(lambda t, c, old: np.testing.assert_allclose(t, 0.995 * old + 0.005 * c,
                                                            rtol=1e-5, atol=1e-7),
               new.params.target_critic, new.params.critic, state.params.target_critic)


def test_iql_actor_dropout_is_active_only_in_training():
  learner = iql.IQL(iql.IQLConfig(observation_size=OBS, action_size=ACT, hidden_sizes=(16, 16),
                                  actor_dropout=0.5))
  params = learner.init_params(jax.random.PRNGKey(0))
  observation = jnp.ones((4, OBS))
  first = learner.deterministic_action(params.actor, observation)
  np.testing.assert_array_equal(first, learner.deterministic_action(params.actor, observation))
  a = learner.actor.apply(params.actor, observation, deterministic=False,
                          rngs={"dropout": jax.random.PRNGKey(1)})[0]
  b = learner.actor.apply(params.actor, observation, deterministic=False,
                          rngs={"dropout": jax.random.PRNGKey(2)})[0]
  assert not np.allclose(a, b)
  assert math.isclose(float(np.asarray(learner.actor.apply(params.actor, observation)[1])[0, 0]),
                      1.0, rel_tol=1e-6)                        # log-std starts at 0
