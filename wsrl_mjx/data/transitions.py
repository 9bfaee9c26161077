"""From recorded steps to the transitions offline pretraining (CQL, Cal-QL, IQL) samples.

Two representations:

- `Trajectories`: what a file holds, steps in recording order with the flags that cut them into
  episodes (D4RL's layout: `terminals`, `timeouts`, optionally `next_observations`). Every reader
  (`d4rl`, `adroit`, `minari`) produces one, so everything below is written once.
- `OfflineDataset`: the Q-learning view, one row per usable transition (s, a, r, s', terminal) and
  the Monte-Carlo return-to-go Cal-QL lower-bounds its Q-values with. It is a pytree: `to_device`
  moves it to the accelerator and `sample` draws minibatches inside jit/vmap.

Conventions (D4RL's and the WSRL reference's): rewards are stored raw, the learner applies the
family's scale and bias in its loss; only true terminations are terminal, a timeout cuts the
trajectory but bootstraps; `mc_returns` are computed on the transformed reward r * scale + bias
and never bootstrap past the end of their trajectory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from wsrl_mjx.data.validation import DatasetError

# An observation continues the previous step when it is this close (L2) to that step's
# next_observation; the WSRL reference uses the same threshold.
CONTINUITY_TOLERANCE = 1e-6


@dataclasses.dataclass(frozen=True)
class Trajectories:
  """Trajectories laid end to end, as a file stores them (host-side numpy, any dtype)."""
  source: str                   # the file (or files) it came from; error messages name it
  observations: np.ndarray      # [N, obs]
  actions: np.ndarray           # [N, act]
  rewards: np.ndarray           # [N]  raw env rewards
  terminals: np.ndarray         # [N]  true terminations
  timeouts: np.ndarray          # [N]  episode cut by the time limit (or the recording stopped)
  next_observations: np.ndarray | None = None   # [N, obs] where the file records them
  infos: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)  # e.g. qpos, qvel

  def __len__(self) -> int:
    return len(self.rewards)

  def fields(self) -> dict[str, np.ndarray]:
    """The per-step arrays by name, `next_observations` only where present."""
    fields = {"observations": self.observations, "actions": self.actions,
              "rewards": self.rewards, "terminals": self.terminals, "timeouts": self.timeouts}
    if self.next_observations is not None:
      fields["next_observations"] = self.next_observations
    return fields


@struct.dataclass
class OfflineDataset:
  """Q-learning transitions; every leaf has the same leading axis (rows, or a batch).

  Leaves are numpy arrays as loaded and device arrays after `to_device`.
  """
  observations: jax.Array       # [N, obs] float32
  actions: jax.Array            # [N, act] float32, clipped to the dataset's clip value
  rewards: jax.Array            # [N] float32, raw: before the family's scale and bias
  next_observations: jax.Array  # [N, obs] float32
  terminals: jax.Array          # [N] float32, 1 only at true terminations
  mc_returns: jax.Array         # [N] float32, discounted return-to-go of r * scale + bias

  @property
  def size(self) -> int:
    return self.rewards.shape[0]


def concatenate(parts: Sequence[Trajectories]) -> Trajectories:
  """One `Trajectories` from several files; no trajectory runs across a file boundary.

  The last step of each part that is not terminal is marked as a timeout, so it is never paired
  with the next file's first observation.
  """
  if len(parts) == 1:
    return parts[0]
  with_next = [part.next_observations is not None for part in parts]
  timeouts = []
  for part in parts:
    part_timeouts = np.asarray(part.timeouts, bool).copy()
    part_timeouts[-1] |= not bool(part.terminals[-1])
    timeouts.append(part_timeouts)
  if all(with_next):
    next_observations = np.concatenate([part.next_observations for part in parts])
  elif not any(with_next):
    next_observations = None
  else:
    raise DatasetError(
        f"{' + '.join(part.source for part in parts)}: some files record next_observations and "
        "some do not; load them separately")
  common_infos = set.intersection(*(set(part.infos) for part in parts))
  return Trajectories(
      source=" + ".join(part.source for part in parts),
      observations=np.concatenate([part.observations for part in parts]),
      actions=np.concatenate([part.actions for part in parts]),
      rewards=np.concatenate([part.rewards for part in parts]),
      terminals=np.concatenate([np.asarray(part.terminals, bool) for part in parts]),
      timeouts=np.concatenate(timeouts),
      next_observations=next_observations,
      infos={key: np.concatenate([part.infos[key] for part in parts]) for key in common_infos})


def pair_steps(trajectories: Trajectories) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Which steps become transitions, their next observations, and where trajectories end.

  A trajectory ends at a terminal, at a timeout, at the end of the file, and (where the file
  records next_observations) wherever the next step's observation does not continue this step's
  next_observation. Without recorded next_observations, step i is paired with step i + 1, so a
  step cut by a timeout, or the file's last step, has no next observation and is dropped (as
  D4RL's `qlearning_dataset` does); a terminal step is kept, its next observation only feeds
  the CQL regulariser (the file's last step, if terminal, gets its own observation there).

  Returns (rows [M] int: the kept steps, next_observations [M, obs], trajectory_ends [M] bool:
  the kept step is the last of its trajectory).
  """
  observations = np.asarray(trajectories.observations)
  terminals = np.asarray(trajectories.terminals, bool)
  timeouts = np.asarray(trajectories.timeouts, bool)
  num_steps = len(observations)
  if num_steps == 0:
    return np.zeros(0, np.int64), observations, np.zeros(0, bool)
  continues = np.zeros(num_steps, bool)   # step i + 1 continues step i's trajectory
  if trajectories.next_observations is not None:
    next_observations = np.asarray(trajectories.next_observations)
    gaps = np.linalg.norm(
        observations[1:].astype(np.float64) - next_observations[:-1].astype(np.float64), axis=-1)
    continues[:-1] = gaps <= CONTINUITY_TOLERANCE
    keep = np.ones(num_steps, bool)
  else:
    next_observations = np.concatenate([observations[1:], observations[-1:]])
    continues[:-1] = True
    keep = terminals | ~timeouts
    keep[-1] = terminals[-1]
  episode_ends = terminals | timeouts | ~continues
  trajectory_ids = np.concatenate([[0], np.cumsum(episode_ends[:-1])])
  rows = np.flatnonzero(keep)
  kept_ids = trajectory_ids[rows]
  trajectory_ends = np.ones(len(rows), bool)
  trajectory_ends[:-1] = kept_ids[1:] != kept_ids[:-1]
  return rows, next_observations[rows], trajectory_ends


def monte_carlo_returns(rewards: np.ndarray, trajectory_ends: np.ndarray, *, discount: float,
                        negative_sparse_reward: float | None = None) -> np.ndarray:
  """Discounted reward-to-go inside each trajectory, no bootstrap past its end.

  `rewards` [M] are consecutive within each trajectory, and `trajectory_ends` [M] marks the last
  step of each. A trajectory whose rewards all equal `negative_sparse_reward` (the value a sparse
  task pays while unsolved, in the same units as `rewards`) gets r / (1 - discount) at every step:
  the return of failing forever, as Cal-QL sets it. None (dense rewards) turns that off.
  """
  rewards = np.asarray(rewards, np.float64)
  trajectory_ends = np.asarray(trajectory_ends, bool)
  num_steps = len(rewards)
  if num_steps == 0:
    return np.zeros(0, np.float32)
  if not trajectory_ends[-1]:
    raise ValueError("the last step must end its trajectory")
  trajectory_ids = np.concatenate([[0], np.cumsum(trajectory_ends[:-1])])
  end_rows = np.flatnonzero(trajectory_ends)
  steps_to_end = end_rows[trajectory_ids] - np.arange(num_steps)
  # Sweep all trajectories backwards at once: every step k steps before its end after those k - 1.
  order = np.argsort(steps_to_end, kind="stable")
  group_starts = np.cumsum(np.bincount(steps_to_end))[:-1]
  returns = np.empty(num_steps, np.float64)
  for distance, rows in enumerate(np.split(order, group_starts)):
    if distance == 0:
      returns[rows] = rewards[rows]
    else:
      returns[rows] = rewards[rows] + discount * returns[rows + 1]
  if negative_sparse_reward is not None:
    is_negative = rewards == np.float64(negative_sparse_reward)
    num_trajectories = len(end_rows)
    non_negative_counts = np.bincount(trajectory_ids, weights=(~is_negative).astype(np.float64),
                                      minlength=num_trajectories)
    all_negative = non_negative_counts == 0
    failed = all_negative[trajectory_ids]
    returns[failed] = rewards[failed] / (1.0 - discount)
  return returns.astype(np.float32)


def to_offline_dataset(trajectories: Trajectories, *, reward_scale: float, reward_bias: float,
                       discount: float = 0.99, clip_action: float | None = 0.99999,
                       negative_sparse_reward: float | None = None) -> OfflineDataset:
  """The Q-learning transitions of `trajectories` (numpy arrays; `to_device` moves them).

  `negative_sparse_reward` is in the env's own units (adroit binary -1, antmaze 0), before scale
  and bias; None for dense-reward families. `clip_action` keeps dataset actions inside the
  tanh's open range (the WSRL sheet uses 0.99999); None leaves them as recorded.
  """
  rows, next_observations, trajectory_ends = pair_steps(trajectories)
  if len(rows) == 0:
    raise DatasetError(f"{trajectories.source}: no step has a next observation to pair it with")
  scale, bias = np.float32(reward_scale), np.float32(reward_bias)
  rewards = np.asarray(trajectories.rewards, np.float32)[rows]
  negative = None
  if negative_sparse_reward is not None:
    negative = np.float32(negative_sparse_reward) * scale + bias
  mc_returns = monte_carlo_returns(rewards * scale + bias, trajectory_ends, discount=discount,
                                   negative_sparse_reward=negative)
  actions = np.asarray(trajectories.actions, np.float32)[rows]
  if clip_action is not None:
    actions = np.clip(actions, -clip_action, clip_action)
  return OfflineDataset(
      observations=np.asarray(trajectories.observations, np.float32)[rows],
      actions=actions,
      rewards=rewards,
      next_observations=np.asarray(next_observations, np.float32),
      terminals=np.asarray(trajectories.terminals, np.float32)[rows],
      mc_returns=mc_returns)


def to_device(dataset: OfflineDataset, device: jax.Device | None = None) -> OfflineDataset:
  """The same dataset with every column a device array."""
  return jax.tree.map(lambda column: jax.device_put(column, device), dataset)


def sample(dataset: OfflineDataset, key: jax.Array, batch_size: int) -> OfflineDataset:
  """`batch_size` transitions drawn uniformly with replacement: every leaf gets [batch, ...].

  Pure, so it runs inside jit and vmap (`batch_size` must be static there).
  """
  rows = jax.random.randint(key, (batch_size,), 0, dataset.size)
  return jax.tree.map(lambda column: jnp.take(column, rows, axis=0), dataset)
