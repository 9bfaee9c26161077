r"""Roll out a policy in any registered MJX env and write a D4RL-format hdf5 dataset.

  python -m launch.collect --env=hopper-medium-v2 --policy=random --steps=100000 \
      --output=/tmp/data/hopper_random.hdf5
  python -m launch.collect --env=hopper-medium-v2 --policy=/tmp/wsrl/hopper --num_envs=16 \
      --steps=1000000 --output=/tmp/data/hopper_medium.hdf5

`--policy` is `random` or a checkpoint directory (a run directory, its `checkpoints/` or one step
folder) of a WSRL/CQL agent; `--checkpoint_seed` picks which of its seeds acts. The file has
D4RL's keys and conventions, with `infos/qpos` and `infos/qvel`.
"""

import time

import jax
from absl import app, flags, logging

import envs
from launch import runtime
from wsrl_mjx import collect

_ENV = flags.DEFINE_string("env", None, "A registered env or D4RL dataset name.")
_POLICY = flags.DEFINE_string("policy", "random", "'random' or a checkpoint directory.")
_CHECKPOINT_SEED = flags.DEFINE_integer("checkpoint_seed", 0, "Which checkpoint seed acts.")
_DETERMINISTIC = flags.DEFINE_bool("deterministic", False,
                                   "Act with the mean action instead of sampling.")
_STEPS = flags.DEFINE_integer("steps", 100_000, "Steps in the dataset (all envs together).")
_NUM_ENVS = flags.DEFINE_integer("num_envs", 1, "Parallel envs; must divide --steps.")
_EPISODE_LENGTH = flags.DEFINE_integer("episode_length", 0, "Time limit; 0: the task's.")
_ACTION_CLIP = flags.DEFINE_float("action_clip", 0.99999, "Actions are clipped to +-this.")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed of the rollout.")
_OUTPUT = flags.DEFINE_string("output", None, "The hdf5 file to write.")
flags.mark_flags_as_required(["env", "output"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _STEPS.value % _NUM_ENVS.value:
    raise app.UsageError(f"--num_envs ({_NUM_ENVS.value}) must divide --steps ({_STEPS.value})")
  runtime.configure()
  env, env_spec = envs.make(_ENV.value)
  if _POLICY.value == "random":
    policy, params, source = collect.random_policy(env_spec.action_size), None, "random"
  else:
    policy, params, description = collect.checkpoint_policy(
        _POLICY.value, _CHECKPOINT_SEED.value, _DETERMINISTIC.value)
    source = f"{_POLICY.value} (seed {_CHECKPOINT_SEED.value}, {description.get('env_name')})"
  started = time.time()
  rows = collect.collect(env, env_spec, policy, params, jax.random.PRNGKey(_SEED.value),
                         _STEPS.value // _NUM_ENVS.value, _NUM_ENVS.value,
                         _EPISODE_LENGTH.value or None, _ACTION_CLIP.value)
  episodes = int(rows["terminals"].sum() + rows["timeouts"].sum())
  path = collect.write(_OUTPUT.value, rows, {
      "algorithm": "wsrl-mjx collect", "policy": source, "env": env_spec.name,
      "seed": _SEED.value})
  logging.info("Wrote %s: %d steps, %d episodes (%d terminated), mean reward %.3f, in %.0f s",
               path, len(rows["rewards"]), episodes, int(rows["terminals"].sum()),
               float(rows["rewards"].mean()), time.time() - started)


if __name__ == "__main__":
  app.run(main)
