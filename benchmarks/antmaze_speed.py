r"""Where AntMaze's MJX step time goes, and what each speed-up costs in faithfulness (not a test).

For each maze and model variant: env steps/s of `jit(vmap(step))` in a `lax.scan` (random
actions, no resets) at each batch size, compile seconds, the number of contacts MJX carries, and
the variant's one-step error against C MuJoCo on D4RL's model (the bridge check's MJX-vs-MuJoCo
figure, worst field relative to its tolerance: <= 1 passes). Brax's bare `ant` (MJX) is measured
in the same run as the yardstick.

Variants, cumulative (all with MJX's walls grown by the contact margin, envs/antmaze.py):
  naive      D4RL's model as is: every wall, every ant geom against every wall, the model's
             solver budget (100 Newton iterations, 50 line-search steps)
  touchable  only walls that share a side with a free cell (exact)
  culled     + MJX collides only the 16 nearest wall pairs per geom type (bounding spheres)
  solver4    + Newton solver capped at 4 iterations, 8 line-search steps
  contacts24 + 8 nearest wall pairs, only the 24 deepest contacts to the solver
  ls2        + 2 line-search steps instead of 8 (our default, envs/antmaze.py LS_ITERATIONS)
  euler      + semi-implicit Euler instead of RK4 (changes the integrator: reference only)

  python -m benchmarks.antmaze_speed --mazes=umaze,medium,large --batches=1,64,1024    # GPU
  python -m benchmarks.antmaze_speed --mazes=umaze --batches=1,8 --steps=20 \
      --variants=touchable,culled                                                     # CPU
  python -m benchmarks.antmaze_speed --plan=large:naive:64,large:culled:64 --check_starts=0

`--newton_loop=fixed` (an experiment, not a variant we ship) runs MJX's Newton solve as a
fixed-length scan of the model's iteration budget instead of its `while_loop`: under `vmap` the
while loop already runs until the slowest env stops, but on a GPU each of its iterations reads its
condition back to the host, and a D4RL ant step has 20 solves. Comparing the two says what those
round trips cost.

`--plan` lists maze:variant:batch measurements to take in that order (instead of every
combination of --mazes, --variants and --batches), so a time-limited run gets the important
ones first; results are written after each.
"""

from __future__ import annotations

import contextlib
import json

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from absl import app, flags

from benchmarks import timing
from envs import antmaze, bridge
from launch import runtime

VARIANTS = ("naive", "touchable", "culled", "solver4", "contacts24", "ls2", "euler")

_MAZES = flags.DEFINE_list("mazes", ["umaze", "medium", "large"], "Mazes to measure.")
_BATCHES = flags.DEFINE_list("batches", ["1", "64", "1024"], "Batch sizes (parallel envs).")
_VARIANTS = flags.DEFINE_list("variants", list(VARIANTS), f"Subset of {VARIANTS}.")
_STEPS = flags.DEFINE_integer("steps", 100, "Env steps per timed call.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls (median) after compiling.")
_BARE_ANT = flags.DEFINE_bool("bare_ant", True, "Also measure Brax's bare ant.")
_CHECK_STARTS = flags.DEFINE_integer("check_starts", 32, "Bridge windows per variant (0: skip).")
_PLAN = flags.DEFINE_list("plan", [], "maze:variant:batch items, measured in this order.")
_OUT = flags.DEFINE_string("out", "", "Write the results as JSON here.")
_LS_ITERATIONS = flags.DEFINE_integer("ls_iterations", 0,
                                      "Line-search steps instead of the variant's (0: keep).")
_NEWTON_LOOP = flags.DEFINE_enum("newton_loop", "while", ["while", "fixed"],
                                 "MJX's Newton loop: its while_loop, or a fixed-length scan.")


def make_env(maze: str, variant: str) -> antmaze.AntMaze:
  level = VARIANTS.index(variant)
  env = antmaze.AntMaze(
      maze, touchable_walls_only=level >= 1,
      max_wall_pairs=None if level < 2 else (16 if level < 4 else 8),
      max_contacts=24 if level >= 4 else None,
      solver_iterations=4 if level >= 3 else 100,
      solver_ls_iterations=_LS_ITERATIONS.value or (
          antmaze.LS_ITERATIONS if level >= 5 else 8 if level >= 3 else 50))
  if level >= 6:
    env.mj_model.opt.integrator = mujoco.mjtIntegrator.mjINT_EULER
    env.mjx_model = env.mjx_model.replace(
        opt=env.mjx_model.opt.replace(integrator=mujoco.mjtIntegrator.mjINT_EULER))
  return env


@contextlib.contextmanager
def fixed_length_newton_loop(iterations: int):
  """While tracing inside this block, MJX's solver runs its Newton loop as MJX's own
  scan-with-early-stop helper (the one its line search uses) of `iterations` steps: the same
  arithmetic, no data-dependent loop. Patches MJX's private module; for this benchmark only."""
  from mujoco.mjx._src import solver  # pylint: disable=import-outside-toplevel

  class _Lax:
    def __getattr__(self, name):
      return getattr(jax.lax, name)

    @staticmethod
    def while_loop(cond, body, init):
      return solver._while_loop_scan(cond, body, init, iterations)  # pylint: disable=protected-access

  class _Jax:
    lax = _Lax()

    def __getattr__(self, name):
      return getattr(jax, name)

  original = solver.jax
  solver.jax = _Jax()
  try:
    yield
  finally:
    solver.jax = original


def steps_per_second(env, batch: int) -> tuple[float, float]:
  loop = (fixed_length_newton_loop(env.mj_model.opt.iterations)
          if _NEWTON_LOOP.value == "fixed" else contextlib.nullcontext())
  with loop:
    return timing.steps_per_second(env, batch, _STEPS.value, _REPEATS.value)


def bare_ant_steps_per_second(batch: int) -> float:
  from brax import envs as brax_envs  # pylint: disable=import-outside-toplevel
  return timing.steps_per_second(brax_envs.get_environment("ant", backend="mjx"), batch,
                                 _STEPS.value, _REPEATS.value)[0]


def faithfulness(env, maze: str) -> dict[str, float]:
  """Per cone mode: the worst one-step MJX-vs-MuJoCo error over the fields, relative to its
  tolerance (the bridge check's; <= 1 passes)."""
  rng = np.random.default_rng(0)
  parts = [bridge.generate_trajectory(env, rng, 30) for _ in range(4)]
  trajectory = {k: np.concatenate([p[k] for p in parts]) for k in ("qpos", "qvel", "actions")}
  trajectory["episode_ends"] = np.cumsum([len(p["qpos"]) for p in parts]) - 1
  worst = {}
  for cone in bridge.CONES:
    report = bridge.check(env, maze, trajectory, horizon=1, num_starts=_CHECK_STARTS.value,
                          rng=np.random.default_rng(1), cone=cone)
    worst[cone] = max(errors["one_step"] / report.tolerances[bridge.field_kind(field)][0]
                      for field, errors in report.mjx_vs_mujoco.items())
  return worst


contacts_carried = timing.contacts_carried


def main(argv):
  del argv
  runtime.configure()
  device = jax.devices()[0]
  print(f"device: {device.device_kind} ({device.platform}), jax {jax.__version__}", flush=True)
  if _PLAN.value:
    plan = [(m, v, int(b)) for m, v, b in (item.split(":") for item in _PLAN.value)]
  else:
    plan = [(m, v, int(b)) for m in _MAZES.value for v in _VARIANTS.value for b in _BATCHES.value]
  unknown = {v for _, v, _ in plan} - set(VARIANTS)
  if unknown:
    raise app.UsageError(f"Unknown variants {sorted(unknown)}; known: {VARIANTS}")
  results = {"device": device.device_kind, "steps": _STEPS.value, "bare_ant": {}, "rows": [],
             "newton_loop": _NEWTON_LOOP.value, "ls_iterations": _LS_ITERATIONS.value or None}

  def save():
    if _OUT.value:
      with open(_OUT.value, "w") as f:
        json.dump(results, f, indent=1)

  envs_built, checked = {}, {}
  for maze, variant, batch in plan:
    if _BARE_ANT.value and batch not in results["bare_ant"]:
      results["bare_ant"][batch] = bare_ant_steps_per_second(batch)
      print(f"brax bare ant, batch {batch}: {results['bare_ant'][batch]:,.0f} env steps/s",
            flush=True)
    if (maze, variant) not in envs_built:
      envs_built[maze, variant] = make_env(maze, variant)
    env = envs_built[maze, variant]
    row = {"maze": maze, "variant": variant, "batch": batch, "contacts": contacts_carried(env),
           "walls": len(env.maze.walls(variant != "naive"))}
    if _CHECK_STARTS.value and (maze, variant) not in checked:
      checked[maze, variant] = faithfulness(env, maze)
    if (maze, variant) in checked:
      row["error_over_tolerance"] = checked[maze, variant]
    row["env_steps_per_s"], row["compile_s"] = steps_per_second(env, batch)
    if batch in results["bare_ant"]:
      row["bare_ant_over_this"] = results["bare_ant"][batch] / row["env_steps_per_s"]
    results["rows"].append(row)
    print(json.dumps(row), flush=True)
    save()


if __name__ == "__main__":
  app.run(main)
