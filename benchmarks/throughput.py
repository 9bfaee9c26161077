r"""Throughput of the fused WSRL loop against the ways it is usually structured (not a test).

Measured side by side in one run, after compilation, warmup off (every step trains). `--measure`
picks the parts, so that several processes sharing a GPU can each take some and compile in
parallel while their timed calls take turns (benchmarks/timing.py, benchmarks/gpu_session.sh):

- fused:        `jit(vmap(run))`: env step + buffer insert + one UTD update per step, `--chunk`
                steps per device call (what launch.finetune runs);
- update-only:  the same UTD update in a `lax.scan` on a filled buffer, no environment: the
                learner's ceiling;
- update-only-unrolled: the same, with the UTD critic steps inlined instead of scanned;
- python-loop:  the same step called from a Python loop once per env step (how the reference
                implementation is structured), still vmapped over seeds;
- naive:        a plain vmapped 10-critic SAC update (benchmarks/naive_update.py), one critic
                and one actor step per 256-transition batch, at our critic sizes and at 3x256
                (the sizes of the issue's 9.2K figure): the yardstick the update is judged by;
- brax-sac:     Brax's own SAC trainer on the same MJX env, one seed per run, with the settings it
                shares (2x256 LayerNorm networks, 10 critics, batch 256, 4 gradient steps per
                env step; it backs up the min of all critics and updates the actor every
                gradient step, on 256 transitions).

Units: env steps/s counts all seeds; seed-updates/s counts gradient steps on a 256-transition
minibatch, summed over seeds (a WSRL env step has 4, plus one actor step on 1024).

  python -m benchmarks.throughput --seeds=1,8,64                          # GPU
  python -m benchmarks.throughput --seeds=1,4 --chunk=50 --loop_steps=20 --brax_steps=2000  # CPU
"""

from __future__ import annotations

import contextlib
import json

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

import envs
from benchmarks import naive_update, timing
from launch import runtime
from launch.configs import finetune as finetune_config
from wsrl_mjx import compat, finetune, per_seed, replay

_ENV = flags.DEFINE_string("env", "hopper-medium-v2", "Environment (paper's locomotion config).")
_SEEDS = flags.DEFINE_list("seeds", ["1", "8", "64"], "Seed counts to measure.")
_CHUNK = flags.DEFINE_integer("chunk", 1000, "Env steps per fused device call.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls per measurement (after compiling).")
_LOOP_STEPS = flags.DEFINE_integer("loop_steps", 300, "Env steps timed for the Python loop.")
_BRAX_STEPS = flags.DEFINE_integer("brax_steps", 20_000, "Env steps per Brax SAC epoch.")
_MEASURE = flags.DEFINE_list(
    "measure", ["fused", "update_only", "naive", "python_loop", "brax"],
    "What to measure; separate processes sharing a GPU can each take a part (benchmarks/timing.py "
    "says how they keep their timings apart).")
_PRECISIONS = flags.DEFINE_list("precisions", ["default", "bfloat16"],
                                "Matmul precisions for the fused loop (first one is the baseline).")
_OUT = flags.DEFINE_string("out", "", "Write the results as JSON here.")


def _compiled(label, lowered):
  """AOT-compiles outside the device lock (benchmarks/timing.py), printing how long it took: on
  a GPU the compile of a fused MJX + 10-critic program is what takes minutes."""
  print(f"  {label}: compiling ...", flush=True)
  compiled, seconds = timing.compile_seconds(lowered)
  print(f"  {label}: compiled in {seconds:.1f} s", flush=True)
  return compiled, seconds


def _setup(num_seeds, precision, unroll=False):
  config = finetune_config.get_config(_ENV.value)
  config.num_seeds = num_seeds
  config.warmup_steps = 0
  config.matmul_precision = precision
  config.unroll_critic_steps = unroll
  config.replay_capacity = 100_000
  env, env_spec = envs.make(config.env_name)
  programs = finetune.build_programs(config, env, env_spec)
  settings, _ = per_seed.seed_settings(config)
  args = (finetune.seed_keys(config), jax.tree.map(jnp.asarray, settings), None)
  init, _ = _compiled(f"init, {num_seeds} seeds", programs.init.lower(*args))
  state = init(*args)
  # Every timed step must train: past the update floor (step index > max(warmup, batch)) from
  # the first step, as warmup 0 did before the floor (the buffer's contents do not change the
  # work).
  state = state.replace(env_step=jnp.full_like(state.env_step, config.batch_size + 1))
  state = jax.block_until_ready(state)   # before any timing starts (benchmarks/timing.py)
  return config, programs, state


def measure_fused(num_seeds, precision):
  config, programs, state = _setup(num_seeds, precision)
  label = f"fused[{precision}], {num_seeds} seeds"
  run, compile_s = _compiled(label, programs.run.lower(state, _CHUNK.value))
  holder = {"state": state}

  def call():
    holder["state"], stats = run(holder["state"])
    jax.block_until_ready(stats)

  seconds = timing.median_seconds(call, _REPEATS.value)
  env_steps = num_seeds * _CHUNK.value / seconds
  return {"env_steps_per_s": env_steps, "seed_updates_per_s": env_steps * config.utd,
          "compile_s": compile_s}


def _updates_per_second(label, update, sample, state, data, num_seeds):
  """(calls of `update` per second over all seeds, compile seconds): `--chunk` of them per seed
  in a `lax.scan`, each on a batch `sample(data, key)`, vmapped over seeds."""
  def updates(state, data, key):
    def body(state, step_key):
      sample_key, update_key = jax.random.split(step_key)
      return update(state, sample(data, sample_key), update_key), None
    return jax.lax.scan(body, state, jax.random.split(key, _CHUNK.value))[0]

  keys = jax.random.split(jax.random.PRNGKey(0), num_seeds)
  run, compile_s = _compiled(label, jax.jit(jax.vmap(updates), donate_argnums=0).lower(
      state, data, keys))
  holder = {"state": jax.block_until_ready(state)}

  def call():
    holder["state"] = jax.block_until_ready(run(holder["state"], data, keys))

  seconds = timing.median_seconds(call, _REPEATS.value)
  return num_seeds * _CHUNK.value / seconds, compile_s


def measure_update_only(num_seeds, precision, unroll=False):
  config, programs, state = _setup(num_seeds, precision, unroll)
  agent = programs.loop.agent
  rate, compile_s = _updates_per_second(
      f"update-only{'-unrolled' if unroll else ''}[{precision}], {num_seeds} seeds",
      lambda agent_state, batch, key: agent.update(agent_state, batch, key)[0],
      lambda buffer, key: replay.sample(buffer, key, agent.config.batch_size),
      state.agent, timing.full_buffer(state.buffer, jax.random.PRNGKey(1)), num_seeds)
  return {"seed_updates_per_s": rate * config.utd, "compile_s": compile_s}


def measure_naive(num_seeds, hidden_sizes):
  """Seed-updates/s of the plain update (benchmarks/naive_update.py), default precision."""
  env_spec = envs.spec(_ENV.value)
  init, update = naive_update.make_update(env_spec.observation_size, env_spec.action_size,
                                          hidden_sizes)
  states = jax.jit(jax.vmap(init))(jax.random.split(jax.random.PRNGKey(0), num_seeds))
  tables = jax.jit(jax.vmap(lambda k: naive_update.random_table(
      k, 100_000, env_spec.observation_size, env_spec.action_size)))(
          jax.random.split(jax.random.PRNGKey(1), num_seeds))
  rate, compile_s = _updates_per_second(
      f"naive[{'x'.join(map(str, hidden_sizes))}], {num_seeds} seeds", update,
      lambda table, key: naive_update.sample(table, key, 256), states, tables, num_seeds)
  return {"seed_updates_per_s": rate, "compile_s": compile_s}


def measure_python_loop(num_seeds, precision):
  config, programs, state = _setup(num_seeds, precision)
  step, compile_s = _compiled(f"python-loop, {num_seeds} seeds", programs.run.lower(state, 1))
  holder = {"state": state}

  def call():
    for _ in range(_LOOP_STEPS.value):
      holder["state"], stats = step(holder["state"])
    jax.block_until_ready(stats)

  seconds = timing.median_seconds(call, 1)
  env_steps = num_seeds * _LOOP_STEPS.value / seconds
  return {"env_steps_per_s": env_steps, "seed_updates_per_s": env_steps * config.utd,
          "compile_s": compile_s}


def measure_brax_sac():
  from brax.training import networks as brax_networks
  from brax.training.agents.sac import networks as sac_networks
  from brax.training.agents.sac import train as sac_train
  compat.patch_brax_for_this_jax()
  env, env_spec = envs.make(_ENV.value)
  rates = []
  # Brax compiles inside `train`: its first training epoch includes the compile, so hold the
  # device lock from the second progress report (after that epoch) to the end, and report the
  # epochs after the first.
  lock = contextlib.ExitStack()
  reports = []

  def progress(step, metrics):
    del step
    reports.append(1)
    if len(reports) == 2:
      lock.enter_context(timing.exclusive_device())
    if "training/sps" in metrics:
      rates.append(float(metrics["training/sps"]))

  def network_factory(observation_size, action_size, **kwargs):
    base = sac_networks.make_sac_networks(
        observation_size, action_size, **kwargs, hidden_layer_sizes=(256, 256),
        policy_network_layer_norm=True, state_dependent_std=True)
    # The same 10-critic LayerNorm ensemble as WSRL (Brax backs up the min over all of them).
    q_network = brax_networks.make_q_network(
        observation_size, action_size, hidden_layer_sizes=(256, 256), layer_norm=True,
        n_critics=10)
    return base.__class__(policy_network=base.policy_network, q_network=q_network,
                          parametric_action_distribution=base.parametric_action_distribution)
  steps = _BRAX_STEPS.value
  with lock:
    sac_train.train(environment=env, num_timesteps=3 * steps,
                    episode_length=env_spec.episode_length, num_envs=1, num_eval_envs=1,
                    batch_size=256, grad_updates_per_step=4, num_evals=4, discounting=0.99,
                    learning_rate=3e-4, min_replay_size=256, max_replay_size=100_000,
                    network_factory=network_factory, progress_fn=progress)
  # The first epoch includes compilation; report the fastest later one.
  env_steps = max(rates[1:]) if len(rates) > 1 else float("nan")
  return {"env_steps_per_s": env_steps, "seed_updates_per_s": 4 * env_steps}


def main(argv):
  del argv
  runtime.configure()
  device = jax.devices()[0]
  print(f"device: {device.device_kind} ({device.platform}), jax {jax.__version__}")
  results = {"device": device.device_kind, "platform": device.platform, "env": _ENV.value,
             "chunk": _CHUNK.value, "rows": []}
  baseline = _PRECISIONS.value[0]

  def save():
    if _OUT.value:
      with open(_OUT.value, "w") as f:
        json.dump(results, f, indent=1)

  measure = set(_MEASURE.value)
  known = {"fused", "update_only", "update_only_unrolled", "naive", "python_loop", "brax"}
  if measure - known:
    raise app.UsageError(f"--measure: unknown {sorted(measure - known)}; known: {sorted(known)}")
  if _LOOP_STEPS.value < 1:
    raise app.UsageError(f"--loop_steps must be positive, got {_LOOP_STEPS.value}")
  for seeds in map(int, _SEEDS.value) if measure - {"brax"} else ():
    row = {"seeds": seeds, "ratios": {}}
    results["rows"].append(row)
    # Baseline precision first, and within it what the targets compare (fused, the
    # update against the naive one), so that a process stopped at its time limit has already
    # written those; every measurement is printed and saved as soon as it exists.
    for name, measure_one in _plan(measure, seeds, baseline):
      row[name] = measure_one()
      print(f"  {seeds} seed(s) {name:28s} " + ", ".join(
          f"{k} {v:,.1f}" for k, v in row[name].items()), flush=True)
      row["ratios"] = _ratios(row, baseline)
      save()
    _print_row(row)
  # Last, so that a slow or failing Brax run costs nothing above; one seed per program, so S
  # seeds take S runs: its rate is compared with each row's fused rate as it is.
  if "brax" in measure:
    brax = measure_brax_sac()
    results["brax_sac"] = brax
    print(f"\n== Brax SAC (1 seed) ==\n  env_steps_per_s {brax['env_steps_per_s']:,.1f}")
    for row in results["rows"]:
      if f"fused[{baseline}]" in row:
        ratio = row[f"fused[{baseline}]"]["env_steps_per_s"] / brax["env_steps_per_s"]
        row["ratios"]["fused / brax_sac"] = ratio
        print(f"  {row['seeds']} seed(s): fused / brax_sac {ratio:.2f}")
    save()


def _plan(measure, seeds, baseline):
  """(name, thunk) of each measurement for one seed count, most wanted first."""
  plan = []
  for precision in _PRECISIONS.value:
    if "fused" in measure:
      plan.append((f"fused[{precision}]", lambda p=precision: measure_fused(seeds, p)))
    if "update_only" in measure:
      plan.append((f"update_only[{precision}]",
                   lambda p=precision: measure_update_only(seeds, p)))
    if precision == baseline and "naive" in measure:
      critic_sizes = tuple(finetune_config.get_config(_ENV.value).critic_hidden_sizes)
      for sizes in dict.fromkeys([critic_sizes, (256, 256, 256)]):
        plan.append((f"naive[{'x'.join(map(str, sizes))}]",
                     lambda s=sizes: measure_naive(seeds, s)))
    if "update_only_unrolled" in measure:
      plan.append((f"update_only_unrolled[{precision}]",
                   lambda p=precision: measure_update_only(seeds, p, True)))
    if precision == baseline and "python_loop" in measure:
      plan.append(("python_loop", lambda: measure_python_loop(seeds, baseline)))
  return plan


def _ratios(row, baseline):
  ratios = {}
  if f"fused[{baseline}]" in row:
    fused = row[f"fused[{baseline}]"]["env_steps_per_s"]
    if "python_loop" in row:
      ratios["fused / python_loop"] = fused / row["python_loop"]["env_steps_per_s"]
    for p in _PRECISIONS.value[1:]:
      if f"fused[{p}]" in row:
        ratios[f"fused[{p}] / fused[{baseline}]"] = row[f"fused[{p}]"]["env_steps_per_s"] / fused
  for name in [n for n in row if n.startswith("update_only")]:
    for naive in [n for n in row if n.startswith("naive")]:
      ratios[f"{name} / {naive}"] = (row[name]["seed_updates_per_s"]
                                     / row[naive]["seed_updates_per_s"])
  return ratios


def _print_row(row):
  print(f"\n== {row['seeds']} seed(s) ==")
  for name, values in row.items():
    if name != "seeds":
      print(f"  {name:28s} " + ", ".join(f"{k} {v:,.1f}" for k, v in values.items()))


if __name__ == "__main__":
  app.run(main)
