"""A plain vmapped SAC update with a 10-critic ensemble: the yardstick for the fused learner.

Written the way a first JAX port would be (one optax Adam per network, `vmap` over critics,
the TD target from the min of all critics, critic then actor then temperature on one batch of
256), with no wsrl-mjx code, so `benchmarks.throughput --measure=naive` can time it next to
our update on the same machine and in the same process. It is what the issue's "naive vmapped
update" figure (9.2K seed-updates/s at 64 seeds on an H200, 3x256 critics) describes; a ratio
measured beside it carries across machines where an absolute figure does not.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


class _MLP(nn.Module):
  hidden_sizes: Sequence[int]
  out: int

  @nn.compact
  def __call__(self, x):
    for size in self.hidden_sizes:
      x = nn.relu(nn.LayerNorm()(nn.Dense(size)(x)))
    return nn.Dense(self.out)(x)


def make_update(observation_size: int, action_size: int, hidden_sizes: Sequence[int],
                num_critics: int = 10, discount: float = 0.99, tau: float = 0.005):
  """(init(key) -> state, update(state, batch, key) -> state) for one seed."""
  critic = _MLP(tuple(hidden_sizes), 1)
  actor = _MLP(tuple(hidden_sizes), 2 * action_size)
  optimizer = optax.adam(3e-4)

  def q_values(params, observation, action):
    x = jnp.concatenate([observation, action], -1)
    return jax.vmap(lambda p: critic.apply(p, x)[..., 0])(params)

  def policy(params, observation, key):
    mean, log_std = jnp.split(actor.apply(params, observation), 2, axis=-1)
    std = jnp.exp(jnp.clip(log_std, -5.0, 2.0))
    u = mean + std * jax.random.normal(key, mean.shape)
    action = jnp.tanh(u)
    log_prob = jnp.sum(-0.5 * ((u - mean) / std) ** 2 - jnp.log(std) - 0.5 * jnp.log(2 * jnp.pi)
                       - jnp.log(1 - action ** 2 + 1e-6), axis=-1)
    return action, log_prob

  def init(key):
    critic_key, actor_key = jax.random.split(key)
    observation = jnp.zeros((1, observation_size))
    critics = jax.vmap(lambda k: critic.init(k, jnp.zeros((1, observation_size + action_size))))(
        jax.random.split(critic_key, num_critics))
    actor_params = actor.init(actor_key, observation)
    log_alpha = jnp.zeros(())
    return {"critic": critics, "target": critics, "actor": actor_params, "log_alpha": log_alpha,
            "critic_opt": optimizer.init(critics), "actor_opt": optimizer.init(actor_params),
            "alpha_opt": optimizer.init(log_alpha)}

  def update(state, batch, key):
    target_key, actor_key = jax.random.split(key)
    alpha = jnp.exp(state["log_alpha"])
    next_action, _ = policy(state["actor"], batch["next_observation"], target_key)
    next_q = q_values(state["target"], batch["next_observation"], next_action).min(0)
    target = batch["reward"] + discount * (1 - batch["terminal"]) * next_q

    def critic_loss(params):
      return jnp.mean((q_values(params, batch["observation"], batch["action"]) - target) ** 2)

    grads = jax.grad(critic_loss)(state["critic"])
    updates, critic_opt = optimizer.update(grads, state["critic_opt"])
    critics = optax.apply_updates(state["critic"], updates)
    target_params = optax.incremental_update(critics, state["target"], tau)

    def actor_loss(params):
      action, log_prob = policy(params, batch["observation"], actor_key)
      q = q_values(critics, batch["observation"], action).min(0)
      return jnp.mean(alpha * log_prob - q), log_prob

    grads, log_prob = jax.grad(actor_loss, has_aux=True)(state["actor"])
    updates, actor_opt = optimizer.update(grads, state["actor_opt"])
    actor_params = optax.apply_updates(state["actor"], updates)
    entropy = -jnp.mean(log_prob)
    alpha_grad = jax.grad(lambda la: jnp.exp(la) * (entropy - (-action_size)))(state["log_alpha"])
    updates, alpha_opt = optimizer.update(alpha_grad, state["alpha_opt"])
    return {"critic": critics, "target": target_params, "actor": actor_params,
            "log_alpha": optax.apply_updates(state["log_alpha"], updates),
            "critic_opt": critic_opt, "actor_opt": actor_opt, "alpha_opt": alpha_opt}

  return init, update


def random_table(key, rows: int, observation_size: int, action_size: int):
  """[rows, ...] random transitions to sample batches from (content does not change speed)."""
  keys = jax.random.split(key, 4)
  return {"observation": jax.random.normal(keys[0], (rows, observation_size)),
          "next_observation": jax.random.normal(keys[1], (rows, observation_size)),
          "action": jax.random.uniform(keys[2], (rows, action_size), minval=-1, maxval=1),
          "reward": jax.random.normal(keys[3], (rows,)),
          "terminal": jnp.zeros((rows,))}


def sample(table, key, batch_size: int):
  rows = next(iter(table.values())).shape[0]
  indices = jax.random.randint(key, (batch_size,), 0, rows)
  return jax.tree.map(lambda x: x[indices], table)
