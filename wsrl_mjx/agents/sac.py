"""WSRL's online learner: SAC with a 10-critic LayerNorm ensemble and a high update-to-data ratio.

One `update` call is what the reference does per environment step: a batch of `utd x minibatch`
transitions (4 x 256) gives `utd` critic steps on consecutive minibatches, each followed by a
Polyak update of the target critics, then one actor step and one temperature step on the whole
batch. The TD target is the minimum over 2 target critics drawn at random (REDQ, without
replacement), with no entropy bonus by default; the actor maximises the minimum over all critics.

Each network has its own Adam, and a step only touches the optimiser of the network it trains,
so the actor's Adam moments do not move during critic steps. Learning rates sit in the optimiser
state (`optax.inject_hyperparams`), which lets them differ per seed inside one vmapped program.
Everything here is a pure function of its arguments; `SAC` only holds static settings.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import optax
from flax import struct

from wsrl_mjx import networks, tanh_gaussian
from wsrl_mjx.replay import Transition


@dataclasses.dataclass(frozen=True)
class SACConfig:
  """Static settings: they fix shapes or the program, so they are the same for every seed."""
  observation_size: int
  action_size: int
  actor_hidden_sizes: Sequence[int] = (256, 256)
  critic_hidden_sizes: Sequence[int] = (256, 256)
  state_dependent_std: bool = True
  layer_norm: bool = True
  num_critics: int = 10
  num_target_critics: int = 2
  utd: int = 4
  minibatch_size: int = 256
  discount: float = 0.99
  tau: float = 0.005
  backup_entropy: bool = False
  target_entropy: float | None = None      # None: -action_size
  initial_temperature: float = 1.0
  reward_scale: float = 1.0
  reward_bias: float = 0.0
  matmul_precision: str = "default"        # a key of networks.PRECISIONS
  unroll_critic_steps: bool = False        # the UTD critic steps inline rather than in a scan

  @property
  def batch_size(self) -> int:
    return self.utd * self.minibatch_size


@struct.dataclass
class AgentParams:
  """What an offline checkpoint hands to fine-tuning: the networks and the temperature."""
  actor: dict
  critic: dict            # every leaf has a leading [num_critics] axis
  target_critic: dict
  temperature: jax.Array  # unconstrained scalar; the temperature is softplus(temperature)


@struct.dataclass
class AgentState:
  params: AgentParams
  actor_opt_state: optax.OptState
  critic_opt_state: optax.OptState
  temperature_opt_state: optax.OptState


@struct.dataclass
class LearningRates:
  actor: jax.Array
  critic: jax.Array
  temperature: jax.Array


def _adam():
  return optax.inject_hyperparams(optax.adam)


def _adam_step(grads, opt_state, params):
  """One Adam step at the learning rate held in `opt_state` -> (new params, new opt_state)."""
  optimizer = _adam()(learning_rate=opt_state.hyperparams["learning_rate"])
  updates, opt_state = optimizer.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def _inverse_softplus(x: float) -> float:
  return math.log(math.expm1(x))


class SAC:
  """The networks and pure update functions for one `SACConfig`."""

  def __init__(self, config: SACConfig):
    self.config = config
    dtype, precision = networks.PRECISIONS[config.matmul_precision]
    self.actor = networks.GaussianActor(
        config.action_size, tuple(config.actor_hidden_sizes), config.state_dependent_std,
        config.layer_norm, dtype=dtype, precision=precision)
    self.critic = networks.Critic(tuple(config.critic_hidden_sizes), config.layer_norm,
                                  dtype=dtype, precision=precision)
    self.target_entropy = (-float(config.action_size) if config.target_entropy is None
                           else config.target_entropy)

  # --- initialisation ---------------------------------------------------------------------------

  def init_params(self, key: jax.Array) -> AgentParams:
    actor_key, critic_key = jax.random.split(key)
    observation = jnp.zeros((1, self.config.observation_size), jnp.float32)
    action = jnp.zeros((1, self.config.action_size), jnp.float32)
    critic = networks.init_ensemble(self.critic, critic_key, self.config.num_critics,
                                    observation, action)
    return AgentParams(
        actor=self.actor.init(actor_key, observation), critic=critic, target_critic=critic,
        temperature=jnp.asarray(_inverse_softplus(self.config.initial_temperature), jnp.float32))

  def init_state(self, params: AgentParams, rates: LearningRates) -> AgentState:
    """Fresh optimisers around `params` (pretrained or new)."""
    return AgentState(
        params=params,
        actor_opt_state=_adam()(learning_rate=rates.actor).init(params.actor),
        critic_opt_state=_adam()(learning_rate=rates.critic).init(params.critic),
        temperature_opt_state=_adam()(learning_rate=rates.temperature).init(params.temperature))

  # --- acting -----------------------------------------------------------------------------------

  def sample_action(self, actor_params, observation, key):
    mean, std = self.actor.apply(actor_params, observation)
    action, _ = tanh_gaussian.sample_and_log_prob(key, mean, std)
    return action

  def deterministic_action(self, actor_params, observation):
    mean, _ = self.actor.apply(actor_params, observation)
    return tanh_gaussian.mode(mean)

  def temperature(self, params: AgentParams) -> jax.Array:
    return jax.nn.softplus(params.temperature)

  # --- losses -----------------------------------------------------------------------------------

  def td_target(self, params: AgentParams, batch: Transition, key: jax.Array,
                num_next_actions: int = 1) -> jax.Array:
    """r' + gamma (1 - terminal) min over 2 random target critics of Q(s', a' ~ pi(s')).

    With `num_next_actions > 1` (CQL's max-target backup) that many actions are drawn per s'
    and the largest of their values is backed up.
    """
    action_key, subset_key = jax.random.split(key)
    mean, std = self.actor.apply(params.actor, batch.next_observation)
    next_observation = batch.next_observation
    if num_next_actions > 1:                    # [n, B, ...]
      broadcast = lambda x: jnp.broadcast_to(x, (num_next_actions, *x.shape))
      mean, std, next_observation = broadcast(mean), broadcast(std), broadcast(next_observation)
    next_action, next_log_prob = tanh_gaussian.sample_and_log_prob(action_key, mean, std)
    subset = jax.random.choice(subset_key, self.config.num_critics,
                               (self.config.num_target_critics,), replace=False)
    target_critics = jax.tree.map(lambda p: p[subset], params.target_critic)
    next_q = networks.apply_ensemble(self.critic, target_critics, next_observation,
                                     next_action).min(axis=0)
    if self.config.backup_entropy:
      next_q = next_q - self.temperature(params) * next_log_prob
    if num_next_actions > 1:
      next_q = next_q.max(axis=0)
    reward = batch.reward * self.config.reward_scale + self.config.reward_bias
    return reward + self.config.discount * (1.0 - batch.terminal) * next_q

  def critic_loss(self, critic_params, target, batch: Transition):
    """Mean squared TD error over the batch and every critic of the ensemble."""
    q = networks.apply_ensemble(self.critic, critic_params, batch.observation, batch.action)
    return jnp.mean(jnp.square(q - target[None])), q

  def actor_loss(self, actor_params, critic_params, temperature, observation, key):
    """E[temperature log pi(a|s) - min_i Q_i(s, a)] with a ~ pi(s) reparameterised."""
    mean, std = self.actor.apply(actor_params, observation)
    action, log_prob = tanh_gaussian.sample_and_log_prob(key, mean, std)
    q = networks.apply_ensemble(self.critic, critic_params, observation, action).min(axis=0)
    return jnp.mean(temperature * log_prob - q), log_prob

  def temperature_loss(self, raw_temperature, entropy):
    """Lagrangian of the constraint entropy >= target: lowers the temperature when met."""
    return jax.nn.softplus(raw_temperature) * (entropy - self.target_entropy)

  # --- updates ----------------------------------------------------------------------------------

  def critic_step(self, agent: AgentState, minibatch: Transition, key: jax.Array,
                  regularizer=None, num_next_actions: int = 1):
    """One Adam step of the critics on the TD loss, then the Polyak update of their targets.

    `regularizer(critic_params, minibatch, q, key) -> (loss, metrics)` adds a term to the loss
    (CQL's conservative penalty); `q` [critics, B] are the critics' values of the batch actions.
    """
    params = agent.params
    target = jax.lax.stop_gradient(self.td_target(params, minibatch, key, num_next_actions))

    def loss_fn(critic_params):
      td_loss, q = self.critic_loss(critic_params, target, minibatch)
      if regularizer is None:
        return td_loss, (q, {})
      extra, metrics = regularizer(critic_params, minibatch, q, jax.random.fold_in(key, 1))
      return td_loss + extra, (q, dict(metrics, td_loss=td_loss))

    (loss, (q, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params.critic)
    critic, opt_state = _adam_step(grads, agent.critic_opt_state, params.critic)
    target_critic = optax.incremental_update(critic, params.target_critic, self.config.tau)
    agent = agent.replace(params=params.replace(critic=critic, target_critic=target_critic),
                          critic_opt_state=opt_state)
    return agent, {"critic_loss": loss, "q": jnp.mean(q), "grad_norm": optax.tree.norm(grads),
                   **metrics}

  def actor_temperature_step(self, agent: AgentState, batch: Transition, key: jax.Array):
    params = agent.params
    temperature = self.temperature(params)
    (actor_loss, log_prob), actor_grads = jax.value_and_grad(self.actor_loss, has_aux=True)(
        params.actor, params.critic, temperature, batch.observation, key)
    actor, actor_opt_state = _adam_step(actor_grads, agent.actor_opt_state, params.actor)
    entropy = -jnp.mean(jax.lax.stop_gradient(log_prob))
    temperature_loss, temperature_grad = jax.value_and_grad(self.temperature_loss)(
        params.temperature, entropy)
    raw_temperature, temperature_opt_state = _adam_step(
        temperature_grad, agent.temperature_opt_state, params.temperature)
    agent = agent.replace(
        params=params.replace(actor=actor, temperature=raw_temperature),
        actor_opt_state=actor_opt_state, temperature_opt_state=temperature_opt_state)
    metrics = {"actor_loss": actor_loss, "temperature_loss": temperature_loss,
               "temperature": temperature, "entropy": entropy,
               "grad_norm": optax.tree.norm(actor_grads) + jnp.abs(temperature_grad)}
    return agent, metrics

  def update(self, agent: AgentState, batch: Transition, key: jax.Array):
    """One UTD update on a [utd * minibatch] batch -> (agent, metrics).

    `metrics["finite"]` is false when any loss or gradient was not finite; the caller decides
    what to do with such an update (the online loop discards it and flags the seed).
    """
    utd, minibatch = self.config.utd, self.config.minibatch_size
    critic_keys = jax.random.split(key, utd + 1)
    minibatches = jax.tree.map(lambda x: x.reshape(utd, minibatch, *x.shape[1:]), batch)

    def one_critic_step(agent, inputs):
      minibatch_data, step_key = inputs
      return self.critic_step(agent, minibatch_data, step_key)

    agent, critic_metrics = jax.lax.scan(one_critic_step, agent, (minibatches, critic_keys[:utd]),
                                         unroll=utd if self.config.unroll_critic_steps else 1)
    agent, actor_metrics = self.actor_temperature_step(agent, batch, critic_keys[utd])
    values = [critic_metrics["critic_loss"], critic_metrics["grad_norm"],
              actor_metrics["actor_loss"], actor_metrics["temperature_loss"],
              actor_metrics["grad_norm"]]
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in values]))
    metrics = {"critic_loss": jnp.mean(critic_metrics["critic_loss"]),
               "q": jnp.mean(critic_metrics["q"]),
               "actor_loss": actor_metrics["actor_loss"],
               "temperature": actor_metrics["temperature"],
               "entropy": actor_metrics["entropy"],
               "finite": finite}
    return agent, metrics
