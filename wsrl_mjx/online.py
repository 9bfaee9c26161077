"""The fused fine-tuning loop for one seed, written to be `jit(vmap(...))`-ed over seeds.

`make_online(...)` returns pure functions of one seed's `TrainState`, for any arm
(`wsrl_mjx/methods.py`): its learner (`wsrl_mjx/learners.py`: WSRL's SAC, or an offline
learner continued online) and its use of offline data (`LoopConfig`) are static settings.

- `init(key, settings, pretrained, pretrained_optimizer)`: the learner from the checkpoint or
  from scratch (for SAC, per-seed switches choose which parts come from the checkpoint, and
  whether their Adam states do too), empty replay buffer, a freshly reset env.
  `append_offline(state, dataset)` then writes an offline dataset into the buffer (the
  reference's `append` sampling).
- `run(state, [dataset,] num_steps)`: `num_steps` environment steps in one `lax.scan`. Each
  step samples an action from the current (stochastic) policy, steps the MJX env, stores the
  transition (not that of a physics blow-up, which ends its episode: `envs.episodes`), resets
  finished episodes and, once past the update floor, runs one update. `dataset` (a full
  `replay.ReplayBuffer` shared by every seed) is the offline data of `mixed` sampling: each
  batch then takes `offline_rows` rows from it and the rest from the replay buffer
  (`sample_batch`). The floor is the reference's (`finetune.py:111-115,338-342`, "no updates
  during warmup"): the step with index k (from 0, the transition it stores is the (k+1)-th)
  trains only if k > max(warmup_steps, update_floor), where the update floor is the online
  part of a batch (`batch_size` without offline data) and, for Cal-QL, at least the episode
  length. So with WSRL's defaults the first update comes with 5,002 transitions in the
  buffer, and a 0 or 1,000-step warmup still waits for a full batch (1,026 transitions).
  Until then nothing is trained, so the collecting policy is exactly the pretrained one.
- `evaluate(actor_params, key)`: deterministic episodes (tanh of the mean), vmapped.

Cal-QL (`learner.uses_mc_returns`) keeps a Monte-Carlo return in every row: when an episode
ends, its rows get their discounted return-to-go (`replay.write_episode_returns`), and only
rows of finished episodes are sampled, as the reference's `ReplayBufferMC`
(`wsrl/data/replay_buffer.py:127-207`) does.

Nothing here touches the host; the host loop (`wsrl_mjx.finetune`) only calls these in chunks.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from envs import EnvSpec, MjxEnv, episodes
from wsrl_mjx import batched, evaluation, jsrl, learners, replay
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
  stored: jax.Array               # int32, rows of the current episode in the replay buffer


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
  agent: Any                      # the learner's state (sac.AgentState, cql.CQLState, ...)
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
  # Offline data (`mixed` sampling): rows of each batch drawn from the dataset, the reference's
  # int(batch_size * offline_data_ratio) (finetune.py:347); 0: none.
  offline_rows: int = 0
  # True: offline and online rows alternate (RLPD's own `combine`), so every UTD minibatch is
  # half offline; False: the reference's concatenation (online rows first). Equal halves only.
  interleave_offline: bool = False
  # Updates wait while the step index k <= max(warmup, update_floor); None: the batch size.
  update_floor: int | None = None
  # Cal-QL's Monte-Carlo returns of online episodes: the env's reward in a trajectory of a
  # sparse task that never succeeds (raw units, before scale and bias), whose rows all get
  # r / (1 - discount); None: dense rewards.
  negative_sparse_reward: float | None = None
  # JSRL (`jsrl.py`): the checkpoint's actor guides an episode's first h steps. None: off.
  jump_start: jsrl.Curriculum | None = None
  # The name of the vmapped seed axis (`host_loop.SEED_AXIS`: one device's seeds), or None.
  # Named, the step skips the work none of those seeds needs: the update while none trains
  # (warmup), the env reset while no episode ended (`any_seed`). None: both run on every step
  # and are selected per seed, as any per-seed branch is under `vmap`. Every seed's numbers are
  # the same either way (to float rounding: the two programs fuse differently).
  seed_axis: str | None = None


_where = learners.tree_where


@dataclasses.dataclass(frozen=True)
class Online:
  """The pure functions of the loop for one env, learner and loop configuration.

  `agent` is the SAC whose networks the learner uses (None for IQL); `learner` defaults to
  WSRL's SAC on it (`learners.SACLearner`)."""
  env: MjxEnv
  agent: sac.SAC | None
  loop: LoopConfig
  learner: Any = None

  def __post_init__(self):
    if self.learner is None:
      object.__setattr__(self, "learner", learners.SACLearner(self.agent))

  def init(self, key: jax.Array, settings: SeedSettings, pretrained=None,
           pretrained_optimizer: dict | None = None) -> TrainState:
    """One seed's starting state: the learner's (`learners`; for SAC, `pretrained` is an
    `AgentParams` and `pretrained_optimizer` its Adam states, for the offline learners their
    whole pretrained state), an empty replay buffer, a freshly reset env."""
    agent_key, env_key, key, eval_key = jax.random.split(key, 4)
    agent = self.learner.init(agent_key, settings, pretrained, pretrained_optimizer)
    zero = jnp.zeros((), jnp.int32)
    jump_start = None
    if self.loop.jump_start is not None:   # JSRL's guide: the checkpoint's actor, as it is
      # (without a checkpoint, which `configs.validate` refuses for JSRL: the shapes, for a
      # restore target)
      jump_start = jsrl.start(self.learner.actor_params(agent) if pretrained is None
                              else pretrained.actor)
    return TrainState(
        agent=agent,
        buffer=replay.create(self.loop.replay_capacity, self.env.observation_size,
                             self.env.action_size, mc_return=self.learner.uses_mc_returns),
        env_state=self.env.reset(env_key),
        episode=EpisodeTracker(length=zero, episode_return=jnp.zeros((), jnp.float32),
                               stored=zero),
        key=key, eval_key=eval_key, env_step=zero,
        warmup_steps=jnp.asarray(settings.warmup_steps, jnp.int32),
        diverged_at=jnp.full((), -1, jnp.int32), jump_start=jump_start)

  def append_offline(self, state: TrainState, dataset: replay.ReplayBuffer) -> TrainState:
    """`state` with the whole `dataset` written into its (empty) replay buffer, as the
    reference's `append` sampling does before the first online step (`finetune.py:280-285`)."""
    return state.replace(buffer=replay.extend(state.buffer, dataset.data))

  def update_floor(self) -> int:
    return self.learner.batch_size if self.loop.update_floor is None else self.loop.update_floor

  def sample_batch(self, buffer: replay.ReplayBuffer, dataset: replay.ReplayBuffer | None,
                   key: jax.Array, online_rows: jax.Array) -> replay.Transition:
    """A training batch: `batch_size - offline_rows` rows from the first `online_rows` rows of
    the replay buffer, then `offline_rows` from `dataset` (the reference's `mixed` sampling
    concatenates online then offline rows, finetune.py:345-354; without offline rows, the
    buffer alone). With `interleave_offline` the rows alternate, online first."""
    size = self.learner.batch_size
    if not self.loop.offline_rows:
      return replay.sample(buffer, key, size, online_rows)
    online_key, offline_key = jax.random.split(key)
    online = replay.sample(buffer, online_key, size - self.loop.offline_rows, online_rows)
    offline = replay.sample(dataset, offline_key, self.loop.offline_rows)
    if self.loop.interleave_offline:
      return jax.tree.map(lambda a, b: jnp.stack([a, b], axis=1).reshape(-1, *a.shape[1:]),
                          online, offline)
    return jax.tree.map(lambda a, b: jnp.concatenate([a, b]), online, offline)

  def any_seed(self, flag: jax.Array) -> jax.Array:
    """bool [] of one seed -> whether it holds for any seed of the vmapped batch (a `pmax` over
    `seed_axis`: unbatched, so a `lax.cond` on it stays a branch under `vmap`; the seed
    programs map that axis per device, so it reduces over one device's seeds and needs no
    collective). Without `seed_axis`: `flag` itself."""
    if self.loop.seed_axis is None:
      return flag
    return jax.lax.pmax(flag.astype(jnp.int32), self.loop.seed_axis) > 0

  def _clip(self, action):
    return jnp.clip(action, -self.loop.action_clip, self.loop.action_clip)

  def step(self, state: TrainState, stats: ChunkStats, dataset=None):
    """One environment step and, after warmup, one update."""
    key, action_key, reset_key, sample_key, update_key = jax.random.split(state.key, 5)
    observation = state.env_state.obs
    with jax.named_scope("act"):
      if state.jump_start is None:
        action = self.learner.sample_action(state.agent, observation, action_key)
      else:   # JSRL: the guide's sample on the episode's first h steps (`jsrl.py`)
        action = jsrl.collect_action(self.agent, state.jump_start,
                                     self.learner.actor_params(state.agent), observation,
                                     state.episode.length, action_key, self.loop.jump_start)
      action = self._clip(action)
    with jax.named_scope("env_step"):
      following, result = episodes.step(
          self.env, episodes.Episode(state=state.env_state, length=state.episode.length),
          action, self.loop.episode_length, reset_key,
          any_in_batch=None if self.loop.seed_axis is None else self.any_seed)
    # A physics blow-up's transition is not stored (`episodes.Step.valid`); its episode ends.
    transition = replay.Transition(
        observation=observation, action=action, reward=result.state.reward,
        next_observation=result.state.obs, terminal=result.terminal.astype(jnp.float32))
    if self.learner.uses_mc_returns:
      transition = transition.replace(mc_return=jnp.zeros((), jnp.float32))
    with jax.named_scope("buffer_insert"):
      buffer = replay.insert(state.buffer, transition, keep=result.valid)

    done = result.done
    stored = state.episode.stored + result.valid.astype(jnp.int32)
    online_rows = buffer.size
    if self.learner.uses_mc_returns:
      config = self.agent.config
      with jax.named_scope("mc_returns"):
        buffer = replay.write_episode_returns(
            buffer, jnp.where(done, stored, 0), min(self.loop.episode_length, buffer.capacity),
            discount=config.discount, reward_scale=config.reward_scale,
            reward_bias=config.reward_bias, negative_reward=self.loop.negative_sparse_reward)
      # Rows of the episode still running have no return yet: not sampled.
      online_rows = buffer.size - jnp.where(done, 0, stored)
    episode_return = state.episode.episode_return + jnp.where(result.valid, result.state.reward,
                                                              0.0)
    env_state = following.state
    episode = EpisodeTracker(length=following.length,
                             episode_return=jnp.where(done, 0.0, episode_return),
                             stored=jnp.where(done, 0, stored))
    env_step = state.env_step + 1

    floor = jnp.maximum(state.warmup_steps, self.update_floor())
    train = (state.env_step > floor) & (state.diverged_at < 0)

    with jax.named_scope("sample_batch"):
      batch = self.sample_batch(buffer, dataset, sample_key, online_rows)

    def update(agent):
      with jax.named_scope("update"):
        return self.learner.update(agent, batch, update_key)

    def skip(agent):
      _, metrics = jax.eval_shape(update, agent)
      return agent, jax.tree.map(lambda m: jnp.zeros(m.shape, m.dtype), metrics)

    # Per seed (no `seed_axis`) this branch is a select under `vmap`: the update runs on every
    # step, warmup included. On `any_seed` it runs only once some seed trains.
    new_agent, metrics = jax.lax.cond(self.any_seed(train), update, skip, state.agent)
    accepted = train & metrics["finite"]
    with jax.named_scope("accept_update"):
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
        temperature=self.learner.temperature(agent),
        entropy_sum=stats.entropy_sum + count * metrics["entropy"])
    state = state.replace(agent=agent, buffer=buffer, env_state=env_state, episode=episode,
                          key=key, env_step=env_step, diverged_at=diverged_at)
    return state, stats

  def run(self, state: TrainState, *args):
    """`run(state, num_steps)`, or `run(state, dataset, num_steps)` with `mixed` offline data:
    `num_steps` environment steps (static) -> (state, ChunkStats)."""
    *shared, num_steps = args
    dataset = shared[0] if shared else None
    zero_int = jnp.zeros((), jnp.int32)
    zero = jnp.zeros((), jnp.float32)
    stats = ChunkStats(completed_episodes=zero_int, completed_return_sum=zero,
                       updates=zero_int, critic_loss_sum=zero, actor_loss_sum=zero, q_sum=zero,
                       temperature=self.learner.temperature(state.agent), entropy_sum=zero)
    stats = batched.batched_like(stats, state.key)   # one batching of `body` per vmap (trace time)

    def body(carry, _):
      return self.step(*carry, dataset), None

    (state, stats), _ = jax.lax.scan(body, (state, stats), None, length=num_steps)
    return state, stats

  def evaluate(self, actor_params, key: jax.Array) -> evaluation.EpisodeResults:
    """`eval_episodes` deterministic episodes (tanh of the mean) -> [eval_episodes] each.
    `actor_params` may be a `jsrl.GuidedPolicy`: the guide acts on each episode's first h steps."""
    guided = isinstance(actor_params, jsrl.GuidedPolicy)
    act = jsrl.deterministic_act(self.agent) if guided else self.learner.deterministic_action
    return evaluation.evaluate(self.env, act, actor_params, key, self.loop.eval_episodes,
                               self.loop.episode_length, self.loop.action_clip, with_step=guided)


def make_online(env: MjxEnv, env_spec: EnvSpec, agent_config: sac.SACConfig,
                loop_config: LoopConfig, learner=None) -> Online:
  """The loop of WSRL's SAC on `agent_config`, or of `learner` (`learners`), whose SAC networks
  (if any) are `agent_config`'s."""
  if env.observation_size != agent_config.observation_size or \
     env.action_size != agent_config.action_size:
    raise ValueError(
        f"{env_spec.name} has observations of {env.observation_size} and actions of "
        f"{env.action_size} dimensions, the agent expects {agent_config.observation_size} and "
        f"{agent_config.action_size}.")
  agent = getattr(learner, "agent", None) if learner is not None else sac.SAC(agent_config)
  return Online(env=env, agent=agent, loop=loop_config, learner=learner)
