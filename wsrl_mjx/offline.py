"""The fused offline (pretraining) loop for one seed, written to be `jit(vmap(...))`-ed over seeds.

Like the online loop: `init(key)`, `run(state, dataset, num_steps)` (a `lax.scan` of sample +
update; the dataset is a full replay buffer, shared by all seeds and resident on the device,
sampled as the online loop samples its own) and `evaluate` in the MJX env. The learner is any of `agents.cql.CQL` (CQL and Cal-QL) or `agents.iql.IQL`; what it needs
to provide is `init`, `update`, `deterministic_action`, `actor_params` and `handoff_params`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from envs import MjxEnv
from wsrl_mjx import batched, evaluation, replay


@struct.dataclass
class OfflineState:
  learner: Any                    # the learner's state (CQLState, IQLState)
  key: jax.Array
  eval_key: jax.Array
  step: jax.Array                 # int32 gradient steps taken
  diverged_at: jax.Array          # int32, step of the first non-finite update, -1 if none


@struct.dataclass
class OfflineChunkStats:
  updates: jax.Array
  critic_loss_sum: jax.Array
  actor_loss_sum: jax.Array


@dataclasses.dataclass(frozen=True)
class Offline:
  env: MjxEnv
  learner: Any
  batch_size: int
  eval_episodes: int
  episode_length: int
  action_clip: float

  def init(self, key: jax.Array) -> OfflineState:
    learner_key, key, eval_key = jax.random.split(key, 3)
    return OfflineState(learner=self.learner.init(learner_key), key=key, eval_key=eval_key,
                        step=jnp.zeros((), jnp.int32), diverged_at=jnp.full((), -1, jnp.int32))

  def run(self, state: OfflineState, dataset: replay.ReplayBuffer, num_steps: int):
    """`num_steps` (static) gradient steps -> (state, OfflineChunkStats)."""

    def body(carry, _):
      state, stats = carry
      key, sample_key, update_key = jax.random.split(state.key, 3)
      batch = replay.sample(dataset, sample_key, self.batch_size)
      learner, metrics = self.learner.update(state.learner, batch, update_key)
      accepted = metrics["finite"] & (state.diverged_at < 0)
      step = state.step + 1
      state = state.replace(
          learner=jax.tree.map(lambda new, old: jnp.where(accepted, new, old), learner,
                               state.learner),
          key=key, step=step,
          diverged_at=jnp.where((state.diverged_at < 0) & ~metrics["finite"], step,
                                state.diverged_at))
      count = accepted.astype(jnp.float32)
      stats = OfflineChunkStats(
          updates=stats.updates + accepted,
          critic_loss_sum=stats.critic_loss_sum + count * metrics["critic_loss"],
          actor_loss_sum=stats.actor_loss_sum + count * metrics["actor_loss"])
      return (state, stats), None

    zero = jnp.zeros((), jnp.float32)
    stats = OfflineChunkStats(updates=jnp.zeros((), jnp.int32), critic_loss_sum=zero,
                              actor_loss_sum=zero)
    stats = batched.batched_like(stats, state.key)   # one batching of `body` per vmap
    (state, stats), _ = jax.lax.scan(body, (state, stats), None, length=num_steps)
    return state, stats

  def evaluate(self, state: OfflineState) -> evaluation.EpisodeResults:
    """`eval_episodes` deterministic episodes at the state's step."""
    return evaluation.evaluate(
        self.env, self.learner.deterministic_action, self.learner.actor_params(state.learner),
        jax.random.fold_in(state.eval_key, state.step), self.eval_episodes, self.episode_length,
        self.action_clip)
