"""Online learners: what the fine-tuning loop (`online.Online`) acts with and updates.

One loop serves every arm (`wsrl_mjx/methods.py`); the arm chooses its learner:

- `SACLearner`: WSRL's SAC (`agents/sac.py`) for wsrl, sac, rlpd (and jsrl, so2). Its state is
  a `sac.AgentState`; the checkpoint's parts come in by WSRL's per-seed switches.
- `CQLLearner`: CQL or Cal-QL (`agents/cql.py`) continued online with its own loss, as the
  reference continues its agent after `num_offline_steps` (`finetune.py:287-295`: the same
  agent, `use_cql_loss` on, alpha `online_cql_alpha`). Its state, the whole `cql.CQLState`
  (networks, Adam states, Lagrange multiplier and its Adam), comes from the pretraining.
- `IQLLearner`: IQL (`agents/iql.py`) continued online with its own losses.

Each has `init(key, settings, pretrained, pretrained_optimizer) -> state`, `sample_action`,
`actor_params`, `deterministic_action`, `update(state, batch, key) -> (state, metrics)` with
metrics `critic_loss`, `actor_loss`, `q`, `entropy` and `finite`, `temperature`,
`handoff_params` (the checkpoint's `agent` item) and `handoff_optimizer` (its `optimizer` item,
or None), plus `batch_size` and `uses_mc_returns` (Cal-QL: the replay buffer keeps Monte-Carlo
returns of online episodes).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from wsrl_mjx import networks
from wsrl_mjx.agents import cql, iql, sac


def tree_where(condition, on_true, on_false):
  """Leaf by leaf, `on_true` where `condition` (a scalar) holds, else `on_false`."""
  return jax.tree.map(lambda a, b: jnp.where(condition, a, b), on_true, on_false)


def _rates(settings) -> sac.LearningRates:
  return sac.LearningRates(actor=settings.actor_learning_rate,
                           critic=settings.critic_learning_rate,
                           temperature=settings.temperature_learning_rate)


def _at_rates(agent: sac.AgentState, rates: sac.LearningRates) -> sac.AgentState:
  """`agent` with every Adam state at `rates` (restored moments continue at this run's)."""
  return agent.replace(**{
      f"{name}_opt_state": sac.with_learning_rate(getattr(agent, f"{name}_opt_state"),
                                                  getattr(rates, name))
      for name in ("actor", "critic", "temperature")})


@dataclasses.dataclass(frozen=True)
class SACLearner:
  agent: sac.SAC
  uses_mc_returns = False

  @property
  def batch_size(self) -> int:
    return self.agent.config.batch_size

  def init(self, key, settings, pretrained: sac.AgentParams | None,
           pretrained_optimizer: dict | None = None) -> sac.AgentState:
    """The agent from the checkpoint or from scratch: per-seed switches choose which parts come
    from the checkpoint; `pretrained_optimizer` ({"actor", "critic", "temperature"} Adam states,
    `sac.optimizer_states`) continues the checkpoint's moments and counts at this run's learning
    rates, for each part that comes from the checkpoint, where `settings.init_optimizer` is set;
    every other part starts a fresh Adam."""
    fresh = self.agent.init_params(key)
    if pretrained is None:
      params = fresh
    else:
      params = sac.AgentParams(
          actor=tree_where(settings.init_actor, pretrained.actor, fresh.actor),
          critic=tree_where(settings.init_critic, pretrained.critic, fresh.critic),
          target_critic=tree_where(settings.init_critic, pretrained.target_critic,
                               fresh.target_critic),
          temperature=jnp.where(settings.init_temperature, pretrained.temperature,
                                fresh.temperature))
    rates = _rates(settings)
    agent = self.agent.init_state(params, rates)
    if pretrained is not None and pretrained_optimizer is not None:
      switches = {"actor": settings.init_actor, "critic": settings.init_critic,
                  "temperature": settings.init_temperature}
      restored = {}
      for name, use in switches.items():
        field = f"{name}_opt_state"
        loaded = sac.with_learning_rate(pretrained_optimizer[name], getattr(rates, name))
        restored[field] = tree_where(use & settings.init_optimizer, loaded, getattr(agent, field))
      agent = agent.replace(**restored)
    return agent

  def sample_action(self, state: sac.AgentState, observation, key):
    return self.agent.sample_action(state.params.actor, observation, key)

  def actor_params(self, state: sac.AgentState):
    return state.params.actor

  def deterministic_action(self, actor_params, observation):
    return self.agent.deterministic_action(actor_params, observation)

  def update(self, state: sac.AgentState, batch, key):
    return self.agent.update(state, batch, key)

  def temperature(self, state: sac.AgentState):
    return self.agent.temperature(state.params)

  def handoff_params(self, state: sac.AgentState) -> sac.AgentParams:
    return state.params

  def handoff_optimizer(self, state: sac.AgentState) -> dict:
    return sac.optimizer_states(state)


@dataclasses.dataclass(frozen=True)
class CQLLearner:
  """CQL / Cal-QL online: `cql.CQL.update` per environment step (one critic step with the
  penalty, one actor and temperature step, one alpha step where autotuned), on batches of
  `batch_size` (the reference's baseline scripts: utd 1, batch 256)."""
  learner: cql.CQL

  @property
  def agent(self) -> sac.SAC:
    return self.learner.sac

  @property
  def uses_mc_returns(self) -> bool:
    return self.learner.config.calql

  @property
  def batch_size(self) -> int:
    return self.learner.config.sac.batch_size

  def init(self, key, settings, pretrained: cql.CQLState | None,
           pretrained_optimizer=None) -> cql.CQLState:
    """The pretraining's whole learner state (or, for shapes only, a fresh one), its SAC Adam
    states at this run's learning rates."""
    del pretrained_optimizer     # the learner state holds its Adam states
    state = self.learner.init(key) if pretrained is None else pretrained
    return state.replace(agent=_at_rates(state.agent, _rates(settings)))

  def sample_action(self, state: cql.CQLState, observation, key):
    return self.agent.sample_action(state.agent.params.actor, observation, key)

  def actor_params(self, state: cql.CQLState):
    return state.agent.params.actor

  def deterministic_action(self, actor_params, observation):
    return self.agent.deterministic_action(actor_params, observation)

  def update(self, state: cql.CQLState, batch, key):
    return self.learner.update(state, batch, key)

  def temperature(self, state: cql.CQLState):
    return self.agent.temperature(state.agent.params)

  def handoff_params(self, state: cql.CQLState) -> sac.AgentParams:
    return self.learner.handoff_params(state)

  def handoff_optimizer(self, state: cql.CQLState) -> dict:
    return self.learner.handoff_optimizer(state)


@dataclasses.dataclass(frozen=True)
class IQLLearner:
  """IQL online: `iql.IQL.update` per environment step on batches of `batch_size`. It acts with
  samples of its (unsquashed) Gaussian actor, dropout off, which the loop clips to the action
  bounds (the reference clips in its env wrapper). No temperature (NaN in the logs)."""
  learner: iql.IQL
  batch_size: int
  agent = None            # no SAC networks
  uses_mc_returns = False

  def init(self, key, settings, pretrained: iql.IQLState | None,
           pretrained_optimizer=None) -> iql.IQLState:
    del settings, pretrained_optimizer   # one Adam per network at iql_learning_rate
    return self.learner.init(key) if pretrained is None else pretrained

  def sample_action(self, state: iql.IQLState, observation, key):
    mean, std = self.learner.actor.apply(state.params.actor, observation)
    return mean + std * jax.random.normal(key, mean.shape, mean.dtype)

  def actor_params(self, state: iql.IQLState):
    return state.params.actor

  def deterministic_action(self, actor_params, observation):
    return self.learner.deterministic_action(actor_params, observation)

  def update(self, state: iql.IQLState, batch, key):
    new, metrics = self.learner.update(state, batch, key)
    q = networks.apply_ensemble(self.learner.critic, state.params.critic, batch.observation,
                                batch.action)
    _, std = self.learner.actor.apply(state.params.actor, batch.observation)
    # The Gaussian's entropy at the batch's states (IQL's actor has no tanh).
    entropy = jnp.mean(jnp.sum(jnp.log(std) + 0.5 * math.log(2 * math.pi * math.e), axis=-1))
    return new, dict(metrics, q=jnp.mean(q), entropy=entropy)

  def temperature(self, state: iql.IQLState):
    del state
    return jnp.full((), jnp.nan, jnp.float32)

  def handoff_params(self, state: iql.IQLState) -> iql.IQLParams:
    return self.learner.handoff_params(state)

  def handoff_optimizer(self, state: iql.IQLState):
    del state
    return None
