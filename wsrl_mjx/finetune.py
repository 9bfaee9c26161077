"""The host side of fine-tuning: build, restore or initialise, run chunks, report, save.

`train_and_evaluate(config, workdir)` is what `launch.finetune` calls. It checks the config
(`configs.validate`, which also checks what the arm `config.method` needs: `methods`), reads
the offline dataset where the arm keeps it (once, onto every device, shared by its seeds), then
between jitted chunks of up to `config.steps_per_chunk` environment steps (all seeds at once;
`host_loop.chunk_lengths`) it evaluates, logs and checkpoints; it never steps an environment
or a learner itself.
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
from wsrl_mjx import (checkpoint, configs, host_loop, jsrl, learners, methods, offline, online,
                      per_seed, pretrain, replay, runs)
from wsrl_mjx.agents import cql, sac
from wsrl_mjx.errors import ConfigError
from wsrl_mjx.host_loop import seed_keys, seed_mesh, seed_sharding  # noqa: F401 (re-exported)

# Config fields that fix the program or array shapes: a run can only resume with the same values.
_RESUME_FIELDS = ("env_name", "num_seeds", "seed", "utd", "batch_size", "replay_capacity",
                  "num_critics", "num_target_critics", "actor_hidden_sizes", "critic_hidden_sizes",
                  "state_dependent_std", "layer_norm", "steps_per_chunk", "per_seed", "pretrained",
                  "method", "offline_data", "offline_sampling", "offline_data_ratio",
                  "offline_interleave", "jsrl_horizon", "jsrl_num_stages", "jsrl_tolerance",
                  "target_action_noise", "target_action_noise_clip")


def _appends(config) -> bool:
  """The offline dataset is written into each seed's buffer (the `append` sampling)."""
  return config.offline_data == "keep" and config.offline_sampling == "append"


def _mixes(config) -> bool:
  """Each batch draws offline rows beside the buffer's (the `mixed` sampling)."""
  return config.offline_data == "keep" and config.offline_sampling == "mixed"


def replay_capacity(config, dataset_rows: int = 0) -> int:
  """No run needs more rows than it takes environment steps (plus, with the `append` sampling,
  the `dataset_rows` written first)."""
  extra = dataset_rows if _appends(config) else 0
  return int(min(config.replay_capacity, config.online_steps + extra))


Programs = host_loop.SeedPrograms   # `loop` is the `online.Online` of the run


def _offline_rows(config) -> int:
  """Rows of each batch from the dataset (`mixed`): the reference's int(batch * ratio)."""
  return int(config.batch_size * config.offline_data_ratio) if _mixes(config) else 0


def update_floor(config, episode_length: int) -> int:
  """No update while the step index k <= max(warmup, this): the online part of a batch, and
  for Cal-QL at least an episode (`finetune.py:111-115`, `min_steps_to_update`)."""
  floor = config.batch_size - _offline_rows(config)
  if methods.get(config.method).learner == "calql":
    floor = max(floor, episode_length)
  return floor


def make_learner(config, env_spec):
  """The online learner of `config.method` (`learners`) and its checkpoint `agent` block."""
  method = methods.get(config.method)
  agent_config = configs.sac_config(config, env_spec)
  if method.learner == "sac":
    return learners.SACLearner(sac.SAC(agent_config)), configs.agent_description(agent_config)
  learner, block = configs.make_learner(config, pretrain.env_spec_for(config), method.learner)
  if method.learner == "iql":
    return learners.IQLLearner(learner, batch_size=config.batch_size), block
  # The reference's online_cql_alpha (finetune.py:288-295); an autotuned alpha continues.
  online_config = dataclasses.replace(learner.config, alpha=config.online_cql_alpha)
  return learners.CQLLearner(cql.CQL(online_config)), block


def build_programs(config, env, env_spec, dataset_rows: int = 0) -> Programs:
  """The seed-vmapped programs of `config`'s arm; `dataset_rows`: the offline dataset's size
  where the arm writes it into its buffers (`append`)."""
  learner, _ = make_learner(config, env_spec)
  episode_length = config.episode_length or env_spec.episode_length
  offline_rows = _offline_rows(config)
  loop = online.LoopConfig(
      replay_capacity=replay_capacity(config, dataset_rows), episode_length=episode_length,
      eval_episodes=config.eval_episodes, action_clip=config.action_clip,
      offline_rows=offline_rows, interleave_offline=config.offline_interleave,
      update_floor=update_floor(config, episode_length),
      negative_sparse_reward=config.negative_sparse_reward,
      jump_start=jump_start_curriculum(config, episode_length),
      seed_axis=host_loop.SEED_AXIS if config.skip_idle_work else None)
  fused = online.make_online(env, env_spec, configs.sac_config(config, env_spec), loop, learner)

  def evaluate(actor_params, eval_key, env_step):
    return fused.evaluate(actor_params, jax.random.fold_in(eval_key, env_step))

  return host_loop.compile_seed_programs(fused, config.num_seeds, evaluate=evaluate,
                                         num_shared_run_args=int(_mixes(config)))


def jump_start_curriculum(config, episode_length: int) -> jsrl.Curriculum | None:
  """JSRL's curriculum where `config.method` is jsrl (`jsrl_*` fields), else None."""
  if config.method != "jsrl":
    return None
  return jsrl.Curriculum(horizon=config.jsrl_horizon or episode_length,
                         num_stages=config.jsrl_num_stages, tolerance=config.jsrl_tolerance)


def jump_start_phase(programs: Programs) -> dict[str, Any]:
  """A JSRL run's `host_loop.Phase` fields: `evaluate` scores the learner alone (h = 0, as every
  arm is scored), and `after_evaluation` scores the combined policy (the guide for the current h
  steps, then the learner; same episodes' keys) and moves the curriculum (`jsrl.advance`),
  recording per seed that return, the new stage and the new h (`jsrl_guide_steps`)."""
  curriculum = programs.loop.loop.jump_start
  learner = programs.loop.learner
  logging.info("JSRL: the pretrained actor (frozen) acts on each episode's first h steps, the "
               "learner after; h starts at %d and drops by 1/%d of it at each evaluation whose "
               "return (guide, then learner) is within %g x |best| of the best so far",
               curriculum.horizon, curriculum.num_stages, curriculum.tolerance)

  def policy(state, guide_steps):
    return jsrl.GuidedPolicy(learner=learner.actor_params(state.agent),
                             guide=state.jump_start.guide, guide_steps=guide_steps)

  def evaluate(state):
    return programs.evaluate(policy(state, jnp.zeros_like(state.jump_start.stage)),
                             state.eval_key, state.env_step)

  def after_evaluation(state):
    current = state.jump_start
    results = programs.evaluate(policy(state, jsrl.guide_steps(current.stage, curriculum)),
                                state.eval_key, state.env_step)
    guided_return = jnp.mean(results.returns, axis=1)
    stage, best = jax.device_put(
        jsrl.advance(current.stage, current.best_return, guided_return, curriculum),
        programs.sharding)
    state = state.replace(jump_start=current.replace(stage=stage, best_return=best))
    # host_loop.to_host: in a multi-process run each process holds only its seeds.
    return state, host_loop.to_host({
        "jsrl_guided_return": guided_return, "jsrl_stage": stage,
        "jsrl_guide_steps": jsrl.guide_steps(stage, curriculum)})

  return dict(evaluate=evaluate, after_evaluation=after_evaluation)


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
  settings, points = per_seed.seed_settings(config)
  warn_if_grid_points_share_sources(points, sources)
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


def warn_if_grid_points_share_sources(points: list[dict], sources: np.ndarray) -> bool:
  """Warns (and returns True) where a `--config.per_seed` grid point's seeds all start from a
  subset of the checkpoint's seeds that another point's do not: seed i takes grid point i mod P
  and checkpoint seed i mod S, so with gcd(P, S) > 1 each point sees S / gcd of the S pretrained
  agents, and comparing points also compares pretrained agents. `points`: per run seed."""
  by_point: dict[str, set[int]] = {}
  for point, source in zip(points, sources.tolist()):
    by_point.setdefault(repr(sorted(point.items())), set()).add(source)
  repeated = len(set(sources.tolist())) < len(sources)    # some pretrained agent serves 2 seeds
  if len(by_point) < 2 or not repeated or len({frozenset(v) for v in by_point.values()}) < 2:
    return False
  checkpoint_seeds = int(sources.max()) + 1
  logging.warning(
      "Each per-seed grid point starts from only some of the checkpoint's %d seeds (run seed i "
      "takes grid point i mod %d and checkpoint seed i mod %d), so comparing grid points also "
      "compares pretrained agents. Pretrain a number of seeds that shares no factor with the "
      "grid's %d points (1, or an odd number for a grid of 2^k).", checkpoint_seeds,
      len(by_point), checkpoint_seeds, len(by_point))
  return True


def load_pretrained_learner(config, programs: Programs, env_spec):
  """The whole learner state of the pretraining at `config.pretrained` (calql, cql, iql arms),
  for every run seed (run seed i from its seed i mod the checkpoint's seeds) -> (state,
  description). Refused (CheckpointError) where it was pretrained for another task, reward
  transform or discount, unless `config.allow_transfer`, or where its shapes differ."""
  learner = programs.loop.learner.learner
  reader = offline.Offline(env=None, learner=learner, batch_size=0, eval_episodes=0,
                           episode_length=0, action_clip=1.0)

  def abstract_for(num_seeds):
    keys = jax.random.split(jax.random.PRNGKey(0), num_seeds)
    return jax.eval_shape(jax.vmap(reader.init), keys)

  directory, step = checkpoint.resolve(config.pretrained)
  description = checkpoint.read_description(directory, step)
  agent = description.get("agent", {})
  _, expected = make_learner(config, env_spec)
  meaning = dict(task=env_spec.task, reward_scale=expected["reward_scale"],
                 reward_bias=expected["reward_bias"], discount=expected["discount"])
  checkpoint.check_meaning(description, directory / str(step) / "description" / "metadata",
                           meaning, config.allow_transfer)
  for field in sorted(set(expected) & set(agent) - {"reward_scale", "reward_bias", "discount"}):
    want, have = expected[field], agent[field]
    if isinstance(want, (list, tuple)):
      want, have = list(want), list(have or [])
    if field in checkpoint.AGENT_SHAPE_FIELDS + ("hidden_sizes", "num_critics") and have != want:
      # The config field that sets it: IQL's networks have a field of their own.
      setting = "iql_hidden_sizes" if field == "hidden_sizes" else field
      value = ",".join(map(str, have)) if isinstance(have, list) else have
      raise checkpoint.CheckpointError(
          f"{directory / str(step) / 'description' / 'metadata'}: agent.{field} is {have!r} but "
          f"this run's config.{setting} gives {want!r}; --config.{setting}={value} fine-tunes "
          "this pretraining (config.pretrained).")
  state, description = checkpoint.load_train_state(config.pretrained, abstract_for)
  sources = checkpoint.seed_sources(config.num_seeds, description["num_seeds"])
  logging.info("Pretrained %s learner: %s (%s, %s %s), continued whole (networks, Adam states"
               "%s)", description.get("algo"), config.pretrained, description.get("env_name"),
               description.get("step_unit"), description.get("step"),
               ", Lagrange multiplier" if description.get("algo") != "iql" else "")
  return jax.tree.map(lambda x: x[sources], state.learner), description


def run_description(config, env_spec, agent_block: dict, seed_overrides) -> dict:
  return {
      "kind": "wsrl-mjx finetune",
      "method": config.method,
      "env_name": env_spec.name, "task": env_spec.task, "family": env_spec.family,
      "num_seeds": config.num_seeds,
      "agent": agent_block,
      "per_seed": seed_overrides,
      "config": config.to_dict(),
      "resolved_paths": runs.resolved_paths(config),
  }


def _check_resumable(config, description: dict, workdir, capacity: int | None = None) -> None:
  """Refuses a resume whose buffer size (`capacity`, default `replay_capacity(config)`) or
  shape-defining fields (the arm's included) differ from the run's in `workdir`."""
  capacity = replay_capacity(config) if capacity is None else capacity
  saved = dict(description.get("config", {}))
  held = description.get("replay_capacity")
  if held is None and saved:
    held = min(saved["replay_capacity"], saved["online_steps"])
  if held is not None and held != capacity:
    raise checkpoint.CheckpointError(
        f"{workdir}: its replay buffers hold {held:,} transitions and this config's would hold "
        f"{capacity:,} (min(replay_capacity, online_steps), plus an appended dataset). A run "
        "goes on only with buffers of the size it started with, so a run whose buffers are "
        "capped at its online_steps cannot be extended: to train longer, start a new --workdir "
        "with the longer online_steps.")
  if saved:
    # Runs made before config.method existed were WSRL with a checkpoint, SAC without, and
    # kept no offline data.
    saved.setdefault("method", "wsrl" if saved.get("pretrained") else "sac")
    for field in ("offline_data", "offline_sampling", "offline_data_ratio",
                  "offline_interleave"):
      saved.setdefault(field, config[field])
  host_loop.check_same_fields(saved, config, host_loop.resume_fields(saved, config, _RESUME_FIELDS),
                              workdir, description.get("resolved_paths"))


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
  """Says which arm runs, where the agent comes from and when updates start."""
  method = methods.get(config.method)
  data_line = ""
  if config.offline_data == "keep":
    data_line = (f"; offline data kept ({config.offline_sampling}"
                 f"{f', {config.offline_data_ratio:g} of each batch' if _mixes(config) else ''})")
  logging.info("Method %s: %s%s", method.name, method.summary, data_line)
  fresh_actors = int(np.sum(~np.asarray(settings.init_actor, bool)))
  if not config.pretrained:
    source = "the untrained agent"
  elif fresh_actors == np.size(settings.init_actor):
    source = "a fresh actor (init_actor=false), frozen,"
  elif fresh_actors:
    source = (f"the pretrained agent (a fresh actor for the {fresh_actors} "
              f"seed{'s' if fresh_actors > 1 else ''} with init_actor=false), frozen,")
  else:
    source = "the pretrained agent, frozen,"
  # The step with index k (from 0) trains if k > max(warmup, floor) (online.py): the first
  # update comes once the buffer holds that floor + 2 transitions.
  episode_length = config.episode_length or envs.spec(config.env_name).episode_length
  floor = update_floor(config, episode_length)
  online_rows = config.batch_size - _offline_rows(config)
  calql_waits = method.learner == "calql" and floor > online_rows
  starts = sorted({max(int(k), floor) + 2 for k in np.ravel(settings.warmup_steps)})
  buffer = ("a replay buffer holding the offline data" if _appends(config)
            else "an empty replay buffer (the offline data sampled beside it)"
            if config.offline_data == "keep" else "an empty replay buffer")
  rule = ("max(warmup_steps, the batch's online rows, and for Cal-QL one episode: "
          f"{episode_length:,} steps)" if method.learner == "calql"
          else "max(warmup_steps, the batch's online rows)")
  logging.info("Warmup: %s collects into %s; updates (UTD %d) start once it "
               "holds %s transitions (the reference's rule: the first step whose index exceeds "
               "%s)", source, buffer, config.utd, " or ".join(f"{s:,}" for s in starts), rule)
  warmups = np.ravel(settings.warmup_steps).astype(int)
  never = [int(w) for w in np.unique(warmups) if max(int(w), floor) + 2 > config.online_steps]
  if never:
    seeds = int(np.isin(warmups, never).sum())
    if all(w <= floor for w in never):     # the floor, not the warmup, holds the updates back
      wait = (f"Cal-QL's updates wait for one episode ({episode_length:,} steps: "
              "config.episode_length, else the env's)" if calql_waits else
              f"updates wait for the batch's {online_rows:,} online rows")
      advice = f"{wait}. Give the run more than {floor + 1:,} online_steps."
    else:
      advice = "Give them more online_steps or a shorter warmup."
    logging.warning(
        "config.online_steps=%d ends before any update for warmup_steps=%s (%d of %d seeds): "
        "they only collect with %s, so their curves are the starting policy's. %s",
        config.online_steps, ",".join(map(str, never)), seeds, warmups.size,
        source.replace(",", "").strip(), advice)


def train_and_evaluate(config, workdir: str | pathlib.Path,
                       programs: Programs | None = None) -> dict[str, Any]:
  """Fine-tunes `config.num_seeds` seeds; resumes from `workdir` if it holds a checkpoint.

  `programs` lets callers (tests, benchmarks) reuse already compiled functions for the same
  config. Returns the last evaluation record.
  """
  workdir = pathlib.Path(workdir)
  env_spec = configs.validate(config)
  method = methods.get(config.method)
  dataset = None
  if config.offline_data == "keep":
    dataset, _ = pretrain.load_dataset(config, pretrain.env_spec_for(config))
  dataset_rows = dataset.size if dataset is not None else 0
  capacity = replay_capacity(config, dataset_rows)
  if method.learner == "calql" and capacity < config.online_steps + (
      dataset_rows if _appends(config) else 0):
    raise ConfigError(
        f"config.replay_capacity={config.replay_capacity} cannot hold the appended dataset "
        f"({dataset_rows} transitions) and config.online_steps={config.online_steps}: Cal-QL's "
        "buffer keeps every transition (whole episodes for their Monte-Carlo returns).")
  env, env_spec = envs.make(config.env_name, **configs.env_options(config, env_spec))
  programs = programs or build_programs(config, env, env_spec, dataset_rows)
  learner = programs.loop.learner
  settings, seed_overrides = per_seed.seed_settings(config)
  log_start(config, settings)
  num_devices = programs.sharding.mesh.size
  logging.info(replay.check_fits(capacity, env_spec.observation_size, env_spec.action_size,
                                 config.num_seeds // num_devices, replay.device_memory_bytes(),
                                 mc_return=learner.uses_mc_returns,
                                 dataset_rows=dataset_rows if _mixes(config) else 0))
  if num_devices > 1:
    logging.info("Seeds split over %d devices", num_devices)
  settings = jax.device_put(jax.tree.map(jnp.asarray, settings), programs.sharding)
  keys = jax.device_put(seed_keys(config), programs.sharding)
  shared = ()
  if dataset is not None:
    dataset = pretrain.dataset_on_device(dataset, programs.sharding.mesh,
                                         mc_return=learner.uses_mc_returns)
    if _mixes(config):
      shared = (dataset,)

  def init():
    pretrained = optimizer = None
    if config.pretrained and method.offline_learner:
      pretrained, _ = load_pretrained_learner(config, programs, env_spec)
      pretrained = jax.device_put(pretrained, programs.sharding)
    elif config.pretrained:
      pretrained, optimizer, _ = load_pretrained(config, programs, env_spec)
      pretrained, optimizer = jax.device_put((pretrained, optimizer), programs.sharding)
    state = programs.init(keys, settings, pretrained, optimizer)
    if _appends(config):
      append = jax.jit(jax.vmap(programs.loop.append_offline, in_axes=(0, None)),
                       donate_argnums=0, out_shardings=programs.sharding)
      state = append(state, dataset)
    return state

  def abstract_state():
    # The state's structure does not depend on where the agent came from.
    return programs.abstract_state(keys, settings, None, None)

  def run(state, num_steps):
    state, stats = programs.run(state, *shared, num_steps)
    return state, _chunk_summary(stats)

  _, agent_block = make_learner(config, env_spec)
  description = dict(run_description(config, env_spec, agent_block, seed_overrides),
                     replay_capacity=capacity)
  if dataset is not None:
    description["dataset_transitions"] = dataset_rows
  phase = host_loop.Phase(
      unit="env_step", total_steps=config.online_steps, steps_per_chunk=config.steps_per_chunk,
      eval_interval=config.eval_interval, checkpoint_interval=config.checkpoint_interval,
      keep_checkpoints=config.keep_checkpoints, num_seeds=config.num_seeds, env_spec=env_spec,
      description=description,
      init=init, abstract_state=abstract_state, run=run,
      evaluate=lambda state: programs.evaluate(learner.actor_params(state.agent), state.eval_key,
                                               state.env_step),
      step_of=lambda state: int(host_loop.to_host(state.env_step)[0]),
      diverged_at=lambda state: host_loop.to_host(state.diverged_at),
      agent_params=lambda state: learner.handoff_params(state.agent),
      optimizer_states=(None if method.learner == "iql"
                        else lambda state: learner.handoff_optimizer(state.agent)),
      check_resumable=lambda description: _check_resumable(config, description, workdir,
                                                           capacity),
      progress=(("train return", "train_return"), ("critic loss", "critic_loss"),
                ("temperature", "temperature")),
      record_extras={"per_seed": seed_overrides},
      compile_ahead=lambda state, num_steps: programs.run.compile_ahead(state, *shared,
                                                                        num_steps))
  if programs.loop.loop.jump_start is not None:
    phase = dataclasses.replace(phase, **jump_start_phase(programs))
  return host_loop.run_phase(phase, workdir)
