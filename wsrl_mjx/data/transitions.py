"""From recorded steps to the transitions offline pretraining (CQL, Cal-QL, IQL) samples.

Two representations:

- `Trajectories`: what a file holds, steps in recording order with the flags that cut them into
  episodes (D4RL's layout: `terminals`, `timeouts`, optionally `next_observations`). Every reader
  (`d4rl`, `adroit`, `minari`) produces one, so everything below is written once.
- `OfflineDataset`: the Q-learning view, one row per usable transition (s, a, r, s', terminal) and
  the Monte-Carlo return-to-go Cal-QL lower-bounds its Q-values with (host numpy, D4RL's
  plural names). `to_replay_buffer` puts it on the accelerator as a full `replay.ReplayBuffer`
  of the `replay.Transition`s both phases learn from, which `replay.sample` draws from.

Conventions (D4RL's and the WSRL reference's): rewards are stored raw, the learner applies the
family's scale and bias in its loss; only true terminations are terminal, a timeout cuts the
trajectory but bootstraps; `mc_returns` are computed on the transformed reward r * scale + bias
and never bootstrap past the end of their trajectory.

Trajectories end at terminals, timeouts and the end of the file, and nowhere else by default: the
WSRL reference splits its Monte-Carlo returns only there (`wsrl/envs/d4rl_dataset.py:204-253`,
`qlearning_dataset_and_calc_mc`; Adroit: one trajectory per file record with masks at its
successes, `wsrl/envs/adroit_binary_dataset.py:47-83`). Its 1e-6 rule on
|obs[i+1] - next_obs[i]| (`d4rl_dataset.py:114-134`) only feeds a `dones` field that no loss
reads; applied here it cut good trajectories at float rounding (at AntMaze's magnitudes a float64
file's float32 next_observations differ from the next observations by ~1e-6) and turned their
heads into "all-negative" ones (return r / (1 - discount)).

Where a file records next_observations, a step i that is neither terminal nor timeout, whose
successor's observation does not continue next_observations[i], is an unflagged jump (a teleport
between episodes, as some D4RL files have). The rule (`unflagged_jumps`), in float64, with
a = observations[i + 1], b = next_observations[i]:

    |a - b|_2 > JUMP_ULPS * eps * |max(|a|, |b|)|_2 + JUMP_RELATIVE_TOLERANCE * scale

eps: the machine epsilon of the coarser of the two arrays' float dtypes (float32's 1.2e-7 if
either is float32), so rounding one copy to that dtype (at most eps/2 relative per number) is
never a jump; scale: the mean L2 length of the file's observations, so differences below 1e-4 of
a typical observation (recomputed or noisy next observations) are not either. A jump is logged
(absl warning naming the file and the count) and, by default, not split, as in the reference;
`split_at_jumps=True` ends the trajectory there. Without recorded next_observations, step i's
next observation is step i + 1's observation, so there is nothing to detect.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import struct

from wsrl_mjx import replay
from wsrl_mjx.data.validation import DatasetError
from wsrl_mjx.replay import ReplayBuffer, Transition

# An unflagged jump: |obs[i + 1] - next_obs[i]|_2 above this many machine epsilons of the values'
# magnitude plus this fraction of the observations' mean length (module docstring).
JUMP_ULPS = 4.0
JUMP_RELATIVE_TOLERANCE = 1e-4


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
  # The env the file says it was recorded on (`metadata/env`, which launch.collect writes);
  # None where it does not say. Error messages about a mismatched file name it.
  recorded_on: str | None = None

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

  Leaves are numpy arrays (`to_replay_buffer` puts them on the device).
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


def _jump_gaps(trajectories: Trajectories) -> tuple[np.ndarray, np.ndarray]:
  """(gaps [N], tolerances [N]) float64 of the jump rule (module docstring); both 0 at the rows
  it does not apply to: terminals, timeouts, the file's last step, and every step of a file
  without next_observations."""
  num_steps = len(trajectories)
  gaps, tolerances = np.zeros(num_steps), np.zeros(num_steps)
  if trajectories.next_observations is None or num_steps < 2:
    return gaps, tolerances
  observations = np.asarray(trajectories.observations)
  next_observations = np.asarray(trajectories.next_observations)
  eps = max((float(np.finfo(array.dtype).eps) for array in (observations, next_observations)
             if np.issubdtype(array.dtype, np.floating)), default=0.0)
  following = observations[1:].astype(np.float64)
  recorded = next_observations[:-1].astype(np.float64)
  scale = float(np.mean(np.linalg.norm(observations.astype(np.float64), axis=-1)))
  checked = ~(np.asarray(trajectories.terminals, bool) | np.asarray(trajectories.timeouts, bool))
  checked[-1] = False
  gaps[:-1] = np.linalg.norm(following - recorded, axis=-1)
  magnitude = np.linalg.norm(np.maximum(np.abs(following), np.abs(recorded)), axis=-1)
  tolerances[:-1] = JUMP_ULPS * eps * magnitude + JUMP_RELATIVE_TOLERANCE * scale
  return np.where(checked, gaps, 0.0), np.where(checked, tolerances, 0.0)


def unflagged_jumps(trajectories: Trajectories) -> np.ndarray:
  """[N] bool: step i is neither terminal nor timeout, yet step i + 1's observation does not
  continue step i's recorded next_observation (the rule in the module docstring). All False
  for a file without next_observations."""
  gaps, tolerances = _jump_gaps(trajectories)
  return gaps > tolerances


def pair_steps(trajectories: Trajectories, *, split_at_jumps: bool = False
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Which steps become transitions, their next observations, and where trajectories end.

  A trajectory ends at a terminal, at a timeout and at the end of the file, as in the WSRL
  reference (module docstring). Unflagged jumps (`unflagged_jumps`) are logged as a warning
  naming the file and their count, and end a trajectory only with `split_at_jumps`. Where the
  file records next_observations every step is kept with its recorded next observation. Without
  them, step i is paired with step i + 1, so a step cut by a timeout, or the file's last step,
  has no next observation and is dropped (as D4RL's `qlearning_dataset` does); a terminal step
  is kept, its next observation only feeds the CQL regulariser (the file's last step, if
  terminal, gets its own observation there).

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
    continues[:-1] = True
    gaps, tolerances = _jump_gaps(trajectories)
    jumps = gaps > tolerances
    if jumps.any():
      jump_rows = np.flatnonzero(jumps)
      largest = jump_rows[np.argmax(gaps[jump_rows])]
      logging.warning(
          "%s: %d of %d steps have a next_observation that the next step's observation does not "
          "continue (L2 gap up to %.3g, tolerance %.3g), with no terminal or timeout there "
          "(first at rows %s). %s", trajectories.source, len(jump_rows), num_steps,
          gaps[largest], tolerances[largest], ", ".join(map(str, jump_rows[:5])),
          "Split there (split_at_jumps=True)." if split_at_jumps else
          "Not split, as the WSRL reference does not split there: Monte-Carlo returns run "
          "across; split_at_jumps=True splits them.")
      if split_at_jumps:
        continues &= ~jumps
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
                       negative_sparse_reward: float | None = None,
                       split_at_jumps: bool = False) -> OfflineDataset:
  """The Q-learning transitions of `trajectories` (numpy arrays; `to_replay_buffer` moves them).

  `negative_sparse_reward` is in the env's own units (adroit binary -1, antmaze 0), before scale
  and bias; None for dense-reward families. `clip_action` keeps dataset actions inside the
  tanh's open range (the WSRL sheet uses 0.99999); None leaves them as recorded.
  `split_at_jumps` also ends trajectories at unflagged jumps (`pair_steps`; default False, as
  the WSRL reference). Raises DatasetError (naming the file) if no step can be paired.
  """
  rows, next_observations, trajectory_ends = pair_steps(trajectories,
                                                        split_at_jumps=split_at_jumps)
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


def to_replay_buffer(dataset: OfflineDataset) -> ReplayBuffer:
  """The dataset as a full replay buffer of `Transition`s (device arrays), which the offline
  loop samples as the online loop samples its own (`replay.sample`)."""
  return replay.full(Transition(
      observation=jnp.asarray(dataset.observations), action=jnp.asarray(dataset.actions),
      reward=jnp.asarray(dataset.rewards),
      next_observation=jnp.asarray(dataset.next_observations),
      terminal=jnp.asarray(dataset.terminals), mc_return=jnp.asarray(dataset.mc_returns)))
