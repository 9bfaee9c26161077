"""WSRL's online learner: SAC with a 10-critic LayerNorm ensemble and a high update-to-data ratio.

One `update` call is what the reference (`zhouzypaul/wsrl`, `wsrl/agents/sac.py`,
`update_high_utd`) does per environment step: a batch of `utd x minibatch` transitions (4 x 256)
gives `utd` critic steps on consecutive minibatches, each followed by a Polyak update of the
target critics, then one actor step and one temperature step on the whole batch. The TD target is
the minimum over 2 target critics drawn at random (with replacement, as the reference's
`randint`), optionally the maximum of that over `num_next_actions` sampled next actions (the
max-target backup AntMaze uses), with no entropy bonus by default; the actor maximises the
minimum over all critics. The temperature's entropy estimate comes from fresh samples at s', as
the reference's temperature loss draws them.

Each network has its own Adam. With `step_all_optimizers` (the default) every call of the
reference's update applies every network's Adam, as `wsrl/common/common.py`
(`JaxRLTrainState.apply_gradients`) does: a network that a call does not train gets a zero
gradient, and Adam still moves it on its old moments. So per environment step the actor and the
temperature take `utd` such momentum-only steps and one real one, and the critics take `utd`
real steps and one momentum-only step (with no target update after it). Without it, a step only
touches the optimiser of the network it trains. Learning rates sit in the optimiser state
(`optax.inject_hyperparams`), which lets them differ per seed inside one vmapped program.
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
from wsrl_mjx.errors import ConfigError
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
  # The init scale of the actor's and critics' last hidden layer (the reference's
  # `kernel_scale_final`); None: that layer like the others (the reference's kitchen).
  last_hidden_init_scale: float | None = 1e-2
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
  # Faithfulness settings; the defaults are the reference's (README, "Faithfulness notes").
  num_next_actions: int = 1                # > 1: max-target backup over that many a' ~ pi(s')
  subsample_with_replacement: bool = True  # the target critics' draw (reference: randint)
  step_all_optimizers: bool = True         # every UTD call steps every Adam (reference)
  temperature_entropy: str = "next_observations"  # or "actor_samples"
  # SO2's perturbed value update (`perturb_target_actions`): Gaussian noise of this std, clipped
  # to +-target_action_noise_clip, on the TD target's next actions. 0: off (WSRL, the default).
  target_action_noise: float = 0.0
  target_action_noise_clip: float = 0.0

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


TEMPERATURE_ENTROPY = ("next_observations", "actor_samples")


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


def _adam_zero_step(opt_state, params):
  """Adam applied to a zero gradient: the parameters move on the moments alone."""
  return _adam_step(jax.tree.map(jnp.zeros_like, params), opt_state, params)


def inverse_softplus(x: float) -> float:
  return math.log(math.expm1(x))


def optimizer_states(agent: AgentState) -> dict:
  """The Adam states a checkpoint hands from one phase to the next, by network."""
  return {"actor": agent.actor_opt_state, "critic": agent.critic_opt_state,
          "temperature": agent.temperature_opt_state}


def with_learning_rate(opt_state, learning_rate):
  """`opt_state` (an `inject_hyperparams` Adam state) with its learning rate replaced: restored
  moments continue at the learning rates of the phase that restores them."""
  old = opt_state.hyperparams["learning_rate"]
  rate = jnp.broadcast_to(jnp.asarray(learning_rate, old.dtype), old.shape)
  return opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": rate})


def perturb_target_actions(key: jax.Array, action: jax.Array, noise_std: float,
                           noise_clip: float) -> jax.Array:
  """SO2's perturbed value update: the TD target's next actions a' (tanh-squashed, [..., A] in
  [-1, 1]) -> clip(a' + clip(noise_std * eps, -noise_clip, noise_clip), -1, 1), eps ~ N(0, I).

  TD3's target policy smoothing, applied by SO2 (Zhang et al. 2024, "A Perspective of Q-value
  Estimation on Offline-to-Online Reinforcement Learning", arXiv 2312.07685) to SAC's sampled
  next actions: its code (github opendilab/SO2, commit 36f8274, `SO2/ding/policy/edac.py`,
  `_forward_learn`) clamps the Gaussian noise to its `noise_range`, adds it to tanh(sample) and
  clamps the sum to the action range [-1, 1]. The log-density of a' is left as it was (SO2 keeps
  the unperturbed sample's; it matters only with `backup_entropy`).
  """
  noise = jnp.clip(noise_std * jax.random.normal(key, action.shape, action.dtype),
                   -noise_clip, noise_clip)
  return jnp.clip(action + noise, -1.0, 1.0)


class SAC:
  """The networks and pure update functions for one `SACConfig`."""

  def __init__(self, config: SACConfig):
    if config.temperature_entropy not in TEMPERATURE_ENTROPY:
      raise ConfigError(f"config.temperature_entropy={config.temperature_entropy!r}; choose one "
                        f"of {', '.join(TEMPERATURE_ENTROPY)}.")
    if config.num_next_actions < 1:
      raise ConfigError(f"config.num_next_actions={config.num_next_actions} must be at least 1 "
                        "(1: no max-target backup).")
    for name in ("target_action_noise", "target_action_noise_clip"):
      value = getattr(config, name)
      if not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"config.{name}={value!r} must be a finite number >= 0 (0: off).")
    if config.target_action_noise > 0 and config.target_action_noise_clip <= 0:
      raise ConfigError("config.target_action_noise_clip must be > 0 where "
                        f"config.target_action_noise ({config.target_action_noise}) is on: the "
                        "noise is clipped to +-target_action_noise_clip (SO2: 0.6).")
    self.config = config
    dtype, precision = networks.PRECISIONS[config.matmul_precision]
    self.actor = networks.GaussianActor(
        config.action_size, tuple(config.actor_hidden_sizes), config.state_dependent_std,
        config.layer_norm, last_hidden_init_scale=config.last_hidden_init_scale, dtype=dtype,
        precision=precision)
    self.critic = networks.Critic(tuple(config.critic_hidden_sizes), config.layer_norm,
                                  last_hidden_init_scale=config.last_hidden_init_scale,
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
        temperature=jnp.asarray(inverse_softplus(self.config.initial_temperature), jnp.float32))

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

  def subsample(self, key: jax.Array, size: int) -> jax.Array:
    """`size` critic indices drawn at random, with or without replacement (a setting) -> [size].

    The reference draws with `jax.random.randint`, so the same critic can come twice
    (probability 0.1 for 2 of 10); the target is then that one critic's value.
    """
    if self.config.subsample_with_replacement:
      return jax.random.randint(key, (size,), 0, self.config.num_critics)
    return jax.random.choice(key, self.config.num_critics, (size,), replace=False)

  def sample_next_actions(self, actor_params, next_observation, key):
    """`num_next_actions` actions per s' from the current actor -> ([n, B, A], [n, B]), or
    ([B, A], [B]) when n is 1."""
    mean, std = self.actor.apply(actor_params, next_observation)
    n = self.config.num_next_actions
    if n > 1:
      mean, std = (jnp.broadcast_to(x, (n, *x.shape)) for x in (mean, std))
    return tanh_gaussian.sample_and_log_prob(key, mean, std)

  def td_target(self, params: AgentParams, batch: Transition, key: jax.Array) -> jax.Array:
    """r' + gamma (1 - terminal) min over 2 random target critics of Q(s', a' ~ pi(s')) -> [B].

    With `num_next_actions` n > 1 (the max-target backup: AntMaze fine-tuning, CQL
    pretraining) n actions are drawn per s' and the largest of their values (each the min over
    the same drawn critics) is backed up (reference: `_process_target_next_qs`). With
    `target_action_noise` > 0 the next actions are perturbed first (SO2,
    `perturb_target_actions`); off, the random draws are exactly WSRL's.
    """
    action_key, subset_key = jax.random.split(key)
    next_action, next_log_prob = self.sample_next_actions(params.actor, batch.next_observation,
                                                          action_key)
    if self.config.target_action_noise > 0:
      next_action = perturb_target_actions(
          jax.random.fold_in(action_key, 1), next_action, self.config.target_action_noise,
          self.config.target_action_noise_clip)
    subset = self.subsample(subset_key, self.config.num_target_critics)
    target_critics = jax.tree.map(lambda p: p[subset], params.target_critic)
    next_observation = jnp.broadcast_to(batch.next_observation,
                                        (*next_action.shape[:-1],
                                         batch.next_observation.shape[-1]))
    next_q = networks.apply_ensemble(self.critic, target_critics, next_observation,
                                     next_action).min(axis=0)
    if self.config.backup_entropy:
      next_q = next_q - self.temperature(params) * next_log_prob
    if self.config.num_next_actions > 1:
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
                  regularizer=None):
    """One Adam step of the critics on the TD loss, then the Polyak update of their targets.

    `regularizer(critic_params, minibatch, q, key) -> (loss, metrics)` adds a term to the loss
    (CQL's conservative penalty); `q` [critics, B] are the critics' values of the batch actions.
    """
    params = agent.params
    with jax.named_scope("td_target"):
      target = jax.lax.stop_gradient(self.td_target(params, minibatch, key))

    def loss_fn(critic_params):
      td_loss, q = self.critic_loss(critic_params, target, minibatch)
      if regularizer is None:
        return td_loss, (q, {})
      extra, metrics = regularizer(critic_params, minibatch, q, jax.random.fold_in(key, 1))
      return td_loss + extra, (q, dict(metrics, td_loss=td_loss))

    with jax.named_scope("critic_gradient"):
      (loss, (q, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params.critic)
    with jax.named_scope("critic_adam"):
      critic, opt_state = _adam_step(grads, agent.critic_opt_state, params.critic)
    with jax.named_scope("target_update"):
      target_critic = optax.incremental_update(critic, params.target_critic, self.config.tau)
    agent = agent.replace(params=params.replace(critic=critic, target_critic=target_critic),
                          critic_opt_state=opt_state)
    return agent, {"critic_loss": loss, "q": jnp.mean(q), "grad_norm": optax.tree.norm(grads),
                   **metrics}

  def entropy_estimate(self, actor_params, batch: Transition, actor_log_prob, key):
    """The temperature loss's entropy estimate, -mean log pi (a scalar, no gradient).

    "next_observations" (the reference's `temperature_loss_fn`): fresh samples at s',
    `num_next_actions` per state. "actor_samples": the actor step's own samples at s (cheaper).
    """
    if self.config.temperature_entropy == "actor_samples":
      return -jnp.mean(jax.lax.stop_gradient(actor_log_prob))
    _, log_prob = self.sample_next_actions(actor_params, batch.next_observation, key)
    return -jnp.mean(jax.lax.stop_gradient(log_prob))

  def actor_temperature_step(self, agent: AgentState, batch: Transition, key: jax.Array):
    """One Adam step of the actor and one of the temperature, both from the parameters before
    this step (the reference computes both losses from the same parameters)."""
    params = agent.params
    actor_key, entropy_key = jax.random.split(key)
    temperature = self.temperature(params)
    (actor_loss, log_prob), actor_grads = jax.value_and_grad(self.actor_loss, has_aux=True)(
        params.actor, params.critic, temperature, batch.observation, actor_key)
    actor, actor_opt_state = _adam_step(actor_grads, agent.actor_opt_state, params.actor)
    entropy = self.entropy_estimate(params.actor, batch, log_prob, entropy_key)
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

  def _momentum_step(self, agent: AgentState, names: tuple[str, ...]) -> AgentState:
    """Adam on a zero gradient for the named networks (`step_all_optimizers`): what the
    reference's update does to the networks a call does not train. No target update follows."""
    params, changes, new_params = agent.params, {}, {}
    for name in names:
      new_params[name], changes[f"{name}_opt_state"] = _adam_zero_step(
          getattr(agent, f"{name}_opt_state"), getattr(params, name))
    return agent.replace(params=params.replace(**new_params), **changes)

  def update(self, agent: AgentState, batch: Transition, key: jax.Array):
    """One UTD update on a [utd * minibatch] batch -> (agent, metrics).

    `metrics["finite"]` is false when any loss or gradient was not finite; the caller decides
    what to do with such an update (the online loop discards it and flags the seed).
    """
    utd, minibatch = self.config.utd, self.config.minibatch_size
    critic_keys = jax.random.split(key, utd + 1)
    minibatches = jax.tree.map(lambda x: x.reshape(utd, minibatch, *x.shape[1:]), batch)
    step_all = self.config.step_all_optimizers

    def one_critic_step(agent, inputs):
      minibatch_data, step_key = inputs
      with jax.named_scope("critic_step"):
        agent, metrics = self.critic_step(agent, minibatch_data, step_key)
      if step_all:
        with jax.named_scope("momentum_steps"):
          agent = self._momentum_step(agent, ("actor", "temperature"))
      return agent, metrics

    agent, critic_metrics = jax.lax.scan(one_critic_step, agent, (minibatches, critic_keys[:utd]),
                                         unroll=utd if self.config.unroll_critic_steps else 1)
    with jax.named_scope("actor_temperature_step"):
      agent, actor_metrics = self.actor_temperature_step(agent, batch, critic_keys[utd])
    if step_all:
      with jax.named_scope("momentum_steps"):
        agent = self._momentum_step(agent, ("critic",))
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
