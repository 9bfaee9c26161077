r"""Where one fused fine-tuning step's time goes, at many seeds (issue 17; not a test).

For one task, seed count and program variant, this builds the program `launch.finetune` runs
(`finetune.build_programs` on the paper config of `--env`, every default unless the variant
changes it), then measures, after compiling:

- `train`: env steps/s of a chunk in which every seed trains on every step (the steady state);
- `warmup`: the same compiled chunk while no seed trains yet (WSRL's warmup steps);
- `profile`: one traced training chunk (`jax.profiler`): the GPU time of every kernel, put into
  the part of the step it belongs to by the `jax.named_scope` it was traced under (online.step:
  act, env_step, reset, buffer_insert, sample_batch, update, accept_update; sac.update:
  td_target, critic_gradient, critic_adam, target_update, momentum_steps,
  actor_temperature_step), mapped through the compiled HLO's op metadata. Per part: ms per env
  step (all seeds together) and share of the kernel time; `gaps` is wall time with no kernel
  running (launch latency, host round trips of while loops);
- with `--parts`, separately timed programs of the parts (vmapped over the seeds, `--chunk`
  calls in a `lax.scan`): the policy's action, the env step alone, the env step with the
  auto-reset selected per seed, the replay insert, the batch draw, the whole UTD update, one
  critic step, the actor/temperature step. They need no profiler, so they also run on a CPU.

Variants (`--variant`, several measured in turn in one process): `before` (skip_idle_work=false: the update and the reset run on every
step, selected per seed: the program before issue 17), `after` (the defaults), `unrolled`
(+ unroll_critic_steps), `bf16` (+ bfloat16 matmuls, unrolled). Several processes may share a
GPU (benchmarks/timing.py: compiles in parallel, timed calls one at a time).

  python -m benchmarks.profile_step --env=hopper-medium-v2 --seeds=64 --variant=after \
      --out=/tmp/profile.json                                                   # GPU
  python -m benchmarks.profile_step --seeds=2 --chunk=5 --repeats=1 --replay_capacity=2000 \
      --parts --noprofile                                                      # CPU smoke
"""

from __future__ import annotations

import collections
import json
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

import envs
from benchmarks import timing, trace_parts
from envs import episodes
from launch import runtime
from launch.configs import finetune as finetune_config
from wsrl_mjx import finetune, per_seed, replay

VARIANTS = {
    "before": {"skip_idle_work": False},
    "after": {},
    "unrolled": {"unroll_critic_steps": True},
    "bf16": {"unroll_critic_steps": True, "matmul_precision": "bfloat16"},
}
_ENV = flags.DEFINE_string("env", "hopper-medium-v2", "Task (its family's paper config).")
_SEEDS = flags.DEFINE_list("seeds", ["64"], "Seed counts, one program each.")
_VARIANTS = flags.DEFINE_list("variant", ["after"], f"Program variants, measured in turn in this "
                               f"process: {', '.join(VARIANTS)}.")
_CHUNK = flags.DEFINE_integer("chunk", 50, "Env steps per timed device call.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls per figure (after one untimed).")
_CAPACITY = flags.DEFINE_integer("replay_capacity", 0,
                                 "Replay rows per seed; 0: the config's (as launch.finetune).")
_PROFILE = flags.DEFINE_bool("profile", True, "Trace one training chunk (GPU kernels).")
_PARTS = flags.DEFINE_bool("parts", False, "Also time the parts as separate programs.")
_OUT = flags.DEFINE_string("out", "", "Write the results as JSON here.")


def _config(env_name: str, num_seeds: int, variant: str):
  config = finetune_config.get_config(env_name)
  config.num_seeds = num_seeds
  config.update(VARIANTS[variant])
  if _CAPACITY.value:
    config.replay_capacity = _CAPACITY.value
  return config


def _states(config, programs):
  """(a state in which every seed trains on every step, one in which none does yet)."""
  settings, _ = per_seed.seed_settings(config)
  args = (finetune.seed_keys(config), jax.tree.map(jnp.asarray, settings), None)
  state = programs.init(*args)
  floor = max(config.warmup_steps, programs.loop.update_floor())
  training = state.replace(env_step=jnp.full_like(state.env_step, floor + 1))
  warming = programs.init(*args).replace(
      warmup_steps=jnp.full_like(state.warmup_steps, 10**9))
  return jax.block_until_ready(training), jax.block_until_ready(warming)


def _timed_chunk(run, state, repeats):
  holder = {"state": state}

  def call():
    holder["state"], stats = run(holder["state"])
    jax.block_until_ready(stats)
  return timing.median_seconds(call, repeats), holder


# --- the trace ---------------------------------------------------------------------------------

def profile(run, state, steps: int, hlo_text: str) -> dict:
  """Kernel time per part of one traced call of `run` (`steps` env steps)."""
  trace_dir = tempfile.mkdtemp(prefix="wsrl_profile_")
  with timing.exclusive_device():
    state, stats = run(state)                 # untimed: the trace starts on a warm program
    jax.block_until_ready(stats)
    started = time.perf_counter()
    with jax.profiler.trace(trace_dir):
      state, stats = run(state)
      jax.block_until_ready(stats)
    wall = time.perf_counter() - started
  events = trace_parts.kernel_times(trace_dir)
  if not events:
    return {"wall_ms_per_step": 1e3 * wall / steps, "kernels": 0,
            "note": "no device events in the trace (a CPU backend records none)"}
  by_part = collections.defaultdict(float)
  by_kernel = collections.defaultdict(lambda: [0.0, 0, "", ""])
  spans = []
  hlo_names = trace_parts.hlo_op_names(hlo_text)
  for part, op_name, name, start, duration in trace_parts.attribute(events, hlo_names):
    by_part[part] += duration
    entry = by_kernel[name]
    entry[0] += duration
    entry[1] += 1
    entry[2], entry[3] = part, op_name[-160:]
    spans.append((start, start + duration))
  busy = trace_parts.union_ns(spans)
  first, last = min(s for s, _ in spans), max(e for _, e in spans)
  total = sum(by_part.values())
  return {
      "steps": steps, "kernels": len(events),
      "kernels_per_step": len(events) / steps,
      "kernel_ms_per_step": 1e-6 * total / steps,
      "busy_ms_per_step": 1e-6 * busy / steps,
      "span_ms_per_step": 1e-6 * (last - first) / steps,
      "gaps_ms_per_step": 1e-6 * ((last - first) - busy) / steps,
      "parts": {part: {"ms_per_step": 1e-6 * ns / steps, "share": ns / total}
                for part, ns in sorted(by_part.items(), key=lambda kv: -kv[1])},
      "top_kernels": [
          {"kernel": k[:120], "ms_per_step": 1e-6 * v[0] / steps, "calls_per_step": v[1] / steps,
           "part": v[2], "op": v[3]}
          for k, v in sorted(by_kernel.items(), key=lambda kv: -kv[1][0])[:40]],
  }


# --- the parts as separate programs -----------------------------------------------------------

def compile_parts(config, programs, state, chunk: int):
  """Compiles each part as its own program (`chunk` calls in a `lax.scan`, vmapped over the
  seeds) -> `time_them(repeats)`, which returns ms per call (all seeds together) of each.
  Everything compiles before anything is timed (benchmarks/timing.py)."""
  loop = programs.loop
  env, learner, agent = loop.env, loop.learner, loop.agent
  buffer = timing.full_buffer(state.buffer, jax.random.PRNGKey(1))
  batch = jax.vmap(lambda b, k: replay.sample(b, k, learner.batch_size))(
      buffer, jax.random.split(jax.random.PRNGKey(3), config.num_seeds))
  episode = episodes.Episode(state=state.env_state, length=state.episode.length)
  length = loop.loop.episode_length

  def scanned(one):
    """one(carry, key) -> carry, per seed; `chunk` of them, vmapped over the seeds."""
    def per_seed_chunk(carry, key):
      return jax.lax.scan(lambda c, k: (one(c, k), None), carry,
                          jax.random.split(key, chunk))[0]
    return jax.jit(jax.vmap(per_seed_chunk))

  plans = {
      "act": (lambda c, k: (c[0], c[1], c[2] + learner.sample_action(c[0], c[1], k)),
              lambda: (state.agent, state.env_state.obs,
                       jnp.zeros((config.num_seeds, env.action_size)))),
      "env_step": (lambda c, k: env.step(c, jax.random.uniform(
          k, (env.action_size,), minval=-1, maxval=1)), lambda: state.env_state),
      "env_step_and_reset": (lambda c, k: episodes.step(
          env, c, jax.random.uniform(jax.random.fold_in(k, 1), (env.action_size,), minval=-1,
                                     maxval=1), length, k)[0], lambda: episode),
      "reset": (lambda c, k: env.reset(k), lambda: state.env_state),
      "buffer_insert": (lambda c, k: replay.insert(c[0], c[1], keep=jnp.bool_(True)),
                        lambda: (state.buffer, jax.tree.map(lambda x: x[:, 0], batch))),
      "sample_batch": (lambda c, k: (c[0], replay.sample(c[0], k, learner.batch_size)),
                       lambda: (buffer, batch)),
      "update": (lambda c, k: (learner.update(c[0], c[1], k)[0], c[1]),
                 lambda: (state.agent, batch)),
  }
  if agent is not None and hasattr(agent, "critic_step"):
    minibatch = jax.tree.map(lambda x: x[:, :config.batch_size // config.utd], batch)
    plans["critic_step"] = (lambda c, k: (agent.critic_step(c[0], c[1], k)[0], c[1]),
                            lambda: (state.agent, minibatch))
    plans["actor_temperature_step"] = (
        lambda c, k: (agent.actor_temperature_step(c[0], c[1], k)[0], c[1]),
        lambda: (state.agent, batch))
  keys = jax.random.split(jax.random.PRNGKey(4), config.num_seeds)
  compiled_parts = []
  for name, (one, carry_of) in plans.items():
    # Each program returns its own carry: the `buffer_insert` carry must keep its row tuple.
    if name == "buffer_insert":
      program = scanned(lambda c, k, one=one: (one(c, k), c[1]))
    else:
      program = scanned(one)
    carry = jax.block_until_ready(carry_of())
    compiled, compile_s = timing.compile_seconds(program.lower(carry, keys))
    compiled_parts.append((name, compiled, carry, compile_s))

  def time_them(repeats: int) -> dict:
    results = {}
    for name, compiled, carry, compile_s in compiled_parts:
      holder = {"carry": carry}

      def call(compiled=compiled, holder=holder):
        holder["carry"] = jax.block_until_ready(compiled(holder["carry"], keys))
      seconds = timing.median_seconds(call, repeats)
      results[name] = {"ms_per_call": 1e3 * seconds / chunk, "compile_s": compile_s}
      print(f"  part {name:24s} {results[name]['ms_per_call']:.3f} ms per call "
            f"(compiled in {compile_s:.1f} s)", flush=True)
    return results
  return time_them


def measure(env_name: str, num_seeds: int, variant: str) -> dict:
  config = _config(env_name, num_seeds, variant)
  env, env_spec = envs.make(config.env_name)
  programs = finetune.build_programs(config, env, env_spec)
  training, warming = _states(config, programs)
  label = f"{env_name}, {num_seeds} seeds, {variant}"
  print(f"{label}: compiling a {_CHUNK.value}-step chunk ...", flush=True)
  lowered = programs.run.jitted.lower(training, _CHUNK.value)
  run, compile_s = timing.compile_seconds(lowered)
  print(f"{label}: compiled in {compile_s:.1f} s", flush=True)
  result = {"env": env_name, "seeds": num_seeds, "variant": variant,
            "overrides": VARIANTS[variant], "chunk": _CHUNK.value, "compile_s": compile_s,
            "replay_capacity": int(training.buffer.capacity[0]) if np.ndim(
                training.buffer.capacity) else int(training.buffer.capacity)}
  time_parts = None
  if _PARTS.value:   # compiled now, before the first timed call
    fresh, _ = _states(config, programs)
    time_parts = compile_parts(config, programs, fresh, _CHUNK.value)
  seconds, holder = _timed_chunk(run, training, _REPEATS.value)
  result["train_env_steps_per_s"] = num_seeds * _CHUNK.value / seconds
  result["train_ms_per_step"] = 1e3 * seconds / _CHUNK.value
  seconds, _ = _timed_chunk(run, warming, _REPEATS.value)
  result["warmup_env_steps_per_s"] = num_seeds * _CHUNK.value / seconds
  print(f"{label}: train {result['train_env_steps_per_s']:,.0f} env steps/s "
        f"({result['train_ms_per_step']:.2f} ms per step), warmup "
        f"{result['warmup_env_steps_per_s']:,.0f}", flush=True)
  if _PROFILE.value:
    result["profile"] = profile(run, holder["state"], _CHUNK.value, run.as_text() or "")
    _print_profile(result["profile"])
  if time_parts is not None:
    result["parts"] = time_parts(_REPEATS.value)
  return result


def _print_profile(p: dict) -> None:
  if not p.get("kernels"):
    print(f"  profile: {p.get('note')}")
    return
  print(f"  profile: {p['kernels_per_step']:.0f} kernels per step; kernel time "
        f"{p['kernel_ms_per_step']:.2f} ms, busy {p['busy_ms_per_step']:.2f} ms, gaps "
        f"{p['gaps_ms_per_step']:.2f} ms per step")
  for part, v in p["parts"].items():
    print(f"    {part:24s} {v['ms_per_step']:8.3f} ms  {100 * v['share']:5.1f}%")


def main(argv):
  del argv
  unknown = set(_VARIANTS.value) - set(VARIANTS)
  if unknown:   # one line, before JAX starts
    sys.exit(f"profile_step: --variant: unknown {', '.join(sorted(unknown))}; known: "
             f"{', '.join(VARIANTS)}")
  runtime.configure()
  device = jax.devices()[0]
  print(f"device: {device.device_kind} ({device.platform}), jax {jax.__version__}", flush=True)
  results = {"device": device.device_kind, "platform": device.platform,
             "jax": jax.__version__, "date": time.strftime("%Y-%m-%d"), "rows": []}
  for seeds in map(int, _SEEDS.value):
    for variant in _VARIANTS.value:
      results["rows"].append(measure(_ENV.value, seeds, variant))
    if _OUT.value:
      with open(_OUT.value, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
  app.run(main)
