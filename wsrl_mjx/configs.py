"""Launch configs (ml_collections, `launch/configs/`) turned into the library's settings, for
both phases: the SAC block fine-tuning and CQL pretraining share, the offline learners, the
checkpoint's `agent` description and the env's construction options. Offline and online host
modules both build their agents here, so a pretrained checkpoint has the shapes fine-tuning
expects by construction. `validate` checks every field of a launch config, before anything is
built or compiled, and raises `ConfigError` naming the field.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import envs
from envs import antmaze
from wsrl_mjx import checkpoint, data, host_loop, methods, networks, per_seed
from wsrl_mjx.agents import cql, iql, sac
from wsrl_mjx.errors import ConfigError

ALGOS = ("calql", "cql", "iql")   # the offline learners `make_learner` builds


def _whole(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# (fields, what a value must be, the check). A field a config does not have is skipped, so one
# table serves both phases' configs (launch/configs/finetune.py, pretrain.py).
_FIELD_RULES: tuple[tuple[tuple[str, ...], str, Callable[[Any], bool]], ...] = (
    (("num_seeds", "online_steps", "offline_steps", "steps_per_chunk", "eval_interval",
      "eval_episodes", "checkpoint_interval", "keep_checkpoints", "batch_size", "utd",
      "num_critics", "num_target_critics", "num_next_actions", "replay_capacity",
      "cql_num_sampled_actions", "jsrl_num_stages"),
     "a whole number >= 1", lambda v: _whole(v) and v >= 1),
    (("warmup_steps",), "a whole number >= 0 (0: no warmup)", lambda v: _whole(v) and v >= 0),
    (("episode_length", "solver_iterations", "solver_ls_iterations", "jsrl_horizon"),
     "a whole number >= 0 (0: the default)", lambda v: _whole(v) and v >= 0),
    # jax.random.PRNGKey takes 32 bits: 2**32 would run seed 0's numbers again.
    (("seed",), "a whole number in [0, 2**32)", lambda v: _whole(v) and 0 <= v < 2**32),
    (("actor_learning_rate", "critic_learning_rate", "temperature_learning_rate", "cql_alpha",
      "cql_alpha_learning_rate", "iql_learning_rate", "iql_beta"),
     "a finite number >= 0", lambda v: _number(v) and v >= 0),
    (("initial_temperature", "cql_temperature"), "a finite number > 0",
     lambda v: _number(v) and v > 0),
    (("discount",), "a number in [0, 1)", lambda v: _number(v) and 0 <= v < 1),
    (("tau", "action_clip"), "a number in (0, 1]", lambda v: _number(v) and 0 < v <= 1),
    (("offline_data_ratio",), "a number in (0, 1)", lambda v: _number(v) and 0 < v < 1),
    (("offline_sampling",), f"one of {', '.join(methods.SAMPLING)}",
     lambda v: v in methods.SAMPLING),
    (("online_cql_alpha", "jsrl_tolerance", "target_action_noise", "target_action_noise_clip"),
     "a finite number >= 0", lambda v: _number(v) and v >= 0),
    (("iql_expectile",), "a number in (0, 1)", lambda v: _number(v) and 0 < v < 1),
    (("iql_actor_dropout",), "a number in [0, 1)", lambda v: _number(v) and 0 <= v < 1),
    (("reward_scale", "reward_bias", "target_entropy", "negative_sparse_reward",
      "cql_target_action_gap", "last_hidden_init_scale"),
     "a finite number (or unset)", lambda v: v is None or _number(v)),
    (("actor_hidden_sizes", "critic_hidden_sizes", "iql_hidden_sizes"),
     "a non-empty list of layer widths >= 1, e.g. (256,256)",
     lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(
         _whole(w) and w >= 1 for w in v)),
    (("goal_offset",), f"one of {', '.join(antmaze.GOAL_OFFSETS)}",
     lambda v: v in antmaze.GOAL_OFFSETS),
)


def env_spec_of(config) -> envs.EnvSpec:
  """The spec of `config.env_name`; ConfigError naming the field (with suggestions) if unknown."""
  try:
    return envs.spec(config.env_name)
  except ValueError as error:
    raise ConfigError(f"config.env_name: {error}") from None


def validate(config) -> envs.EnvSpec:
  """Checks every field of a launch config of either phase (`launch/configs/finetune.py`,
  `pretrain.py`) before anything is built or compiled, and returns the env's spec.

  Raises `ConfigError` naming the first field that cannot work: an unknown env, a value out of
  its range (`_FIELD_RULES`), a per-seed grid that does not parse or fit `num_seeds`, seeds that
  do not split over the devices, or a combination the agent refuses (`sac_config`, `sac.SAC`,
  `make_learner`), or what the fine-tuning arm needs (`check_method`); a `pretrained` path that
  holds no checkpoint, or one of another algorithm than the arm's, is a `CheckpointError`.
  Schedules need not line up with `steps_per_chunk` (host_loop.chunk_lengths).
  """
  env_spec = env_spec_of(config)
  check_field_rules(config)
  host_loop.seed_mesh(config.num_seeds)
  if config.get("pretrained"):
    checkpoint.resolve(config.pretrained)       # CheckpointError naming it if there is none
  if "algo" in config:       # pretraining
    make_learner(config, env_spec)
  else:                      # fine-tuning
    settings, _ = per_seed.seed_settings(config)
    if config.replay_capacity < config.batch_size:
      raise ConfigError(f"config.replay_capacity={config.replay_capacity}: must hold at least "
                        f"one batch (config.batch_size={config.batch_size}).")
    sac.SAC(sac_config(config, env_spec))
    check_method(config, env_spec, settings)
    # A run that ends before some seeds' first update is warned of by finetune.log_start.
  return env_spec


def _article(word: str) -> str:
  """"an" before the algorithms said with a vowel sound ("an iql agent"), else "a"."""
  return "an" if word[:1] in "aeio" else "a"


def check_field_rules(config) -> None:
  """`ConfigError` naming the first field, or per-seed grid value, out of its range
  (`_FIELD_RULES`): the checks of `validate` that need neither devices nor files (launch.sweep
  runs them on every cell before anything runs)."""
  for fields, requirement, check in _FIELD_RULES:
    for field in fields:
      if field in config and not check(config[field]):
        raise ConfigError(f"config.{field}={config[field]!r}: must be {requirement}.")
  # A value of the per-seed grid obeys its field's rule, and the seeds fill the grid evenly.
  for name, values in per_seed.parse_grid(config.get("per_seed", "")).items():
    for fields, requirement, check in _FIELD_RULES:
      for value in values:
        if name in fields and not check(value):
          raise ConfigError(f"config.per_seed: {name}={value!r}: must be {requirement}.")
  if config.get("per_seed") and "num_seeds" in config:
    per_seed.seed_settings(config)


def check_method(config, env_spec: envs.EnvSpec, settings) -> methods.Method:
  """What `config.method` needs (`methods.Method`), checked before anything is built: its
  checkpoint (none, or one of the algorithms it starts from: CheckpointError naming the
  description file), its offline data (`offline_data` among the arm's choices, a dataset that
  exists), and the settings its learner takes. Returns the method."""
  method = methods.get(config.method)
  name = f"config.method={method.name!r}"
  if config.offline_data not in method.offline_data:
    raise ConfigError(f"config.offline_data={config.offline_data!r}: {name} takes "
                      f"{' or '.join(repr(v) for v in method.offline_data)}.")
  if config.offline_interleave and config.offline_data_ratio != 0.5:
    raise ConfigError(f"config.offline_interleave alternates offline and online rows: it needs "
                      f"config.offline_data_ratio=0.5, not {config.offline_data_ratio}.")
  if method.needs_checkpoint and not config.pretrained:
    if method.offline_learner:
      raise ConfigError(
          f"config.pretrained is empty but {name} continues a pretraining: set "
          f"--config.pretrained to the run directory of a `launch.pretrain "
          f"--config.algo={method.learner}` run.")
    raise ConfigError(
        f"config.pretrained is empty but {name} starts from a pretrained agent "
        f"({', '.join(method.checkpoint_algos)}): set --config.pretrained=RUN_DIR"
        f"{', or --config.method=sac for SAC from scratch' if method.learner == 'sac' else ''}.")
  if config.pretrained and not method.needs_checkpoint:
    raise ConfigError(f"config.pretrained={config.pretrained!r}: {name} starts from scratch; "
                      "leave config.pretrained empty, or choose --config.method=wsrl.")
  if config.pretrained:
    directory, step = checkpoint.resolve(config.pretrained)
    description = checkpoint.read_description(directory, step)
    algo = methods.checkpoint_algo(description)
    where = directory / str(step) / "description" / "metadata"
    if algo not in method.checkpoint_algos:
      raise checkpoint.CheckpointError(
          f"{where}: holds {_article(algo)} {algo} agent, but {name} starts from "
          f"{' or '.join(method.checkpoint_algos)} (config.pretrained).")
    if method.offline_learner and description.get("kind") != "wsrl-mjx pretrain":
      raise checkpoint.CheckpointError(
          f"{where}: {name} continues a pretraining's whole learner; this is a "
          f"{description.get('kind', 'different')} checkpoint (config.pretrained).")
    if method.offline_learner and not (directory / str(step) / "train_state").is_dir():
      raise checkpoint.CheckpointError(
          f"{directory / str(step)}: holds the agent but not its learner's state (train_state), "
          f"which {name} continues; the shipped agents in checkpoints/ keep only the agent. Give "
          f"the run directory of a `launch.pretrain --config.algo={algo}` run "
          "(config.pretrained).")
  if not method.needs_checkpoint:
    for switch in ("init_actor", "init_critic", "init_temperature", "init_optimizer"):
      if not all(getattr(settings, switch)):
        raise ConfigError(
            f"config.{switch} (or config.per_seed): {name} starts from scratch, so there is no "
            "pretrained part to leave out; the initialisation switches are WSRL's ablations "
            "(--config.method=wsrl with --config.pretrained=RUN_DIR).")
  if method.offline_learner:
    if config.utd != 1:
      raise ConfigError(f"config.utd={config.utd}: {name} takes one update per environment "
                        "step (utd 1, as the reference's baseline scripts).")
    for switch in ("init_actor", "init_critic", "init_temperature", "init_optimizer"):
      if not all(getattr(settings, switch)):
        raise ConfigError(f"config.{switch} (or config.per_seed): {name} continues the whole "
                          "pretrained learner; the initialisation switches are WSRL's ablations.")
  if config.offline_data == "keep" and (config.dataset or env_spec.family != "adroit"):
    try:
      data.resolve(config.dataset or env_spec.name, env_spec)
    except data.DatasetError as error:
      raise ConfigError(f"config.offline_data='keep' ({name}) needs the offline dataset "
                        f"(config.dataset, else the env's D4RL file): {error}") from None
  if method.learner == "calql" and config.replay_capacity < config.online_steps:
    raise ConfigError(
        f"config.replay_capacity={config.replay_capacity} is below config.online_steps="
        f"{config.online_steps}: Cal-QL's buffer keeps every online transition (whole episodes "
        "for their Monte-Carlo returns, as the reference's ReplayBufferMC asserts).")
  if method.name == "so2" and not config.target_action_noise > 0:
    raise ConfigError(
        f"config.target_action_noise={config.target_action_noise}: {name} perturbs the TD "
        "target's next actions; set it (with target_action_noise_clip), or use "
        f"--config=launch/configs/finetune.py:{config.env_name},so2 for SO2's settings.")
  episode_length = config.episode_length or env_spec.episode_length
  if method.name == "jsrl" and config.jsrl_horizon > episode_length:
    raise ConfigError(f"config.jsrl_horizon={config.jsrl_horizon} is longer than an episode "
                      f"({episode_length} steps); 0 starts the guide on whole episodes.")
  return method


def sac_config(config, env_spec: envs.EnvSpec) -> sac.SACConfig:
  """The SAC settings of a launch config (the block `families.add_agent_fields` writes, plus
  `utd`, `batch_size`, `num_next_actions` and `step_all_optimizers`). Raises ConfigError naming
  the field for a value that cannot work (`sac.SAC` checks `temperature_entropy` and
  `num_next_actions` when it is built)."""
  if config.batch_size % config.utd:
    raise ConfigError(f"config.batch_size ({config.batch_size}) must split into config.utd "
                      f"({config.utd}) equal critic minibatches.")
  if not 1 <= config.num_target_critics <= config.num_critics:
    raise ConfigError(f"config.num_target_critics ({config.num_target_critics}) must be between "
                      f"1 and config.num_critics ({config.num_critics}).")
  if config.matmul_precision not in networks.PRECISIONS:
    raise ConfigError(f"config.matmul_precision={config.matmul_precision!r}; choose one of "
                      f"{', '.join(networks.PRECISIONS)}.")
  return sac.SACConfig(
      observation_size=env_spec.observation_size, action_size=env_spec.action_size,
      actor_hidden_sizes=tuple(config.actor_hidden_sizes),
      critic_hidden_sizes=tuple(config.critic_hidden_sizes),
      state_dependent_std=config.state_dependent_std, layer_norm=config.layer_norm,
      last_hidden_init_scale=config.last_hidden_init_scale,
      num_critics=config.num_critics, num_target_critics=config.num_target_critics,
      utd=config.utd, minibatch_size=config.batch_size // config.utd,
      discount=config.discount, tau=config.tau, backup_entropy=config.backup_entropy,
      target_entropy=config.target_entropy, initial_temperature=config.initial_temperature,
      reward_scale=(env_spec.reward_scale if config.reward_scale is None
                    else config.reward_scale),
      reward_bias=env_spec.reward_bias if config.reward_bias is None else config.reward_bias,
      matmul_precision=config.matmul_precision,
      unroll_critic_steps=config.unroll_critic_steps,
      num_next_actions=config.num_next_actions,
      subsample_with_replacement=config.subsample_with_replacement,
      step_all_optimizers=config.step_all_optimizers,
      temperature_entropy=config.temperature_entropy,
      # Fine-tuning's SO2 fields (pretraining configs have none).
      target_action_noise=config.get("target_action_noise", 0.0),
      target_action_noise_clip=config.get("target_action_noise_clip", 0.0))


def env_options(config, env_spec: envs.EnvSpec) -> dict[str, Any]:
  """The keyword arguments `envs.make` takes from a launch config (both phases)."""
  options = {k: config.get(k) or None for k in ("solver_iterations", "solver_ls_iterations")}
  options = {k: v for k, v in options.items() if v is not None}
  if env_spec.family == "antmaze":
    options["goal_offset"] = config.goal_offset
  return options


def agent_description(agent_config: sac.SACConfig) -> dict[str, Any]:
  """The `agent` block of a checkpoint description (see checkpoint.AGENT_SHAPE_FIELDS)."""
  fields = dataclasses.asdict(agent_config)
  for name in ("actor_hidden_sizes", "critic_hidden_sizes"):
    fields[name] = list(fields[name])
  return dict(fields, policy="tanh_gaussian")


def make_learner(config, env_spec: envs.EnvSpec, algo: str | None = None):
  """The learner `algo` (default `config.algo`) names -> (learner, the `agent` block of its
  description). Fine-tuning configs build the offline learners they continue this way."""
  algo = algo or config.algo
  if algo not in ALGOS:
    raise ConfigError(f"config.algo={algo!r}; choose one of {', '.join(ALGOS)}.")
  if algo == "iql":
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
  sac_settings = sac_config(finetune_like, env_spec)
  cql_config = cql.CQLConfig(
      sac=sac_settings, calql=algo == "calql",
      num_sampled_actions=config.cql_num_sampled_actions, alpha=config.cql_alpha,
      autotune_alpha=config.cql_autotune_alpha, target_action_gap=config.cql_target_action_gap,
      alpha_learning_rate=config.cql_alpha_learning_rate,
      actor_learning_rate=config.actor_learning_rate,
      critic_learning_rate=config.critic_learning_rate,
      temperature_learning_rate=config.temperature_learning_rate,
      max_target_backup=config.cql_max_target_backup,
      importance_sample=config.cql_importance_sample, cql_temperature=config.cql_temperature,
      penalty_on_all_critics=config.cql_penalty_on_all_critics,
      update_order=config.cql_update_order)
  return cql.CQL(cql_config), dict(agent_description(sac_settings), algo=algo)
