"""Offline pretraining: `--config=launch/configs/pretrain.py:<dataset-name>[,demo]`.

`<dataset-name>` is a D4RL dataset name (`hopper-medium-v2`): it picks the MJX env for
evaluation and, unless `--config.dataset=PATH` says otherwise, the file in D4RL's cache.
`--config.algo=calql|cql|iql` chooses the learner (the family's default otherwise). The networks
are the fine-tuning config's, so the final checkpoint is what `launch.finetune
--config.pretrained=DIR` starts from.
"""

from ml_collections import config_dict

import envs
from launch.configs.families import FAMILIES, add_agent_fields, add_demo_fields, parse_config_arg


def get_config(arg: str = "hopper-medium-v2"):
  env_name, options = parse_config_arg(arg)
  env_spec = envs.spec(env_name)
  family = FAMILIES[env_spec.family]

  c = config_dict.ConfigDict()
  c.env_name = env_name         # evaluation env; names D4RL's file unless dataset is set
  c.dataset = ""                # a file or Minari dataset id; empty: D4RL's cache file
  # Minari datasets with dict observations: the keys to concatenate, in order, comma-separated
  # ("achieved_goal,observation"); empty: the family's layout (AntMaze: D4RL's 29 numbers).
  c.observation_keys = ""
  c.algo = family["algo"]       # calql | cql | iql
  c.seed = 0                    # seed i's randomness depends only on (seed, i)
  c.num_seeds = 4               # independent runs in one program (a multiple of the devices)
  c.offline_steps = family["offline_steps"]  # gradient steps per seed
  c.batch_size = 256            # transitions per gradient step

  # Networks and SAC losses, the block fine-tuning uses (families.py), so checkpoints hand over.
  add_agent_fields(c, family)

  # CQL / Cal-QL.
  c.cql_num_sampled_actions = 10  # actions per state in the CQL penalty (and max-target backup)
  c.cql_alpha = family["cql_alpha"]  # the CQL penalty's weight (its start when autotuned)
  c.cql_autotune_alpha = family["cql_autotune_alpha"]  # Lagrange-tune alpha to the target gap
  c.cql_target_action_gap = 0.8  # the gap autotuning holds the penalty at
  c.cql_alpha_learning_rate = 3e-4  # Adam's rate for the Lagrange multiplier
  c.cql_max_target_backup = True   # the reference's default, on for every family
  # False: the penalty falls on num_target_critics critics drawn per step (the reference with
  # its ensemble); true: on every critic.
  c.cql_penalty_on_all_critics = False
  # Importance-weight the sampled actions' logsumexp (the reference: off for kitchen).
  c.cql_importance_sample = family.get("cql_importance_sample", True)
  c.cql_temperature = 1.0       # the penalty's logsumexp temperature

  # IQL.
  c.iql_hidden_sizes = (256, 256)  # IQL's networks (no LayerNorm)
  c.iql_expectile = family["iql_expectile"]  # the value's expectile, in (0, 1)
  c.iql_beta = family["iql_beta"]  # inverse temperature of the advantage weights
  c.iql_actor_dropout = family["iql_actor_dropout"]  # dropout in the actor, in [0, 1)
  c.iql_learning_rate = 3e-4    # Adam's rate for every IQL network

  # Data.
  c.action_clip = family["action_clip"]   # dataset and evaluation actions
  # Trajectories (Monte-Carlo returns) end at terminals and timeouts, as in the reference; an
  # unflagged jump between next_observations[t] and observations[t+1] is logged. True: split
  # there too.
  c.split_at_jumps = False
  c.negative_sparse_reward = family["negative_sparse_reward"] if family[
      "negative_sparse_reward"] is not None else config_dict.placeholder(float)

  # Host loop and evaluation.
  c.episode_length = 0          # 0: the task's
  c.goal_offset = "wsrl"        # AntMaze evaluation goals, as in fine-tuning
  c.steps_per_chunk = 5_000     # gradient steps per device call, at most
  c.eval_interval = 25_000      # gradient steps between evaluations
  c.eval_episodes = 20          # deterministic episodes per seed and evaluation
  c.checkpoint_interval = 50_000  # gradient steps between checkpoints
  c.keep_checkpoints = 2         # the newest checkpoints kept

  if "demo" in options:
    add_demo_fields(c)
    c.iql_hidden_sizes = c.critic_hidden_sizes
    c.offline_steps = 2_000
  return c
