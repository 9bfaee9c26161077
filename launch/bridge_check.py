r"""MuJoCo bridge consistency check: replay recorded states and actions through MJX and MuJoCo.

  python -m launch.bridge_check --env=antmaze-large-diverse-v2
  python -m launch.bridge_check --env=hopper-medium-v2 --dataset=/data/hopper_medium-v2.hdf5
  python -m launch.bridge_check --env=door-binary-v0 --actions=planner
  python -m launch.bridge_check --env=hopper-medium-v2 --actions=policy --policy=/tmp/hopper_policy

Without `--dataset` a random-action trajectory is simulated in C MuJoCo first (for AntMaze it
starts anywhere in the maze, sliding, so walls are hit); `--actions=policy` has a policy
exported by `launch.export` act instead, so the check covers the states that policy visits (the
one handed to a robot, say). Prints the one-step and multi-step observation error per field
(MJX vs MuJoCo, and each against the recorded states) and exits with status 1 if an
MJX-vs-MuJoCo error is over its stated tolerance (envs/bridge.py says why).
"""

import hashlib
import json
import pathlib
import sys

import numpy as np
from absl import app, flags, logging

import envs
from envs import bridge
from launch import runtime
from wsrl_mjx import standalone_policy
from wsrl_mjx.datagen import kitchen_script, planner
from wsrl_mjx.errors import UserError

_ENV = flags.DEFINE_string("env", None, "A registered env or D4RL dataset name.")
_DATASET = flags.DEFINE_string("dataset", "", "D4RL-format hdf5 with infos/qpos and infos/qvel.")
_STARTS = flags.DEFINE_integer("starts", 64, "Windows replayed (random steps of the data).",
                               lower_bound=1)
_HORIZON = flags.DEFINE_integer("horizon", 10, "Env steps replayed open-loop per window.",
                                lower_bound=1)
_STEPS = flags.DEFINE_integer(
    "steps", 0, "Length of each generated episode (no --dataset); 0: the env's "
    "`bridge_episode_steps` (Adroit: 100, what its bounds are calibrated on), else 200.",
    lower_bound=0)
_EPISODES = flags.DEFINE_integer("episodes", 4, "Generated trajectories (no --dataset).",
                                 lower_bound=1)
_ACTIONS = flags.DEFINE_enum(
    "actions", "random", ["random", "planner", "script", "policy"],
    "Generated trajectories' actions: 'random' (held 4 steps), 'planner', the Adroit "
    "demonstrator's (wsrl_mjx/datagen/planner.py: door, pen), whose episodes reach the goal, "
    "'script', the kitchen demonstrator's (wsrl_mjx/datagen/kitchen_script.py: microwave, "
    "kettle, light switch, slide cabinet), or 'policy', the exported policy of --policy.")
_POLICY = flags.DEFINE_string(
    "policy", "", "With --actions=policy: a policy exported by launch.export (its folder or "
    "its policy.npz), run with numpy as the robot team runs it.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed for the generated data and the windows.")
_CONES = flags.DEFINE_list("cones", list(bridge.CONES),
                           "Friction cones to check with: 'model' (as declared: D4RL's pyramidal) "
                           "and/or 'elliptic' (both simulators; the model-identity check).")
_SOLVER_ITERATIONS = flags.DEFINE_integer(
    "solver_iterations", 0, "MJX Newton iterations (0: the env's default).")
_SOLVER_LS_ITERATIONS = flags.DEFINE_integer(
    "solver_ls_iterations", 0, "MJX line-search steps (0: the env's default).")
_JSON = flags.DEFINE_string("json", "", "Also write the report here as JSON.")
flags.mark_flag_as_required("env")


def load_policy(path: str, env_spec) -> tuple[standalone_policy.Policy, dict]:
  """The exported policy at `path` (launch.export's folder or its policy.npz), checked against
  the env, and what identifies it (the weights' path and SHA-256, policy.json's `source`: run,
  checkpoint, seed). UserError naming the file where it cannot be read or was exported for
  another task (policy.json's env.task, where it is beside the weights) or observation/action
  size."""
  weights = pathlib.Path(path)
  if weights.is_dir():
    weights = weights / "policy.npz"
  try:
    policy = standalone_policy.load(weights)
  except ValueError as error:
    raise UserError(f"--policy: {error}") from None
  identity = {"policy": str(weights.absolute()),
              "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
  description = weights.with_name("policy.json")
  if description.is_file():
    try:
      exported = json.loads(description.read_text())
    except ValueError as error:
      raise UserError(f"{description}: not valid JSON ({error}); export the policy again "
                      "with launch.export") from None
    try:
      task = exported["env"]["task"]
    except (KeyError, TypeError):
      raise UserError(f"{description}: has no env.task; not a policy.json written by "
                      "launch.export") from None
    if isinstance(exported.get("source"), dict):
      identity["source"] = exported["source"]
    if task != env_spec.task:
      raise UserError(f"{description}: env.task is {task!r}, but --env={env_spec.name} is "
                      f"{env_spec.task!r}; pass the env the policy was trained on")
  for what, got, wanted in (("observation", policy.observation_size,
                             env_spec.observation_size),
                            ("action", policy.action_size, env_spec.action_size)):
    if got != wanted:
      raise UserError(f"{weights}: the policy's {what}s have {got} values, {env_spec.name}'s "
                      f"have {wanted}; pass the env the policy was trained on")
  return policy, identity


def describe(identity: dict | None) -> dict:
  """What the replayed trajectories are (printed, and in --json as `trajectories`)."""
  if _DATASET.value:
    return {"actions": "dataset", "dataset": _DATASET.value}
  episodes = 1 if _ACTIONS.value == "script" else _EPISODES.value    # the script's is one
  described = {"actions": _ACTIONS.value, "episodes": episodes, "seed": _SEED.value}
  return {**described, **(identity or {})}


def trajectories_line(trajectories: dict) -> str:
  """`describe`'s dict in words, e.g. "4 episodes, actions of the policy /p/policy.npz (sha256
  3f2a9c0b1d4e; run runs/pm, seed 1, env_step 2000)"."""
  if trajectories["actions"] == "dataset":
    return f"recorded in {trajectories['dataset']}"
  line = f"{trajectories['episodes']} episodes, actions: {trajectories['actions']}"
  if "policy" in trajectories:
    line += f" {trajectories['policy']} (sha256 {trajectories['sha256'][:12]}"
    source = trajectories.get("source")
    if source:
      line += (f"; run {source.get('run')}, seed {source.get('seed')}, "
               f"{source.get('step_unit', 'step')} {source.get('checkpoint_step')}")
    line += ")"
  return line


def generated(env, rng, policy=None):
  """Several C-MuJoCo episodes, end to end, with --actions' actions (`policy`: --policy's)."""
  steps = _STEPS.value or getattr(env, "bridge_episode_steps", 200)
  if _ACTIONS.value == "policy":
    parts = [bridge.generate_trajectory(env, rng, steps, policy=policy)
             for _ in range(_EPISODES.value)]
  elif _ACTIONS.value == "planner":
    parts = [planner.demonstration(env, rng, steps) for _ in range(_EPISODES.value)]
  elif _ACTIONS.value == "script":
    parts = [kitchen_script.demonstration(env, steps)]   # deterministic: one episode
  else:
    parts = [bridge.generate_trajectory(env, rng, steps) for _ in range(_EPISODES.value)]
  lengths = np.cumsum([len(p["qpos"]) for p in parts])
  return {"qpos": np.concatenate([p["qpos"] for p in parts]),
          "qvel": np.concatenate([p["qvel"] for p in parts]),
          "actions": np.concatenate([p["actions"] for p in parts]),
          "episode_ends": lengths - 1}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  runtime.configure()
  runtime.env_spec(_ENV.value)
  env, env_spec = envs.make(_ENV.value, solver_iterations=_SOLVER_ITERATIONS.value or None,
                            solver_ls_iterations=_SOLVER_LS_ITERATIONS.value or None)
  unknown = set(_CONES.value) - set(bridge.CONES)
  if unknown:
    raise app.UsageError(f"--cones: unknown {sorted(unknown)}; known: {list(bridge.CONES)}")
  if _ACTIONS.value == "planner":
    if _DATASET.value:
      raise app.UsageError("--actions=planner generates trajectories; it does not apply to "
                           "--dataset")
    try:
      planner.task_config(env)
    except ValueError as e:
      raise app.UsageError(f"--actions=planner: {e}") from None
  if (_ACTIONS.value == "policy") != bool(_POLICY.value):
    raise app.UsageError("--actions=policy and --policy go together: --policy names the "
                         "exported policy (launch.export's folder or its policy.npz)")
  if _ACTIONS.value == "policy" and _DATASET.value:
    raise app.UsageError("--actions=policy generates trajectories; it does not apply to "
                         "--dataset")
  policy, identity = load_policy(_POLICY.value, env_spec) if _POLICY.value else (None, None)
  if _ACTIONS.value == "script" and env_spec.family != "kitchen":
    raise app.UsageError("--actions=script: the scripted demonstrator is the kitchen's")
  if _DATASET.value and env_spec.family == "adroit":
    raise app.UsageError(
        "--dataset: Adroit files are not replayed yet (their episodes move the door, goal or "
        "target, which the replay does not restore); run on generated trajectories")
  trajectories = describe(identity)
  print(f"Trajectories: {trajectories_line(trajectories)}\n")
  if not _DATASET.value:
    logging.info("Generating the trajectories in C MuJoCo ...")
  trajectory = (bridge.trajectory_from_file(_DATASET.value) if _DATASET.value
                else generated(env, np.random.default_rng(_SEED.value), policy))
  reports = []
  for cone in _CONES.value:
    if cone == "elliptic" and not bridge.supports_elliptic_cones(env):
      print(f"{env_spec.name}: no elliptic-cone check (MJX has no elliptic cones for its condim-1 "
            "contacts); the model's cones only.\n")
      continue
    # The same windows for every cone.
    logging.info("Replaying %d windows of %d steps through MJX (%s cones; the first compiles, "
                 "minutes for AntMaze and Adroit on a CPU) and C MuJoCo ...", _STARTS.value,
                 _HORIZON.value, cone)
    report = bridge.check(env, env_spec.name, trajectory, _HORIZON.value, _STARTS.value,
                          np.random.default_rng(_SEED.value), cone=cone)
    print(report.format() + "\n")
    reports.append(report)
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump([{"env": r.env_name, "trajectories": trajectories, "cone": r.cone,
                  "horizon": r.horizon,
                  "starts": r.num_starts, "tolerances": r.tolerances,
                  "quantile": r.quantile,
                  "mjx_vs_mujoco": r.mjx_vs_mujoco, "mjx_vs_recorded": r.mjx_vs_recorded,
                  "mujoco_vs_recorded": r.mujoco_vs_recorded, "failures": r.failures()}
                 for r in reports], f, indent=1)
  sys.exit(1 if any(r.failures() for r in reports) else 0)


if __name__ == "__main__":
  runtime.run(main)
