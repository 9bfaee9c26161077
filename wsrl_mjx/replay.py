"""The transition both phases learn from, and the replay buffer that holds them on the device.

A buffer is a fixed-capacity ring and a pytree, so the training loop carries it through
`lax.scan` and `vmap` adds the seed axis; inserting writes one row in place
(`dynamic_update_slice`, no copy of the buffer when the caller donates it) and sampling draws
uniformly among the rows written so far. Online, WSRL fine-tunes without the offline data, so the
buffer starts empty and holds online experience only; offline, the dataset is a full buffer
(`full`), sampled the same way.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
from flax import struct

from wsrl_mjx.errors import ConfigError


@struct.dataclass
class Transition:
  observation: jax.Array       # [..., obs]
  action: jax.Array            # [..., act]
  reward: jax.Array            # [...]  the env's reward, before the family's scale and bias
  next_observation: jax.Array  # [..., obs]
  terminal: jax.Array          # [...]  1.0 at true terminations; timeouts are not terminal
  # [...] the discounted return-to-go of the transformed reward, Cal-QL's lower bound: offline
  # data has it (wsrl_mjx.data); online transitions do not (None, no column in the buffer).
  mc_return: jax.Array | None = None


@struct.dataclass
class ReplayBuffer:
  data: Transition             # every leaf [capacity, ...]
  insert_position: jax.Array   # int32, the row the next insert writes
  size: jax.Array              # int32, rows holding data (<= capacity)

  @property
  def capacity(self) -> int:
    return self.data.reward.shape[-1]


def create(capacity: int, observation_size: int, action_size: int) -> ReplayBuffer:
  """An empty buffer of `capacity` transitions."""
  zeros = lambda *shape: jnp.zeros((capacity, *shape), jnp.float32)
  data = Transition(observation=zeros(observation_size), action=zeros(action_size),
                    reward=zeros(), next_observation=zeros(observation_size), terminal=zeros())
  return ReplayBuffer(data=data, insert_position=jnp.zeros((), jnp.int32),
                      size=jnp.zeros((), jnp.int32))


def full(transitions: Transition) -> ReplayBuffer:
  """A buffer holding exactly `transitions` (every leaf [rows, ...]): the offline dataset."""
  rows = transitions.reward.shape[0]
  return ReplayBuffer(data=transitions, insert_position=jnp.zeros((), jnp.int32),
                      size=jnp.asarray(rows, jnp.int32))


def insert(buffer: ReplayBuffer, transition: Transition,
           keep: jax.Array | bool = True) -> ReplayBuffer:
  """Writes one transition over the oldest row once the buffer is full.

  `keep` (bool, traced or not) false drops the transition: the buffer comes back unchanged (the
  row at the insert position is rewritten with its own contents, and neither the insert
  position nor the size advances). The online loop drops the step of a physics blow-up this way
  (`envs.episodes.Step.valid`), so no non-finite number reaches a sampled batch.
  """
  position = buffer.insert_position

  def write(column, value):
    value = jnp.where(keep, value, jax.lax.dynamic_index_in_dim(column, position, 0, False))
    return jax.lax.dynamic_update_index_in_dim(column, value, position, 0)

  data = jax.tree.map(write, buffer.data, transition)
  capacity = buffer.capacity
  added = jnp.asarray(keep, jnp.int32)
  return ReplayBuffer(data=data, insert_position=(position + added) % capacity,
                      size=jnp.minimum(buffer.size + added, capacity))


def sample(buffer: ReplayBuffer, key: jax.Array, batch_size: int) -> Transition:
  """`batch_size` transitions drawn uniformly, with replacement, from the rows written so far.

  An empty buffer returns row 0 (zeros); the training loop never samples before its first insert.
  """
  rows = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buffer.size, 1))
  return jax.tree.map(lambda column: column[rows], buffer.data)


def bytes_per_seed(capacity: int, observation_size: int, action_size: int) -> int:
  """Device memory one seed's buffer takes (float32 columns)."""
  return 4 * capacity * (2 * observation_size + action_size + 2)


def device_memory_bytes(device: jax.Device | None = None) -> int | None:
  """Memory the device can allocate, or None where it cannot be told."""
  device = device or jax.local_devices()[0]
  try:
    stats = device.memory_stats()
  except Exception:  # Some backends do not implement memory_stats.
    stats = None
  if stats and "bytes_limit" in stats:
    return int(stats["bytes_limit"])
  if device.platform == "cpu":
    try:
      return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
      return None
  return None


class BufferTooLargeError(ConfigError, MemoryError):
  """Replay buffers that would not fit on the device (a config value to lower, named)."""


def check_fits(capacity: int, observation_size: int, action_size: int, num_seeds: int,
               available_bytes: int | None, fraction: float = 0.8) -> str:
  """Raises BufferTooLargeError (a MemoryError) if the buffers of all seeds would not fit; else
  returns a summary line.

  `fraction` leaves room for parameters, optimiser states, environments and XLA's workspace.
  """
  per_seed = bytes_per_seed(capacity, observation_size, action_size)
  total = per_seed * num_seeds
  summary = (f"replay buffer: {capacity:,} transitions x {num_seeds} seeds = "
             f"{per_seed / 2**20:,.1f} MiB per seed, {total / 2**30:,.2f} GiB in all")
  if available_bytes is not None and total > fraction * available_bytes:
    raise BufferTooLargeError(
        f"The {summary} do not fit in {fraction:.0%} of the device's "
        f"{available_bytes / 2**30:,.1f} GiB. Lower config.replay_capacity or config.num_seeds, "
        "or shard seeds over more devices.")
  return summary
