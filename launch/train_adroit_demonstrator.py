r"""Train an Adroit demonstrator with Brax PPO on D4RL's dense reward, to make Adroit datasets.

  python -m launch.train_adroit_demonstrator --task=door --output=/tmp/door_ppo \
      --num_timesteps=20000000                                   # GPU: minutes
  python -m launch.train_adroit_demonstrator --task=door --output=/tmp/door_ppo \
      --num_timesteps=1000 --num_envs=4 --batch_size=4 --num_minibatches=2 --unroll_length=5 \
      --num_evals=2                                              # CPU smoke size
  python -m launch.collect --env=door-binary-v0 --policy=ppo:/tmp/door_ppo --steps=20000 \
      --output=/tmp/door.hdf5                                    # then: data in the binary task

Trains on envs/adroit_shaped.py (the binary task's model, observation and resets with D4RL's
shaped reward) and writes `params` and `controller.json` (sizes and training figures) to
`--output` at every evaluation (a run stopped early leaves its latest policy) and at the end.
"""

import jax
from absl import app, flags, logging

from envs import adroit, adroit_shaped
from launch import runtime
from wsrl_mjx import compat
from wsrl_mjx.datagen import controller

_TASK = flags.DEFINE_enum("task", "door", sorted(adroit.TASKS), "Adroit task.")
_OUTPUT = flags.DEFINE_string("output", None, "Directory for the demonstrator.")
_NUM_TIMESTEPS = flags.DEFINE_integer("num_timesteps", 20_000_000, "Env steps of training.")
_NUM_ENVS = flags.DEFINE_integer("num_envs", 2048, "Parallel envs.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 512, "PPO batch size (in unrolls).")
_NUM_MINIBATCHES = flags.DEFINE_integer("num_minibatches", 32, "PPO minibatches per batch.")
_UNROLL_LENGTH = flags.DEFINE_integer("unroll_length", 10, "Steps per unroll.")
_UPDATES_PER_BATCH = flags.DEFINE_integer("num_updates_per_batch", 8, "Epochs per batch.")
_ENTROPY_COST = flags.DEFINE_float("entropy_cost", 1e-3, "PPO entropy bonus.")
_DISCOUNTING = flags.DEFINE_float("discounting", 0.99, "Discount.")
_REWARD_SCALING = flags.DEFINE_float("reward_scaling", 0.1, "Reward multiplier for PPO.")
_NUM_EVALS = flags.DEFINE_integer("num_evals", 8, "Evaluations during training.")
_SEED = flags.DEFINE_integer("seed", 0, "Training seed.")
flags.mark_flag_as_required("output")

HIDDEN_SIZES = (256, 256, 256)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  runtime.configure()
  from brax.training.agents.ppo import train as ppo  # pylint: disable=import-outside-toplevel
  compat.patch_brax_for_this_jax()
  env = adroit_shaped.AdroitShaped(_TASK.value)
  history, progress = controller.evaluation_log(
      {"episode_reward": "eval/episode_reward", "steps_at_success": "eval/episode_success"})

  def save(step, params):
    return controller.save(
        _OUTPUT.value, params,
        {"trainer": "brax.training.agents.ppo", "env": f"{_TASK.value} (D4RL's shaped reward)",
         "num_timesteps": int(step), "num_envs": _NUM_ENVS.value,
         "device": jax.devices()[0].device_kind, "history": history},
        observation_size=env.observation_size, action_size=env.action_size,
        policy_hidden_sizes=HIDDEN_SIZES, value_hidden_sizes=HIDDEN_SIZES)

  _, params, _ = ppo.train(
      environment=env, num_timesteps=_NUM_TIMESTEPS.value,
      episode_length=env.task.episode_length, num_envs=_NUM_ENVS.value,
      batch_size=_BATCH_SIZE.value, num_minibatches=_NUM_MINIBATCHES.value,
      unroll_length=_UNROLL_LENGTH.value, num_updates_per_batch=_UPDATES_PER_BATCH.value,
      learning_rate=3e-4, entropy_cost=_ENTROPY_COST.value, discounting=_DISCOUNTING.value,
      reward_scaling=_REWARD_SCALING.value, normalize_observations=True,
      num_evals=_NUM_EVALS.value,
      network_factory=controller.make_network_factory(HIDDEN_SIZES, HIDDEN_SIZES),
      seed=_SEED.value, progress_fn=progress,
      policy_params_fn=controller.save_at_evaluations(save))
  logging.info("Wrote %s", save(_NUM_TIMESTEPS.value, params))


if __name__ == "__main__":
  runtime.run(main)
