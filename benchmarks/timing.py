"""Timing helpers shared by the env benchmarks."""

from __future__ import annotations

import time

import jax
import numpy as np


def steps_per_second(env, batch: int, steps: int, repeats: int) -> tuple[float, float]:
  """(env steps/s over the batch, compile seconds) of a `lax.scan` of `steps` vmapped steps of
  any Brax-interface env, random actions, no resets; the median of `repeats` timed calls."""
  def run(state, key):
    def body(state, step_key):
      actions = jax.random.uniform(step_key, (batch, env.action_size), minval=-1, maxval=1)
      return jax.vmap(env.step)(state, actions), None
    return jax.lax.scan(body, state, jax.random.split(key, steps))[0]

  state = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), batch))
  run = jax.jit(run)
  started = time.perf_counter()
  compiled = run.lower(state, jax.random.PRNGKey(1)).compile()
  compile_seconds = time.perf_counter() - started
  jax.block_until_ready(compiled(state, jax.random.PRNGKey(1)))
  times = []
  for i in range(repeats):
    started = time.perf_counter()
    jax.block_until_ready(compiled(state, jax.random.PRNGKey(2 + i)))
    times.append(time.perf_counter() - started)
  return batch * steps / float(np.median(times)), compile_seconds


def contacts_carried(env) -> int:
  """Contacts MJX evaluates every physics step (fixed at compile time)."""
  data = jax.eval_shape(lambda: env.physics_init(*env.initial_qpos_qvel()))
  return int(data._impl.contact.dist.shape[0])  # pylint: disable=protected-access
