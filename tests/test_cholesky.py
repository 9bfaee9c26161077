"""The CPU Cholesky that MJX programs are traced with (envs/cholesky.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from mujoco import mjx

import envs
from envs import cholesky


def _spd(rng, n):
  a = rng.normal(size=(n, n))
  return (a @ a.T + n * np.eye(n)).astype(np.float32)


@pytest.mark.parametrize("lower", [False, True])
@pytest.mark.parametrize("rhs_shape", [(7,), (7, 3)])
def test_factor_and_solve_match_jax_scipy(lower, rhs_shape):
  rng = np.random.default_rng(0)
  a = _spd(rng, 7)
  b = rng.normal(size=rhs_shape).astype(np.float32)
  factor, flag = cholesky.cho_factor(a, lower=lower)
  expected_factor, _ = jax.scipy.linalg.cho_factor(a, lower=lower)
  triangle = np.tril if lower else np.triu   # LAPACK leaves the other triangle as it was
  np.testing.assert_allclose(factor, triangle(expected_factor), rtol=1e-5, atol=1e-5)
  assert flag == lower
  x = cholesky.cho_solve((factor, lower), b)
  np.testing.assert_allclose(a @ x, b, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(x, np.linalg.solve(a, b), rtol=1e-4, atol=1e-5)


def test_batched_under_vmap_and_nan_when_not_positive_definite():
  rng = np.random.default_rng(1)
  a = np.stack([_spd(rng, 5) for _ in range(4)])
  factors = jax.vmap(cholesky.cholesky_lower)(a)
  np.testing.assert_allclose(factors, np.linalg.cholesky(a), rtol=1e-5, atol=1e-5)
  assert np.isnan(cholesky.cholesky_lower(-np.eye(3, dtype=np.float32))).any()


def test_batched_mjx_step_on_the_cpu_calls_no_lapack_kernel():
  # jaxlib 0.10's batched CPU potrf deadlocks XLA's pool at large batches (envs/cholesky.py).
  env, _ = envs.make("hopper-medium-v2")
  states = jax.eval_shape(jax.vmap(env.reset), jax.random.split(jax.random.PRNGKey(0), 8))
  actions = jnp.zeros((8, env.action_size))
  ours = jax.jit(jax.vmap(env.step)).lower(states, actions).as_text().lower()
  assert "potrf" not in ours and "lapack" not in ours
  # The check can tell: MJX's own step, traced without the swap, calls LAPACK's potrf.
  plain = jax.jit(jax.vmap(mjx.step, in_axes=(None, 0))).lower(
      env.mjx_model, states.pipeline_state).as_text().lower()
  assert "potrf" in plain
  assert jax.scipy.linalg.cho_factor is not cholesky.cho_factor   # the swap was undone
