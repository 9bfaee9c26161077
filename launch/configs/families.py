"""Per-family method settings from the WSRL hyperparameter sheet, shared by every launch config.

Reward scale/bias and episode lengths are facts of the task and live in `envs` (EnvSpec); what is
here are choices of the method: network sizes, the actor's std, budgets, action clipping, and
the offline algorithm each family is pretrained with.
"""

def parse_config_arg(arg: str) -> tuple[str, set[str]]:
  """`<env-name>[,demo]` -> (env name, options); unknown options are refused by name."""
  env_name, *options = [a.strip() for a in arg.split(",")]
  unknown = set(options) - {"demo"}
  if unknown:
    raise ValueError(f"Unknown config option(s) {sorted(unknown)} in {arg!r}; known: demo")
  return env_name, set(options)


FAMILIES = {
    "locomotion": dict(
        actor_hidden_sizes=(256, 256),
        critic_hidden_sizes=(256, 256),
        state_dependent_std=True,
        online_steps=1_000_000,
        action_clip=0.99999,
        # Offline phase: CQL (Monte-Carlo returns are hard there), alpha 5.
        offline_steps=250_000,
        algo="cql",
        cql_alpha=5.0,
        cql_autotune_alpha=False,
        cql_max_target_backup=False,
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
        # WSRL clips dataset and evaluation actions; online actions are tanh samples in (-1, 1),
        # which this clip changes only within 1e-5 of the bounds.
        action_clip=0.99999,
        # Offline phase: Cal-QL with a fixed alpha 1.
        offline_steps=20_000,
        algo="calql",
        cql_alpha=1.0,
        cql_autotune_alpha=False,
        cql_max_target_backup=False,
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
        action_clip=0.99999,
        # Offline phase: Cal-QL with Lagrange-tuned alpha (target gap 0.8), max-target backup.
        offline_steps=1_000_000,
        algo="calql",
        cql_alpha=5.0,
        cql_autotune_alpha=True,
        cql_max_target_backup=True,
        # The env's reward while unsolved (before scale 10, bias -5): a trajectory that never
        # succeeds gets -5 / (1 - gamma) as its Monte-Carlo return, Cal-QL's all-negative case.
        negative_sparse_reward=0.0,
        iql_expectile=0.9,
        iql_beta=10.0,
        iql_actor_dropout=0.0,
    ),
}
