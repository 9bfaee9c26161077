"""The fused WSRL fine-tuning loop for one seed, written to be `jit(vmap(...))`-ed over seeds.

`make_online(...)` returns pure functions of one seed's `TrainState`:

- `init(key, settings, pretrained, pretrained_optimizer)`: agent from the checkpoint or from
  scratch (per-seed switches choose which parts come from the checkpoint, and whether their Adam
  states do too), empty replay buffer, a freshly reset env.
- `run(state, num_steps)`: `num_steps` environment steps in one `lax.scan`. Each step samples an
  action from the current (stochastic) policy, steps the MJX env, stores the transition (not
  that of a physics blow-up, which ends its episode: `envs.episodes`), resets finished episodes
  and, once past the update floor, runs one UTD update. The floor is the reference's
  (`finetune.py`, "no updates during warmup"): the step with index k (from 0, the transition it
  stores is the (k+1)-th) trains only if k > max(warmup_steps, batch_size), so
  with the defaults the first update comes with 5,002 transitions in the buffer, and a 0 or
  1,000-step warmup still waits for a full batch (1,026 transitions). Until then nothing is
  trained, so the collecting policy is exactly the pretrained one.
- `evaluate(actor_params, key)`: deterministic episodes (tanh of the mean), vmapped.

Nothing here touches the host; the host loop (`wsrl_mjx.finetune`) only calls these in chunks.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from envs import EnvSpec, MjxEnv, episodes
from wsrl_mjx import evaluation, jsrl, replay
from wsrl_mjx.agents import sac


@struct.dataclass
class SeedSettings:
  """Per-seed hyperparameters: they change no shapes, so every seed may have its own."""
  warmup_steps: jax.Array         # int32
  actor_learning_rate: jax.Array
  critic_learning_rate: jax.Array
  temperature_learning_rate: jax.Array
  init_actor: jax.Array           # bool: take the actor from the checkpoint
  init_critic: jax.Array          # bool: take critics and target critics from the checkpoint
  init_temperature: jax.Array     # bool: take the temperature from the checkpoint
  init_optimizer: jax.Array       # bool: those parts' Adam states too (moments and counts)


@struct.dataclass
class EpisodeTracker:
  length: jax.Array               # int32, steps into the current episode
  episode_return: jax.Array       # undiscounted env reward of the current episode so far


@struct.dataclass
class ChunkStats:
  """Sums over one `run` call; the host divides by the counts."""
  completed_episodes: jax.Array
  completed_return_sum: jax.Array
  updates: jax.Array
  critic_loss_sum: jax.Array
  actor_loss_sum: jax.Array
  q_sum: jax.Array
  temperature: jax.Array          # at the end of the chunk
  entropy_sum: jax.Array


@struct.dataclass
class TrainState:
  agent: sac.AgentState
  buffer: replay.ReplayBuffer
  env_state: object               # envs.State (brax)
  episode: EpisodeTracker
  key: jax.Array
  eval_key: jax.Array             # evaluation keys are fold_in(eval_key, env_step)
  env_step: jax.Array             # int32, environment steps taken (warmup included)
  warmup_steps: jax.Array         # int32
  diverged_at: jax.Array          # int32, env step of the first non-finite update, -1 if none
  jump_start: jsrl.JumpStart | None = None   # JSRL's guide and curriculum; None otherwise


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  """Static settings of the loop itself."""
  replay_capacity: int
  episode_length: int
  eval_episodes: int
  action_clip: float              # collected and evaluation actions are clipped to +-this
  # JSRL (`jsrl.py`): the checkpoint's actor guides an episode's first h steps. None: off.
  jump_start: jsrl.Curriculum | None = None


def _where(condition, on_true, on_false):
  return jax.tree.map(lambda a, b: jnp.where(condition, a, b), on_true, on_false)


@dataclasses.dataclass(frozen=True)
class Online:
  """The pure functions of the loop for one env and agent configuration."""
  env: MjxEnv
  agent: sac.SAC
  loop: LoopConfig

  def init(self, key: jax.Array, settings: SeedSettings, pretrained: sac.AgentParams | None,
           pretrained_optimizer: dict | None = None) -> TrainState:
    """One seed's starting state. `pretrained_optimizer` ({"actor", "critic", "temperature"}
    Adam states, `sac.optimizer_states`) continues the checkpoint's moments and counts at this
    run's learning rates, for each part that comes from the checkpoint, where
    `settings.init_optimizer` is set; every other part starts a fresh Adam."""
    agent_key, env_key, key, eval_key = jax.random.split(key, 4)
    fresh = self.agent.init_params(agent_key)
    if pretrained is None:
      params = fresh
    else:
      params = sac.AgentParams(
          actor=_where(settings.init_actor, pretrained.actor, fresh.actor),
          critic=_where(settings.init_critic, pretrained.critic, fresh.critic),
          target_critic=_where(settings.init_critic, pretrained.target_critic,
                               fresh.target_critic),
          temperature=jnp.where(settings.init_temperature, pretrained.temperature,
                                fresh.temperature))
    rates = sac.LearningRates(actor=settings.actor_learning_rate,
                              critic=settings.critic_learning_rate,
                              temperature=settings.temperature_learning_rate)
    agent = self.agent.init_state(params, rates)
    if pretrained is not None and pretrained_optimizer is not None:
      switches = {"actor": settings.init_actor, "critic": settings.init_critic,
                  "temperature": settings.init_temperature}
      restored = {}
      for name, use in switches.items():
        field = f"{name}_opt_state"
        loaded = sac.with_learning_rate(pretrained_optimizer[name], getattr(rates, name))
        restored[field] = _where(use & settings.init_optimizer, loaded, getattr(agent, field))
      agent = agent.replace(**restored)
    config = self.agent.config
    zero = jnp.zeros((), jnp.int32)
    jump_start = None
    if self.loop.jump_start is not None:
      if pretrained is None:
        raise ValueError("JSRL needs a pretrained actor as its guide.")
      jump_start = jsrl.start(pretrained.actor)
    return TrainState(
        agent=agent,
        buffer=replay.create(self.loop.replay_capacity, config.observation_size,
                             config.action_size),
        env_state=self.env.reset(env_key),
        episode=EpisodeTracker(length=zero, episode_return=jnp.zeros((), jnp.float32)),
        key=key, eval_key=eval_key, env_step=zero,
        warmup_steps=jnp.asarray(settings.warmup_steps, jnp.int32),
        diverged_at=jnp.full((), -1, jnp.int32), jump_start=jump_start)

  def _clip(self, action):
    return jnp.clip(action, -self.loop.action_clip, self.loop.action_clip)

  def step(self, state: TrainState, stats: ChunkStats):
    """One environment step and, after warmup, one UTD update."""
    key, action_key, reset_key, sample_key, update_key = jax.random.split(state.key, 5)
    params = state.agent.params
    observation = state.env_state.obs
    if state.jump_start is None:
      action = self.agent.sample_action(params.actor, observation, action_key)
    else:   # JSRL: the guide's sample on the episode's first h steps
      action = jsrl.collect_action(self.agent, state.jump_start, params.actor, observation,
                                   state.episode.length, action_key, self.loop.jump_start)
    action = self._clip(action)
    following, result = episodes.step(
        self.env, episodes.Episode(state=state.env_state, length=state.episode.length), action,
        self.loop.episode_length, reset_key)
    # A physics blow-up's transition is not stored (`episodes.Step.valid`); its episode ends.
    buffer = replay.insert(state.buffer, replay.Transition(
        observation=observation, action=action, reward=result.state.reward,
        next_observation=result.state.obs, terminal=result.terminal.astype(jnp.float32)),
        keep=result.valid)

    done = result.done
    episode_return = state.episode.episode_return + jnp.where(result.valid, result.state.reward,
                                                              0.0)
    env_state = following.state
    episode = EpisodeTracker(length=following.length,
                             episode_return=jnp.where(done, 0.0, episode_return))
    env_step = state.env_step + 1

    floor = jnp.maximum(state.warmup_steps, self.agent.config.batch_size)
    train = (state.env_step > floor) & (state.diverged_at < 0)
    batch = replay.sample(buffer, sample_key, self.agent.config.batch_size)

    def update(agent):
      return self.agent.update(agent, batch, update_key)

    def skip(agent):
      _, metrics = jax.eval_shape(update, agent)
      return agent, jax.tree.map(lambda m: jnp.zeros(m.shape, m.dtype), metrics)

    new_agent, metrics = jax.lax.cond(train, update, skip, state.agent)
    accepted = train & metrics["finite"]
    agent = _where(accepted, new_agent, state.agent)
    diverged_at = jnp.where(train & ~metrics["finite"], env_step, state.diverged_at)

    count = accepted.astype(jnp.float32)
    stats = ChunkStats(
        completed_episodes=stats.completed_episodes + done,
        completed_return_sum=stats.completed_return_sum + jnp.where(done, episode_return, 0.0),
        updates=stats.updates + accepted,
        critic_loss_sum=stats.critic_loss_sum + count * metrics["critic_loss"],
        actor_loss_sum=stats.actor_loss_sum + count * metrics["actor_loss"],
        q_sum=stats.q_sum + count * metrics["q"],
        temperature=self.agent.temperature(agent.params),
        entropy_sum=stats.entropy_sum + count * metrics["entropy"])
    state = state.replace(agent=agent, buffer=buffer, env_state=env_state, episode=episode,
                          key=key, env_step=env_step, diverged_at=diverged_at)
    return state, stats

  def run(self, state: TrainState, num_steps: int):
    """`num_steps` environment steps (static) -> (state, ChunkStats)."""
    zero_int = jnp.zeros((), jnp.int32)
    zero = jnp.zeros((), jnp.float32)
    stats = ChunkStats(completed_episodes=zero_int, completed_return_sum=zero,
                       updates=zero_int, critic_loss_sum=zero, actor_loss_sum=zero, q_sum=zero,
                       temperature=self.agent.temperature(state.agent.params), entropy_sum=zero)

    def body(carry, _):
      return self.step(*carry), None

    (state, stats), _ = jax.lax.scan(body, (state, stats), None, length=num_steps)
    return state, stats

  def evaluate(self, actor_params, key: jax.Array) -> evaluation.EpisodeResults:
    """`eval_episodes` deterministic episodes (tanh of the mean) -> [eval_episodes] each.
    `actor_params` may be a `jsrl.GuidedPolicy`: the guide acts on each episode's first h steps."""
    guided = isinstance(actor_params, jsrl.GuidedPolicy)
    act = jsrl.deterministic_act(self.agent) if guided else self.agent.deterministic_action
    return evaluation.evaluate(self.env, act, actor_params, key, self.loop.eval_episodes,
                               self.loop.episode_length, self.loop.action_clip, with_step=guided)


def make_online(env: MjxEnv, env_spec: EnvSpec, agent_config: sac.SACConfig,
                loop_config: LoopConfig) -> Online:
  if env.observation_size != agent_config.observation_size or \
     env.action_size != agent_config.action_size:
    raise ValueError(
        f"{env_spec.name} has observations of {env.observation_size} and actions of "
        f"{env.action_size} dimensions, the agent expects {agent_config.observation_size} and "
        f"{agent_config.action_size}.")
  return Online(env=env, agent=sac.SAC(agent_config), loop=loop_config)
