"""The host side of WSRL fine-tuning: build, restore or initialise, run chunks, report, save.

`train_and_evaluate(config, workdir)` is what `launch.finetune` calls. It checks the config
(`configs.validate`), then between jitted chunks of up to `config.steps_per_chunk` environment
steps (all seeds at once; `host_loop.chunk_lengths`) it evaluates, logs and checkpoints; it
never steps an environment or a learner itself.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

import envs
from wsrl_mjx import checkpoint, configs, host_loop, online, per_seed, replay
from wsrl_mjx.agents import sac
from wsrl_mjx.host_loop import seed_keys, seed_mesh, seed_sharding  # noqa: F401 (re-exported)

# Config fields that fix the program or array shapes: a run can only resume with the same values.
_RESUME_FIELDS = ("env_name", "num_seeds", "seed", "utd", "batch_size", "replay_capacity",
                  "num_critics", "num_target_critics", "actor_hidden_sizes", "critic_hidden_sizes",
                  "state_dependent_std", "layer_norm", "steps_per_chunk", "per_seed", "pretrained")


def replay_capacity(config) -> int:
  """No run needs more rows than it takes environment steps."""
  return int(min(config.replay_capacity, config.online_steps))


Programs = host_loop.SeedPrograms   # `loop` is the `online.Online` of the run


def build_programs(config, env, env_spec) -> Programs:
  loop = online.LoopConfig(
      replay_capacity=replay_capacity(config),
      episode_length=config.episode_length or env_spec.episode_length,
      eval_episodes=config.eval_episodes, action_clip=config.action_clip)
  fused = online.make_online(env, env_spec, configs.sac_config(config, env_spec), loop)

  def evaluate(actor_params, eval_key, env_step):
    return fused.evaluate(actor_params, jax.random.fold_in(eval_key, env_step))

  return host_loop.compile_seed_programs(fused, config.num_seeds, evaluate=evaluate)


def load_pretrained(config, programs: Programs, env_spec):
  """The checkpoint's agent for every run seed -> (params, Adam states or None, description).

  Refused (CheckpointError) where its shapes do not fit, or where it was pretrained for another
  task, reward scale, reward bias or discount, unless `config.allow_transfer`.

  The Adam states are None where the checkpoint has none (format 1, before they were saved) or
  `config.init_optimizer` is false everywhere; a warning says so in the first case.
  """
  agent = programs.loop.agent
  expected = dict(configs.agent_description(agent.config), env_name=env_spec.name)

  def abstract_params_for(num_seeds):
    keys = jax.random.split(jax.random.PRNGKey(0), num_seeds)
    return jax.eval_shape(jax.vmap(agent.init_params), keys)

  def abstract_optimizer_for(num_seeds):
    rates = sac.LearningRates(actor=1.0, critic=1.0, temperature=1.0)
    state = jax.eval_shape(lambda p: jax.vmap(lambda q: agent.init_state(q, rates))(p),
                           abstract_params_for(num_seeds))
    return sac.optimizer_states(state)

  # What the agent's values mean must be this run's (task, reward transform, discount).
  meaning = dict(task=env_spec.task, reward_scale=agent.config.reward_scale,
                 reward_bias=agent.config.reward_bias, discount=agent.config.discount)
  params, description = checkpoint.load_agent(config.pretrained, expected, abstract_params_for,
                                              meaning=meaning,
                                              allow_transfer=config.allow_transfer)
  sources = checkpoint.seed_sources(config.num_seeds, description["num_seeds"])
  optimizer = None
  settings, _ = per_seed.seed_settings(config)
  if np.any(settings.init_optimizer):
    optimizer = checkpoint.load_optimizer(config.pretrained, abstract_optimizer_for)
    if optimizer is None:
      logging.warning(
          "%s holds no optimiser state (a checkpoint of format %s; format 2 saves it): "
          "fine-tuning starts fresh Adam states, where the reference continues the "
          "pretraining's. Re-run the pretraining to hand them over.", config.pretrained,
          description.get("format_version", "?"))
    else:
      optimizer = jax.tree.map(lambda x: x[sources], optimizer)
  saved_seeds = description["num_seeds"]
  if saved_seeds == 1:
    which = "every run seed starts from its one seed"
  elif saved_seeds >= config.num_seeds:
    which = "run seed i starts from its seed i"
  else:
    which = f"run seed i starts from its seed i mod {saved_seeds}"
  logging.info("Pretrained agent: %s (%s, %s %s); %s", config.pretrained,
               description.get("env_name"), description.get("step_unit"), description.get("step"),
               which)
  return jax.tree.map(lambda x: x[sources], params), optimizer, description


def run_description(config, env_spec, agent_config: sac.SACConfig, seed_overrides) -> dict:
  return {
      "kind": "wsrl-mjx finetune",
      "env_name": env_spec.name, "task": env_spec.task, "family": env_spec.family,
      "num_seeds": config.num_seeds,
      "agent": configs.agent_description(agent_config),
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
  host_loop.check_same_fields(saved, config, _RESUME_FIELDS, workdir)


def _chunk_summary(stats: online.ChunkStats) -> dict[str, np.ndarray]:
  """Per-seed means over the chunk: losses per update, return per completed episode."""
  stats = host_loop.to_host(dict(vars(stats)))
  completed, return_sum = stats.pop("completed_episodes"), stats.pop("completed_return_sum")
  summary = host_loop.per_seed_summary(stats, "updates")
  with np.errstate(invalid="ignore", divide="ignore"):
    summary["train_return"] = np.where(completed > 0, return_sum / np.maximum(completed, 1),
                                       np.nan)
  return summary


def log_start(config, settings: online.SeedSettings) -> None:
  """Says where the agent comes from and when updates start: WSRL, or SAC from scratch."""
  if config.pretrained:
    source = "the pretrained agent, frozen,"
  else:
    source = "the untrained agent"
    logging.warning("config.pretrained is empty: the agent starts from random weights (SAC from "
                    "scratch, WSRL's baseline), not from an offline-pretrained agent. Set "
                    "--config.pretrained=RUN_DIR for WSRL.")
  # The step with index k (from 0) trains if k > max(warmup, batch) (online.py): the first
  # update comes once the buffer holds that floor + 2 transitions.
  starts = sorted({max(int(k), config.batch_size) + 2 for k in np.ravel(settings.warmup_steps)})
  logging.info("Warmup: %s collects into an empty replay buffer; updates (UTD %d) start once it "
               "holds %s transitions (the reference's rule: the first step whose index exceeds "
               "max(warmup_steps, batch_size))", source, config.utd,
               " or ".join(f"{s:,}" for s in starts))


def train_and_evaluate(config, workdir: str | pathlib.Path,
                       programs: Programs | None = None) -> dict[str, Any]:
  """Fine-tunes `config.num_seeds` seeds; resumes from `workdir` if it holds a checkpoint.

  `programs` lets callers (tests, benchmarks) reuse already compiled functions for the same
  config. Returns the last evaluation record.
  """
  workdir = pathlib.Path(workdir)
  env_spec = configs.validate(config)
  env, env_spec = envs.make(config.env_name, **configs.env_options(config, env_spec))
  programs = programs or build_programs(config, env, env_spec)
  settings, seed_overrides = per_seed.seed_settings(config)
  log_start(config, settings)
  num_devices = programs.sharding.mesh.size
  logging.info(replay.check_fits(replay_capacity(config), env_spec.observation_size,
                                 env_spec.action_size, config.num_seeds // num_devices,
                                 replay.device_memory_bytes()))
  if num_devices > 1:
    logging.info("Seeds split over %d devices", num_devices)
  settings = jax.device_put(jax.tree.map(jnp.asarray, settings), programs.sharding)
  keys = jax.device_put(seed_keys(config), programs.sharding)

  def init():
    pretrained = optimizer = None
    if config.pretrained:
      pretrained, optimizer, _ = load_pretrained(config, programs, env_spec)
      pretrained, optimizer = jax.device_put((pretrained, optimizer), programs.sharding)
    return programs.init(keys, settings, pretrained, optimizer)

  def abstract_state():
    # The state's structure does not depend on where the agent came from.
    return programs.abstract_state(keys, settings, None, None)

  def run(state, num_steps):
    state, stats = programs.run(state, num_steps)
    return state, _chunk_summary(stats)

  phase = host_loop.Phase(
      unit="env_step", total_steps=config.online_steps, steps_per_chunk=config.steps_per_chunk,
      eval_interval=config.eval_interval, checkpoint_interval=config.checkpoint_interval,
      keep_checkpoints=config.keep_checkpoints, num_seeds=config.num_seeds, env_spec=env_spec,
      description=run_description(config, env_spec, programs.loop.agent.config,
                                  seed_overrides),
      init=init, abstract_state=abstract_state, run=run,
      evaluate=lambda state: programs.evaluate(state.agent.params.actor, state.eval_key,
                                               state.env_step),
      step_of=lambda state: int(host_loop.to_host(state.env_step)[0]),
      diverged_at=lambda state: host_loop.to_host(state.diverged_at),
      agent_params=lambda state: state.agent.params,
      optimizer_states=lambda state: sac.optimizer_states(state.agent),
      check_resumable=lambda description: _check_resumable(config, description, workdir),
      progress=(("train return", "train_return"), ("critic loss", "critic_loss"),
                ("temperature", "temperature")),
      record_extras={"per_seed": seed_overrides})
  return host_loop.run_phase(phase, workdir)
