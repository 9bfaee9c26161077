"""CQL and Cal-QL offline pretraining with WSRL's critic ensemble.

The networks, the TD target (min of 2 random target critics, optionally the max over sampled
next actions) and the actor/temperature step are SAC's (`agents/sac.py`), so the checkpoint
has exactly the shapes WSRL fine-tunes. On top of the TD loss every critic pays the
conservative penalty

    alpha * E_s[ T logsumexp_a (Q(s, a) - log mu(a)) / T  -  Q(s, a_data) ]

over `num_sampled_actions` uniform actions and as many policy actions at s and at s' (importance
weighted by their densities mu). Cal-QL lower-bounds the policy actions' values by the data's
Monte-Carlo return before the logsumexp, so the penalty never pushes Q below the behaviour
policy's value. alpha is fixed or, with `autotune_alpha`, a Lagrange multiplier that holds the
penalty's gap at `target_action_gap`: softplus of a free parameter initialised at softplus^-1(1),
as the reference's `LeqLagrangeMultiplier` (`wsrl/networks/lagrange.py`).

As the reference does with the ensemble (`wsrl/agents/cql.py`, `_get_cql_q_diff` with
`critic_subsample_size`), the penalty falls on `num_target_critics` (2) critics drawn at random
each step, with replacement, rather than on all of them (`penalty_on_all_critics` restores the
latter). The max-target backup over `num_sampled_actions` next actions is on by default, as the
reference's `cql_max_target_backup` is for every family. The actor and temperature step from
the parameters the critic step started from, as the reference's (`update_order`).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import optax
from flax import struct

from wsrl_mjx import networks, tanh_gaussian
from wsrl_mjx.agents import sac
from wsrl_mjx.errors import ConfigError
from wsrl_mjx.replay import Transition


@dataclasses.dataclass(frozen=True)
class CQLConfig:
  sac: sac.SACConfig           # networks, discount, tau, ensemble, reward transform
  calql: bool = False
  num_sampled_actions: int = 10
  alpha: float = 5.0           # fixed penalty weight (ignored when autotuned)
  autotune_alpha: bool = False
  target_action_gap: float = 0.8
  initial_alpha: float = 1.0
  alpha_learning_rate: float = 3e-4
  actor_learning_rate: float = 1e-4
  critic_learning_rate: float = 3e-4
  temperature_learning_rate: float = 1e-4
  max_target_backup: bool = True
  importance_sample: bool = True
  cql_temperature: float = 1.0
  penalty_on_all_critics: bool = False   # False: num_target_critics drawn per step (reference)
  update_order: str = "simultaneous"     # or "critic_first" (UPDATE_ORDERS)


# "simultaneous" (the reference): the critic, actor and temperature steps of an update all start
# from its parameters, as the reference's `update` computes every loss from `self.state.params`
# (`wsrl/common/common.py`, `apply_loss_fns`). "critic_first": the actor step sees the critics
# the critic step just made.
UPDATE_ORDERS = ("simultaneous", "critic_first")


@struct.dataclass
class CQLState:
  agent: sac.AgentState
  raw_alpha: jax.Array         # the Lagrange multiplier is softplus(raw_alpha)
  alpha_opt_state: optax.OptState


class CQL:
  """Pure update functions of CQL / Cal-QL for one `CQLConfig`."""

  def __init__(self, config: CQLConfig):
    if config.sac.utd != 1:
      raise ValueError("Offline CQL takes one critic step per update (utd=1).")
    if config.update_order not in UPDATE_ORDERS:
      raise ConfigError(f"config.cql_update_order={config.update_order!r}; choose one of "
                        f"{', '.join(UPDATE_ORDERS)}.")
    self.config = config
    num_next_actions = config.num_sampled_actions if config.max_target_backup else 1
    self.sac = sac.SAC(dataclasses.replace(config.sac, num_next_actions=num_next_actions))
    self._alpha_optimizer = optax.adam(config.alpha_learning_rate)

  def init(self, key: jax.Array) -> CQLState:
    rates = sac.LearningRates(actor=self.config.actor_learning_rate,
                              critic=self.config.critic_learning_rate,
                              temperature=self.config.temperature_learning_rate)
    raw_alpha = jnp.asarray(sac.inverse_softplus(self.config.initial_alpha), jnp.float32)
    return CQLState(agent=self.sac.init_state(self.sac.init_params(key), rates),
                    raw_alpha=raw_alpha, alpha_opt_state=self._alpha_optimizer.init(raw_alpha))

  def deterministic_action(self, actor_params, observation):
    return self.sac.deterministic_action(actor_params, observation)

  def actor_params(self, state: CQLState):
    return state.agent.params.actor

  def handoff_params(self, state: CQLState) -> sac.AgentParams:
    """What fine-tuning starts from: WSRL's actor, critics, targets and temperature."""
    return state.agent.params

  def handoff_optimizer(self, state: CQLState) -> dict:
    """The Adam states fine-tuning continues from (the reference restores the whole agent)."""
    return sac.optimizer_states(state.agent)

  def alpha(self, state: CQLState) -> jax.Array:
    if self.config.autotune_alpha:
      return jax.nn.softplus(state.raw_alpha)
    return jnp.asarray(self.config.alpha, jnp.float32)

  def penalty_gap(self, critic_params, actor_params, batch: Transition, q_data, key):
    """Per critic and state: soft maximum over sampled actions minus the data action's value.

    -> [critics, B]. `q_data` [critics, B] are the critics' values of the dataset actions.
    """
    n = self.config.num_sampled_actions
    action_size = self.config.sac.action_size
    batch_size = batch.observation.shape[0]
    random_key, current_key, next_key = jax.random.split(key, 3)

    def policy_samples(observation, sample_key):
      mean, std = self.sac.actor.apply(actor_params, observation)
      mean, std = (jnp.broadcast_to(x[:, None], (batch_size, n, action_size)) for x in (mean, std))
      return tanh_gaussian.sample_and_log_prob(sample_key, mean, std)   # [B, n, A], [B, n]

    random_actions = jax.random.uniform(random_key, (batch_size, n, action_size),
                                        minval=-1.0, maxval=1.0)
    current_actions, current_log_prob = policy_samples(batch.observation, current_key)
    next_actions, next_log_prob = policy_samples(batch.next_observation, next_key)
    actions = jnp.concatenate([random_actions, current_actions, next_actions], axis=1)
    observations = jnp.broadcast_to(batch.observation[:, None],
                                    (batch_size, 3 * n, batch.observation.shape[-1]))
    q_sampled = networks.apply_ensemble(self.sac.critic, critic_params, observations,
                                        jax.lax.stop_gradient(actions))       # [E, B, 3n]
    if self.config.calql:
      # Policy actions (not the uniform ones) are worth at least the data's return.
      bound = jnp.concatenate([jnp.full((batch_size, n), -jnp.inf),
                               jnp.broadcast_to(batch.mc_return[:, None], (batch_size, 2 * n))],
                              axis=1)
      q_sampled = jnp.maximum(q_sampled, bound)
    if self.config.importance_sample:
      log_density = jnp.concatenate(
          [jnp.full((batch_size, n), action_size * math.log(0.5)),
           jax.lax.stop_gradient(current_log_prob), jax.lax.stop_gradient(next_log_prob)],
          axis=1)
      q_sampled = q_sampled - log_density
    else:
      q_sampled = jnp.concatenate([q_sampled, q_data[..., None]], axis=-1)
      q_sampled = q_sampled - math.log(q_sampled.shape[-1]) * self.config.cql_temperature
    temperature = self.config.cql_temperature
    soft_max = jax.scipy.special.logsumexp(q_sampled / temperature, axis=-1) * temperature
    return soft_max - q_data

  def update(self, state: CQLState, batch: Transition, key: jax.Array):
    """One critic step (TD + penalty), one actor/temperature step (from the critics before the
    critic step, or after it: `update_order`), one alpha step."""
    critic_key, actor_key = jax.random.split(key)
    alpha = self.alpha(state)
    actor_params = state.agent.params.actor
    gap = self.config.target_action_gap if self.config.autotune_alpha else 0.0

    def regularizer(critic_params, minibatch, q_data, penalty_key):
      if not self.config.penalty_on_all_critics:
        subset_key, penalty_key = jax.random.split(penalty_key)
        subset = self.sac.subsample(subset_key, self.config.sac.num_target_critics)
        critic_params = jax.tree.map(lambda p: p[subset], critic_params)
        q_data = q_data[subset]
      gaps = self.penalty_gap(critic_params, actor_params, minibatch, q_data, penalty_key)
      penalty = jnp.mean(gaps)
      return alpha * (penalty - gap), {"cql_gap": penalty}

    agent, critic_metrics = self.sac.critic_step(state.agent, batch, critic_key, regularizer)
    before = state.agent if self.config.update_order == "simultaneous" else agent
    stepped, actor_metrics = self.sac.actor_temperature_step(before, batch, actor_key)
    agent = agent.replace(
        params=agent.params.replace(actor=stepped.params.actor,
                                    temperature=stepped.params.temperature),
        actor_opt_state=stepped.actor_opt_state,
        temperature_opt_state=stepped.temperature_opt_state)

    raw_alpha, alpha_opt_state = state.raw_alpha, state.alpha_opt_state
    if self.config.autotune_alpha:
      # Raise alpha while the gap exceeds its target, lower it otherwise (reference:
      # `cql_alpha_loss_fn`, a "<=" Lagrange penalty -softplus(raw) (gap - target)).
      def alpha_loss(raw_alpha):
        return -jax.nn.softplus(raw_alpha) * (critic_metrics["cql_gap"]
                                              - self.config.target_action_gap)
      grad = jax.grad(alpha_loss)(state.raw_alpha)
      updates, alpha_opt_state = self._alpha_optimizer.update(grad, state.alpha_opt_state)
      raw_alpha = optax.apply_updates(state.raw_alpha, updates)

    values = [critic_metrics["critic_loss"], critic_metrics["grad_norm"],
              actor_metrics["actor_loss"], actor_metrics["grad_norm"], raw_alpha]
    metrics = {"critic_loss": critic_metrics["critic_loss"],
               "td_loss": critic_metrics["td_loss"], "cql_gap": critic_metrics["cql_gap"],
               "q": critic_metrics["q"], "actor_loss": actor_metrics["actor_loss"],
               "temperature": actor_metrics["temperature"], "entropy": actor_metrics["entropy"],
               "alpha": alpha,
               "finite": jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in values]))}
    return CQLState(agent=agent, raw_alpha=raw_alpha, alpha_opt_state=alpha_opt_state), metrics
