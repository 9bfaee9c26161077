"""Deterministic evaluation episodes in an MJX env, as WSRL reports them (D4RL-normalised later).

One function for every phase: the policy is given as `act(actor_params, observation)`.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from envs import episodes
from wsrl_mjx import batched


@flax.struct.dataclass
class EpisodeResults:
  """Per episode: the undiscounted env return, and the largest `success` metric the env reported
  (0 for tasks without one): for AntMaze and Adroit whether the goal was reached (0 or 1), for
  kitchen the fraction of its elements done, which only grows. Sparse-reward families (AntMaze,
  Adroit) and kitchen are scored by it."""
  returns: jax.Array
  successes: jax.Array


def evaluate(env, act, actor_params, key: jax.Array, num_episodes: int, episode_length: int,
             action_clip: float, with_step: bool = False) -> EpisodeResults:
  """`num_episodes` deterministic episodes (vmapped) -> EpisodeResults of [num_episodes].

  `act(actor_params, observation)`, or with `with_step` `act(actor_params, observation, step)`
  where `step` (int32) counts the steps the episode has taken (JSRL's guide acts on the first h).

  Episodes end at termination, after `episode_length` steps or at a physics blow-up (a step
  with a non-finite state, observation or reward: the return is that of the steps before it,
  never NaN); actions are clipped to +-action_clip as the reference's evaluation wrapper does.
  """

  def episode(episode_key):
    def body(carry, _):
      current, episode_return, success, alive = carry
      action = (act(actor_params, current.state.obs, current.length) if with_step
                else act(actor_params, current.state.obs))
      action = jnp.clip(action, -action_clip, action_clip)
      current, result = episodes.step(env, current, action, episode_length)   # no reset
      # `where`, not multiplication: a finished episode's physics may run off to inf/nan, and
      # a blow-up's step (not `valid`) ends the episode without adding its reward.
      episode_return = episode_return + jnp.where(alive & result.valid, result.state.reward, 0.0)
      reached = result.state.metrics.get("success", jnp.zeros((), jnp.float32))
      success = jnp.maximum(success, jnp.where(alive & result.valid, reached, 0.0))
      alive = alive & ~result.done
      return (current, episode_return, success, alive), None

    carry = (episodes.start(env, episode_key), jnp.zeros((), jnp.float32),
             jnp.zeros((), jnp.float32), jnp.ones((), bool))
    carry = batched.batched_like(carry, episode_key)
    (_, episode_return, success, _), _ = jax.lax.scan(body, carry, None, length=episode_length)
    return EpisodeResults(returns=episode_return, successes=success)

  return jax.vmap(episode)(jax.random.split(key, num_episodes))
