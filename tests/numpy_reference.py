"""Independent float64 numpy forward passes of our networks, for checking losses, and the random
transition batches the loss tests feed them."""

import jax
import jax.numpy as jnp
import numpy as np

from wsrl_mjx import networks, replay


def np_mlp(params, x, layer_norm=True):
  layers = sorted((k for k in params if k.startswith("Dense")), key=lambda k: int(k.split("_")[1]))
  for i, name in enumerate(layers):
    x = x @ np.asarray(params[name]["kernel"], np.float64) + np.asarray(params[name]["bias"])
    if layer_norm:
      ln = params[f"LayerNorm_{i}"]
      mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
      x = (x - mu) / np.sqrt(var + 1e-6) * np.asarray(ln["scale"]) + np.asarray(ln["bias"])
    x = np.maximum(x, 0.0)
  return x


def np_value(params, x, layer_norm=True):
  p = params["params"]
  h = np_mlp(p["MLP_0"], x, layer_norm)
  return (h @ np.asarray(p["Dense_0"]["kernel"], np.float64) + np.asarray(p["Dense_0"]["bias"]))[..., 0]


def np_critic(params, observation, action, layer_norm=True):
  return np_value(params, np.concatenate([observation, action], -1), layer_norm)


def np_ensemble(params, observation, action, layer_norm=True):
  n = jax.tree.leaves(params)[0].shape[0]
  return np.stack([np_critic(jax.tree.map(lambda x: np.asarray(x)[i], params), observation,
                             action, layer_norm) for i in range(n)])


def np_actor(params, observation, layer_norm=True):
  p = params["params"]
  h = np_mlp(p["MLP_0"], observation, layer_norm)
  mean = h @ np.asarray(p["mean"]["kernel"], np.float64) + np.asarray(p["mean"]["bias"])
  if "log_std" in p and isinstance(p["log_std"], dict):
    log_std = h @ np.asarray(p["log_std"]["kernel"], np.float64) + np.asarray(p["log_std"]["bias"])
  else:                                                   # state-independent
    log_std = np.broadcast_to(np.asarray(p["log_std"], np.float64), mean.shape)
  return mean, np.clip(np.exp(log_std), networks.STD_MIN, networks.STD_MAX)


def np_sample(mean, std, noise):
  pre = mean + std * noise
  with np.errstate(divide="ignore"):        # float64 tanh saturates to 1: the density is +inf there
    log_prob = np.sum(-0.5 * noise ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)
                      - np.log(1 - np.tanh(pre) ** 2), -1)
  return np.tanh(pre), log_prob




def random_transitions(seed, size, observation_size, action_size):
  """`size` random transitions (float32, with Monte-Carlo returns) from numpy's generator `seed`:
  normal observations and rewards, actions in (-0.9, 0.9), terminals 0 or 1."""
  rng = np.random.default_rng(seed)
  return replay.Transition(
      observation=jnp.asarray(rng.normal(size=(size, observation_size)), jnp.float32),
      action=jnp.asarray(rng.uniform(-0.9, 0.9, size=(size, action_size)), jnp.float32),
      reward=jnp.asarray(rng.normal(size=(size,)), jnp.float32),
      next_observation=jnp.asarray(rng.normal(size=(size, observation_size)), jnp.float32),
      terminal=jnp.asarray(rng.integers(0, 2, size=(size,)), jnp.float32),
      mc_return=jnp.asarray(rng.normal(size=(size,)) * 3, jnp.float32))
