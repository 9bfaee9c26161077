"""Timing helpers shared by the benchmarks.

Benchmark processes may share one accelerator: set `WSRL_BENCH_LOCK` to a file path and each
process compiles when it likes (CPU work) but runs its timed calls only while it holds that
file's lock, so no timing overlaps another process's device work. Compiles must not overlap
timings either: a GPU program of many small kernels is launched from a host thread, and 13
processes compiling on 16 cores slowed an MJX step 5x on an H200. So with
`WSRL_BENCH_READY_DIR` set, a process that has compiled writes `ready.<pid>` there and takes the
lock only once a `go` file appears (benchmarks/gpu_session.sh writes it when all are ready).
Unset, both are no-ops.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

LOCK_VARIABLE = "WSRL_BENCH_LOCK"
READY_VARIABLE = "WSRL_BENCH_READY_DIR"


def _ready_and_wait_for_go() -> None:
  folder = os.environ.get(READY_VARIABLE)
  if not folder:
    return
  folder = pathlib.Path(folder)
  (folder / f"ready.{os.getpid()}").touch()
  while not (folder / "go").exists():
    time.sleep(0.2)


@contextlib.contextmanager
def exclusive_device():
  """Holds the lock named by $WSRL_BENCH_LOCK (if set) for the duration of the block, after
  every benchmark process has compiled (when $WSRL_BENCH_READY_DIR is set)."""
  _ready_and_wait_for_go()
  path = os.environ.get(LOCK_VARIABLE)
  if not path:
    yield
    return
  with open(path, "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def median_seconds(call, repeats: int) -> float:
  """Median wall seconds of `repeats` calls of `call` after one untimed call, all holding the
  device lock; `call` must block until its results are ready."""
  with exclusive_device():
    call()
    times = []
    for _ in range(repeats):
      started = time.perf_counter()
      call()
      times.append(time.perf_counter() - started)
  return float(np.median(times))


def compile_seconds(lowered) -> tuple[object, float]:
  """(compiled executable, seconds) of a `jax.jit(...).lower(...)` result."""
  started = time.perf_counter()
  compiled = lowered.compile()
  return compiled, time.perf_counter() - started


def steps_per_second(env, batch: int, steps: int, repeats: int,
                     auto_reset: bool = False) -> tuple[float, float]:
  """(env steps/s over the batch, compile seconds) of a `lax.scan` of `steps` vmapped steps of
  any Brax-interface env, random actions; the median of `repeats` timed calls.

  With `auto_reset` every step also draws a fresh reset and keeps it where an episode ended, as
  the training loop does (under `vmap` the reset is computed for every env on every step).
  """
  def one_env_step(state, key):
    action_key, reset_key = jax.random.split(key)
    next_state = env.step(state, jax.random.uniform(action_key, (env.action_size,), minval=-1,
                                                    maxval=1))
    if not auto_reset:
      return next_state
    return jax.tree.map(lambda fresh, kept: jnp.where(next_state.done, fresh, kept),
                        env.reset(reset_key), next_state)

  def run(state, key):
    def body(state, step_key):
      return jax.vmap(one_env_step)(state, jax.random.split(step_key, batch)), None
    return jax.lax.scan(body, state, jax.random.split(key, steps))[0]

  reset_keys = jax.random.split(jax.random.PRNGKey(0), batch)
  state = jax.block_until_ready(jax.jit(jax.vmap(env.reset))(reset_keys))
  compiled, seconds = compile_seconds(jax.jit(run).lower(state, jax.random.PRNGKey(1)))
  keys = iter(jax.random.split(jax.random.PRNGKey(2), repeats + 1))
  median = median_seconds(lambda: jax.block_until_ready(compiled(state, next(keys))), repeats)
  return batch * steps / median, seconds


def full_buffer(buffer, key):
  """`buffer` (a `replay.ReplayBuffer`, one seed's or vmapped) with every row written: random
  numbers, no terminals. What is in it does not change the learner's work, and filling it so
  needs no loop compiled."""
  leaves, treedef = jax.tree.flatten(buffer.data)
  keys = jax.random.split(key, len(leaves))
  data = jax.tree.unflatten(treedef, [jax.random.normal(k, x.shape, x.dtype)
                                      for k, x in zip(keys, leaves)])
  data = data.replace(terminal=jnp.zeros_like(data.terminal))
  return buffer.replace(data=data, size=jnp.full_like(buffer.size, buffer.capacity))


def sizes_carried(env) -> tuple[int, int]:
  """(contacts, constraint rows) MJX's JAX backend evaluates every physics step of `env` (fixed
  at compile time)."""
  data = jax.eval_shape(lambda: env.physics_init(*env.initial_qpos_qvel()))
  impl = data._impl  # pylint: disable=protected-access
  return int(impl.contact.dist.shape[0]), int(impl.efc_J.shape[0])


def contacts_carried(env) -> int:
  """Contacts MJX evaluates every physics step (fixed at compile time)."""
  return sizes_carried(env)[0]


def physics_inputs(env, batch: int, steps: int, seed: int):
  """Start states near the model's reference pose and controls uniform in the actuators'
  ranges: (qpos [B, nq], qvel [B, nv], ctrl [T, B, nu]), float32."""
  model = env.mj_model
  rng = np.random.default_rng(seed)
  qpos = np.tile(model.qpos0, (batch, 1)) + rng.normal(0.0, 0.01, (batch, model.nq))
  qvel = rng.normal(0.0, 0.01, (batch, model.nv))
  low, high = model.actuator_ctrlrange[:, 0], model.actuator_ctrlrange[:, 1]
  limited = model.actuator_ctrllimited.astype(bool)
  low, high = np.where(limited, low, -1.0), np.where(limited, high, 1.0)
  ctrl = low + (high - low) * rng.uniform(size=(steps, batch, model.nu))
  return tuple(jnp.asarray(x, jnp.float32) for x in (qpos, qvel, ctrl))


def warp_missing(quiet: bool = True) -> str:
  """'' where MuJoCo Warp can run here, else why not (one line). `quiet`: Warp prints no line per
  kernel module it loads."""
  try:
    import warp  # pylint: disable=import-outside-toplevel
  except ImportError as error:
    return f"warp-lang is not installed ({error})"
  if quiet:
    warp.config.log_level = warp.LOG_WARNING    # no line per kernel module it loads
  return ""
