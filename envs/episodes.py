"""One env step inside an episode with a time limit, and the start of the next episode.

The online loop, the data collector and evaluation all step episodes the same way: the env's own
`done` is a true termination (it stops bootstrapping), reaching `episode_length` steps is a
timeout (it does not), and after either the loop starts a fresh episode (or, in evaluation,
stops counting). `step` is that rule, written once. Pure, so it runs inside `lax.scan` and
`vmap`.

A physics blow-up ends the episode too: a step whose physics state (qpos, qvel), observation or
reward is not finite is a truncation (a timeout, never a terminal, whatever the env's own `done`
says of a NaN state), and `Step.valid` is false, so the transition is not learned from (the
online loop does not store it, the collector does not write it, evaluation does not add its
reward). Without this, a NaN state that the env does not terminate (halfcheetah has no health
check) is stepped on with done = 0 and its transitions poison the replay buffer.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import struct

from envs.mjx_env import MjxEnv, State


@struct.dataclass
class Episode:
  """Where an episode stands: the env's state and the steps taken in it."""
  state: State
  length: jax.Array          # int32, steps taken in this episode


@struct.dataclass
class Step:
  """What one step did. `state` is the state the action led to, before any reset: its `obs` is
  the transition's next observation, `reward` and `metrics` the step's."""
  state: State
  terminal: jax.Array        # bool: the env ended the episode (a true termination)
  timeout: jax.Array         # bool: the time limit or a blow-up ended it, and the env did not
  valid: jax.Array           # bool: the step's physics, observation and reward are finite

  @property
  def done(self) -> jax.Array:
    """The episode is over, either way."""
    return self.terminal | self.timeout


def is_finite(state: State) -> jax.Array:
  """bool: every number of the state's physics (qpos, qvel), observation and reward is finite.
  An env without physics (`pipeline_state` None: the toy tasks of tests/test_learning.py) is
  checked on its observation and reward."""
  finite = jnp.isfinite(state.obs).all() & jnp.isfinite(state.reward)
  physics = state.pipeline_state
  if physics is not None:
    finite &= jnp.isfinite(physics.qpos).all() & jnp.isfinite(physics.qvel).all()
  return finite


def outcome(next_state: State, length: jax.Array, episode_length: int) -> Step:
  """What a step that led to `next_state`, the episode's `length`-th, did: the env's `done` is a
  termination, `episode_length` steps or a blow-up (not `is_finite`) a timeout."""
  valid = is_finite(next_state)
  terminal = (next_state.done > 0) & valid
  timeout = ((length >= episode_length) | ~valid) & ~terminal
  return Step(state=next_state, terminal=terminal, timeout=timeout, valid=valid)


def start(env: MjxEnv, key: jax.Array) -> Episode:
  return Episode(state=env.reset(key), length=jnp.zeros((), jnp.int32))


def step(env: MjxEnv, episode: Episode, action: jax.Array, episode_length: int,
         reset_key: jax.Array | None = None,
         any_in_batch: Callable[[jax.Array], jax.Array] | None = None) -> tuple[Episode, Step]:
  """`action` in `episode` -> (the episode to continue, what the step did).

  With `reset_key`, an episode that ended is replaced by a fresh one from `env.reset(reset_key)`;
  without, the finished episode is returned as it is and the caller stops counting it. A step
  that is not `valid` (module docstring) ends the episode as a timeout.

  Under `vmap` a per-episode branch runs both sides, so by default the reset is computed on every
  step and selected. `any_in_batch` (bool [] -> bool [] unbatched, e.g. a `pmax` over the
  vmapped axis: `online.Online.any_seed`) moves the choice to the batch: the reset runs, for the
  whole batch, only on steps where some episode ended; each episode still keeps its own state
  unless it ended, so every episode's numbers are the same either way.
  """
  next_state = env.step(episode.state, action)
  length = episode.length + 1
  result = outcome(next_state, length, episode_length)
  following = Episode(state=next_state, length=length)
  if reset_key is not None:
    def reset(following):
      with jax.named_scope("reset"):
        fresh = start(env, reset_key)
        return jax.tree.map(lambda a, b: jnp.where(result.done, a, b), fresh, following)

    if any_in_batch is None:
      following = reset(following)
    else:
      following = jax.lax.cond(any_in_batch(result.done), reset, lambda f: f, following)
  return following, result
