"""The tanh-Gaussian log-density against independent float64 computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wsrl_mjx import tanh_gaussian


def naive_log_prob(action, mean, std):
  """Change of variables written the obvious way, in float64 numpy."""
  action, mean, std = (np.asarray(x, np.float64) for x in (action, mean, std))
  pre_tanh = np.arctanh(action)
  gaussian = -0.5 * ((pre_tanh - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)
  return np.sum(gaussian - np.log(1.0 - action ** 2), axis=-1)


def test_log_prob_matches_change_of_variables():
  rng = np.random.default_rng(0)
  mean = rng.normal(size=(64, 3)).astype(np.float32)
  std = rng.uniform(0.1, 2.0, size=(64, 3)).astype(np.float32)
  action = np.tanh(rng.normal(size=(64, 3))).astype(np.float32) * 0.999
  got = tanh_gaussian.log_prob(jnp.asarray(action), mean, std)
  np.testing.assert_allclose(got, naive_log_prob(action, mean, std), rtol=1e-4, atol=1e-4)


def test_density_integrates_to_one():
  """A 1-D density over (-1, 1) must integrate to 1 (midpoint rule on a fine grid)."""
  edges = np.linspace(-1.0, 1.0, 400_001)
  grid = (edges[:-1] + edges[1:]) / 2
  for mean, std in [(0.0, 1.0), (1.5, 0.3), (-0.7, 2.0)]:
    density = np.exp(naive_log_prob(grid[:, None], mean, std))
    jax_density = np.exp(np.asarray(
        tanh_gaussian.log_prob(jnp.asarray(grid[:, None], jnp.float32),
                               jnp.full((1,), mean), jnp.full((1,), std))))
    assert np.sum(density * np.diff(edges)) == pytest.approx(1.0, abs=1e-3)
    assert np.sum(jax_density * np.diff(edges)) == pytest.approx(1.0, abs=1e-3)


def test_sample_log_prob_agrees_with_log_prob_and_stays_finite():
  key = jax.random.PRNGKey(1)
  mean = jnp.array([[0.3, -1.0], [12.0, -15.0]])     # second row saturates tanh
  std = jnp.array([[0.5, 1.0], [0.01, 0.01]])
  action, log_prob = tanh_gaussian.sample_and_log_prob(key, mean, std)
  assert np.all(np.isfinite(log_prob))
  assert np.all(np.abs(action) <= 1.0)
  # Where tanh is not saturated the two computations agree.
  np.testing.assert_allclose(log_prob[0], tanh_gaussian.log_prob(action, mean, std)[0],
                             rtol=1e-4)
  # Samples are distributed as tanh(N(mean, std)): compare moments in pre-tanh space.
  keys = jax.random.split(key, 20_000)
  actions = jax.vmap(lambda k: tanh_gaussian.sample_and_log_prob(k, mean[0], std[0])[0])(keys)
  pre = np.arctanh(np.clip(np.asarray(actions, np.float64), -0.999999, 0.999999))
  np.testing.assert_allclose(pre.mean(axis=0), mean[0], atol=0.03)
  np.testing.assert_allclose(pre.std(axis=0), std[0], rtol=0.03)


def test_mode_is_tanh_of_mean():
  mean = jnp.array([-2.0, 0.0, 0.5])
  np.testing.assert_allclose(tanh_gaussian.mode(mean), np.tanh([-2.0, 0.0, 0.5]), rtol=1e-6)
