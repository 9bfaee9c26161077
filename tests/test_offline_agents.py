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


def np_penalty_gap(learner, params, batch, key, calql, importance_sample, temperature=1.0):
  """The CQL gap per critic and state, recomputed from the same random draws: the soft maximum
  T logsumexp(q / T) over the importance-weighted sampled values, or without importance sampling
  the soft mean T log mean exp(q / T) over the sampled and the data actions' values."""
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
    soft_max = temperature * logsumexp((q - log_density) / temperature, axis=-1)
  else:
    q = np.concatenate([q, q_data[..., None]], axis=-1)                            # [E, B, 3N+1]
    soft_max = temperature * np.log(np.mean(np.exp(q / temperature), axis=-1))
  return soft_max - q_data


@pytest.mark.parametrize("calql, importance_sample, temperature", [
    (False, True, 1.0), (True, True, 1.0), (False, False, 1.0),
    (False, True, 0.5), (True, True, 2.0), (False, False, 2.0)])
def test_cql_penalty_matches_numpy(batch, calql, importance_sample, temperature):
  """penalty_gap against np_penalty_gap (float64, the same random draws), with and without
  importance sampling and Cal-QL's bound, at cql_temperature 1 and away from it (0.5, 2)."""
  learner = cql.CQL(cql.CQLConfig(sac=SAC_CONFIG, calql=calql, num_sampled_actions=N,
                                  importance_sample=importance_sample,
                                  cql_temperature=temperature))
  state = learner.init(jax.random.PRNGKey(0))
  params = state.agent.params
  key = jax.random.PRNGKey(4)
  q_data = jnp.asarray(np_ensemble(params.critic, np.asarray(batch.observation, np.float64),
                                   np.asarray(batch.action, np.float64)), jnp.float32)
  got = learner.penalty_gap(params.critic, params.actor, batch, q_data, key)
  expected = np_penalty_gap(learner, params, batch, key, calql, importance_sample, temperature)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
  if temperature != 1.0:
    # The temperature matters here: the same gap at T = 1 is measurably different.
    at_one = np_penalty_gap(learner, params, batch, key, calql, importance_sample)
    assert np.abs(at_one - expected).max() > 1e-2


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


def iql_log_prob(params, batch):
  """log N(a | mean(s), std) of the batch actions under IQL's unsquashed Gaussian actor -> [B]."""
  observation, action = (np.asarray(x, np.float64) for x in (batch.observation, batch.action))
  mean, std = np_actor(params.actor, observation, layer_norm=False)
  return np.sum(-0.5 * ((action - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi), -1)


def test_iql_advantage_weights_are_capped_at_100(batch):
  """The actor's per-row weights against numpy: exp(beta (Q - V)) where that is below 100, and
  exactly 100 on the rows whose advantage exceeds ln(100) / beta. The value head's bias is shifted
  so that the cap binds on some rows and not on others (at init no advantage comes near it). Each
  row's weight is read off the loss of a one-row batch: -weight * log pi(a | s)."""
  learner = iql.IQL(IQL_CONFIG)
  params = learner.init_params(jax.random.PRNGKey(3))
  observation, action = (np.asarray(x, np.float64) for x in (batch.observation, batch.action))
  advantage = (np_ensemble(params.target_critic, observation, action, layer_norm=False).min(0)
               - np_value(params.value, observation, layer_norm=False))
  # Put ln(100) / beta in the widest gap between sorted advantages, 2 or more rows either side.
  ordered = np.sort(advantage)
  k = 2 + int(np.argmax(np.diff(ordered)[1:B - 2]))
  assert ordered[k] - ordered[k - 1] > 1e-2
  shift = 0.5 * (ordered[k - 1] + ordered[k]) - np.log(100.0) / 3.0
  head = params.value["params"]["Dense_0"]
  value = {"params": {**params.value["params"],
                      "Dense_0": {**head, "bias": head["bias"] + jnp.float32(shift)}}}
  params = params.replace(value=value)
  advantage = advantage - shift
  capped = 3.0 * advantage > np.log(100.0)
  assert capped.sum() == B - k and 2 <= capped.sum() <= B - 2
  expected = np.where(capped, 100.0, np.exp(3.0 * advantage))

  log_prob = iql_log_prob(params, batch)
  rows = [jax.tree.map(lambda x, i=i: x[i:i + 1], batch) for i in range(B)]
  weight = np.array([-float(learner.actor_loss(params.actor, params, row, jax.random.PRNGKey(0)))
                     for row in rows]) / log_prob
  np.testing.assert_allclose(weight, expected, rtol=1e-4)
  assert np.all(np.exp(3.0 * advantage[capped]) > 100.0 * (1 + 1e-3))   # the cap is what binds
  # The whole batch's loss is the mean of those rows'.
  assert float(learner.actor_loss(params.actor, params, batch, jax.random.PRNGKey(0))) == \
      pytest.approx(-np.mean(expected * log_prob), rel=1e-4)


def test_iql_update_steps_every_network_from_the_pre_update_parameters(batch):
  """Value, critic and actor each take a first Adam step (p - lr g / (|g| + eps)) on its loss's
  gradient at the parameters before the update: the critic's target uses the old V, the actor's
  advantage the old V, not the ones this update makes. The learning rate is large (0.05) so that
  a step from the new V would move the critics and the actor measurably differently (checked).
  The target critics then move by tau towards the new critics."""
  lr = 0.05
  learner = iql.IQL(dataclasses.replace(IQL_CONFIG, learning_rate=lr))
  state = learner.init(jax.random.PRNGKey(0))
  params = state.params
  key = jax.random.PRNGKey(1)
  new, metrics = jax.jit(learner.update)(state, batch, key)
  assert bool(metrics["finite"])

  def first_step(loss_fn, own, at, *args):
    grads = jax.grad(loss_fn)(own, at, batch, *args)
    return jax.tree.map(lambda p, g: np.asarray(p, np.float64) - lr * np.asarray(g, np.float64)
                        / (np.abs(np.asarray(g, np.float64)) + 1e-8), own, grads)

  expected = {"value": first_step(learner.value_loss, params.value, params),
              "critic": first_step(learner.critic_loss, params.critic, params),
              "actor": first_step(learner.actor_loss, params.actor, params, key)}
  for name, tree in expected.items():
    jax.tree.map(lambda a, e, name=name: np.testing.assert_allclose(
        a, e, rtol=1e-5, atol=lr * 1e-3, err_msg=name), getattr(new.params, name), tree)
  # Stepping the critic or the actor from the new V would have been told apart.
  stale = params.replace(value=new.params.value)
  for name, loss_fn, args in (("critic", learner.critic_loss, ()),
                              ("actor", learner.actor_loss, (key,))):
    other = first_step(loss_fn, getattr(params, name), stale, *args)
    gap = max(np.abs(a - e).max() for a, e in zip(jax.tree.leaves(other),
                                                  jax.tree.leaves(expected[name])))
    assert gap > 0.5 * lr, name
  jax.tree.map(lambda t, c, old: np.testing.assert_allclose(t, 0.995 * old + 0.005 * c,
                                                            rtol=1e-5, atol=1e-7),
               new.params.target_critic, new.params.critic, params.target_critic)


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
