"""Per-family agent settings from the WSRL hyperparameter sheet, shared by every launch config.

Reward scale/bias and episode lengths are facts of the task and live in `envs` (EnvSpec); what is
here are choices of the method: network sizes, the actor's std, online budget, action clipping.
"""

FAMILIES = {
    "locomotion": dict(
        actor_hidden_sizes=(256, 256),
        critic_hidden_sizes=(256, 256),
        state_dependent_std=True,
        online_steps=1_000_000,
        action_clip=0.99999,
    ),
}
