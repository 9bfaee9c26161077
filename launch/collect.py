r"""Roll out a policy in any registered MJX env and write a D4RL-format hdf5 dataset.

  python -m launch.collect --env=hopper-medium-v2 --policy=random --steps=100000 \
      --output=/tmp/data/hopper_random.hdf5
  python -m launch.collect --env=hopper-medium-v2 --policy=/tmp/wsrl/hopper --num_envs=16 \
      --steps=1000000 --output=/tmp/data/hopper_medium.hdf5

AntMaze datasets the way D4RL made them (a goal-reaching controller steered by waypoints, noisy
actions, 1000-step episodes that go on past the goal; as in D4RL's v2 files, every step with
reward 1 is written as terminal although the episode goes on):

  python -m launch.train_ant_controller --output=/tmp/ant_controller
  python -m launch.collect --env=antmaze-umaze-diverse-v2 --policy=navigator:/tmp/ant_controller \
      --num_envs=100 --steps=1000000 --output=/tmp/data/antmaze_umaze_diverse.hdf5

Adroit binary datasets as WSRL reads them (`.npy` trajectory lists; `--npy_layout=demo` writes
the demonstration files' layout, `rollout` the BC rollouts'):

  python -m launch.collect --env=pen-binary-v0 --policy=/tmp/wsrl/pen --num_envs=64 \
      --steps=64000 --output=/tmp/adroit/pen_bc.npy

Adroit data from a demonstrator trained with Brax PPO on D4RL's shaped reward (the binary task
is what it rolls out in):

  python -m launch.train_adroit_demonstrator --task=door --output=/tmp/door_ppo
  python -m launch.collect --env=door-binary-v0 --policy=ppo:/tmp/door_ppo --num_envs=100 \
      --steps=20000 --output=/tmp/adroit/door.hdf5

Adroit demonstrations with successes, from the scripted demonstrator
(wsrl_mjx/datagen/scripted.py; the part D4RL's human demonstrations play):

  python -m launch.collect --env=relocate-binary-v0 --policy=scripted --num_envs=25 \
      --steps=5000 --output=/tmp/adroit/relocate_demos.npy --npy_layout=demo

Door and pen demonstrations with successes, from a sampling-based planner in C MuJoCo that acts
in the MJX env (wsrl_mjx/datagen/planner.py; about 0.15 s of planning per env step on 2 CPU
cores):

  python -m launch.collect --env=door-binary-v0 --policy=planner --num_envs=8 \
      --steps=4000 --output=/tmp/adroit/door_demos.npy --npy_layout=demo

Franka Kitchen data from scripted end-effector waypoints (wsrl_mjx/datagen/kitchen_script.py;
the success rate of each task element is logged):

  python -m launch.collect --env=kitchen-complete-v0 --policy=kitchen_script --num_envs=4 \
      --steps=1120 --output=/tmp/kitchen/complete.hdf5

`--policy` names one of the policy kinds in `POLICY_KINDS` below (`--help` lists them). The file
has D4RL's keys and conventions, with `infos/qpos` and `infos/qvel` (and `infos/goal` for AntMaze).
"""

import dataclasses
import pathlib
import time
from typing import Any, Callable

import jax
import numpy as np
from absl import app, flags, logging

import envs
from envs import antmaze
from launch import runtime
from wsrl_mjx.datagen import collect, controller, kitchen_script, navigation, planner, scripted


@dataclasses.dataclass(frozen=True)
class Rollout:
  """What a policy kind builds: a policy and its parameters for `collect.collect`, or a host-side
  planner for `collect.collect_with_planner`, and where the actions come from (in the file)."""
  source: str
  policy: Any = None
  params: Any = None
  planner: Any = None


@dataclasses.dataclass(frozen=True)
class PolicyKind:
  usage: str             # how --policy names it: "random", "ppo:DIR", or "DIR" (a checkpoint)
  description: str
  build: Callable[[str, Any, envs.EnvSpec], Rollout]   # (its DIR or "", env, env spec)


def _random(argument, env, env_spec):
  del argument, env
  return Rollout("random", collect.random_policy(env_spec.action_size))


def _scripted(argument, env, env_spec):
  del argument, env_spec
  try:
    policy = scripted.policy_for(env, _SCRIPTED_NOISE.value)
  except ValueError as e:
    raise app.UsageError(f"--policy=scripted: {e}") from None
  return Rollout(f"scripted demonstrator (action noise {_SCRIPTED_NOISE.value})", policy)


def _planner(argument, env, env_spec):
  del argument, env_spec
  try:
    config = planner.task_config(env)
    config = dataclasses.replace(config,
                                 num_samples=_PLANNER_SAMPLES.value or config.num_samples,
                                 horizon=_PLANNER_HORIZON.value or config.horizon)
    host_planner = planner.MPPIPlanner(env, config)
  except ValueError as e:
    raise app.UsageError(f"--policy=planner: {e}") from None
  return Rollout(f"MPPI planner in C MuJoCo ({config})", planner=host_planner)


def _kitchen_script(argument, env, env_spec):
  del argument
  if env_spec.family != "kitchen":
    raise app.UsageError(f"--policy=kitchen_script: {env_spec.name} is not a kitchen task")
  return Rollout("scripted kitchen waypoints (wsrl_mjx/datagen/kitchen_script.py)",
                 planner=kitchen_script.KitchenScript(env))


def _ppo(directory, env, env_spec):
  try:
    sizes = controller.read_description(directory)
  except (FileNotFoundError, ValueError) as e:
    raise app.UsageError(f"--policy=ppo:DIR: {e}") from None
  if (sizes["observation_size"], sizes["action_size"]) != (env.observation_size,
                                                           env.action_size):
    raise app.UsageError(
        f"{directory}/controller.json: observation_size {sizes['observation_size']} and "
        f"action_size {sizes['action_size']} do not fit {env_spec.name} "
        f"({env.observation_size}, {env.action_size})")
  policy, params = controller.load(directory, deterministic=_DETERMINISTIC.value)
  return Rollout(f"Brax PPO policy {directory} ({sizes.get('env', 'unknown training env')})",
                 policy, params)


def _navigator(directory, env, env_spec):
  if env_spec.family != "antmaze":
    raise app.UsageError("--policy=navigator:DIR steers the AntMaze controller; "
                         f"{env_spec.name} is not an AntMaze env")
  low_level, params = controller.load(directory, deterministic=_DETERMINISTIC.value)
  policy = navigation.navigation_policy(navigation.Planner.for_maze(env.maze), low_level)
  return Rollout(
      f"waypoint navigator over {directory} ({env.data_character} starts and goals)",
      policy, params)


def _checkpoint(directory, env, env_spec):
  del env, env_spec
  policy, params, description = collect.checkpoint_policy(
      directory, _CHECKPOINT_SEED.value, _DETERMINISTIC.value)
  return Rollout(f"{directory} (seed {_CHECKPOINT_SEED.value}, {description.get('env_name')})",
                 policy, params)


# Every --policy kind, in the order --help lists them; `policy_kind` and the unknown-kind error
# read this table too.
POLICY_KINDS = {
    "random": PolicyKind("random", "uniform random actions", _random),
    "scripted": PolicyKind(
        "scripted", "the scripted Adroit relocate demonstrator (wsrl_mjx/datagen/scripted.py; "
        "--scripted_noise)", _scripted),
    "planner": PolicyKind(
        "planner", "MPPI in C MuJoCo, Adroit door and pen (wsrl_mjx/datagen/planner.py; "
        "--planner_samples, --planner_horizon)", _planner),
    "kitchen_script": PolicyKind(
        "kitchen_script", "Franka Kitchen: scripted end-effector waypoints, microwave, kettle, "
        "light switch, slide cabinet (wsrl_mjx/datagen/kitchen_script.py)", _kitchen_script),
    "ppo": PolicyKind("ppo:DIR", "a Brax PPO policy of launch/train_adroit_demonstrator.py",
                      _ppo),
    "navigator": PolicyKind(
        "navigator:DIR", "AntMaze: waypoint navigation steering the goal-reaching controller "
        "in DIR (launch/train_ant_controller.py)", _navigator),
    "checkpoint": PolicyKind(
        "DIR", "a WSRL/CQL checkpoint: a run directory, its checkpoints/ or one step folder "
        "(--checkpoint_seed picks which of its seeds acts)", _checkpoint),
}


def policy_kind(value: str) -> tuple[PolicyKind, str]:
  """(kind, its DIR or "") for a --policy value: a kind's name, "name:DIR", or else an existing
  checkpoint directory. A value that is none of these is a UsageError listing the kinds."""
  for kind in POLICY_KINDS.values():
    prefix = kind.usage.removesuffix("DIR")
    if prefix == kind.usage and value == kind.usage:          # a kind without a directory
      return kind, ""
    if prefix.endswith(":") and value.startswith(prefix):     # "name:DIR"
      return kind, value.removeprefix(prefix)
  if pathlib.Path(value).expanduser().exists():
    return POLICY_KINDS["checkpoint"], value
  raise app.UsageError(f"--policy={value}: no such policy kind or checkpoint directory. "
                       f"{_kinds_help()}")


def _kinds_help() -> str:
  return "One of: " + "; ".join(f"{kind.usage}: {kind.description}"
                                for kind in POLICY_KINDS.values()) + "."


_ENV = flags.DEFINE_string("env", None, "A registered env or D4RL dataset name.")
_POLICY = flags.DEFINE_string("policy", "random", f"The policy that acts. {_kinds_help()}")
_SCRIPTED_NOISE = flags.DEFINE_float("scripted_noise", 0.05,
                                     "Std of the Gaussian noise on the scripted actions.")
_PLANNER_SAMPLES = flags.DEFINE_integer(
    "planner_samples", 0, "--policy=planner: action sequences sampled per env per step; 0: the "
    "task's (wsrl_mjx/datagen/planner.py).")
_PLANNER_HORIZON = flags.DEFINE_integer(
    "planner_horizon", 0, "--policy=planner: env steps each sampled sequence looks ahead; 0: the "
    "task's.")
_CHECKPOINT_SEED = flags.DEFINE_integer("checkpoint_seed", 0, "Which checkpoint seed acts.")
_DETERMINISTIC = flags.DEFINE_bool("deterministic", False,
                                   "Act with the mean action instead of sampling.")
_STEPS = flags.DEFINE_integer("steps", 100_000, "Steps in the dataset (all envs together).")
_NUM_ENVS = flags.DEFINE_integer("num_envs", 1, "Parallel envs; must divide --steps.")
_EPISODE_LENGTH = flags.DEFINE_integer("episode_length", 0, "Time limit; 0: the task's.")
_ACTION_CLIP = flags.DEFINE_float("action_clip", 0.99999, "Actions are clipped to +-this.")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed of the rollout.")
_CHARACTER = flags.DEFINE_enum(
    "data_character", None, ["fixed", "play", "diverse"],
    "AntMaze only: starts and goals as in D4RL's datasets (default: from the dataset name: "
    "'-diverse' -> diverse, '-play' -> play, else fixed).")
_OUTPUT = flags.DEFINE_string(
    "output", None, "The file to write: D4RL hdf5, or for a name ending in .npy the Adroit "
    "binary trajectory list WSRL reads.")
_NPY_LAYOUT = flags.DEFINE_enum("npy_layout", "rollout", ["rollout", "demo"],
                                "Layout of a .npy output (see wsrl_mjx/data/adroit.py).")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Replace an existing --output file (else it is refused: a pretraining "
    "made from it would no longer match its data).")
flags.mark_flags_as_required(["env", "output"])



def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _STEPS.value % _NUM_ENVS.value:
    raise app.UsageError(f"--num_envs ({_NUM_ENVS.value}) must divide --steps ({_STEPS.value})")
  runtime.check_new_file(_OUTPUT.value, _OVERWRITE.value)
  kind, argument = policy_kind(_POLICY.value)
  runtime.configure()
  env_spec = runtime.env_spec(_ENV.value)
  episode_length = _EPISODE_LENGTH.value or None
  if env_spec.family == "antmaze":
    character = _CHARACTER.value or next(
        (c for c in ("diverse", "play") if f"-{c}-" in env_spec.name), "fixed")
    env, _ = envs.make(_ENV.value, data_character=character)
    episode_length = episode_length or antmaze.DATA_EPISODE_LENGTH
  else:
    if _CHARACTER.value:
      raise app.UsageError("--data_character applies to AntMaze envs only")
    env, _ = envs.make(_ENV.value)
  rollout = kind.build(argument, env, env_spec)
  started = time.time()
  steps_per_env = _STEPS.value // _NUM_ENVS.value
  # One call compiles, then rolls out: say so, or minutes pass without a line.
  logging.info("Collecting %s steps in %d %s envs with %s: compiling the rollout (minutes for "
               "AntMaze, Adroit and kitchen on a CPU), then running it ...", f"{_STEPS.value:,}",
               _NUM_ENVS.value, env_spec.name, rollout.source)
  if rollout.planner is not None:
    rows = collect.collect_with_planner(env, env_spec, rollout.planner,
                                        jax.random.PRNGKey(_SEED.value), steps_per_env,
                                        _NUM_ENVS.value, episode_length, _ACTION_CLIP.value)
  else:
    rows = collect.collect(env, env_spec, rollout.policy, rollout.params,
                           jax.random.PRNGKey(_SEED.value),
                           steps_per_env, _NUM_ENVS.value,
                           episode_length, _ACTION_CLIP.value)
  episodes = int(collect.episode_ends(rows).sum())
  if _OUTPUT.value.endswith(".npy"):
    path = collect.write_adroit_npy(_OUTPUT.value, rows, _NPY_LAYOUT.value)
  else:
    path = collect.write(_OUTPUT.value, rows, {
        "algorithm": "wsrl-mjx collect", "policy": rollout.source, "env": env_spec.name,
        "seed": _SEED.value})
  logging.info("Wrote %s: %d steps, %d episodes, %d terminal steps, mean reward %.3f, in %.0f s",
               path, len(rows["rewards"]), episodes, int(rows["terminals"].sum()),
               float(rows["rewards"].mean()), time.time() - started)
  if not env_spec.score_is_success_rate and env_spec.reward_values is None:
    # Dense-reward tasks (locomotion, the point mass): the data's quality as D4RL describes a
    # file's, its finished episodes' returns (one the end of its stream cut short is not
    # counted).
    finished, cut = collect.finished_trajectories(
        rows, steps_per_env, episode_length or env_spec.episode_length)
    if finished:
      returns = np.asarray([e["rewards"].sum() for e in finished], np.float64)
      logging.info("Finished episodes: %d (%d cut short by the end of a stream not counted), "
                   "mean return %.1f, normalised score %.1f", len(finished), cut,
                   returns.mean(), float(np.mean(env_spec.normalized_score(returns))))
  if env_spec.family in ("antmaze", "adroit"):
    logging.info("Episodes that reached their goal: %.1f%% (episodes cut short by the end of "
                 "a stream not counted)", 100 * collect.success_rate(
                     rows, steps_per_env,
                     episode_length or env_spec.episode_length))
  if env_spec.family == "kitchen":
    # An episode the end of its stream cut short (not all elements done, under the time limit)
    # had no chance to finish; it is not counted, as for AntMaze and Adroit above.
    finished, cut = collect.finished_trajectories(
        rows, steps_per_env, episode_length or env_spec.episode_length)
    if finished:
      rates = kitchen_script.element_success_rates(finished, env_spec.task)
      logging.info("Episodes in which each element was done: %s (of %d episodes; %d cut short "
                   "by the end of a stream not counted)", ", ".join(
                       f"{element} {100 * rate:.0f}%" for element, rate in rates.items()),
                   len(finished), cut)


if __name__ == "__main__":
  runtime.run(main)
