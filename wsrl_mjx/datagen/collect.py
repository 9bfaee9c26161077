"""Rolling out a policy in an MJX env and writing what it did as a D4RL-format dataset.

This is how wsrl-mjx makes offline data without downloads: `launch/collect.py` rolls out a
random policy or a checkpoint's actor in parallel envs (one `lax.scan`, vmapped over envs) and
writes the steps with D4RL's keys and conventions (terminals at true terminations, timeouts at
the time limit, `infos/qpos`/`infos/qvel` of the state each observation was taken in).

AntMaze: D4RL's published v2 files set terminal = 1 on every step whose reward is 1 (the ant
within 0.5 m of the goal; D4RL issue 199, which finds clusters of such steps), while the episode
goes on to its time limit: D4RL's `scripts/generation/generate_ant_maze_datasets.py:141-158`
resets only at `done or timeout`, and its data env's `done` is never set (`goal_reaching_env.py`
ends episodes only with `eval=True`); the terminal flags of the v2 files are the rewards, not
that script's `done`. An env whose `data_terminal_at_goal` is true (envs/antmaze.py) gets the
same rows: terminal wherever reward = 1, the episode not reset. So the WSRL reference's
processing (masks = 1 - terminals, Monte-Carlo returns split at terminals:
`wsrl/envs/d4rl_dataset.py:171-253`) stops there, on our files as on D4RL's.

Rows carry one column that is not written: `episode_ends` [N] bool, where the env's episode
ended (a termination, the time limit or the end of a stream); a terminal row need not be one.
A physics blow-up's step (a non-finite state, observation or reward: `envs.episodes`) is not
written; the row before it, in its stream, becomes the end of its episode (a timeout).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from envs import EnvSpec, MjxEnv, episodes
from wsrl_mjx import batched, checkpoint
from wsrl_mjx.agents import sac
from wsrl_mjx.data import adroit, d4rl

# (policy params, observation [obs], key) -> action [act]
Policy = Callable[[Any, jax.Array, jax.Array], jax.Array]


def random_policy(action_size: int) -> Policy:
  return lambda params, observation, key: jax.random.uniform(key, (action_size,), minval=-1.0,
                                                             maxval=1.0)


def checkpoint_policy(path: str | os.PathLike, seed: int, deterministic: bool):
  """(policy, actor params of checkpoint seed `seed`, description) of a WSRL-shaped agent."""
  directory, step = checkpoint.resolve(path)
  description = checkpoint.read_description(directory, step)
  agent = description.get("agent", {})
  if agent.get("policy") != "tanh_gaussian":
    raise checkpoint.CheckpointError(
        f"{directory / str(step)}: agent.policy is {agent.get('policy')!r}; the collector rolls "
        "out WSRL/CQL actors ('tanh_gaussian').")
  fields = {f.name for f in dataclasses.fields(sac.SACConfig)}
  config = sac.SACConfig(**{k: (tuple(v) if isinstance(v, list) else v)
                            for k, v in agent.items() if k in fields})
  learner = sac.SAC(config)

  def abstract_params_for(num_seeds):
    keys = jax.random.split(jax.random.PRNGKey(0), num_seeds)
    return jax.eval_shape(jax.vmap(learner.init_params), keys)

  params, description = checkpoint.load_agent(path, dict(agent), abstract_params_for)
  if not 0 <= seed < description["num_seeds"]:
    raise checkpoint.CheckpointError(
        f"{directory / str(step)}: holds seeds 0..{description['num_seeds'] - 1}, not {seed}")
  actor = jax.tree.map(lambda x: x[seed], params.actor)
  if deterministic:
    return (lambda p, observation, key: learner.deterministic_action(p, observation)), actor, \
        description
  return learner.sample_action, actor, description


def make_transition(env: MjxEnv, episode_length: int):
  """transition((env state, steps into its episode), action, reset key) -> (carry, D4RL row).

  The row is the step from the state with `action`; an episode that ends (the env's termination
  or the time limit) is replaced by a fresh one in the carry. `terminals` is the env's
  termination, and also, for an env with `data_terminal_at_goal` (AntMaze), every step with
  reward 1, where the episode goes on (D4RL's AntMaze files; module docstring). `timeouts` is
  the time limit unless the env terminated there; with a goal-terminal row at the time limit
  both are set, as in D4RL's files. `episode_ends` marks the rows after which the env resets;
  `valid` is false on a blow-up's row, which `_as_dataset` drops.
  """
  terminal_at_goal = bool(getattr(env, "data_terminal_at_goal", False))

  def transition(carry, action, reset_key):
    env_state, length = carry
    following, result = episodes.step(env, episodes.Episode(state=env_state, length=length),
                                      action, episode_length, reset_key)
    next_state = result.state
    terminal = (result.terminal | (next_state.reward == 1.0)) if terminal_at_goal \
        else result.terminal
    row = {"observations": env_state.obs, "actions": action, "rewards": next_state.reward,
           "terminals": terminal, "timeouts": result.timeout, "episode_ends": result.done,
           "valid": result.valid,
           "next_observations": next_state.obs,
           "qpos": env_state.pipeline_state.qpos, "qvel": env_state.pipeline_state.qvel}
    if "goal" in env_state.info:        # AntMaze: D4RL's infos/goal
      row["goal"] = env_state.info["goal"]
    if "success" in next_state.metrics:  # sparse tasks: D4RL's infos/goal_achieved
      row["goal_achieved"] = next_state.metrics["success"] > 0
    return (following.state, following.length), row

  return transition


def make_rollout(env: MjxEnv, policy: Policy, num_steps: int, episode_length: int,
                 action_clip: float):
  """rollout(key, policy_params) -> D4RL columns [num_steps, ...] of one env's stream."""
  transition = make_transition(env, episode_length)

  def rollout(key, policy_params):
    def body(carry, step_key):
      action_key, reset_key = jax.random.split(step_key)
      action = jnp.clip(policy(policy_params, carry[0].obs, action_key), -action_clip,
                        action_clip)
      return transition(carry, action, reset_key)

    reset_key, key = jax.random.split(key)
    carry = batched.batched_like((env.reset(reset_key), jnp.zeros((), jnp.int32)), key)
    _, rows = jax.lax.scan(body, carry, jax.random.split(key, num_steps))
    return rows

  return rollout


def collect(env: MjxEnv, env_spec: EnvSpec, policy: Policy, policy_params, key: jax.Array,
            steps_per_env: int, num_envs: int, episode_length: int | None = None,
            action_clip: float = 1.0) -> dict[str, np.ndarray]:
  """`num_envs` parallel streams of `steps_per_env` steps, concatenated env after env.

  The last step of each stream becomes a timeout (if it is not a terminal), so no trajectory
  runs from one stream into the next.
  """
  rollout = make_rollout(env, policy, steps_per_env, episode_length or env_spec.episode_length,
                         action_clip)
  rows = jax.jit(jax.vmap(rollout, in_axes=(0, None)))(jax.random.split(key, num_envs),
                                                       policy_params)
  return _as_dataset(rows, env_spec)


def collect_with_planner(env: MjxEnv, env_spec: EnvSpec, planner, key: jax.Array,
                         steps_per_env: int, num_envs: int, episode_length: int | None = None,
                         action_clip: float = 1.0, log_every: int = 50
                         ) -> dict[str, np.ndarray]:
  """`collect` with actions from a host-side planner (datagen/planner.py) instead of a policy.

  The envs step in MJX, one jitted vmapped transition per step; between steps the planner
  reads their physics states and plans in C MuJoCo. Its random draws come from `key`.
  """
  transition = jax.jit(jax.vmap(make_transition(
      env, episode_length or env_spec.episode_length)))
  reset_key, planner_key, key = jax.random.split(key, 3)
  carry = (jax.jit(jax.vmap(env.reset))(jax.random.split(reset_key, num_envs)),
           jnp.zeros((num_envs,), jnp.int32))
  rng = np.random.default_rng(np.asarray(jax.random.key_data(planner_key)))
  planner.start(num_envs)
  fresh = np.ones(num_envs, bool)
  started, ended, reached = time.time(), 0, 0
  rows = []
  for step_key in jax.random.split(key, steps_per_env):
    env_state = carry[0]
    if fresh.any():
      info = jax.tree.map(np.asarray, env_state.info)
      for index in np.flatnonzero(fresh):
        planner.reset(index, {k: v[index] for k, v in info.items()})
    data = env_state.pipeline_state
    actions = planner.act(rng, *(np.asarray(x, np.float64) for x in (
        data.qpos, data.qvel, env_state.obs)))
    actions = jnp.asarray(np.clip(actions, -action_clip, action_clip), jnp.float32)
    carry, row = transition(carry, actions, jax.random.split(step_key, num_envs))
    rows.append(jax.device_get(row))
    fresh = np.asarray(carry[1]) == 0
    ended, reached = ended + int(fresh.sum()), reached + int(np.sum(row["terminals"] & fresh))
    if len(rows) % log_every == 0:
      logging.info("planner: step %d of %d, %d episodes ended, %d at a terminal (%.0f s)",
                   len(rows), steps_per_env, ended, reached, time.time() - started)
  # On the host: jnp.stack of thousands of steps is one XLA concatenate per field with an
  # operand per step, which took minutes to compile (5,600 kitchen steps).
  rows = jax.tree.map(lambda *steps: np.stack(steps, axis=1), *rows)   # [envs, steps, ...]
  return _as_dataset(rows, env_spec)


def _as_dataset(rows, env_spec: EnvSpec) -> dict[str, np.ndarray]:
  """[envs, steps, ...] rollout columns -> one [envs * steps, ...] stream of D4RL rows.

  Each stream's last row ends its episode; it becomes a timeout unless the env terminated
  there, so no trajectory runs from one stream into the next. A blow-up's row (`valid` false)
  is dropped, and the row before it in its stream ends its episode the same way.
  """
  rows = {k: np.array(v) for k, v in rows.items()}
  valid = rows.pop("valid")
  num_envs, steps_per_env = rows["terminals"].shape
  cut = np.zeros_like(valid)
  cut[:, :-1] = ~valid[:, 1:]
  cut[:, -1] = True
  rows["timeouts"] |= cut & ~rows["episode_ends"]
  rows["episode_ends"] |= cut
  # A data-collection env may show its policy more than the task's observation (AntMaze's
  # appends the goal's direction); the dataset keeps the task's, as D4RL's did.
  for key in ("observations", "next_observations"):
    rows[key] = rows[key][..., :env_spec.observation_size]
  keep = valid.reshape(-1)
  if not keep.all():
    logging.warning("%d of %d collected steps blew up (non-finite physics); not written, each "
                    "ends its episode as a timeout", int((~keep).sum()), keep.size)
  return {k: v.reshape(num_envs * steps_per_env, *v.shape[2:])[keep] for k, v in rows.items()}


def success_rate(rows: dict[str, np.ndarray], stream_length: int | None = None,
                 episode_length: int | None = None) -> float:
  """Fraction of the collected episodes that reached the goal at some step (sparse tasks: the
  env's success metric, else a positive reward).

  With `stream_length` (steps per env, as `collect` concatenates them) and `episode_length`, an
  episode that the end of its stream cut short (no terminal, shorter than the time limit, goal
  not reached) is left out: it had no chance to finish, and counting it as a failure would
  understate a demonstrator whose successes end episodes early (Adroit).
  """
  ends = episode_ends(rows)
  episode = np.concatenate([[0], np.cumsum(ends[:-1])])
  reached = np.zeros(episode[-1] + 1, bool)
  np.logical_or.at(reached, episode, rows.get("goal_achieved", rows["rewards"] > 0))
  counted = np.ones_like(reached)
  if stream_length and episode_length:
    counted = ~(cut_by_stream_end(rows, stream_length, episode_length) & ~reached)
  return float(reached[counted].mean()) if counted.any() else float("nan")


def cut_by_stream_end(rows: dict[str, np.ndarray], stream_length: int,
                      episode_length: int) -> np.ndarray:
  """[episodes] bool: the episodes (in `trajectories` order) that the end of their env's stream
  of `stream_length` steps cut short: they end there, without a terminal, shorter than
  `episode_length`. Such an episode had no chance to finish."""
  end_steps = np.flatnonzero(episode_ends(rows))
  starts = np.concatenate([[0], end_steps[:-1] + 1])
  return (((end_steps + 1) % stream_length == 0) & ~np.asarray(rows["terminals"], bool)[end_steps]
          & (end_steps - starts + 1 < episode_length))


def episode_ends(rows: dict[str, np.ndarray]) -> np.ndarray:
  """[N] bool: the rows after which the env started a new episode (the collector's
  `episode_ends`; for rows without it, terminals | timeouts)."""
  if "episode_ends" in rows:
    return np.asarray(rows["episode_ends"], bool)
  return np.asarray(rows["terminals"], bool) | np.asarray(rows["timeouts"], bool)


def trajectories(rows: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
  """The collected rows cut into episodes (each ends where the env's episode ended)."""
  ends = np.flatnonzero(episode_ends(rows)) + 1
  keys = ("observations", "next_observations", "actions", "rewards", "terminals")
  return [{k: rows[k][start:end] for k in keys}
          for start, end in zip(np.concatenate([[0], ends[:-1]]), ends)]


def finished_trajectories(rows: dict[str, np.ndarray], stream_length: int, episode_length: int
                          ) -> tuple[list[dict[str, np.ndarray]], int]:
  """(the episodes of `trajectories(rows)` that the end of their stream did not cut short
  (`cut_by_stream_end`), how many it did): a rate over episodes leaves the cut ones out."""
  cut = cut_by_stream_end(rows, stream_length, episode_length)
  finished = [e for e, was_cut in zip(trajectories(rows), cut) if not was_cut]
  return finished, int(cut.sum())


def write(path: str | os.PathLike, rows: dict[str, np.ndarray], metadata: dict[str, Any]):
  """Writes collected rows as a D4RL hdf5 file (atomically)."""
  return d4rl.write_d4rl_hdf5(
      path, observations=rows["observations"], actions=rows["actions"],
      rewards=rows["rewards"], terminals=rows["terminals"], timeouts=rows["timeouts"],
      next_observations=rows["next_observations"],
      infos={"qpos": rows["qpos"], "qvel": rows["qvel"],
             **{k: rows[k] for k in ("goal", "goal_achieved") if k in rows}},
      metadata=metadata)


def write_adroit_npy(path: str | os.PathLike, rows: dict[str, np.ndarray], layout: str):
  """Writes collected rows as WSRL's Adroit binary `.npy` trajectory list (atomically)."""
  return adroit.write_adroit_npy(path, trajectories(rows), layout=layout)
