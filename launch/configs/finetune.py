"""Online fine-tuning: `--config=launch/configs/finetune.py:<env-name>[,demo][,<method>]`.

`<env-name>` is a D4RL dataset name (`hopper-medium-v2`) or a task (`hopper`). Appending `,demo`
gives a run of a few thousand steps that finishes in minutes on a CPU. `--config.method` chooses
the arm (WSRL by default; `wsrl_mjx/methods.py`, README "Methods") and brings the settings the
WSRL reference's script for that arm uses (e.g. calql: utd 1, batch 256, no warmup) to every
field the command line does not set (`from_flags`); appending `,<method>` does the same. Any
field can be overridden on the command line: `--config.num_seeds=64 --config.warmup_steps=0`.
"""

import pathlib

from absl import flags, logging
from ml_collections import config_dict, config_flags

import envs
from launch.configs.families import (DEMO_AGENTS, FAMILIES, add_agent_fields, add_data_fields,
                                     add_demo_fields, add_offline_learner_fields,
                                     parse_config_arg)
from wsrl_mjx import configs, methods
from wsrl_mjx.errors import ConfigError


DEFAULT_ARG = "hopper-medium-v2"   # `--config=launch/configs/finetune.py` with nothing after it


def get_config(arg: str = DEFAULT_ARG):
  env_name, options = parse_config_arg(arg, known=("demo",) + methods.NAMES)
  chosen = sorted(options & set(methods.NAMES))
  if len(chosen) > 1:
    raise ValueError(f"Config options {chosen} in {arg!r} name more than one method")
  env_spec = envs.spec(env_name)  # Fails early, with suggestions, on an unknown name.
  family = FAMILIES[env_spec.family]

  c = config_dict.ConfigDict()
  c.env_name = env_name         # a task or D4RL dataset name (envs.names() lists them)
  c.seed = 0                    # seed i's randomness depends only on (seed, i)
  c.num_seeds = 4               # independent runs in one program (a multiple of the devices)

  # Online budget: environment steps per seed, the warmup included.
  c.online_steps = family["online_steps"]
  c.warmup_steps = 5_000        # no update while the step index k <= max(warmup, batch_size)
  # The arm (wsrl_mjx/methods.py): wsrl | sac | rlpd | calql | cql | iql | jsrl | so2.
  c.method = "wsrl"
  c.pretrained = ""             # a checkpoint directory (wsrl, calql, cql, iql, jsrl, so2)
  c.init_actor = True           # which parts of the checkpoint to use (ablations)
  c.init_critic = True
  c.init_temperature = True
  c.init_optimizer = True       # and their Adam moments and counts (reference: the whole agent)
  c.per_seed = ""               # e.g. "warmup_steps=0,5000;init_critic=true,false"
  # The pretrained agent must come from this task, reward scale/bias and discount (its Q-values
  # mean returns of that problem); true: allow another (a transfer experiment), with a warning.
  c.allow_transfer = False

  # SAC with a critic ensemble (the block is shared with pretraining: families.py).
  add_agent_fields(c, family)
  c.utd = 4                     # critic updates per env step (update-to-data ratio)
  c.batch_size = 1024           # per environment step: utd critic minibatches of batch/utd
  c.num_next_actions = family["num_next_actions"]  # > 1: max-target backup (AntMaze: 10)
  # Every UTD call applies every network's Adam, as the reference's update does (networks it
  # does not train move on their moments); false: only the trained network's Adam steps.
  c.step_all_optimizers = True

  # Offline data during fine-tuning (rlpd; calql, cql, iql): "none" (the buffer starts empty)
  # or "keep". Kept data is read as pretraining reads it (dataset, observation_keys, ...).
  c.offline_data = "none"
  # "mixed": each batch draws int(batch_size * offline_data_ratio) rows from the dataset and
  # the rest from the online replay buffer (the reference's default, finetune.py:345-354);
  # "append": the dataset is written into each seed's replay buffer first (finetune.py:280).
  c.offline_sampling = "mixed"
  c.offline_data_ratio = 0.5    # mixed: the offline share of each batch (RLPD: 0.5)
  # mixed: false (the reference): online rows, then offline rows, so with UTD 4 the first
  # critic minibatches are online and the last offline; true: they alternate (RLPD's own
  # code), every minibatch half offline. Needs offline_data_ratio 0.5.
  c.offline_interleave = False
  add_data_fields(c, family)
  # calql, cql, iql: their own fields (families.py) and the CQL penalty's weight online
  # (the reference's online_cql_alpha; the family's offline alpha, autotuned on AntMaze).
  add_offline_learner_fields(c, family)
  c.online_cql_alpha = family["cql_alpha"]

  # JSRL (--config.method=jsrl; wsrl_mjx/jsrl.py): the checkpoint's actor, frozen, acts on each
  # episode's first h steps and the learner after. h goes from jsrl_horizon to 0 in
  # jsrl_num_stages equal steps, one step at each evaluation whose return (guide for h steps,
  # then learner) is >= best - jsrl_tolerance x |best| (the best so far; the first sets it).
  c.jsrl_horizon = 0            # h at the start; 0: the episode length
  c.jsrl_num_stages = 10
  c.jsrl_tolerance = 0.05
  # SO2's perturbed value update (--config.method=so2; sac.perturb_target_actions): Gaussian
  # noise of this std, clipped to +-target_action_noise_clip, on the TD target's next actions;
  # 0: off. `,so2` sets SO2's published 0.3 and 0.6 with its update frequency (utd 10).
  c.target_action_noise = 0.0
  c.target_action_noise_clip = 0.0

  # Environment and replay.
  c.replay_capacity = 2_000_000  # capped at online_steps
  c.action_clip = family["action_clip"]
  c.episode_length = 0          # 0: the task's (1000 for locomotion)
  c.solver_iterations = 0       # 0: wsrl-mjx's MJX defaults, 4 Newton iterations with 8
  c.solver_ls_iterations = 0    # line-search steps (envs/mjx_env.py says why)
  # AntMaze only: where the episode's goal lies around the goal cell's centre. "wsrl": the
  # reference's D4RL fork; "d4rl": upstream D4RL (envs/antmaze.py).
  c.goal_offset = "wsrl"
  # Skip the work none of a device's seeds needs (the update during warmup, the env reset on
  # steps where no episode ended) with branches over all of them; false: compute both on every
  # step and select per seed (the program before issue 17). Counts are the same either way,
  # floats to rounding (BUILD.md, "GPU hosts").
  c.skip_idle_work = True

  # Host loop.
  c.steps_per_chunk = 5_000     # env steps per device call, at most; the host logs between calls
  c.eval_interval = 20_000      # env steps between evaluations (metrics.jsonl records)
  c.eval_episodes = 20          # deterministic episodes per seed and evaluation
  c.checkpoint_interval = 100_000  # env steps between checkpoints (and resume points)
  c.keep_checkpoints = 2         # the newest checkpoints kept in <workdir>/checkpoints

  for name in chosen:
    c.method = name
    c.update(methods.reference_settings(name, env_spec.family))
  if "demo" in options:
    # The arm at demo scale: a quarter of its batch (WSRL: 256, four minibatches of 64), a
    # tenth of its warmup, 2,000 steps.
    add_demo_fields(c)
    c.online_steps = 2_000
    c.warmup_steps //= 10
    c.batch_size = max(c.utd, c.batch_size // 4 // c.utd * c.utd)
    # An arm that starts from a SAC-shaped agent starts from the shipped demo agent
    # (checkpoints/); WSRL where none ships is SAC from scratch (WSRL again where the command
    # line gives a checkpoint: `from_flags`). The offline learners continue a pretraining's
    # whole state, which no shipped agent keeps: the command line must name one.
    method = methods.get(c.method)
    if method.needs_checkpoint:
      c.pretrained = "" if method.offline_learner else str(DEMO_AGENTS.get(env_name, ""))
    if not c.pretrained and c.method == "wsrl":
      c.method = "sac"
  return c


def with_method_settings(config, overridden) -> list[str]:
  """Applies the reference's settings of `config.method` (`methods.reference_settings`) to the
  fields the command line did not set: what `from_flags` does for a config file of the user's
  own. `overridden`: the field names the command line set (`--config.<field>=`). Returns the
  fields it changed, sorted. Raises ConfigError for an unknown method or env, naming the field.
  """
  settings = methods.reference_settings(config.method, configs.env_spec_of(config).family)
  changed = sorted(k for k, v in settings.items() if k not in overridden and config[k] != v)
  config.update({k: settings[k] for k in changed})
  return changed


def from_flags(flag_values=flags.FLAGS):
  """The config `launch.finetune`'s `--config` flag gives, where `--config.method=<m>` means
  what `:<env>[,demo],<m>` means (that arm's reference settings, at demo scale with `,demo`),
  with every other `--config.<field>` applied over it; logs the fields the method changed, and
  warns where a `,demo` of an env with no shipped demo agent runs SAC from scratch in place of
  the WSRL it was asked for (`get_config`), unless `--config.pretrained` gives a checkpoint: then
  it runs WSRL from it.

  Raises ConfigError (naming the flag) where `--config=...:<env>,<m1>` and `--config.method=<m2>`
  name two methods, or the method is unknown. With a config file other than this one, the
  method's settings go to the fields the command line leaves alone (`with_method_settings`).
  """
  flag = flag_values["config"]
  overrides = config_flags.get_override_values(flag)
  config = flag.value
  path, _, arg = config_flags.get_config_filename(flag).partition(":")
  if "method" not in overrides:
    if _is_this_file(path):
      _settle_demo_fallback(config, arg or DEFAULT_ARG)
    return config
  method = methods.get(overrides["method"]).name
  if not _is_this_file(path):
    changed = with_method_settings(config, set(overrides))
  else:
    arg = arg or DEFAULT_ARG
    _, options = parse_config_arg(arg, known=("demo",) + methods.NAMES)
    named = sorted(options & set(methods.NAMES))
    if named and named != [method]:
      raise ConfigError(f"--config={path}:{arg} names the method {', '.join(named)} and "
                        f"--config.method={method} another: choose one.")
    before = config.to_dict()
    config = get_config(",".join([arg, *([] if named else [method])]))
    config.update_from_flattened_dict(overrides)
    changed = sorted(k for k, v in config.to_dict().items() if before.get(k) != v)
  if changed:
    logging.info("--config.method=%s brings the reference's settings for that arm: %s",
                 method, ", ".join(f"{k}={config[k]}" for k in changed))
  return config


def _is_this_file(path: str) -> bool:
  return pathlib.Path(path).resolve() == pathlib.Path(__file__).resolve()


def _settle_demo_fallback(config, arg: str) -> None:
  """`:<env>,demo` (or `:<env>,demo,wsrl`) with no shipped demo agent for `<env>`
  (`DEMO_AGENTS`) is SAC from scratch (`get_config`). Where the command line gives a checkpoint
  (`--config.pretrained=RUN_DIR`, e.g. a demo pretraining's), it is WSRL from it, the arm asked
  for (`config.method` set back to wsrl, with an info line where the folder exists; one that
  does not is refused later in one line); else it warns: the one case where the
  arm that runs is not the one the user asked for."""
  env_name, options = parse_config_arg(arg, known=("demo",) + methods.NAMES)
  if "demo" not in options or "sac" in options or config.method != "sac":
    return
  if config.pretrained:
    config.method = "wsrl"
    if pathlib.Path(config.pretrained).is_dir():   # else the run refuses it in one line
      logging.info("WSRL from %s (no demo agent ships for this env; the command line gave one)",
                   config.pretrained)
  else:
    logging.warning(
        "No demo agent ships for %s (checkpoints/): this demo runs SAC from scratch (WSRL's "
        "baseline), not WSRL. For WSRL, pretrain one with launch.pretrain and pass "
        "--config.method=wsrl --config.pretrained=RUN_DIR.", env_name)
