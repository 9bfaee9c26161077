r"""Env steps/s of any registered MJX task at several batch sizes (not a test).

For each env and batch: steps/s of `jit(vmap(step))` in a `lax.scan` (random actions in [-1, 1];
no resets unless `--auto_reset`), compile seconds, and the contacts MJX carries per step.
Absolute figures only from a GPU; on a CPU, compare tasks or settings measured in the same run.

  python -m benchmarks.env_speed --envs=pen-binary-v0,door-binary-v0,relocate-binary-v0 \
      --batches=1,64,1024                                                    # GPU
  python -m benchmarks.env_speed --envs=pen-binary-v0 --batches=1,64 --steps=10    # CPU
  python -m benchmarks.env_speed --envs=relocate-binary-v0 --batches=16 --ls_iterations=0,2
"""

from __future__ import annotations

import json

import jax
from absl import app, flags

import envs
from benchmarks import timing
from launch import runtime

_ENVS = flags.DEFINE_list("envs", ["pen-binary-v0", "door-binary-v0", "relocate-binary-v0"],
                          "Registered env names.")
_BATCHES = flags.DEFINE_list("batches", ["1", "64", "1024"], "Batch sizes (parallel envs).")
_STEPS = flags.DEFINE_integer("steps", 100, "Env steps per timed call.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls (median) after compiling.")
_AUTO_RESET = flags.DEFINE_bool("auto_reset", False,
                                "Also draw a reset every step and keep it where an episode "
                                "ended, as the training loop does.")
_LS_ITERATIONS = flags.DEFINE_list(
    "ls_iterations", ["0"], "MJX line-search steps per Newton iteration to compare (0: the env's "
    "own); each env is measured at each, one after the other in this process.")
_OUT = flags.DEFINE_string("out", "", "Write the results as JSON here.")


def main(argv):
  del argv
  runtime.configure()
  device = jax.devices()[0].device_kind
  print(f"env steps/s on {device} ({_STEPS.value}-step scans, median of {_REPEATS.value})",
        flush=True)
  results = []
  for name in _ENVS.value:
    for ls_iterations in map(int, _LS_ITERATIONS.value):
      env, _ = envs.make(name, solver_ls_iterations=ls_iterations or None)
      solver = f"{env.mj_model.opt.iterations} x {env.mj_model.opt.ls_iterations}"
      for batch in map(int, _BATCHES.value):
        rate, compile_seconds = timing.steps_per_second(env, batch, _STEPS.value,
                                                          _REPEATS.value, _AUTO_RESET.value)
        row = {"env": name, "batch": batch, "steps_per_second": rate,
               "compile_seconds": compile_seconds, "contacts": timing.contacts_carried(env),
               "solver": solver, "device": device}
        results.append(row)
        print(f"{name:22s} solver {solver:7s} batch {batch:5d}: {rate:10.1f} env steps/s  "
              f"(compile {compile_seconds:5.1f} s, {row['contacts']} contacts)", flush=True)
      if _OUT.value:
        with open(_OUT.value, "w") as f:
          json.dump(results, f, indent=1)


if __name__ == "__main__":
  app.run(main)
