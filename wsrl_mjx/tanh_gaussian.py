"""The tanh-squashed diagonal Gaussian policy distribution, as plain functions over arrays.

Written out rather than taken from distrax/TFP so that the numerically delicate part, the log
Jacobian of tanh, is visible and tested: log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)),
which stays finite where tanh(u) rounds to +-1.
"""

import jax
import jax.numpy as jnp

_LOG_2 = 0.6931471805599453
_HALF_LOG_2PI = 0.9189385332046727


def _gaussian_log_prob(pre_tanh, mean, std):
  z = (pre_tanh - mean) / std
  return jnp.sum(-0.5 * jnp.square(z) - jnp.log(std) - _HALF_LOG_2PI, axis=-1)


def _log_tanh_jacobian(pre_tanh):
  return jnp.sum(2.0 * (_LOG_2 - pre_tanh - jax.nn.softplus(-2.0 * pre_tanh)), axis=-1)


def sample_and_log_prob(key: jax.Array, mean: jax.Array, std: jax.Array):
  """A reparameterised sample tanh(mean + std * eps) and its log-density. Shapes [..., A], [...]."""
  pre_tanh = mean + std * jax.random.normal(key, mean.shape, mean.dtype)
  log_prob = _gaussian_log_prob(pre_tanh, mean, std) - _log_tanh_jacobian(pre_tanh)
  return jnp.tanh(pre_tanh), log_prob


def log_prob(action: jax.Array, mean: jax.Array, std: jax.Array, epsilon: float = 1e-6):
  """Log-density of given actions in (-1, 1); actions are pulled `epsilon` inside the bounds."""
  pre_tanh = jnp.arctanh(jnp.clip(action, -1.0 + epsilon, 1.0 - epsilon))
  return _gaussian_log_prob(pre_tanh, mean, std) - _log_tanh_jacobian(pre_tanh)


def mode(mean: jax.Array) -> jax.Array:
  """The deterministic action used for evaluation: tanh of the Gaussian mean."""
  return jnp.tanh(mean)
