"""The host side of WSRL fine-tuning: build, restore or initialise, run chunks, report, save.

`train_and_evaluate(config, workdir)` is what `launch.finetune` calls. Between jitted chunks of
`config.steps_per_chunk` environment steps (all seeds at once) it evaluates, logs and
checkpoints; it never steps an environment or a learner itself.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import envs
from wsrl_mjx import checkpoint, metrics_log, networks, online, per_seed, replay
from wsrl_mjx.agents import sac

# Config fields that fix the program or array shapes: a run can only resume with the same values.
_RESUME_FIELDS = ("env_name", "num_seeds", "seed", "utd", "batch_size", "replay_capacity",
                  "num_critics", "num_target_critics", "actor_hidden_sizes", "critic_hidden_sizes",
                  "state_dependent_std", "layer_norm", "steps_per_chunk", "per_seed", "pretrained")


def agent_config(config, env_spec: envs.EnvSpec) -> sac.SACConfig:
  if config.batch_size % config.utd:
    raise ValueError(f"config.batch_size ({config.batch_size}) must split into config.utd "
                     f"({config.utd}) equal critic minibatches.")
  if not 1 <= config.num_target_critics <= config.num_critics:
    raise ValueError(f"config.num_target_critics ({config.num_target_critics}) must be between "
                     f"1 and config.num_critics ({config.num_critics}).")
  if config.matmul_precision not in networks.PRECISIONS:
    raise ValueError(f"config.matmul_precision={config.matmul_precision!r}; choose one of "
                     f"{', '.join(networks.PRECISIONS)}.")
  return sac.SACConfig(
      observation_size=env_spec.observation_size, action_size=env_spec.action_size,
      actor_hidden_sizes=tuple(config.actor_hidden_sizes),
      critic_hidden_sizes=tuple(config.critic_hidden_sizes),
      state_dependent_std=config.state_dependent_std, layer_norm=config.layer_norm,
      num_critics=config.num_critics, num_target_critics=config.num_target_critics,
      utd=config.utd, minibatch_size=config.batch_size // config.utd,
      discount=config.discount, tau=config.tau, backup_entropy=config.backup_entropy,
      target_entropy=config.target_entropy, initial_temperature=config.initial_temperature,
      reward_scale=(env_spec.reward_scale if config.reward_scale is None
                    else config.reward_scale),
      reward_bias=env_spec.reward_bias if config.reward_bias is None else config.reward_bias,
      matmul_precision=config.matmul_precision)


def agent_description(agent_config: sac.SACConfig) -> dict[str, Any]:
  """The `agent` block of a checkpoint description (see checkpoint.AGENT_SHAPE_FIELDS)."""
  fields = dataclasses.asdict(agent_config)
  for name in ("actor_hidden_sizes", "critic_hidden_sizes"):
    fields[name] = list(fields[name])
  return fields


def replay_capacity(config) -> int:
  """No run needs more rows than it takes environment steps."""
  return int(min(config.replay_capacity, config.online_steps))


def check_schedule(config) -> None:
  chunk = config.steps_per_chunk
  for name in ("online_steps", "eval_interval", "checkpoint_interval"):
    value = config[name]
    if value <= 0 or value % chunk:
      raise ValueError(f"config.{name} ({value}) must be a positive multiple of "
                       f"config.steps_per_chunk ({chunk}): the host acts between chunks only.")


def seed_mesh(num_seeds: int) -> Mesh:
  """A 1-D mesh over all devices; seeds are split evenly across it."""
  devices = jax.devices()
  if num_seeds % len(devices):
    raise ValueError(f"config.num_seeds ({num_seeds}) must be a multiple of the number of "
                     f"devices ({len(devices)}) so that seeds split evenly across them.")
  return Mesh(np.asarray(devices), ("seeds",))




@dataclasses.dataclass
class Programs:
  """The jitted, seed-vmapped functions of one run (compiled on first use).

  Every array they return has its seed axis laid over `sharding`, so that a freshly initialised
  state and one restored from a checkpoint hit the same compiled `run`.
  """
  online: online.Online
  sharding: NamedSharding
  init: Any
  run: Any
  evaluate: Any


def build_programs(config, env, env_spec) -> Programs:
  loop = online.LoopConfig(
      replay_capacity=replay_capacity(config),
      episode_length=config.episode_length or env_spec.episode_length,
      eval_episodes=config.eval_episodes, action_clip=config.action_clip)
  fused = online.make_online(env, env_spec, agent_config(config, env_spec), loop)

  def evaluate(actor_params, eval_key, env_step):
    return fused.evaluate(actor_params, jax.random.fold_in(eval_key, env_step))

  sharding = NamedSharding(seed_mesh(config.num_seeds), PartitionSpec("seeds"))
  return Programs(
      online=fused, sharding=sharding,
      init=jax.jit(jax.vmap(fused.init), out_shardings=sharding),
      run=jax.jit(jax.vmap(fused.run, in_axes=(0, None)), static_argnums=1, donate_argnums=0,
                  out_shardings=sharding),
      evaluate=jax.jit(jax.vmap(evaluate), out_shardings=sharding))


def seed_keys(config) -> jax.Array:
  """Seed i's key depends only on (config.seed, i), not on how many seeds run beside it."""
  base = jax.random.PRNGKey(config.seed)
  return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(config.num_seeds))


def load_pretrained(config, programs: Programs, env_spec) -> tuple[sac.AgentParams, dict]:
  agent = programs.online.agent
  expected = dict(agent_description(agent.config), env_name=env_spec.name)

  def abstract_params_for(num_seeds):
    keys = jax.random.split(jax.random.PRNGKey(0), num_seeds)
    return jax.eval_shape(jax.vmap(agent.init_params), keys)

  params, description = checkpoint.load_agent(config.pretrained, expected, abstract_params_for)
  sources = checkpoint.seed_sources(config.num_seeds, description["num_seeds"])
  logging.info("Pretrained agent: %s (%s, env step %s); run seed i starts from its seed %s",
               config.pretrained, description.get("env_name"), description.get("env_step"),
               "i" if description["num_seeds"] >= config.num_seeds
               else f"i mod {description['num_seeds']}")
  return jax.tree.map(lambda x: x[sources], params), description


def run_description(config, env_spec, agent_config: sac.SACConfig, seed_overrides) -> dict:
  return {
      "kind": "wsrl-mjx finetune",
      "env_name": env_spec.name, "task": env_spec.task, "family": env_spec.family,
      "num_seeds": config.num_seeds,
      "agent": agent_description(agent_config),
      "per_seed": seed_overrides,
      "config": config.to_dict(),
  }


def _check_resumable(config, description: dict, workdir) -> None:
  saved = description.get("config", {})
  if saved and min(saved["replay_capacity"], saved["online_steps"]) != replay_capacity(config):
    raise checkpoint.CheckpointError(
        f"{workdir}: its replay buffers hold {min(saved['replay_capacity'], saved['online_steps'])}"
        f" transitions, this config asks for {replay_capacity(config)} (the buffer is capped at "
        "online_steps). Extend a run only within its buffer size, or choose a new --workdir.")
  for field in _RESUME_FIELDS:
    have, want = saved.get(field), config[field]
    if isinstance(want, (list, tuple)):
      have, want = list(have or []), list(want)
    if have != want:
      raise checkpoint.CheckpointError(
          f"{workdir}: holds a run with config.{field}={have!r}, this one asks for {want!r}. "
          "Resume with the same settings or choose a new --workdir.")


def _chunk_summary(stats: online.ChunkStats) -> dict[str, np.ndarray]:
  stats = jax.tree.map(np.asarray, stats)
  updates = np.maximum(stats.updates, 1)
  with np.errstate(invalid="ignore", divide="ignore"):
    train_return = np.where(stats.completed_episodes > 0,
                            stats.completed_return_sum / stats.completed_episodes, np.nan)
  return {"train_return": train_return, "critic_loss": stats.critic_loss_sum / updates,
          "actor_loss": stats.actor_loss_sum / updates, "q": stats.q_sum / updates,
          "temperature": stats.temperature, "entropy": stats.entropy_sum / updates,
          "updates": stats.updates}


def _nanmean(x) -> float:
  x = np.asarray(x, np.float64)
  return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


def _format_duration(seconds: float) -> str:
  if not np.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def train_and_evaluate(config, workdir: str | pathlib.Path,
                       programs: Programs | None = None) -> dict[str, Any]:
  """Fine-tunes `config.num_seeds` seeds; resumes from `workdir` if it holds a checkpoint.

  `programs` lets callers (tests, benchmarks) reuse already compiled functions for the same
  config. Returns the last evaluation record.
  """
  workdir = pathlib.Path(workdir)
  check_schedule(config)
  solver = {k: config[k] or None for k in ("solver_iterations", "solver_ls_iterations")}
  env, env_spec = envs.make(config.env_name, **solver)
  programs = programs or build_programs(config, env, env_spec)
  agent_cfg = programs.online.agent.config
  settings, seed_overrides = per_seed.seed_settings(config)
  num_devices = programs.sharding.mesh.size
  logging.info(replay.check_fits(replay_capacity(config), env_spec.observation_size,
                                 env_spec.action_size, config.num_seeds // num_devices,
                                 replay.device_memory_bytes()))
  if num_devices > 1:
    logging.info("Seeds split over %d devices", num_devices)

  checkpoints = checkpoint.RunCheckpoints(workdir, max_to_keep=config.keep_checkpoints)
  log = metrics_log.MetricsLog(workdir)
  description = run_description(config, env_spec, agent_cfg, seed_overrides)
  settings = jax.device_put(jax.tree.map(jnp.asarray, settings), programs.sharding)
  keys = jax.device_put(seed_keys(config), programs.sharding)

  latest = checkpoints.latest_step()
  if latest is not None:
    _check_resumable(config, checkpoints.description(latest), workdir)
    # The state's structure does not depend on where the agent came from.
    abstract = jax.eval_shape(programs.init, keys, settings, None)
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=programs.sharding), abstract)
    state = checkpoints.restore(latest, abstract)
    log.truncate_after(latest)
    logging.info("Resumed %s at env step %d", workdir, latest)
  else:
    pretrained = None
    if config.pretrained:
      pretrained, _ = load_pretrained(config, programs, env_spec)
      pretrained = jax.device_put(pretrained, programs.sharding)
    state = programs.init(keys, settings, pretrained)

  total = config.online_steps
  env_step = int(np.asarray(state.env_step)[0])
  reported_divergence = set(np.flatnonzero(np.asarray(state.diverged_at) >= 0).tolist())
  last_record = None

  def evaluate_and_log(state, env_step, train_summary):
    returns = np.asarray(programs.evaluate(state.agent.params.actor, state.eval_key,
                                           state.env_step))          # [seeds, episodes]
    scores = env_spec.normalized_score(returns)
    diverged_at = np.asarray(state.diverged_at)
    record = {
        "env_step": env_step,
        "returns": returns.mean(axis=1),
        "normalized_scores": scores.mean(axis=1),
        "episode_returns": returns,
        "diverged_at": np.where(diverged_at >= 0, diverged_at, None).tolist(),
        "per_seed": seed_overrides,
    }
    if train_summary:
      record["train"] = {k: v for k, v in train_summary.items()}
    log.write_evaluation(record)
    scalars = {"eval/normalized_score_mean": _nanmean(record["normalized_scores"]),
               "eval/normalized_score_min": float(np.min(record["normalized_scores"])),
               "eval/normalized_score_max": float(np.max(record["normalized_scores"])),
               "eval/return_mean": _nanmean(record["returns"])}
    for name, values in (train_summary or {}).items():
      scalars[f"train/{name}"] = _nanmean(values)
    log.write_scalars(env_step, scalars)
    return record

  if latest is None:
    last_record = evaluate_and_log(state, env_step, None)
    logging.info("env step 0: normalised score %.1f (mean of %d seeds; the starting policy)",
                 _nanmean(last_record["normalized_scores"]), config.num_seeds)

  started, started_step = time.time(), env_step
  while env_step < total:
    state, stats = programs.run(state, config.steps_per_chunk)
    summary = _chunk_summary(stats)
    env_step += config.steps_per_chunk
    elapsed = time.time() - started
    rate = (env_step - started_step) / max(elapsed, 1e-9)

    diverged = np.flatnonzero(np.asarray(state.diverged_at) >= 0).tolist()
    for seed in sorted(set(diverged) - reported_divergence):
      logging.warning(
          "Seed %d stopped learning at env step %d: an update produced a non-finite loss or "
          "gradient. Its parameters stay at its last finite update; the other seeds go on.",
          seed, int(np.asarray(state.diverged_at)[seed]))
    reported_divergence.update(diverged)

    if env_step % config.eval_interval == 0 or env_step == total:
      last_record = evaluate_and_log(state, env_step, summary)
    else:
      log.write_scalars(env_step, {f"train/{k}": _nanmean(v) for k, v in summary.items()})
    score = (_nanmean(last_record["normalized_scores"]) if last_record is not None
             else float("nan"))
    logging.info(
        "env step %d/%d (%.1f%%) | %.0f env steps/s per seed, %.0f over %d seeds | ETA %s | "
        "last eval score %.1f | train return %.1f | critic loss %.3g | temperature %.3g",
        env_step, total, 100.0 * env_step / total, rate, rate * config.num_seeds,
        config.num_seeds, _format_duration((total - env_step) / max(rate, 1e-9)), score,
        _nanmean(summary["train_return"]), _nanmean(summary["critic_loss"]),
        _nanmean(summary["temperature"]))
    if env_step % config.checkpoint_interval == 0 or env_step == total:
      checkpoints.save(env_step, state, state.agent.params, description)

  checkpoints.close()
  log.close()
  if last_record is None:  # Resumed a finished run.
    records = log.records()
    last_record = records[-1] if records else {}
  return last_record
