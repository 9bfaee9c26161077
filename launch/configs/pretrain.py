"""Offline pretraining: `--config=launch/configs/pretrain.py:<dataset-name>[,demo]`.

`<dataset-name>` is a D4RL dataset name (`hopper-medium-v2`): it picks the MJX env for
evaluation and, unless `--config.dataset=PATH` says otherwise, the file in D4RL's cache.
`--config.algo=calql|cql|iql` chooses the learner (the family's default otherwise). The networks
are the fine-tuning config's, so the final checkpoint is what `launch.finetune
--config.pretrained=DIR` starts from.
"""

from ml_collections import config_dict

import envs
from launch.configs.families import (FAMILIES, add_agent_fields, add_data_fields, add_demo_fields,
                                     add_offline_learner_fields, parse_config_arg)


def get_config(arg: str = "hopper-medium-v2"):
  env_name, options = parse_config_arg(arg)
  env_spec = envs.spec(env_name)
  family = FAMILIES[env_spec.family]

  c = config_dict.ConfigDict()
  c.env_name = env_name         # evaluation env; names D4RL's file unless dataset is set
  c.algo = family["algo"]       # calql | cql | iql
  c.seed = 0                    # seed i's randomness depends only on (seed, i)
  c.num_seeds = 4               # independent runs in one program (a multiple of the devices)
  c.offline_steps = family["offline_steps"]  # gradient steps per seed
  c.batch_size = 256            # transitions per gradient step

  # Networks and SAC losses, the block fine-tuning uses (families.py), so checkpoints hand over.
  add_agent_fields(c, family)

  # CQL / Cal-QL and IQL (families.py: fine-tuning continues them with the same fields).
  add_offline_learner_fields(c, family)

  # Data.
  c.action_clip = family["action_clip"]   # dataset and evaluation actions
  # Where the dataset comes from and how it is read (families.py, shared with fine-tuning).
  add_data_fields(c, family)

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
    c.offline_steps = 2_000
  return c
