r"""Where one MJX physics step's time goes, stage by stage, for an AntMaze maze beside Brax's bare
ant, or for any registered env (`--env`) (not a test).

Each stage of MJX's forward pass is timed on its own at one batch size: a `lax.scan` of
`--repeats_in_scan` calls of `vmap(stage)` in one jitted program, from a mid-episode state (every
stage then does the work it does in an episode; contact and constraint shapes are fixed at compile
time, so their cost does not depend on the state). A D4RL ant step is 5 physics steps of RK4, four
forward passes each, so a forward pass costs about 1/20 of an env step; the bare ant's step is 5
Euler physics steps, one forward pass each.

  python -m benchmarks.physics_breakdown --maze=large --batch=64 --out=breakdown.json   # GPU
  python -m benchmarks.physics_breakdown --maze=umaze --batch=4 --repeats_in_scan=2     # CPU
  XLA_FLAGS=--xla_cpu_use_fusion_emitters=true python -m benchmarks.physics_breakdown \
      --env=kitchen-complete-v0 --batch=2 --nobare_ant --repeats_in_scan=2
      # the kitchen's batch-2 slowdown on the CPU without wsrl_mjx.compat's fusion flag
"""

from __future__ import annotations

import json

import jax
from absl import app, flags
from mujoco import mjx

import envs
from benchmarks import timing
from envs import antmaze
from launch import runtime

_MAZE = flags.DEFINE_string("maze", "large", "AntMaze maze.")
_ENV = flags.DEFINE_string("env", "", "A registered env name (envs.names()) to break down instead "
                           "of the AntMaze maze.")
_BATCH = flags.DEFINE_integer("batch", 64, "Parallel envs.")
_REPEATS_IN_SCAN = flags.DEFINE_integer("repeats_in_scan", 20, "Stage calls per timed program.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls (median) after compiling.")
_LS_ITERATIONS = flags.DEFINE_integer("ls_iterations", 0, "AntMaze line-search steps (0: env's).")
_BARE_ANT = flags.DEFINE_bool("bare_ant", True, "Also break down Brax's bare ant.")
_OUT = flags.DEFINE_string("out", "", "Write the results as JSON here.")


def _smooth_position(m, d):
  for stage in (mjx.kinematics, mjx.com_pos, mjx.crb, mjx.factor_m, mjx.transmission):
    d = stage(m, d)
  return d


def _velocity_to_acceleration(m, d):
  for stage in (mjx.fwd_velocity, mjx.fwd_actuation, mjx.fwd_acceleration):
    d = stage(m, d)
  return d


STAGES = {
    "kinematics, inertia, factor M": _smooth_position,
    "collision": mjx.collision,
    "make constraints": mjx.make_constraint,
    "velocity, actuation, smooth acceleration": _velocity_to_acceleration,
    "constraint solve (Newton)": mjx.solve,
    "whole forward pass": mjx.forward,
    "one physics step (forward + integrator)": mjx.step,
}


def compile_stages(model, data, repeats_in_scan: int) -> dict:
  """Each stage of `STAGES` as a compiled scan of `repeats_in_scan` batched calls on `data`."""
  compiled = {}
  for name, stage in STAGES.items():
    def program(d, stage=stage):
      return jax.lax.scan(lambda d, _: (jax.vmap(lambda x: stage(model, x))(d), None), d, None,
                          length=repeats_in_scan)[0]
    compiled[name] = timing.compile_seconds(jax.jit(program).lower(data))
  return compiled


def stage_milliseconds(compiled: dict, data, repeats_in_scan: int, repeats: int) -> dict:
  """Milliseconds per call of each compiled stage (all compiled before any is timed, so that
  with benchmarks/timing.py's lock no compile overlaps another process's timing)."""
  results = {}
  for name, (program, compile_s) in compiled.items():
    seconds = timing.median_seconds(lambda: jax.block_until_ready(program(data)), repeats)
    results[name] = {"ms": 1e3 * seconds / repeats_in_scan, "compile_s": compile_s}
    print(f"  {name}: {results[name]['ms']:.3f} ms", flush=True)
  return results


def _mid_episode(reset, step, action_size: int, batch: int):
  """The batch's physics data after 20 random steps from reset."""
  def run(key):
    reset_key, action_key = jax.random.split(key)
    state = jax.vmap(reset)(jax.random.split(reset_key, batch))
    def body(state, k):
      actions = jax.random.uniform(k, (batch, action_size), minval=-1, maxval=1)
      return jax.vmap(step)(state, actions), None
    return jax.lax.scan(body, state, jax.random.split(action_key, 20))[0]
  return jax.jit(run)(jax.random.PRNGKey(0))


def main(argv):
  del argv
  runtime.configure()
  device = jax.devices()[0]
  print(f"device: {device.device_kind} ({device.platform}), jax {jax.__version__}", flush=True)
  results = {"device": device.device_kind, "batch": _BATCH.value}
  if _ENV.value:
    env, _ = envs.make(_ENV.value, solver_ls_iterations=_LS_ITERATIONS.value or None)
    label = _ENV.value
  else:
    env = antmaze.AntMaze(_MAZE.value, solver_ls_iterations=_LS_ITERATIONS.value or None)
    label, results["maze"] = "antmaze", _MAZE.value
  results["ls_iterations"] = int(env.mj_model.opt.ls_iterations)
  measured = {label: (env.mjx_model, _mid_episode(env.reset, env.step, env.action_size,
                                                  _BATCH.value).pipeline_state)}
  if _BARE_ANT.value:
    from brax import envs as brax_envs  # pylint: disable=import-outside-toplevel
    ant = brax_envs.get_environment("ant", backend="mjx")
    measured["bare_ant"] = (ant.sys, _mid_episode(ant.reset, ant.step, ant.action_size,
                                                  _BATCH.value).pipeline_state)
  compiled = {name: compile_stages(model, data, _REPEATS_IN_SCAN.value)
              for name, (model, data) in measured.items()}
  for name, (_, data) in measured.items():
    print(f"{name}, batch {_BATCH.value}:", flush=True)
    results[name] = stage_milliseconds(compiled[name], data, _REPEATS_IN_SCAN.value,
                                       _REPEATS.value)
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  app.run(main)
