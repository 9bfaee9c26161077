"""Per-family method settings from the WSRL hyperparameter sheet, shared by every launch config.

Reward scale/bias and episode lengths are facts of the task and live in `envs` (EnvSpec); what is
here are choices of the method: network sizes, the actor's std, budgets, action clipping, and
the offline algorithm each family is pretrained with.
"""

import pathlib

from ml_collections import config_dict

REPOSITORY = pathlib.Path(__file__).resolve().parents[2]


def parse_config_arg(arg: str, known: tuple[str, ...] = ("demo",)) -> tuple[str, set[str]]:
  """`<env-name>[,option...]` -> (env name, options); options not in `known` are refused by
  name."""
  env_name, *options = [a.strip() for a in arg.split(",")]
  unknown = set(options) - set(known)
  if unknown:
    raise ValueError(f"Unknown config option(s) {sorted(unknown)} in {arg!r}; known: "
                     f"{', '.join(known)}")
  return env_name, set(options)


FAMILIES = {
    "locomotion": dict(
        actor_hidden_sizes=(256, 256),
        critic_hidden_sizes=(256, 256),
        state_dependent_std=True,
        # The reference's default, which its locomotion script does not override.
        online_steps=500_000,
        num_next_actions=1,
        action_clip=0.99999,
        # Offline phase: CQL (Monte-Carlo returns are hard there), alpha 5.
        offline_steps=250_000,
        algo="cql",
        cql_alpha=5.0,
        cql_autotune_alpha=False,
        negative_sparse_reward=None,
        iql_expectile=0.7,
        iql_beta=3.0,
        iql_actor_dropout=0.0,
    ),
    "adroit": dict(
        actor_hidden_sizes=(512, 512),
        critic_hidden_sizes=(512, 512, 512),
        state_dependent_std=True,
        online_steps=500_000,
        num_next_actions=1,
        # WSRL clips dataset and evaluation actions; online actions are tanh samples in (-1, 1),
        # which this clip changes only within 1e-5 of the bounds.
        action_clip=0.99999,
        # Offline phase: Cal-QL with a fixed alpha 1.
        offline_steps=20_000,
        algo="calql",
        cql_alpha=1.0,
        cql_autotune_alpha=False,
        # Reward -1 per step until the goal (before scale 10, bias 5): -5 per step.
        negative_sparse_reward=-1.0,
        iql_expectile=0.7,
        iql_beta=0.5,
        iql_actor_dropout=0.1,
    ),
    "antmaze": dict(
        actor_hidden_sizes=(256, 256),
        critic_hidden_sizes=(256, 256, 256, 256),
        state_dependent_std=False,
        online_steps=500_000,
        # WSRL's online max-target backup: the TD target is the best of 10 sampled next actions
        # (reference: experiments/configs/train_config.py, antmaze_wsrl).
        num_next_actions=10,
        action_clip=0.99999,
        # Offline phase: Cal-QL with Lagrange-tuned alpha (target gap 0.8).
        offline_steps=1_000_000,
        algo="calql",
        cql_alpha=5.0,
        cql_autotune_alpha=True,
        # The env's reward while unsolved (before scale 10, bias -5): a trajectory that never
        # succeeds gets -5 / (1 - gamma) as its Monte-Carlo return, Cal-QL's all-negative case.
        negative_sparse_reward=0.0,
        iql_expectile=0.9,
        iql_beta=10.0,
        iql_actor_dropout=0.0,
    ),
    # The reference's kitchen_wsrl / kitchen_cql (experiments/configs/train_config.py:154-214).
    "kitchen": dict(
        actor_hidden_sizes=(512, 512, 512),
        critic_hidden_sizes=(512, 512, 512),
        state_dependent_std=True,
        last_hidden_init_scale=None,   # no kernel_scale_final there
        online_steps=500_000,
        num_next_actions=1,
        action_clip=0.99999,
        # Offline phase: Cal-QL with a fixed alpha 5, without importance sampling
        # (train_config.py:172).
        offline_steps=250_000,
        algo="calql",
        cql_alpha=5.0,
        cql_autotune_alpha=False,
        cql_importance_sample=False,
        # Dense (0..4 elements): Monte-Carlo returns as recorded.
        negative_sparse_reward=None,
        iql_expectile=0.7,
        iql_beta=0.5,
        iql_actor_dropout=0.1,
    ),
}
# The point mass (envs/point_mass.py; not a paper task, no reference settings of its own) takes
# the locomotion family's: dense reward, true terminations, CQL offline.
FAMILIES["point-mass"] = dict(FAMILIES["locomotion"])


def add_agent_fields(c: config_dict.ConfigDict, family: dict) -> None:
  """The SAC block both phases share (networks, ensemble, losses, optimisers), written once so
  that an offline checkpoint always has the shapes fine-tuning builds."""
  c.num_critics = 10            # the critic ensemble
  c.num_target_critics = 2      # critics drawn per TD target (its min)
  # The reference draws critic subsets (the target's, and CQL's penalised ones) with
  # jax.random.randint, so one critic can come twice; false: distinct critics.
  c.subsample_with_replacement = True
  c.actor_hidden_sizes = family["actor_hidden_sizes"]    # layer widths
  c.critic_hidden_sizes = family["critic_hidden_sizes"]
  c.state_dependent_std = family["state_dependent_std"]  # false: one learned std per action
  c.layer_norm = True           # LayerNorm in every hidden layer
  # The last hidden layer's init scale (unset: like the other layers; the reference's kitchen).
  c.last_hidden_init_scale = family.get("last_hidden_init_scale", 1e-2)
  if c.last_hidden_init_scale is None:
    c.last_hidden_init_scale = config_dict.placeholder(float)
  c.discount = 0.99             # in [0, 1)
  c.tau = 0.005                 # target critics' Polyak step, in (0, 1]
  c.actor_learning_rate = 1e-4  # Adam's rates
  c.critic_learning_rate = 3e-4
  c.temperature_learning_rate = 1e-4
  c.initial_temperature = 1.0   # SAC's entropy temperature at the start (> 0)
  c.target_entropy = config_dict.placeholder(float)   # None: -action_size
  c.backup_entropy = False      # true: the entropy term in the TD target
  # The temperature's entropy estimate: "next_observations" (the reference: fresh samples at
  # s', as many as the TD target draws) or "actor_samples" (the actor step's own, at s).
  c.temperature_entropy = "next_observations"
  c.reward_scale = config_dict.placeholder(float)     # None: the family's (EnvSpec)
  c.reward_bias = config_dict.placeholder(float)
  c.matmul_precision = "default"                      # default | high | highest | bfloat16
  c.unroll_critic_steps = False  # inline the UTD critic steps (no scan): a GPU speed setting


def add_data_fields(c: config_dict.ConfigDict, family: dict) -> None:
  """Where an offline dataset comes from and how it is read (`pretrain.load_dataset`): the
  pretraining's data, and fine-tuning arms that keep it (RLPD, offline data retained)."""
  c.dataset = ""                # a file or Minari dataset id; empty: D4RL's cache file
  # Minari datasets with dict observations: the keys to concatenate, in order, comma-separated
  # ("achieved_goal,observation"); empty: the family's layout (AntMaze: D4RL's 29 numbers).
  c.observation_keys = ""
  # Trajectories (Monte-Carlo returns) end at terminals and timeouts, as in the reference; an
  # unflagged jump between next_observations[t] and observations[t+1] is logged. True: split
  # there too.
  c.split_at_jumps = False
  c.negative_sparse_reward = family["negative_sparse_reward"] if family[
      "negative_sparse_reward"] is not None else config_dict.placeholder(float)


def add_offline_learner_fields(c: config_dict.ConfigDict, family: dict) -> None:
  """The offline learners' settings (CQL, Cal-QL, IQL): pretraining's, and fine-tuning's when
  an arm continues one of them online (`--config.method=calql|cql|iql`)."""
  c.cql_num_sampled_actions = 10  # actions per state in the CQL penalty (and max-target backup)
  c.cql_alpha = family["cql_alpha"]  # the CQL penalty's weight (its start when autotuned)
  c.cql_autotune_alpha = family["cql_autotune_alpha"]  # Lagrange-tune alpha to the target gap
  c.cql_target_action_gap = 0.8  # the gap autotuning holds the penalty at
  c.cql_alpha_learning_rate = 3e-4  # Adam's rate for the Lagrange multiplier
  c.cql_max_target_backup = True   # the reference's default, on for every family
  # False: the penalty falls on num_target_critics critics drawn per step (the reference with
  # its ensemble); true: on every critic.
  c.cql_penalty_on_all_critics = False
  # "simultaneous": the actor and temperature step from the critics the update started from, as
  # the reference computes every loss from the same parameters; "critic_first": from the
  # critics its critic step made.
  c.cql_update_order = "simultaneous"
  # Importance-weight the sampled actions' logsumexp (the reference: off for kitchen only).
  c.cql_importance_sample = family.get("cql_importance_sample", True)
  c.cql_temperature = 1.0       # the penalty's logsumexp temperature
  c.iql_hidden_sizes = (256, 256)  # IQL's networks (no LayerNorm)
  c.iql_expectile = family["iql_expectile"]  # the value's expectile, in (0, 1)
  c.iql_beta = family["iql_beta"]  # inverse temperature of the advantage weights
  c.iql_actor_dropout = family["iql_actor_dropout"]  # dropout in the actor, in [0, 1)
  c.iql_learning_rate = 3e-4    # Adam's rate for every IQL network


# `,demo`: minutes on a 2-core CPU (README states the measured times). The method as it is (10
# critics, 2-critic targets, UTD 4, warmup), with 64x64 networks and a small budget; both phases
# use the same networks, so a demo pretraining hands over to a demo fine-tuning.
DEMO = dict(num_seeds=2, actor_hidden_sizes=(64, 64), critic_hidden_sizes=(64, 64),
            steps_per_chunk=500, eval_interval=1_000, checkpoint_interval=1_000, eval_episodes=2)

# Pretrained demo agents shipped in checkpoints/ (checkpoints/README.md says how each was made):
# a `,demo` fine-tuning of these envs starts from its agent, so the first command runs WSRL.
DEMO_AGENTS = {"hopper-medium-v2": REPOSITORY / "checkpoints" / "hopper-medium-v2-demo"}


def add_demo_fields(c: config_dict.ConfigDict) -> None:
  """Overrides `c` (either phase's config) with the `,demo` settings both phases share."""
  c.update(DEMO)
  c.iql_hidden_sizes = c.critic_hidden_sizes   # IQL's networks too (its own field)
