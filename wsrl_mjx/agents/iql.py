"""IQL (implicit Q-learning), the offline baseline of the WSRL paper.

Three networks learn at once from the same parameters each step: V(s) by expectile regression
towards the min of the 2 target critics, Q(s, a) towards r + gamma V(s'), and the actor by
advantage-weighted regression, weights exp(beta (Q - V)) capped at 100. The actor is a plain
(unsquashed) Gaussian with one learned log-std; evaluation acts with its mean, clipped to the
action bounds. Networks are 2x256 without LayerNorm, variance-scaling initialised (the actor's
last hidden layer at scale 1e-2) with orthogonal(sqrt 2) output layers, as in the WSRL
reference's IQL. IQL checkpoints are not WSRL-shaped (different actor, a V network), so
`launch.finetune` refuses them; they are for the IQL baselines.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import optax
from flax import struct

from wsrl_mjx import networks
from wsrl_mjx.replay import Transition


@dataclasses.dataclass(frozen=True)
class IQLConfig:
  observation_size: int
  action_size: int
  hidden_sizes: Sequence[int] = (256, 256)
  expectile: float = 0.7
  beta: float = 3.0              # inverse temperature of the advantage weights
  advantage_weight_cap: float = 100.0
  actor_dropout: float = 0.0
  num_critics: int = 2
  discount: float = 0.99
  tau: float = 0.005
  learning_rate: float = 3e-4
  reward_scale: float = 1.0
  reward_bias: float = 0.0
  matmul_precision: str = "default"


@struct.dataclass
class IQLParams:
  actor: dict
  critic: dict                   # leading [num_critics] axis
  target_critic: dict
  value: dict


@struct.dataclass
class IQLState:
  params: IQLParams
  actor_opt_state: optax.OptState
  critic_opt_state: optax.OptState
  value_opt_state: optax.OptState


def expectile_loss(difference, expectile):
  """Asymmetric squared loss: weight `expectile` above zero, 1 - expectile below."""
  weight = jnp.where(difference > 0, expectile, 1.0 - expectile)
  return weight * jnp.square(difference)


def gaussian_log_prob(action, mean, std):
  z = (action - mean) / std
  return jnp.sum(-0.5 * jnp.square(z) - jnp.log(std) - 0.5 * math.log(2 * math.pi), axis=-1)


class IQL:
  def __init__(self, config: IQLConfig):
    self.config = config
    dtype, precision = networks.PRECISIONS[config.matmul_precision]
    body = dict(layer_norm=False, initializer="variance_scaling", head_initializer="orthogonal",
                dtype=dtype, precision=precision)
    self.actor = networks.GaussianActor(
        config.action_size, tuple(config.hidden_sizes), state_dependent_std=False,
        last_hidden_init_scale=1e-2, dropout_rate=config.actor_dropout, **body)
    self.critic = networks.Critic(tuple(config.hidden_sizes), last_hidden_init_scale=None, **body)
    self.value = networks.ValueNetwork(tuple(config.hidden_sizes), last_hidden_init_scale=None,
                                       **body)
    self.optimizer = optax.adam(config.learning_rate)

  def init_params(self, key: jax.Array) -> IQLParams:
    actor_key, critic_key, value_key = jax.random.split(key, 3)
    observation = jnp.zeros((1, self.config.observation_size), jnp.float32)
    action = jnp.zeros((1, self.config.action_size), jnp.float32)
    critic = networks.init_ensemble(self.critic, critic_key, self.config.num_critics,
                                    observation, action)
    return IQLParams(actor=self.actor.init(actor_key, observation), critic=critic,
                     target_critic=critic, value=self.value.init(value_key, observation))

  def init(self, key: jax.Array) -> IQLState:
    params = self.init_params(key)
    return IQLState(params=params, actor_opt_state=self.optimizer.init(params.actor),
                    critic_opt_state=self.optimizer.init(params.critic),
                    value_opt_state=self.optimizer.init(params.value))

  def actor_params(self, state: IQLState):
    return state.params.actor

  def handoff_params(self, state: IQLState) -> IQLParams:
    return state.params

  def deterministic_action(self, actor_params, observation):
    mean, _ = self.actor.apply(actor_params, observation)
    return mean

  # --- losses -----------------------------------------------------------------------------------

  def value_loss(self, value_params, params: IQLParams, batch: Transition):
    q = networks.apply_ensemble(self.critic, params.target_critic, batch.observation,
                                batch.action).min(axis=0)
    v = self.value.apply(value_params, batch.observation)
    return jnp.mean(expectile_loss(q - v, self.config.expectile))

  def critic_loss(self, critic_params, params: IQLParams, batch: Transition):
    reward = batch.reward * self.config.reward_scale + self.config.reward_bias
    next_v = self.value.apply(params.value, batch.next_observation)
    target = reward + self.config.discount * (1.0 - batch.terminal) * next_v
    q = networks.apply_ensemble(self.critic, critic_params, batch.observation, batch.action)
    return jnp.mean(jnp.square(q - target[None]))

  def actor_loss(self, actor_params, params: IQLParams, batch: Transition, key):
    q = networks.apply_ensemble(self.critic, params.target_critic, batch.observation,
                                batch.action).min(axis=0)
    advantage = q - self.value.apply(params.value, batch.observation)
    weight = jnp.minimum(jnp.exp(advantage * self.config.beta), self.config.advantage_weight_cap)
    mean, std = self.actor.apply(actor_params, batch.observation, deterministic=False,
                                 rngs={"dropout": key})
    return -jnp.mean(jax.lax.stop_gradient(weight) * gaussian_log_prob(batch.action, mean, std))

  # --- update -----------------------------------------------------------------------------------

  def update(self, state: IQLState, batch: Transition, key: jax.Array):
    params = state.params

    def step(loss_fn, own_params, opt_state, *args):
      loss, grads = jax.value_and_grad(loss_fn)(own_params, params, batch, *args)
      updates, opt_state = self.optimizer.update(grads, opt_state, own_params)
      return optax.apply_updates(own_params, updates), opt_state, loss, optax.tree.norm(grads)

    value, value_opt, value_loss, value_norm = step(self.value_loss, params.value,
                                                    state.value_opt_state)
    critic, critic_opt, critic_loss, critic_norm = step(self.critic_loss, params.critic,
                                                        state.critic_opt_state)
    actor, actor_opt, actor_loss, actor_norm = step(self.actor_loss, params.actor,
                                                    state.actor_opt_state, key)
    target_critic = optax.incremental_update(critic, params.target_critic, self.config.tau)
    new = IQLState(params=IQLParams(actor=actor, critic=critic, target_critic=target_critic,
                                    value=value),
                   actor_opt_state=actor_opt, critic_opt_state=critic_opt,
                   value_opt_state=value_opt)
    values = jnp.stack([value_loss, critic_loss, actor_loss, value_norm, critic_norm, actor_norm])
    metrics = {"value_loss": value_loss, "critic_loss": critic_loss, "actor_loss": actor_loss,
               "finite": jnp.all(jnp.isfinite(values))}
    return new, metrics
