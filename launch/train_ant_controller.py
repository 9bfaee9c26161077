r"""Train the goal-reaching ant controller that AntMaze data collection steers (Brax PPO).

  python -m launch.train_ant_controller --output=checkpoints/ant_controller \
      --num_timesteps=50000000                                  # GPU: minutes
  python -m launch.train_ant_controller --output=/tmp/ctrl --num_timesteps=2000 --num_envs=8 \
      --batch_size=8 --num_minibatches=2 --unroll_length=5     # CPU smoke size

Trains on envs/ant_goal.py (D4RL's ant on an open floor, goals within 10 m) with Brax's PPO and
writes `params` (Brax's parameter file: observation normaliser, policy, value) and
`controller.json` (network sizes and training figures) to `--output`, at every evaluation (so a
run stopped early leaves its latest controller) and at the end. `launch.collect
--policy=navigator:<output>` then steers it through a maze.
"""

import jax
from absl import app, flags, logging

from envs import ant_goal
from launch import runtime
from wsrl_mjx import compat
from wsrl_mjx.datagen import controller

_OUTPUT = flags.DEFINE_string("output", None, "Directory for the controller.")
_NUM_TIMESTEPS = flags.DEFINE_integer("num_timesteps", 50_000_000, "Env steps of training.")
_NUM_ENVS = flags.DEFINE_integer("num_envs", 2048, "Parallel envs.")
_EPISODE_LENGTH = flags.DEFINE_integer("episode_length", 500, "Steps per training episode.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 1024, "PPO batch size (in unrolls).")
_NUM_MINIBATCHES = flags.DEFINE_integer("num_minibatches", 32, "PPO minibatches per batch.")
_UNROLL_LENGTH = flags.DEFINE_integer("unroll_length", 10, "Steps per unroll.")
_NUM_EVALS = flags.DEFINE_integer("num_evals", 6, "Evaluations during training.")
_SEED = flags.DEFINE_integer("seed", 0, "Training seed.")
flags.mark_flag_as_required("output")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  runtime.configure()
  from brax.training.agents.ppo import train as ppo  # pylint: disable=import-outside-toplevel
  compat.patch_brax_for_this_jax()
  env = ant_goal.AntGoal()
  history, progress = controller.evaluation_log(
      {"episode_reward": "eval/episode_reward", "goals_reached": "eval/episode_goals_reached"})

  def description(step):
    return {"trainer": "brax.training.agents.ppo", "num_timesteps": step,
            "num_envs": _NUM_ENVS.value, "episode_length": _EPISODE_LENGTH.value,
            "device": jax.devices()[0].device_kind, "history": history}

  def save(step, params):
    return controller.save(_OUTPUT.value, params, description(step))

  _, params, _ = ppo.train(
      environment=env, num_timesteps=_NUM_TIMESTEPS.value, episode_length=_EPISODE_LENGTH.value,
      num_envs=_NUM_ENVS.value, batch_size=_BATCH_SIZE.value,
      num_minibatches=_NUM_MINIBATCHES.value, unroll_length=_UNROLL_LENGTH.value,
      num_updates_per_batch=4, learning_rate=3e-4, entropy_cost=1e-2, discounting=0.97,
      reward_scaling=1.0, normalize_observations=True, num_evals=_NUM_EVALS.value,
      network_factory=controller.network_factory, seed=_SEED.value, progress_fn=progress,
      policy_params_fn=controller.save_at_evaluations(save))
  logging.info("Wrote %s", save(_NUM_TIMESTEPS.value, params))


if __name__ == "__main__":
  runtime.run(main)
