r"""MJX's two physics backends side by side: JAX (what the envs run) and MuJoCo Warp (not a test).

Issue 17, lever 4: mujoco-mjx 3.17 runs the same `mjx.step` on MuJoCo Warp with
`put_model(..., impl='warp')` (extra dependency `warp-lang==1.18.0`). For each env and batch
size this times a `jit(vmap(...))` of a `lax.scan` over env steps (each the env's own
`physics_step`: the controls, then its `frame_skip` physics steps with float32 "highest" matmuls)
on both backends, in one process, from the same states with
the same controls, and reports env steps/s and compile seconds. At `--check_batch` it also
reports how far the two backends' joint positions drift apart over `--check_steps` env steps
(contact-rich dynamics amplify float32 rounding, so compare the drift between backends with the
same figure for two JAX runs that differ only in rounding, e.g. the bridge check's bounds).

Only the physics is timed (no observations, rewards or resets): the envs' own step adds a few
small kernels to either backend. The model is the env's (`env.mj_model`: our solver settings,
collision geometry and integrator). Warp holds contacts in one buffer for the whole batch:
`naconmax` = batch x the contacts the JAX backend carries per env (`--contacts_per_env` to set
it), and `njmax` = the JAX backend's constraint rows per env.

  python -m benchmarks.physics_backend --envs=antmaze-large-diverse-v2,door-binary-v0 \
      --batches=64,256,1024 --out=physics_backend.json                              # GPU
  python -m benchmarks.physics_backend --envs=antmaze-umaze-v2 --batches=2 --steps=5 \
      --repeats=1 --check_batch=2 --check_steps=10                                  # CPU smoke

Absolute figures only from a GPU. Warp is not bit-deterministic on a GPU (its atomics), so two
Warp runs of the same call may differ in the last bits. Without `warp-lang` installed, the Warp
rows are skipped with one line that says so (the JAX rows are still measured).
"""

from __future__ import annotations

import json
import time

import jax
import numpy as np
from absl import app, flags

import envs
from benchmarks import timing
from envs.mjx_env import mjx
from launch import runtime

_ENVS = flags.DEFINE_list("envs", ["antmaze-large-diverse-v2", "door-binary-v0"],
                          "Registered env names.")
_BATCHES = flags.DEFINE_list("batches", ["64", "256", "1024"], "Batch sizes (parallel envs).")
_BACKENDS = flags.DEFINE_list("backends", ["jax", "warp"], "Physics backends to time.")
_STEPS = flags.DEFINE_integer("steps", 20, "Env steps per timed call.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls (median) after compiling.")
_CHECK_BATCH = flags.DEFINE_integer("check_batch", 8, "Batch of the backends' agreement check "
                                    "(0: no check).")
_CHECK_STEPS = flags.DEFINE_integer("check_steps", 50, "Env steps of the agreement check.")
_CONTACTS = flags.DEFINE_integer("contacts_per_env", 0, "Warp's contact buffer per env (0: as "
                                 "many as the JAX backend carries).")
_WARP_WARNINGS = flags.DEFINE_bool(
    "warp_warnings", False, "Keep Warp's overflow messages (printed from inside the program, "
    "every step: 'solver iterations limit reached' at the envs' solver budgets, by design).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the start states and controls.")
_OUT = flags.DEFINE_string("out", "", "Write the results as JSON here.")


def backend_model_and_data(env, backend: str, batch: int, contacts: int, rows: int):
  """(mjx.Model, one env's mjx.Data) for `backend` ('jax' or 'warp'); Warp's buffers hold
  `contacts` per env for the batch and `rows` constraint rows per env."""
  if backend == "jax":
    return env.mjx_model, mjx.make_data(env.mjx_model)
  model = mjx.put_model(env.mj_model, impl="warp")
  if not _WARP_WARNINGS.value:   # "solver iterations limit reached" at our solver budgets
    option = model.opt._impl.replace(warn_overflow=0)  # pylint: disable=protected-access
    model = model.replace(opt=model.opt.replace(_impl=option))
  data = mjx.make_data(env.mj_model, impl="warp", naconmax=max(1, batch * contacts),
                       njmax=max(1, rows))
  return model, data


def rollout(env, model, data):
  """jit(vmap(qpos [B, nq], qvel [B, nv], ctrl [T, B, nu] -> qpos [B, T, nq])): each env step is
  the env's own `physics_step` (its frame skip, float32 "highest" matmuls) on `model`."""

  def one(qpos, qvel, controls):
    def env_step(state, ctrl):
      state = env.physics_step(state, ctrl, model)
      return state, state.qpos

    return jax.lax.scan(env_step, data.replace(qpos=qpos, qvel=qvel), controls)[1]

  return jax.jit(jax.vmap(one, in_axes=(0, 0, 1)))


def measure(env, backend: str, batch: int, sizes: tuple[int, int], steps: int, repeats: int,
            seed: int) -> dict:
  """{env_steps_per_s, compile_s (XLA's), first_call_s (includes Warp building its kernels, which
  it caches on disk)} of `steps` env steps at `batch` on `backend`; `sizes`: (contacts,
  constraint rows) per env."""
  model, data = backend_model_and_data(env, backend, batch, *sizes)
  args = timing.physics_inputs(env, batch, steps, seed)
  compiled, compile_seconds = timing.compile_seconds(
      rollout(env, model, data).lower(*args))
  started = time.perf_counter()
  jax.block_until_ready(compiled(*args))     # Warp builds its kernels here (cached on disk)
  first_call_seconds = time.perf_counter() - started
  seconds = timing.median_seconds(lambda: jax.block_until_ready(compiled(*args)), repeats)
  return {"env_steps_per_s": batch * steps / seconds, "compile_s": compile_seconds,
          "first_call_s": first_call_seconds}


def agreement(env, batch: int, sizes: tuple[int, int], steps: int, seed: int) -> list[float]:
  """Max |qpos_warp - qpos_jax| over the batch after each env step, [steps]."""
  args = timing.physics_inputs(env, batch, steps, seed)
  paths = [np.asarray(rollout(env, *backend_model_and_data(env, backend, batch, *sizes))(*args))
           for backend in ("jax", "warp")]
  return np.abs(paths[1] - paths[0]).max(axis=(0, 2)).tolist()


def main(argv):
  del argv
  runtime.configure()
  device = jax.devices()[0].device_kind
  missing = timing.warp_missing(quiet=not _WARP_WARNINGS.value)
  backends = [b for b in _BACKENDS.value if b in ("jax", "warp")]
  if "warp" in backends and missing:
    print(f"Warp rows skipped: {missing}", flush=True)
    backends.remove("warp")
  print(f"physics env steps/s on {device} ({_STEPS.value}-step scans, median of "
        f"{_REPEATS.value})", flush=True)
  results = []
  for name in _ENVS.value:
    env, _ = envs.make(name)
    contacts, rows = timing.sizes_carried(env)
    sizes = (_CONTACTS.value or contacts, rows)
    for batch in map(int, _BATCHES.value):
      for backend in backends:
        started = time.perf_counter()
        row = {"env": name, "backend": backend, "batch": batch, "device": device,
               "contacts_per_env": sizes[0], "constraint_rows": rows,
               **measure(env, backend, batch, sizes, _STEPS.value, _REPEATS.value, _SEED.value)}
        results.append(row)
        print(f"{name:26s} {backend:4s} batch {batch:5d}: {row['env_steps_per_s']:10.1f} env "
              f"steps/s (compile {row['compile_s']:5.1f} s, first call {row['first_call_s']:5.1f} "
              f"s, {time.perf_counter() - started:5.1f} s in all)", flush=True)
    if "warp" in backends and _CHECK_BATCH.value:
      drift = agreement(env, _CHECK_BATCH.value, sizes, _CHECK_STEPS.value, _SEED.value)
      results.append({"env": name, "check_batch": _CHECK_BATCH.value, "device": device,
                      "max_qpos_difference_per_step": drift})
      marks = sorted({0, len(drift) // 4, len(drift) // 2, len(drift) - 1})
      print(f"{name:26s} warp vs jax, max |qpos difference| after env step "
            + ", ".join(f"{k + 1}: {drift[k]:.2e}" for k in marks), flush=True)
    if _OUT.value:
      with open(_OUT.value, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
  app.run(main)
