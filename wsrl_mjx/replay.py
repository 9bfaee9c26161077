"""The transition both phases learn from, and the replay buffer that holds them on the device.

A buffer is a fixed-capacity ring and a pytree, so the training loop carries it through
`lax.scan` and `vmap` adds the seed axis; inserting writes one row in place
(`dynamic_update_slice`, no copy of the buffer when the caller donates it) and sampling draws
uniformly among the rows written so far. Online, WSRL fine-tunes without the offline data, so the
buffer starts empty and holds online experience only; offline, the dataset is a full buffer
(`full`), sampled the same way. Arms that keep the offline data either sample it beside the
buffer or write it into the buffer first (`extend`); Cal-QL's buffer also holds Monte-Carlo
returns, written when an episode ends (`write_episode_returns`).
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


def create(capacity: int, observation_size: int, action_size: int,
           mc_return: bool = False) -> ReplayBuffer:
  """An empty buffer of `capacity` transitions (with a `mc_return` column if asked)."""
  zeros = lambda *shape: jnp.zeros((capacity, *shape), jnp.float32)
  data = Transition(observation=zeros(observation_size), action=zeros(action_size),
                    reward=zeros(), next_observation=zeros(observation_size), terminal=zeros(),
                    mc_return=zeros() if mc_return else None)
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


def sample(buffer: ReplayBuffer, key: jax.Array, batch_size: int,
           num_rows: jax.Array | None = None) -> Transition:
  """`batch_size` transitions drawn uniformly, with replacement, from the rows written so far
  (or from the first `num_rows` of them: Cal-QL leaves out the episode still running).

  An empty buffer returns row 0 (zeros); the training loop never samples before its first insert.
  """
  num_rows = buffer.size if num_rows is None else num_rows
  rows = jax.random.randint(key, (batch_size,), 0, jnp.maximum(num_rows, 1))
  return jax.tree.map(lambda column: column[rows], buffer.data)


def extend(buffer: ReplayBuffer, transitions: Transition) -> ReplayBuffer:
  """An empty `buffer` with `transitions` (every leaf [rows, ...], rows <= capacity) written
  into its first rows, as if inserted one by one."""
  rows = transitions.reward.shape[0]
  if rows > buffer.capacity:
    raise ValueError(f"{rows} transitions do not fit a buffer of {buffer.capacity}")
  data = jax.tree.map(lambda column, new: column.at[:rows].set(new.astype(column.dtype)),
                      buffer.data, transitions)
  return ReplayBuffer(data=data, insert_position=jnp.asarray(rows % buffer.capacity, jnp.int32),
                      size=jnp.asarray(rows, jnp.int32))


def write_episode_returns(buffer: ReplayBuffer, episode_rows: jax.Array, max_rows: int, *,
                          discount: float, reward_scale: float, reward_bias: float,
                          negative_reward: float | None = None) -> ReplayBuffer:
  """The discounted return-to-go of the transformed reward (r * scale + bias) written into the
  `mc_return` of the episode that fills the last `episode_rows` rows written (0: nothing is
  written), no bootstrap past its end; `max_rows` (static) bounds an episode's length.

  A sparse task's episode whose rewards all equal `negative_reward` (raw units, None: dense)
  gets r / (1 - discount) in every row: the return of failing forever. This is the WSRL
  reference's online Cal-QL buffer (`wsrl/data/replay_buffer.py:163-184`, which applies
  `wsrl/envs/env_common.py:160-211` `calc_return_to_go` when an episode ends) and the offline
  data's rule (`data.monte_carlo_returns`).
  """
  capacity = buffer.capacity
  offsets = jnp.arange(max_rows)
  # In time order, the newest row last; the rows before the episode are masked out.
  rows = (buffer.insert_position - max_rows + offsets) % capacity
  inside = offsets >= max_rows - episode_rows
  reward = buffer.data.reward[rows] * reward_scale + reward_bias

  def compose(later, earlier):          # x -> c + m x, the earlier step applied last
    return earlier[0] + earlier[1] * later[0], earlier[1] * later[1]

  returns, _ = jax.lax.associative_scan(
      compose, (reward, jnp.full_like(reward, discount)), reverse=True)
  if negative_reward is not None:
    negative = jnp.float32(negative_reward) * jnp.float32(reward_scale) + jnp.float32(
        reward_bias)
    failed = jnp.all(jnp.where(inside, reward == negative, True))
    returns = jnp.where(failed, reward / (1.0 - discount), returns)
  column = buffer.data.mc_return
  column = column.at[rows].set(jnp.where(inside, returns, column[rows]))
  return buffer.replace(data=buffer.data.replace(mc_return=column))


def bytes_per_seed(capacity: int, observation_size: int, action_size: int,
                   mc_return: bool = False) -> int:
  """Device memory one seed's buffer takes (float32 columns)."""
  return 4 * capacity * (2 * observation_size + action_size + 2 + int(mc_return))


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
               available_bytes: int | None, fraction: float = 0.8, *,
               mc_return: bool = False, dataset_rows: int = 0) -> str:
  """Raises BufferTooLargeError (a MemoryError) if the buffers of all seeds (on one device)
  and an offline dataset of `dataset_rows` transitions (held once per device, shared by its
  seeds) would not fit; else returns a summary line.

  `fraction` leaves room for parameters, optimiser states, environments and XLA's workspace.
  """
  per_seed = bytes_per_seed(capacity, observation_size, action_size, mc_return)
  shared = bytes_per_seed(dataset_rows, observation_size, action_size, mc_return)
  total = per_seed * num_seeds + shared
  summary = (f"replay buffer: {capacity:,} transitions x {num_seeds} seeds = "
             f"{per_seed / 2**20:,.1f} MiB per seed")
  if dataset_rows:
    summary += (f", offline dataset: {dataset_rows:,} transitions once = "
                f"{shared / 2**20:,.1f} MiB")
  summary += f", {total / 2**30:,.2f} GiB in all"
  if available_bytes is not None and total > fraction * available_bytes:
    raise BufferTooLargeError(
        f"The {summary} do not fit in {fraction:.0%} of the device's "
        f"{available_bytes / 2**30:,.1f} GiB. Lower config.replay_capacity or config.num_seeds"
        f"{', use a smaller config.dataset' if dataset_rows else ''}, or shard seeds over more "
        "devices.")
  return summary
