"""SAC losses and update steps on a fixed batch, against a float64 numpy re-implementation."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from numpy_reference import np_actor, np_ensemble, np_sample
from wsrl_mjx.agents import sac
from wsrl_mjx.replay import Transition

OBS, ACT = 5, 2
CONFIG = sac.SACConfig(observation_size=OBS, action_size=ACT, actor_hidden_sizes=(8, 8),
                       critic_hidden_sizes=(16, 16), num_critics=10, num_target_critics=2,
                       utd=4, minibatch_size=8, reward_scale=2.0, reward_bias=-1.0)
RATES = sac.LearningRates(actor=1e-3, critic=3e-3, temperature=1e-2)


# --- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def agent():
  return sac.SAC(CONFIG)


@pytest.fixture(scope="module")
def state(agent):
  params = agent.init_params(jax.random.PRNGKey(0))
  # Make target critics differ from the online ones so the test can tell them apart.
  params = params.replace(target_critic=jax.tree.map(lambda x: x * 0.9, params.target_critic))
  return agent.init_state(params, RATES)


@pytest.fixture(scope="module")
def batch():
  rng = np.random.default_rng(0)
  n = CONFIG.batch_size
  return Transition(
      observation=jnp.asarray(rng.normal(size=(n, OBS)), jnp.float32),
      action=jnp.asarray(rng.uniform(-0.99, 0.99, size=(n, ACT)), jnp.float32),
      reward=jnp.asarray(rng.normal(size=(n,)), jnp.float32),
      next_observation=jnp.asarray(rng.normal(size=(n, OBS)), jnp.float32),
      terminal=jnp.asarray(rng.integers(0, 2, size=(n,)), jnp.float32))


def first(batch, n):
  return jax.tree.map(lambda x: x[:n], batch)


# --- losses -------------------------------------------------------------------------------------

def test_initialisation_follows_the_reference_layout(agent, state):
  params = state.params
  kernels = params.critic["params"]["MLP_0"]
  assert kernels["Dense_0"]["kernel"].shape == (10, OBS + ACT, 16)        # ensemble axis first
  assert "LayerNorm_0" in kernels and "LayerNorm_1" in kernels
  # Orthogonal init: sqrt(2) on hidden layers, 1e-2 on the last hidden layer.
  w = np.asarray(kernels["Dense_0"]["kernel"][0])                        # [7, 16]
  np.testing.assert_allclose(w @ w.T, 2.0 * np.eye(OBS + ACT), atol=1e-4)
  w_last = np.asarray(kernels["Dense_1"]["kernel"][0])
  np.testing.assert_allclose(w_last.T @ w_last, 1e-4 * np.eye(16), atol=1e-8)
  # Ensemble members are initialised independently.
  assert not np.allclose(kernels["Dense_0"]["kernel"][0], kernels["Dense_0"]["kernel"][1])
  assert float(agent.temperature(params)) == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("with_replacement", [True, False])
def test_td_target_uses_two_random_target_critics(state, batch, with_replacement):
  agent = sac.SAC(dataclasses.replace(CONFIG, subsample_with_replacement=with_replacement))
  key = jax.random.PRNGKey(7)
  b = first(batch, CONFIG.minibatch_size)
  got = np.asarray(agent.td_target(state.params, b, key))

  action_key, subset_key = jax.random.split(key)
  noise = np.asarray(jax.random.normal(action_key, (CONFIG.minibatch_size, ACT)), np.float64)
  subset = np.asarray(jax.random.randint(subset_key, (2,), 0, 10) if with_replacement
                      else jax.random.choice(subset_key, 10, (2,), replace=False))
  mean, std = np_actor(state.params.actor, np.asarray(b.next_observation, np.float64))
  next_action, _ = np_sample(mean, std, noise)
  target_q = np_ensemble(state.params.target_critic, np.asarray(b.next_observation, np.float64),
                         next_action)
  expected = (np.asarray(b.reward) * 2.0 - 1.0
              + 0.99 * (1 - np.asarray(b.terminal)) * target_q[subset].min(0))
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
  # It is the target critics, not the online ones, that are evaluated.
  online_q = np_ensemble(state.params.critic, np.asarray(b.next_observation, np.float64),
                         next_action)
  assert not np.allclose(online_q[subset].min(0), target_q[subset].min(0), atol=1e-3)


@pytest.mark.parametrize("num_next_actions", [1, 3])
def test_td_target_with_backup_entropy_subtracts_the_scaled_log_prob_before_the_max(
    state, batch, num_next_actions):
  """backup_entropy: each sampled next action's value is min_i Q_i(s', a') - alpha log pi(a'|s')
  (alpha the temperature, 0.3 here); with several next actions the largest of these soft values
  is backed up, the entropy term taken before the max. Against numpy with the same draws."""
  agent = sac.SAC(dataclasses.replace(CONFIG, backup_entropy=True,
                                      num_next_actions=num_next_actions))
  params = state.params.replace(temperature=jnp.float32(sac.inverse_softplus(0.3)))
  key = jax.random.PRNGKey(9)
  b = first(batch, CONFIG.minibatch_size)
  got = np.asarray(agent.td_target(params, b, key))

  action_key, subset_key = jax.random.split(key)
  n = num_next_actions
  shape = (n, CONFIG.minibatch_size, ACT) if n > 1 else (CONFIG.minibatch_size, ACT)
  noise = np.asarray(jax.random.normal(action_key, shape), np.float64).reshape(
      n, CONFIG.minibatch_size, ACT)
  subset = np.asarray(jax.random.randint(subset_key, (2,), 0, 10))
  next_observation = np.asarray(b.next_observation, np.float64)
  mean, std = np_actor(params.actor, next_observation)
  q, log_prob = [], []
  for j in range(n):
    action, lp = np_sample(mean, std, noise[j])
    q.append(np_ensemble(params.target_critic, next_observation, action)[subset].min(0))
    log_prob.append(lp)
  q, log_prob = np.stack(q), np.stack(log_prob)                             # [n, B]
  soft = (q - 0.3 * log_prob).max(0)
  done = np.asarray(b.terminal)
  expected = np.asarray(b.reward) * 2.0 - 1.0 + 0.99 * (1 - done) * soft
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
  # The entropy term is not negligible here: without it the targets are far off.
  plain = np.asarray(b.reward) * 2.0 - 1.0 + 0.99 * (1 - done) * q.max(0)
  assert np.abs(plain - expected).max() > 0.1
  if n > 1:
    # The order matters on this batch: the max of Q alone picks another action in some row.
    alive = done == 0
    assert np.any((np.argmax(q, 0) != np.argmax(q - 0.3 * log_prob, 0)) & alive)


def test_critic_loss_is_mean_squared_error_over_ensemble_and_batch(agent, state, batch):
  b = first(batch, CONFIG.minibatch_size)
  target = jnp.linspace(-1.0, 1.0, CONFIG.minibatch_size)
  loss, _ = agent.critic_loss(state.params.critic, target, b)
  q = np_ensemble(state.params.critic, np.asarray(b.observation, np.float64),
                  np.asarray(b.action, np.float64))
  assert float(loss) == pytest.approx(np.mean((q - np.asarray(target)[None]) ** 2), rel=1e-4)


def test_actor_loss_uses_min_over_all_critics(agent, state, batch):
  key = jax.random.PRNGKey(3)
  loss, log_prob = agent.actor_loss(state.params.actor, state.params.critic, 0.5,
                                    batch.observation, key)
  observation = np.asarray(batch.observation, np.float64)
  noise = np.asarray(jax.random.normal(key, (CONFIG.batch_size, ACT)), np.float64)
  mean, std = np_actor(state.params.actor, observation)
  action, expected_log_prob = np_sample(mean, std, noise)
  q = np_ensemble(state.params.critic, observation, action).min(0)
  np.testing.assert_allclose(log_prob, expected_log_prob, rtol=1e-4, atol=1e-4)
  assert float(loss) == pytest.approx(np.mean(0.5 * expected_log_prob - q), rel=1e-4, abs=1e-5)


def test_temperature_loss_pushes_toward_the_target_entropy(agent):
  raw = jnp.float32(0.3)
  assert agent.target_entropy == -ACT
  loss = agent.temperature_loss(raw, entropy=-1.0)
  assert float(loss) == pytest.approx(np.log1p(np.exp(0.3)) * (-1.0 + ACT), rel=1e-6)
  # Entropy above target -> gradient lowers the temperature; below -> raises it.
  assert float(jax.grad(agent.temperature_loss)(raw, 0.0)) > 0
  assert float(jax.grad(agent.temperature_loss)(raw, -5.0)) < 0


# --- update steps -------------------------------------------------------------------------------

def adam_first_step(param, grad, lr):
  return param - lr * grad / (np.abs(grad) + 1e-8)


def test_critic_step_trains_only_the_critics(agent, state, batch):
  b = first(batch, CONFIG.minibatch_size)
  key = jax.random.PRNGKey(11)
  new, _ = jax.jit(agent.critic_step)(state, b, key)
  target = agent.td_target(state.params, b, key)
  grads = jax.grad(lambda c: agent.critic_loss(c, target, b)[0])(state.params.critic)
  expected = jax.tree.map(lambda p, g: adam_first_step(np.asarray(p), np.asarray(g), 3e-3),
                          state.params.critic, grads)
  jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-6),
               new.params.critic, expected)
  polyak = jax.tree.map(lambda t, c: 0.995 * np.asarray(t) + 0.005 * np.asarray(c),
                        state.params.target_critic, new.params.critic)
  jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-7),
               new.params.target_critic, polyak)
  # Actor, temperature and their optimiser states are untouched.
  for name in ("actor_opt_state", "temperature_opt_state"):
    jax.tree.map(np.testing.assert_array_equal, getattr(new, name), getattr(state, name))
  jax.tree.map(np.testing.assert_array_equal, new.params.actor, state.params.actor)
  assert float(new.params.temperature) == float(state.params.temperature)


def np_next_observation_entropy(actor_params, batch, key):
  """-mean log pi(a'|s') over one sample a' per s' (float64), drawn with the noise the actor and
  temperature step draws for its entropy estimate (the second key split from the step's key)."""
  _, entropy_key = jax.random.split(key)
  next_observation = np.asarray(batch.next_observation, np.float64)
  noise = np.asarray(jax.random.normal(entropy_key, (next_observation.shape[0], ACT)),
                     np.float64)
  mean, std = np_actor(actor_params, next_observation)
  return -float(np.mean(np_sample(mean, std, noise)[1]))


def test_actor_step_trains_actor_and_temperature_only(agent, state, batch):
  key = jax.random.PRNGKey(5)
  new, metrics = jax.jit(agent.actor_temperature_step)(state, batch, key)
  temperature = agent.temperature(state.params)
  actor_key, _ = jax.random.split(key)
  grads = jax.grad(lambda a: agent.actor_loss(a, state.params.critic, temperature,
                                              batch.observation, actor_key)[0])(state.params.actor)
  expected = jax.tree.map(lambda p, g: adam_first_step(np.asarray(p), np.asarray(g), 1e-3),
                          state.params.actor, grads)
  jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-6),
               new.params.actor, expected)
  # The temperature's entropy estimate: fresh samples of the pre-step actor at s', drawn with the
  # second key split from the step's key, recomputed in numpy.
  entropy = np_next_observation_entropy(state.params.actor, batch, key)
  assert float(metrics["entropy"]) == pytest.approx(entropy, rel=1e-5)
  temperature_grad = float(jax.grad(agent.temperature_loss)(state.params.temperature, entropy))
  assert float(new.params.temperature) == pytest.approx(
      adam_first_step(float(state.params.temperature), temperature_grad, 1e-2), rel=1e-5)
  jax.tree.map(np.testing.assert_array_equal, new.params.critic, state.params.critic)
  jax.tree.map(np.testing.assert_array_equal, new.params.target_critic, state.params.target_critic)
  jax.tree.map(np.testing.assert_array_equal, new.critic_opt_state, state.critic_opt_state)


def np_adam(param, m, v, t, grad, lr, b1=0.9, b2=0.999, eps=1e-8):
  """One step of Adam (optax.adam's defaults) on a float64 scalar -> (param, m, v, t)."""
  t += 1
  m = b1 * m + (1 - b1) * grad
  v = b2 * v + (1 - b2) * grad * grad
  return param - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps), m, v, t


@pytest.mark.parametrize("temperature_entropy", ["next_observations", "actor_samples"])
def test_temperature_step_follows_the_entropy_of_the_pre_step_actor(state, batch,
                                                                    temperature_entropy):
  """The temperature step against numpy: its entropy estimate is -mean log pi of the actor before
  the step, over fresh samples at s' ("next_observations", drawn with the step's second key) or
  over the actor step's own samples at s ("actor_samples", the first key); the gradient
  sigmoid(raw) (entropy - target) then takes an Adam step from moments already under way (a
  first Adam step only sees the gradient's sign). The actor's learning rate is large (0.1), so
  the actor after the step has a clearly different entropy, and the temperature's (0.1) and
  small second moment make its step tell the two apart (both checked)."""
  agent = sac.SAC(dataclasses.replace(CONFIG, temperature_entropy=temperature_entropy))
  fresh = agent.init_state(state.params, sac.LearningRates(actor=0.1, critic=3e-3,
                                                           temperature=0.1))
  m0, v0, t0 = -0.5, 0.05, 3
  opt = fresh.temperature_opt_state
  adam = opt.inner_state[0]._replace(count=jnp.asarray(t0, jnp.int32), mu=jnp.float32(m0),
                                     nu=jnp.float32(v0))
  start = fresh.replace(temperature_opt_state=opt._replace(inner_state=(adam,
                                                                        *opt.inner_state[1:])))
  key = jax.random.PRNGKey(5)
  new, metrics = jax.jit(agent.actor_temperature_step)(start, batch, key)

  if temperature_entropy == "next_observations":
    entropy = np_next_observation_entropy(state.params.actor, batch, key)
    after = np_next_observation_entropy(new.params.actor, batch, key)
  else:
    actor_key, _ = jax.random.split(key)
    observation = np.asarray(batch.observation, np.float64)
    noise = np.asarray(jax.random.normal(actor_key, (CONFIG.batch_size, ACT)), np.float64)
    entropy = -float(np.mean(np_sample(*np_actor(state.params.actor, observation), noise)[1]))
    after = -float(np.mean(np_sample(*np_actor(new.params.actor, observation), noise)[1]))
  assert abs(after - entropy) > 1e-2                    # the post-step actor is told apart
  assert float(metrics["entropy"]) == pytest.approx(entropy, rel=1e-5)
  raw = float(state.params.temperature)
  softplus, sigmoid = np.log1p(np.exp(raw)), 1 / (1 + np.exp(-raw))
  assert float(metrics["temperature_loss"]) == pytest.approx(softplus * (entropy + ACT), rel=1e-5)
  expected, _, _, _ = np_adam(raw, m0, v0, t0, sigmoid * (entropy + ACT), 0.1)
  stale, _, _, _ = np_adam(raw, m0, v0, t0, sigmoid * (after + ACT), 0.1)
  assert abs(stale - expected) > 1e-5
  assert float(new.params.temperature) == pytest.approx(expected, rel=1e-6, abs=1e-7)


def momentum_only(agent, names):
  """Adam on a zero gradient for the named networks, spelled out with optax."""
  for name in names:
    opt_state = getattr(agent, f"{name}_opt_state")
    params = getattr(agent.params, name)
    optimizer = optax.adam(opt_state.hyperparams["learning_rate"])
    updates, inner = optimizer.update(jax.tree.map(jnp.zeros_like, params),
                                      opt_state.inner_state, params)
    agent = agent.replace(params=agent.params.replace(**{name: optax.apply_updates(params,
                                                                                   updates)}),
                          **{f"{name}_opt_state": opt_state._replace(inner_state=inner,
                                                                     count=opt_state.count + 1)})
  return agent


@pytest.mark.parametrize("step_all_optimizers", [True, False])
def test_utd_update_runs_four_critic_steps_then_one_actor_step(state, batch,
                                                               step_all_optimizers):
  agent = sac.SAC(dataclasses.replace(CONFIG, step_all_optimizers=step_all_optimizers))
  key = jax.random.PRNGKey(2)
  update = jax.jit(agent.update)
  new, metrics = update(state, batch, key)
  assert bool(metrics["finite"])
  # Every network's Adam counts every call (the reference), or only its own steps.
  counts = (5, 5, 5) if step_all_optimizers else (4, 1, 1)
  assert int(new.critic_opt_state.inner_state[0].count) == counts[0]
  assert int(new.actor_opt_state.inner_state[0].count) == counts[1]
  assert int(new.temperature_opt_state.inner_state[0].count) == counts[2]

  # The same thing spelled out: critic steps on consecutive minibatches (each followed by
  # momentum-only steps of actor and temperature), then the actor step, then a momentum-only
  # critic step with no target update.
  keys = jax.random.split(key, 5)
  manual = state
  for i in range(4):
    minibatch = jax.tree.map(lambda x: x[i * 8:(i + 1) * 8], batch)
    manual, _ = agent.critic_step(manual, minibatch, keys[i])
    if step_all_optimizers:
      manual = momentum_only(manual, ("actor", "temperature"))
  manual, _ = agent.actor_temperature_step(manual, batch, keys[4])
  target_after_critic_steps = manual.params.target_critic
  if step_all_optimizers:
    manual = momentum_only(manual, ("critic",))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               new.params, manual.params)
  # (A Polyak step after the momentum-only step would move the targets by ~5e-4 relative.)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9),
               new.params.target_critic, target_after_critic_steps)

  # Inlining the critic steps (a GPU speed setting) changes the program, not the numbers.
  unrolled = sac.SAC(dataclasses.replace(agent.config, unroll_critic_steps=True))
  inlined, _ = jax.jit(unrolled.update)(state, batch, key)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               inlined.params, new.params)

  # A non-finite batch is reported, not hidden.
  bad = batch.replace(reward=batch.reward.at[3].set(jnp.nan))
  _, bad_metrics = update(state, bad, key)
  assert not bool(bad_metrics["finite"])


def test_learning_rates_can_differ_per_seed(agent, batch):
  """Two seeds, one program: the learning rate lives in each seed's optimiser state."""
  params = agent.init_params(jax.random.PRNGKey(0))
  rates = sac.LearningRates(actor=jnp.array([1e-3, 0.0]), critic=jnp.array([3e-3, 0.0]),
                            temperature=jnp.array([1e-2, 0.0]))
  states = jax.vmap(agent.init_state, in_axes=(None, 0))(params, rates)
  two = jax.tree.map(lambda x: jnp.stack([x, x]), batch)
  new, _ = jax.jit(jax.vmap(agent.update))(states, two, jax.random.split(jax.random.PRNGKey(1), 2))
  moved = jax.tree.map(lambda a, b: np.abs(np.asarray(a) - np.asarray(b)).max(axis=tuple(range(1, a.ndim))),
                       new.params.critic, states.params.critic)
  assert all(m[0] > 0 for m in jax.tree.leaves(moved))
  assert all(m[1] == 0 for m in jax.tree.leaves(moved))


def test_bfloat16_matmuls_keep_float32_parameters_and_follow_the_float32_update(state, batch):
  """The GPU speed setting (benchmarks/RESULTS.md): bf16 layer inputs, float32 master weights."""
  key = jax.random.PRNGKey(3)
  exact, exact_metrics = jax.jit(sac.SAC(CONFIG).update)(state, batch, key)
  fast, fast_metrics = jax.jit(sac.SAC(dataclasses.replace(
      CONFIG, matmul_precision="bfloat16", unroll_critic_steps=True)).update)(state, batch, key)
  assert {x.dtype for x in jax.tree.leaves(fast)} <= {np.dtype("float32"), np.dtype("int32")}
  # The whole update moves the parameters in float32's direction (Adam's first step is about
  # +-lr per weight, so a tiny gradient whose sign bf16 flips moves its weight by 2 lr: compare
  # the whole step, not each weight); the losses agree to bf16's 3 significant digits; and the
  # programs differ (bf16 is in effect).
  flat = lambda tree: np.concatenate([np.ravel(np.asarray(x, np.float64))
                                      for x in jax.tree.leaves(tree)])
  exact_step = flat(exact.params) - flat(state.params)
  fast_step = flat(fast.params) - flat(state.params)
  cosine = exact_step @ fast_step / (np.linalg.norm(exact_step) * np.linalg.norm(fast_step))
  assert cosine > 0.98, cosine
  assert np.abs(fast_step - exact_step).max() > 0
  for name in ("critic_loss", "actor_loss"):
    np.testing.assert_allclose(fast_metrics[name], exact_metrics[name], rtol=2e-2)
