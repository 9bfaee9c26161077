"""The host side of offline pretraining (Cal-QL, CQL, IQL) on a D4RL-format dataset.

`train_and_evaluate(config, workdir)` is what `launch.pretrain` calls. It reads and checks the
dataset, puts it on the device once, and drives `offline.Offline` through the shared host loop.
For CQL and Cal-QL the checkpoints' `agent` item has exactly WSRL's shapes, so
`launch.finetune --config.pretrained=<workdir>` starts from it, seed by seed.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import jax
import numpy as np
from absl import logging

import envs
from wsrl_mjx import configs, data, host_loop, offline, runs

ALGOS = configs.ALGOS
_RESUME_FIELDS = ("env_name", "dataset", "algo", "num_seeds", "seed", "batch_size",
                  "num_critics", "actor_hidden_sizes", "critic_hidden_sizes", "iql_hidden_sizes",
                  "state_dependent_std", "layer_norm", "steps_per_chunk")


def env_spec_for(config) -> envs.EnvSpec:
  """The task's facts, with the config's reward transform where it overrides the family's."""
  env_spec = envs.spec(config.env_name)
  return dataclasses.replace(
      env_spec,
      reward_scale=env_spec.reward_scale if config.reward_scale is None else config.reward_scale,
      reward_bias=env_spec.reward_bias if config.reward_bias is None else config.reward_bias)


def load_dataset(config, env_spec: envs.EnvSpec) -> tuple[data.OfflineDataset, str]:
  """Reads and checks the dataset (errors name the file and the field) -> (dataset, source)."""
  source = config.dataset or env_spec.name
  observation_keys = [k.strip() for k in config.observation_keys.split(",") if k.strip()]
  dataset = data.load(source, env_spec, discount=config.discount,
                      clip_action=config.action_clip,
                      negative_sparse_reward=config.negative_sparse_reward,
                      split_at_jumps=config.split_at_jumps,
                      observation_keys=observation_keys or None)
  nbytes = sum(np.asarray(x).nbytes for x in jax.tree.leaves(dataset))
  logging.info("Dataset %s: %d transitions, %.1f MiB on the device", source, dataset.size,
               nbytes / 2**20)
  return dataset, str(source)


def dataset_on_device(dataset: data.OfflineDataset, mesh, mc_return: bool = True):
  """The dataset as a full replay buffer, one copy on each device of `mesh` (replicated, not
  one per seed): the seed-vmapped programs take it as an input every seed shares. Without
  `mc_return` its Monte-Carlo returns stay on the host (learners that do not read them)."""
  buffer = data.to_replay_buffer(dataset)
  if not mc_return:
    buffer = buffer.replace(data=buffer.data.replace(mc_return=None))
  return jax.device_put(buffer, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))


Programs = host_loop.SeedPrograms   # `loop` is the `offline.Offline` of the run


def build_programs(config, env, env_spec: envs.EnvSpec, learner) -> Programs:
  fused = offline.Offline(
      env=env, learner=learner, batch_size=config.batch_size,
      eval_episodes=config.eval_episodes,
      episode_length=config.episode_length or env_spec.episode_length,
      action_clip=config.action_clip)
  return host_loop.compile_seed_programs(fused, config.num_seeds, num_shared_run_args=1)


def run_description(config, env_spec: envs.EnvSpec, agent_block: dict, source: str,
                    num_transitions: int) -> dict[str, Any]:
  """The checkpoints' description of a pretraining: what fine-tuning checks before it starts
  from one (`algo`, the task, the agent's shapes and reward transform)."""
  return {
      "kind": "wsrl-mjx pretrain", "algo": config.algo,
      "env_name": env_spec.name, "task": env_spec.task, "family": env_spec.family,
      "dataset": source, "dataset_transitions": int(num_transitions),
      "num_seeds": config.num_seeds, "agent": agent_block, "config": config.to_dict(),
      "resolved_paths": runs.resolved_paths(config)}


def train_and_evaluate(config, workdir: str | pathlib.Path,
                       programs: Programs | None = None) -> dict[str, Any]:
  """Pretrains `config.num_seeds` seeds; resumes from `workdir` if it holds a checkpoint."""
  workdir = pathlib.Path(workdir)
  configs.validate(config)
  env_spec = env_spec_for(config)
  learner, agent_block = configs.make_learner(config, env_spec)
  dataset, source = load_dataset(config, env_spec)
  if programs is None:
    env, _ = envs.make(config.env_name, **configs.env_options(config, env_spec))
    programs = build_programs(config, env, env_spec, learner)
  num_transitions = dataset.size
  dataset = dataset_on_device(dataset, programs.sharding.mesh)
  keys = jax.device_put(host_loop.seed_keys(config), programs.sharding)

  def run(state, num_steps):
    state, stats = programs.run(state, dataset, num_steps)
    return state, host_loop.per_seed_summary(vars(stats), "updates")

  def check_resumable(description):
    saved = description.get("config", {})
    host_loop.check_same_fields(saved, config,
                                host_loop.resume_fields(saved, config, _RESUME_FIELDS), workdir,
                                description.get("resolved_paths"))

  description = run_description(config, env_spec, agent_block, source, num_transitions)
  phase = host_loop.Phase(
      unit="gradient_step", total_steps=config.offline_steps,
      steps_per_chunk=config.steps_per_chunk, eval_interval=config.eval_interval,
      checkpoint_interval=config.checkpoint_interval, keep_checkpoints=config.keep_checkpoints,
      num_seeds=config.num_seeds, env_spec=env_spec, description=description,
      init=lambda: programs.init(keys), abstract_state=lambda: programs.abstract_state(keys),
      run=run,
      evaluate=programs.evaluate,
      step_of=lambda state: int(host_loop.to_host(state.step)[0]),
      diverged_at=lambda state: host_loop.to_host(state.diverged_at),
      agent_params=lambda state: programs.loop.learner.handoff_params(state.learner),
      optimizer_states=(None if config.algo == "iql" else
                        lambda state: programs.loop.learner.handoff_optimizer(state.learner)),
      check_resumable=check_resumable,
      progress=(("critic loss", "critic_loss"), ("actor loss", "actor_loss")),
      record_extras={"algo": config.algo},
      compile_ahead=lambda state, num_steps: programs.run.compile_ahead(state, dataset,
                                                                        num_steps))
  return host_loop.run_phase(phase, workdir)
