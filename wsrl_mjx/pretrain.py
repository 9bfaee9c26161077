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
import jax.numpy as jnp
import numpy as np
from absl import logging

import envs
from wsrl_mjx import data, finetune, host_loop, offline
from wsrl_mjx.agents import cql, iql, sac

ALGOS = ("calql", "cql", "iql")
_RESUME_FIELDS = ("env_name", "dataset", "algo", "num_seeds", "seed", "batch_size",
                  "num_critics", "actor_hidden_sizes", "critic_hidden_sizes", "iql_hidden_sizes",
                  "state_dependent_std", "layer_norm", "steps_per_chunk")


def _env_spec(config) -> envs.EnvSpec:
  """The task's facts, with the config's reward transform where it overrides the family's."""
  env_spec = envs.spec(config.env_name)
  return dataclasses.replace(
      env_spec,
      reward_scale=env_spec.reward_scale if config.reward_scale is None else config.reward_scale,
      reward_bias=env_spec.reward_bias if config.reward_bias is None else config.reward_bias)


def make_learner(config, env_spec: envs.EnvSpec):
  """The learner `config.algo` names -> (learner, the `agent` block of its description)."""
  if config.algo not in ALGOS:
    raise ValueError(f"config.algo={config.algo!r}; choose one of {', '.join(ALGOS)}.")
  if config.algo == "iql":
    iql_config = iql.IQLConfig(
        observation_size=env_spec.observation_size, action_size=env_spec.action_size,
        hidden_sizes=tuple(config.iql_hidden_sizes), expectile=config.iql_expectile,
        beta=config.iql_beta, actor_dropout=config.iql_actor_dropout,
        discount=config.discount, tau=config.tau, learning_rate=config.iql_learning_rate,
        reward_scale=env_spec.reward_scale, reward_bias=env_spec.reward_bias,
        matmul_precision=config.matmul_precision)
    agent = dict(dataclasses.asdict(iql_config), policy="gaussian", algo="iql",
                 hidden_sizes=list(iql_config.hidden_sizes))
    return iql.IQL(iql_config), agent
  finetune_like = config.copy_and_resolve_references()
  with finetune_like.unlocked():
    # One critic step per update; the max-target backup is CQL's (cql_max_target_backup); no
    # UTD calls, so no momentum-only steps (the reference trains every network in each call).
    finetune_like.utd = 1
    finetune_like.num_next_actions = (config.cql_num_sampled_actions
                                      if config.cql_max_target_backup else 1)
    finetune_like.step_all_optimizers = False
  sac_config = finetune.agent_config(finetune_like, env_spec)
  cql_config = cql.CQLConfig(
      sac=sac_config, calql=config.algo == "calql",
      num_sampled_actions=config.cql_num_sampled_actions, alpha=config.cql_alpha,
      autotune_alpha=config.cql_autotune_alpha, target_action_gap=config.cql_target_action_gap,
      alpha_learning_rate=config.cql_alpha_learning_rate,
      actor_learning_rate=config.actor_learning_rate,
      critic_learning_rate=config.critic_learning_rate,
      temperature_learning_rate=config.temperature_learning_rate,
      max_target_backup=config.cql_max_target_backup,
      importance_sample=config.cql_importance_sample, cql_temperature=config.cql_temperature,
      penalty_on_all_critics=config.cql_penalty_on_all_critics)
  return cql.CQL(cql_config), dict(finetune.agent_description(sac_config), algo=config.algo)


def load_dataset(config, env_spec: envs.EnvSpec) -> tuple[data.OfflineDataset, str]:
  """Reads and checks the dataset (errors name the file and the field) -> (dataset, source)."""
  source = config.dataset or env_spec.name
  dataset = data.load(source, env_spec, discount=config.discount,
                      clip_action=config.action_clip,
                      negative_sparse_reward=config.negative_sparse_reward,
                      split_at_jumps=config.split_at_jumps)
  nbytes = sum(np.asarray(x).nbytes for x in jax.tree.leaves(dataset))
  logging.info("Dataset %s: %d transitions, %.1f MiB on the device", source, dataset.size,
               nbytes / 2**20)
  return dataset, str(source)


@dataclasses.dataclass
class Programs:
  offline: offline.Offline
  sharding: Any
  init: Any
  run: Any
  evaluate: Any


def build_programs(config, env, env_spec: envs.EnvSpec, learner) -> Programs:
  fused = offline.Offline(
      env=env, learner=learner, batch_size=config.batch_size,
      eval_episodes=config.eval_episodes,
      episode_length=config.episode_length or env_spec.episode_length,
      action_clip=config.action_clip)
  sharding = host_loop.seed_sharding(config.num_seeds)
  return Programs(
      offline=fused, sharding=sharding,
      init=jax.jit(jax.vmap(fused.init), out_shardings=sharding),
      run=jax.jit(jax.vmap(fused.run, in_axes=(0, None, None)), static_argnums=2,
                  donate_argnums=0, out_shardings=sharding),
      evaluate=jax.jit(jax.vmap(fused.evaluate), out_shardings=sharding))


def train_and_evaluate(config, workdir: str | pathlib.Path,
                       programs: Programs | None = None) -> dict[str, Any]:
  """Pretrains `config.num_seeds` seeds; resumes from `workdir` if it holds a checkpoint."""
  workdir = pathlib.Path(workdir)
  host_loop.check_schedule(config, "offline_steps")
  env_spec = _env_spec(config)
  learner, agent_block = make_learner(config, env_spec)
  dataset, source = load_dataset(config, env_spec)
  if programs is None:
    env, _ = envs.make(config.env_name, **finetune.env_options(config, env_spec))
    programs = build_programs(config, env, env_spec, learner)
  replicated = jax.sharding.NamedSharding(programs.sharding.mesh, jax.sharding.PartitionSpec())
  dataset = jax.device_put(jax.tree.map(jnp.asarray, dataset), replicated)
  keys = jax.device_put(host_loop.seed_keys(config), programs.sharding)

  def abstract_state():
    abstract = jax.eval_shape(programs.init, keys)
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=programs.sharding), abstract)

  def run(state):
    state, stats = programs.run(state, dataset, config.steps_per_chunk)
    return state, host_loop.per_seed_summary(vars(stats), "updates")

  def check_resumable(description):
    host_loop.check_same_fields(description.get("config", {}), config, _RESUME_FIELDS, workdir)

  description = {
      "kind": "wsrl-mjx pretrain", "algo": config.algo,
      "env_name": env_spec.name, "task": env_spec.task, "family": env_spec.family,
      "dataset": source, "dataset_transitions": int(dataset.size),
      "num_seeds": config.num_seeds, "agent": agent_block, "config": config.to_dict()}
  phase = host_loop.Phase(
      unit="gradient_step", total_steps=config.offline_steps,
      steps_per_chunk=config.steps_per_chunk, eval_interval=config.eval_interval,
      checkpoint_interval=config.checkpoint_interval, keep_checkpoints=config.keep_checkpoints,
      num_seeds=config.num_seeds, env_spec=env_spec, description=description,
      init=lambda: programs.init(keys), abstract_state=abstract_state, run=run,
      evaluate=programs.evaluate,
      step_of=lambda state: int(np.asarray(state.step)[0]),
      diverged_at=lambda state: np.asarray(state.diverged_at),
      agent_params=lambda state: programs.offline.learner.handoff_params(state.learner),
      optimizer_states=(None if config.algo == "iql" else
                        lambda state: programs.offline.learner.handoff_optimizer(state.learner)),
      check_resumable=check_resumable,
      progress=(("critic loss", "critic_loss"), ("actor loss", "actor_loss")),
      record_extras={"algo": config.algo})
  return host_loop.run_phase(phase, workdir)
